// Distributed differential privacy that composes with SecAgg (reference section 6):
// each device clips its update in L2, scales and rounds it onto the integer grid of the
// fixed-point encoding, adds its share of discrete Gaussian (DDG, Kairouz-Liu-Steinke
// 2021) or Skellam (Agarwal-Kairouz-Liu 2021) noise, and wraps mod 2^b ("modular
// clipping"). The noise is split over the minimum number of survivors the server accepts
// (minus the gamma*n clients that may withhold theirs, in the hardened profile), so the
// sum always carries at least the central noise.
//
// Samplers are exact (no floating point in the sampling path): Canonne-Kamath-Steinke
// 2020 for Bernoulli(exp(-x)), discrete Laplace and discrete Gaussian with a rational
// variance; Duchon-Duvignau 2016 for Poisson(1), from which Poisson(lambda) is built by
// splitting lambda and binomial thinning. All randomness comes from the Random passed in:
// in production a PrgRandom keyed from the CSPRNG (never a time seed, cf. TF Privacy's
// Skellam query seeded from tf.timestamp()).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "flotilla/aggregation/fixed_point.h"
#include "flotilla/core/random.h"
#include "flotilla/core/status.h"
#include "flotilla/security/prg.h"
#include "flotilla/v1/round.pb.h"

namespace flotilla::aggregation {

// A fast generator for bulk sampling: the AES-128-CTR mask PRG (prg.h) keyed with 16
// bytes drawn from a CSPRNG. Not thread-safe (one per sampling thread).
class PrgRandom final : public Random {
 public:
  // Draws the key from `csprng` (production: security::SystemCsprng()).
  explicit PrgRandom(Random& csprng);
  void Fill(std::span<uint8_t> out) override;

 private:
  security::PrgSeed key_{};
  uint64_t next_word_ = 0;
  std::vector<uint32_t> buf_;
  size_t pos_ = 0;  // bytes consumed from buf_
};

// p = num / den, den > 0.
struct Rational {
  uint64_t num = 0;
  uint64_t den = 1;
};
// x as num / 2^20 (rounded up for variances, so noise is never below what was asked).
Rational RationalFromDouble(double x);

bool SampleBernoulli(Rational p, Random& rng);                  // REQUIRES: p <= 1
bool SampleBernoulliExp(Rational gamma, Random& rng);           // Bernoulli(exp(-gamma))
int64_t SampleDiscreteLaplace(uint64_t scale, Random& rng);     // P(x) ∝ exp(-|x| / scale), scale >= 1
int64_t SampleDiscreteGaussian(Rational sigma2, Random& rng);   // P(x) ∝ exp(-x^2 / (2 sigma2)), sigma2 > 0
uint64_t SamplePoisson1(Random& rng);
uint64_t SamplePoisson(Rational lambda, Random& rng);           // cost O(lambda): lambda <= kMaxPoissonMean
int64_t SampleSkellam(Rational lambda, Random& rng);            // Poisson(lambda) - Poisson(lambda)
inline constexpr double kMaxPoissonMean = 1e5;

struct DpParams {
  v1::NoiseMechanism mechanism = v1::NOISE_MECHANISM_DISCRETE_GAUSSIAN;
  double l2_clip = 1.0;         // c2, in update units
  double central_stddev = 0.0;  // sigma of the noise in the sum, in update units
  uint32_t noisy_clients = 1;   // the noise is split over this many clients
  FixedPointConfig fixed_point;  // the grid (scale S) and the ring
  double conditional_rounding_beta = 0.0;  // 0 = plain stochastic rounding (TFF default)
};

// From a round's SecAggConfig: noisy_clients = min_survivors, minus floor(gamma * n)
// in the hardened profile. InvalidArgument if DP is off or the split leaves no one.
Result<DpParams> DpParamsFor(const v1::SecAggConfig& config);

// Per-client noise variance on the integer grid: (central_stddev * S)^2 / noisy_clients.
double LocalNoiseVariance(const DpParams& params);

struct DpEncodeStats {
  double clipped_norm = 0;     // L2 norm after clipping (update units)
  bool clipped = false;
  uint64_t wrapped = 0;        // coordinates that left [-2^(b-1), 2^(b-1)) before wrapping
};

// Clip (L2), scale by S, stochastic rounding, + local noise, wrap mod 2^b. `rng` drives
// rounding and noise (production: a PrgRandom). InvalidArgument for non-finite values.
Result<std::vector<uint32_t>> EncodeWithDp(std::span<const float> update, const DpParams& params, Random& rng,
                                           DpEncodeStats* stats = nullptr);

// Upper bound on P[|sum coordinate| >= 2^(b-1)] for n clients at the fixed-point range
// plus Gaussian-tail noise of total variance sigma2_total (integer grid): pick b so that
// this stays below the target (TFF's modclip_prob, default 1e-4).
double ModularClipProbabilityBound(uint32_t n, const DpParams& params);

// Rényi-DP accountant over rounds (no subsampling amplification: conservative).
//   DDG round: rho-zCDP from Kairouz et al. Thm 1 for the sum of n discrete Gaussians,
//     eps = min(sqrt(D2^2/(n s^2) + tau d/2), D2/sqrt(n s^2) + tau sqrt(d)), rho = eps^2/2,
//     tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 s^2 k/(k+1)); RDP(alpha) = alpha * rho.
//   Skellam round: Agarwal et al. Thm 3.5 for aggregate variance mu:
//     RDP(alpha) = alpha D2^2/(2 mu) + min(((2 alpha - 1) D2^2 + 6 D1)/(4 mu^2), 3 D1/(2 mu)).
//   (eps, delta) = min over alpha of RDP(alpha) + log(1/delta)/(alpha - 1).
// D1, D2 are the L1 / L2 sensitivities on the integer grid. Not thread-safe.
class DpAccountant {
 public:
  DpAccountant();
  void AddDiscreteGaussianRound(double l2_sensitivity, double local_sigma2, uint32_t noisy_clients, uint64_t dim);
  void AddSkellamRound(double l1_sensitivity, double l2_sensitivity, double aggregate_variance);
  // Adds the round `params` describe (sensitivity = S * l2_clip + sqrt(dim) for rounding).
  void AddRound(const DpParams& params, uint64_t dim);
  double Epsilon(double delta) const;
  size_t rounds() const { return rounds_; }

 private:
  std::vector<double> alphas_;
  std::vector<double> rdp_;
  size_t rounds_ = 0;
};

}  // namespace flotilla::aggregation
