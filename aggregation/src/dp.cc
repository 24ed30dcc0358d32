#include "flotilla/aggregation/dp.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numbers>

#include "flotilla/core/check.h"

namespace flotilla::aggregation {
namespace {

__extension__ typedef unsigned __int128 Uint128;  // GCC/Clang builtin; __extension__ for -Wpedantic

// Uniform in [0, n) for n up to 2^128 - 1, by rejection (no modulo bias).
Uint128 Uniform128(Uint128 n, Random& rng) {
  if ((n >> 64) == 0) return rng.Uniform(static_cast<uint64_t>(n));
  const Uint128 limit = ~Uint128{0} - (~Uint128{0} % n);
  for (;;) {
    const Uint128 x = (Uint128{rng.NextU64()} << 64) | rng.NextU64();
    if (x < limit) return x % n;
  }
}

// Bernoulli(num / den) on 128-bit integers.
bool Bernoulli128(Uint128 num, Uint128 den, Random& rng) { return Uniform128(den, rng) < num; }

// Bernoulli(exp(-num/den)) for 0 <= num/den <= 1 (CKS20 Algorithm 1, first branch).
bool BernoulliExpAtMostOne(Uint128 num, Uint128 den, Random& rng) {
  uint64_t k = 1;
  for (;;) {
    // A_k ~ Bernoulli(gamma / k)
    if (!Bernoulli128(num, den * k, rng)) break;
    ++k;
  }
  return k % 2 == 1;
}

bool BernoulliExp128(Uint128 num, Uint128 den, Random& rng) {
  while (num > den) {  // exp(-gamma) = exp(-1)^floor(gamma) * exp(-(gamma - floor(gamma)))
    if (!BernoulliExpAtMostOne(1, 1, rng)) return false;
    num -= den;
  }
  return BernoulliExpAtMostOne(num, den, rng);
}

}  // namespace

PrgRandom::PrgRandom(Random& csprng) { csprng.Fill(key_); }

void PrgRandom::Fill(std::span<uint8_t> out) {
  size_t done = 0;
  while (done < out.size()) {
    if (pos_ == buf_.size() * sizeof(uint32_t)) {
      buf_.resize(4096);
      // Cannot fail: the key size is right and 2^34 words is far beyond any DP use.
      FLT_CHECK_OK(security::ExpandPrg(security::OpenSslAesCtr(), key_, next_word_, buf_));
      next_word_ += buf_.size();
      pos_ = 0;
    }
    const size_t n = std::min(out.size() - done, buf_.size() * sizeof(uint32_t) - pos_);
    std::memcpy(out.data() + done, reinterpret_cast<const uint8_t*>(buf_.data()) + pos_, n);
    pos_ += n;
    done += n;
  }
}

Rational RationalFromDouble(double x) {
  constexpr double kDen = 1 << 20;
  return {static_cast<uint64_t>(std::ceil(x * kDen)), static_cast<uint64_t>(kDen)};
}

bool SampleBernoulli(Rational p, Random& rng) { return rng.Uniform(p.den) < p.num; }

bool SampleBernoulliExp(Rational gamma, Random& rng) { return BernoulliExp128(gamma.num, gamma.den, rng); }

int64_t SampleDiscreteLaplace(uint64_t scale, Random& rng) {
  // CKS20 Algorithm 2 with s = 1, t = scale.
  for (;;) {
    const uint64_t u = rng.Uniform(scale);
    if (!BernoulliExp128(u, scale, rng)) continue;
    uint64_t v = 0;
    while (BernoulliExp128(1, 1, rng)) ++v;
    const uint64_t x = u + scale * v;
    const bool negative = rng.Uniform(2) == 1;
    if (negative && x == 0) continue;
    return negative ? -static_cast<int64_t>(x) : static_cast<int64_t>(x);
  }
}

int64_t SampleDiscreteGaussian(Rational sigma2, Random& rng) {
  // CKS20 Algorithm 3: t = floor(sigma) + 1; Y ~ DLap(t); accept with
  // exp(-(|Y| - sigma2/t)^2 / (2 sigma2)), all in exact rationals:
  //   (|Y| - n/(d t))^2 / (2 n/d) = (|Y| d t - n)^2 / (2 n d t^2).
  const uint64_t t = static_cast<uint64_t>(std::floor(std::sqrt(static_cast<double>(sigma2.num) /
                                                                static_cast<double>(sigma2.den)))) + 1;
  for (;;) {
    const int64_t y = SampleDiscreteLaplace(t, rng);
    const Uint128 a = Uint128{static_cast<uint64_t>(y < 0 ? -y : y)} * sigma2.den * t;
    const Uint128 diff = a > sigma2.num ? a - sigma2.num : Uint128{sigma2.num} - a;
    const Uint128 num = diff * diff;
    const Uint128 den = Uint128{2} * sigma2.num * sigma2.den * t * t;
    if (BernoulliExp128(num, den, rng)) return y;
  }
}

uint64_t SamplePoisson1(Random& rng) {
  // Duchon & Duvignau 2016: integer-only exact Poisson(1).
  uint64_t ret = 1, a = 1, b = 0;
  for (;;) {
    const uint64_t j = rng.Uniform(a + 1);
    if (j < a && j < b) return ret;
    if (j == a) {
      ++ret;
    } else {
      --ret;
      b = a + 1;
    }
    ++a;
  }
}

uint64_t SamplePoisson(Rational lambda, Random& rng) {
  // Poisson(L + f) = sum of L Poisson(1) + Binomial(Poisson(1), f).
  const uint64_t whole = lambda.num / lambda.den;
  const Rational frac{lambda.num % lambda.den, lambda.den};
  uint64_t x = 0;
  for (uint64_t i = 0; i < whole; ++i) x += SamplePoisson1(rng);
  if (frac.num != 0) {
    const uint64_t n = SamplePoisson1(rng);
    for (uint64_t i = 0; i < n; ++i) x += SampleBernoulli(frac, rng) ? 1 : 0;
  }
  return x;
}

int64_t SampleSkellam(Rational lambda, Random& rng) {
  return static_cast<int64_t>(SamplePoisson(lambda, rng)) - static_cast<int64_t>(SamplePoisson(lambda, rng));
}

Result<DpParams> DpParamsFor(const v1::SecAggConfig& config) {
  const auto& dp = config.dp();
  if (dp.mechanism() == v1::NOISE_MECHANISM_UNSPECIFIED) return InvalidArgumentError("dp: not enabled for this round");
  DpParams p;
  p.mechanism = dp.mechanism();
  p.l2_clip = dp.l2_clip();
  p.central_stddev = dp.central_stddev();
  p.fixed_point = {config.bit_width(), config.quant_bits(), config.clip_bound()};
  FLT_RETURN_IF_ERROR(ValidateFixedPoint(p.fixed_point, 1));
  int64_t noisy = config.min_survivors();
  if (config.profile() != v1::SEC_AGG_PROFILE_CURIOUS) {
    noisy -= static_cast<int64_t>(std::floor(config.max_colluding_fraction() * config.n()));
  }
  if (noisy < 1) return InvalidArgumentError("dp: no client left to carry the noise after the collusion allowance");
  p.noisy_clients = static_cast<uint32_t>(noisy);
  return p;
}

double LocalNoiseVariance(const DpParams& params) {
  const double s = params.central_stddev * FixedPointScale(params.fixed_point);
  return s * s / params.noisy_clients;
}

Result<std::vector<uint32_t>> EncodeWithDp(std::span<const float> update, const DpParams& params, Random& rng,
                                           DpEncodeStats* stats) {
  FLT_RETURN_IF_ERROR(ValidateFixedPoint(params.fixed_point, 1));
  if (!(params.l2_clip > 0) || !(params.central_stddev >= 0) || params.noisy_clients == 0) {
    return InvalidArgumentError("dp: clip must be > 0, stddev >= 0, noisy_clients >= 1");
  }
  double norm2 = 0;
  for (size_t i = 0; i < update.size(); ++i) {
    const double v = static_cast<double>(update[i]);
    if (!std::isfinite(v)) return InvalidArgumentError("dp: value " + std::to_string(i) + " is not finite");
    norm2 += v * v;
  }
  const double norm = std::sqrt(norm2);
  const double factor = norm > params.l2_clip ? params.l2_clip / norm : 1.0;
  const double scale = FixedPointScale(params.fixed_point);
  const double variance = LocalNoiseVariance(params);
  const bool noisy = variance > 0;
  const Rational var = RationalFromDouble(variance);
  const Rational lambda = RationalFromDouble(variance / 2);
  if (params.mechanism == v1::NOISE_MECHANISM_SKELLAM && variance / 2 > kMaxPoissonMean) {
    return InvalidArgumentError("dp: Skellam lambda above the exact sampler's limit");
  }
  const uint32_t b = params.fixed_point.bit_width;
  const int64_t half = int64_t{1} << (b - 1);
  std::vector<uint32_t> out(update.size());
  uint64_t wrapped = 0;
  for (size_t i = 0; i < update.size(); ++i) {
    const double v = static_cast<double>(update[i]) * factor * scale;
    const double lo = std::floor(v);
    int64_t level = static_cast<int64_t>(lo) + (rng.UniformDouble() < v - lo ? 1 : 0);
    if (noisy) {
      level += params.mechanism == v1::NOISE_MECHANISM_SKELLAM ? SampleSkellam(lambda, rng)
                                                                : SampleDiscreteGaussian(var, rng);
    }
    if (level < -half || level >= half) ++wrapped;
    out[i] = SignedToRing(level, b);  // modular clipping: wrap into Z_2^b
  }
  if (stats != nullptr) {
    stats->clipped_norm = norm * factor;
    stats->clipped = factor < 1.0;
    stats->wrapped = wrapped;
  }
  return out;
}

double ModularClipProbabilityBound(uint32_t n, const DpParams& params) {
  const double scale = FixedPointScale(params.fixed_point);
  const double signal = n * params.l2_clip * scale + n;  // |sum coordinate| <= n (c2 S + 1)
  const double sigma = std::sqrt(LocalNoiseVariance(params) * params.noisy_clients);
  const double room = std::ldexp(1.0, static_cast<int>(params.fixed_point.bit_width) - 1) - signal;
  if (room <= 0) return 1.0;
  if (sigma == 0) return 0.0;
  const double z = room / sigma;
  return std::min(1.0, 2 * std::exp(-z * z / 2));  // sub-Gaussian tail of the summed noise
}

DpAccountant::DpAccountant() {
  for (double a = 1.1; a < 10.9; a += 0.1) alphas_.push_back(a);
  for (double a = 11; a <= 256; a += 1) alphas_.push_back(a);
  rdp_.assign(alphas_.size(), 0.0);
}

void DpAccountant::AddDiscreteGaussianRound(double l2_sensitivity, double local_sigma2, uint32_t noisy_clients,
                                            uint64_t dim) {
  const double n = noisy_clients;
  double tau = 0;
  for (uint32_t k = 1; k < noisy_clients; ++k) {
    const double term = std::exp(-2 * std::numbers::pi * std::numbers::pi * local_sigma2 * k / (k + 1.0));
    tau += term;
    if (term < 1e-300) break;
  }
  tau *= 10;
  const double d = static_cast<double>(dim);
  const double total = n * local_sigma2;
  const double eps = std::min(std::sqrt(l2_sensitivity * l2_sensitivity / total + tau * d / 2),
                              l2_sensitivity / std::sqrt(total) + tau * std::sqrt(d));
  const double rho = eps * eps / 2;
  for (size_t i = 0; i < alphas_.size(); ++i) rdp_[i] += alphas_[i] * rho;
  ++rounds_;
}

void DpAccountant::AddSkellamRound(double l1_sensitivity, double l2_sensitivity, double aggregate_variance) {
  const double mu = aggregate_variance, d2 = l2_sensitivity * l2_sensitivity;
  for (size_t i = 0; i < alphas_.size(); ++i) {
    const double a = alphas_[i];
    rdp_[i] += a * d2 / (2 * mu) +
               std::min(((2 * a - 1) * d2 + 6 * l1_sensitivity) / (4 * mu * mu), 3 * l1_sensitivity / (2 * mu));
  }
  ++rounds_;
}

void DpAccountant::AddRound(const DpParams& params, uint64_t dim) {
  const double scale = FixedPointScale(params.fixed_point);
  // Stochastic rounding can grow the norm by at most sqrt(dim) grid steps.
  const double d2 = params.l2_clip * scale + std::sqrt(static_cast<double>(dim));
  const double local = LocalNoiseVariance(params);
  if (params.mechanism == v1::NOISE_MECHANISM_SKELLAM) {
    const double d1 = std::min(d2 * d2, std::sqrt(static_cast<double>(dim)) * d2);
    AddSkellamRound(d1, d2, local * params.noisy_clients);
  } else {
    AddDiscreteGaussianRound(d2, local, params.noisy_clients, dim);
  }
}

double DpAccountant::Epsilon(double delta) const {
  double best = std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < alphas_.size(); ++i) {
    best = std::min(best, rdp_[i] + std::log(1 / delta) / (alphas_[i] - 1));
  }
  return best;
}

}  // namespace flotilla::aggregation
