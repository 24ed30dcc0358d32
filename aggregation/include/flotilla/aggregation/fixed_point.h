// Fixed-point encoding of model updates into the SecAgg ring Z_{2^b} (b <= 32, stored as
// uint32 so reduction mod 2^32 is free and mod 2^b is a mask), following
// shared/reference/secure-aggregation.md section 3:
//   clip each coordinate to [-c, c], scale by S = (2^(q-1) - 1) / c, round stochastically
//   (unbiased, error < 1/S per coordinate), store as two's complement mod 2^b; decode a
//   sum by reading its b bits as a signed integer and dividing by S.
// The sum of n encodings is exact as long as n * (2^(q-1) - 1) < 2^(b-1), which
// ValidateFixedPoint checks before a round starts (n * 2^(q-1) * 2 <= 2^b).
// All functions are pure and thread-safe (the Random passed in decides its own safety).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "flotilla/core/random.h"
#include "flotilla/core/status.h"

namespace flotilla::aggregation {

inline constexpr uint32_t kMaxBitWidth = 32;

struct FixedPointConfig {
  uint32_t bit_width = 32;   // b: ring Z_{2^b}
  uint32_t quant_bits = 22;  // q: bits of one client's value (sign included)
  double clip = 1.0;         // c: coordinates are clipped to [-c, c]
};

// OK if 2 <= q <= b <= 32, c is finite and > 0, and the sum of `max_clients` encodings at
// full magnitude cannot wrap: max_clients * 2^(q-1) * 2 <= 2^b. InvalidArgument naming
// the failing rule otherwise (ABORT_REASON_OVERFLOW territory).
Status ValidateFixedPoint(const FixedPointConfig& config, uint64_t max_clients);

// The largest q for b and n_max: b - ceil(log2 n_max) (22 for n <= 1024 at b = 32).
uint32_t QuantBitsFor(uint32_t bit_width, uint64_t max_clients);

// S = (2^(q-1) - 1) / c.
double FixedPointScale(const FixedPointConfig& config);

// 2^b - 1 (0xffffffff for b = 32).
constexpr uint32_t RingMask(uint32_t bit_width) {
  return bit_width >= 32 ? 0xffffffffu : ((uint32_t{1} << bit_width) - 1);
}

// Reads the low b bits of `v` as a two's complement integer.
int64_t RingToSigned(uint32_t v, uint32_t bit_width);
// Two's complement of `v` mod 2^b.
uint32_t SignedToRing(int64_t v, uint32_t bit_width);

// Encodes `values` (clip, scale, stochastic rounding with randomness from `rng`, mod 2^b).
// InvalidArgument for a non-finite value (naming its index) or an invalid config. The
// rounding bits are drawn in bulk (8 bytes per coordinate), so pass a fast CSPRNG-seeded
// generator (PrgRandom in dp.h) for large vectors.
Result<std::vector<uint32_t>> EncodeFixedPoint(std::span<const double> values, const FixedPointConfig& config,
                                               Random& rng);
Result<std::vector<uint32_t>> EncodeFixedPoint(std::span<const float> values, const FixedPointConfig& config,
                                               Random& rng);

// Decodes a sum (any number of encodings added mod 2^b, as long as it did not wrap).
std::vector<double> DecodeFixedPointSum(std::span<const uint32_t> sum, const FixedPointConfig& config);

// Weighted FedAvg through a plain sum: a client sends w * delta with w appended as one
// extra coordinate (w <= w_max, and the clip bound must cover w_max * max|delta| and w_max
// itself). InvalidArgument if w is not finite or not in (0, w_max].
Result<std::vector<double>> WeightedPayload(std::span<const float> delta, double weight, double max_weight);
// Inverse on the decoded sum: the first m coordinates divided by the last. FailedPrecondition
// if the summed weight is not positive (nobody contributed).
Result<std::vector<double>> WeightedAverageFromSum(std::span<const double> decoded_sum);

}  // namespace flotilla::aggregation
