// Aggregation strategies as pure functions (reference federated-lora.md section 4,
// ARCHITECTURE.md section 7). Inputs are float32 updates as devices produce them; sums
// are accumulated in double (Neumaier-compensated) and differential-tested against a
// long-double reference. All functions are thread-safe and allocate only their result.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "flotilla/core/status.h"

namespace flotilla::aggregation {

struct ClientUpdate {
  std::span<const float> values;
  double weight = 1.0;  // e.g. number of examples
};

// sum_i w_i x_i / sum_i w_i. InvalidArgument for no clients, mismatched lengths,
// non-positive/non-finite weights or non-finite values.
Result<std::vector<float>> WeightedFedAvg(std::span<const ClientUpdate> updates);

// Coordinate-wise median (the mean of the two middle values for an even count); plaintext
// rounds only (secure aggregation reveals no individual update).
Result<std::vector<float>> CoordinateMedian(std::span<const std::span<const float>> updates);
// Coordinate-wise mean after dropping floor(trim_fraction * n) values at each end
// (trim_fraction in [0, 0.5)); plaintext rounds only.
Result<std::vector<float>> TrimmedMean(std::span<const std::span<const float>> updates, double trim_fraction);

// L2 norm of an update, and the bound the server enforces where it can see updates
// (plaintext rounds) or the device enforces before encoding (secure rounds).
double L2Norm(std::span<const float> values);
// OK if ||values||_2 <= bound; OutOfRange naming the norm otherwise.
Status CheckUpdateNorm(std::span<const float> values, double bound);
// Scales values down to norm `bound` if above it; returns the factor applied (<= 1).
double ClipToNorm(std::span<float> values, double bound);

// A LoRA adapter for one weight matrix W (d x k): delta W = B A, B is d x r, A is r x k,
// both row-major.
struct LoraFactors {
  uint32_t d = 0, r = 0, k = 0;
  std::vector<float> b;  // d * r
  std::vector<float> a;  // r * k
};

// B A as a d x k row-major matrix (double accumulation). InvalidArgument on bad shapes.
Result<std::vector<float>> LoraProduct(const LoraFactors& f);

// Frozen-A (FFA-LoRA): every client shares the same A; the aggregate is
// (sum p_i B_i) A = sum p_i B_i A exactly. Only B is averaged. InvalidArgument if the
// clients' A or shapes differ.
Result<LoraFactors> AggregateFrozenA(std::span<const LoraFactors> clients, std::span<const double> weights);
// FedIT: A and B averaged separately (error second order in local drift).
Result<LoraFactors> AggregateFedIt(std::span<const LoraFactors> clients, std::span<const double> weights);

}  // namespace flotilla::aggregation
