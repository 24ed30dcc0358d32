// DP samplers (reference test 12): mean, variance and tails against the exact
// distributions; seeds from the CSPRNG; the noise split and the modular-clipping rate.
#include "flotilla/aggregation/dp.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>

#include "flotilla/core/testing/seeded_random.h"
#include "flotilla/security/csprng.h"

namespace flotilla::aggregation {
namespace {

using flotilla::testing::SeededRandom;

struct Moments {
  double mean = 0, var = 0;
};
template <typename F>
Moments Sample(int count, F f, std::map<int64_t, int>* hist = nullptr) {
  double s = 0, s2 = 0;
  for (int i = 0; i < count; ++i) {
    const auto x = static_cast<double>(f());
    s += x;
    s2 += x * x;
    if (hist) (*hist)[static_cast<int64_t>(x)]++;
  }
  Moments m;
  m.mean = s / count;
  m.var = s2 / count - m.mean * m.mean;
  return m;
}

TEST(DpTest, BernoulliExpHasProbabilityExpMinusGamma) {
  SeededRandom csprng(1);
  PrgRandom rng(csprng);
  for (Rational g : {Rational{1, 2}, Rational{3, 1}, Rational{7, 3}}) {
    int hits = 0;
    const int n = 40000;
    for (int i = 0; i < n; ++i) hits += SampleBernoulliExp(g, rng) ? 1 : 0;
    const double p = std::exp(-static_cast<double>(g.num) / static_cast<double>(g.den));
    EXPECT_NEAR(hits / double(n), p, 5 * std::sqrt(p * (1 - p) / n));
  }
}

TEST(DpTest, DiscreteGaussianHasRightMeanVarianceAndPmf) {
  SeededRandom csprng(2);
  PrgRandom rng(csprng);
  for (double sigma : {0.8, 3.0, 20.0}) {
    const Rational s2 = RationalFromDouble(sigma * sigma);
    std::map<int64_t, int> hist;
    const int n = 40000;
    const Moments m = Sample(n, [&] { return SampleDiscreteGaussian(s2, rng); }, &hist);
    // Exact pmf normaliser, variance of the discrete Gaussian (slightly below sigma^2 for small sigma).
    double z = 0, v = 0;
    for (int k = -2000; k <= 2000; ++k) {
      const double w = std::exp(-k * k / (2 * sigma * sigma));
      z += w;
      v += k * k * w;
    }
    v /= z;
    EXPECT_NEAR(m.mean, 0.0, 5 * std::sqrt(v / n)) << sigma;
    EXPECT_NEAR(m.var, v, 0.05 * v) << sigma;
    EXPECT_NEAR(hist[0] / double(n), 1.0 / z, 5 * std::sqrt((1.0 / z) / n)) << sigma;
    // Tails: nothing near 8 sigma in 40k draws (probability ~1e-15 each).
    for (const auto& [x, c] : hist) EXPECT_LT(std::abs(x), 8 * sigma + 2) << sigma;
  }
}

TEST(DpTest, PoissonAndSkellamHaveRightMoments) {
  SeededRandom csprng(3);
  PrgRandom rng(csprng);
  const int n = 30000;
  std::map<int64_t, int> hist;
  const Moments p1 = Sample(n, [&] { return SamplePoisson1(rng); }, &hist);
  EXPECT_NEAR(p1.mean, 1.0, 0.03);
  EXPECT_NEAR(p1.var, 1.0, 0.05);
  EXPECT_NEAR(hist[0] / double(n), std::exp(-1.0), 0.01);
  const Moments p = Sample(n, [&] { return SamplePoisson(Rational{25, 4}, rng); });
  EXPECT_NEAR(p.mean, 6.25, 0.1);
  EXPECT_NEAR(p.var, 6.25, 0.3);
  const Moments sk = Sample(n, [&] { return SampleSkellam(Rational{9, 2}, rng); });
  EXPECT_NEAR(sk.mean, 0.0, 0.1);
  EXPECT_NEAR(sk.var, 9.0, 0.45);
}

TEST(DpTest, PrgRandomIsKeyedFromTheCsprngOnly) {
  PrgRandom a(security::SystemCsprng()), b(security::SystemCsprng());
  Bytes x(64), y(64);
  a.Fill(x);
  b.Fill(y);
  EXPECT_NE(x, y);  // fresh CSPRNG keys
  SeededRandom s1(5), s2(5);
  PrgRandom c(s1), d(s2);
  c.Fill(x);
  d.Fill(y);
  EXPECT_EQ(x, y);  // the key is its only input: no time, no address, no counter state
  Bytes part1(10), part2(54), whole(64);
  SeededRandom s3(5);
  PrgRandom e(s3);
  e.Fill(part1);
  e.Fill(part2);
  part1.insert(part1.end(), part2.begin(), part2.end());
  EXPECT_EQ(part1, x);
}

DpParams Params(v1::NoiseMechanism mech, double central, uint32_t noisy) {
  DpParams p;
  p.mechanism = mech;
  p.l2_clip = 1.0;
  p.central_stddev = central;
  p.noisy_clients = noisy;
  p.fixed_point = {32, 16, 1.0};  // S = 32767
  return p;
}

TEST(DpTest, NoiseSplitOverClientsSumsToTheCentralNoise) {
  for (auto mech : {v1::NOISE_MECHANISM_DISCRETE_GAUSSIAN, v1::NOISE_MECHANISM_SKELLAM}) {
    const uint32_t clients = 20;
    DpParams p = Params(mech, mech == v1::NOISE_MECHANISM_SKELLAM ? 0.002 : 0.01, clients);
    SeededRandom csprng(6);
    PrgRandom rng(csprng);
    const size_t m = 3000;
    std::vector<int64_t> sum(m, 0);
    std::vector<float> zero(m, 0.0f);
    for (uint32_t c = 0; c < clients; ++c) {
      auto enc = EncodeWithDp(zero, p, rng).value();
      for (size_t i = 0; i < m; ++i) sum[i] += RingToSigned(enc[i], 32);
    }
    double s2 = 0;
    for (int64_t v : sum) s2 += static_cast<double>(v) * static_cast<double>(v);
    const double sd_units = std::sqrt(s2 / m) / FixedPointScale(p.fixed_point);
    EXPECT_NEAR(sd_units, p.central_stddev, 0.06 * p.central_stddev) << mech;
  }
}

TEST(DpTest, HardenedSplitDiscountsColluders) {
  v1::SecAggConfig c;
  c.set_n(1000);
  c.set_min_survivors(800);
  c.set_max_colluding_fraction(0.1);
  c.set_bit_width(32);
  c.set_quant_bits(22);
  c.set_clip_bound(1.0);
  c.set_profile(v1::SEC_AGG_PROFILE_HARDENED);
  c.mutable_dp()->set_mechanism(v1::NOISE_MECHANISM_DISCRETE_GAUSSIAN);
  c.mutable_dp()->set_l2_clip(1.0);
  c.mutable_dp()->set_central_stddev(0.5);
  EXPECT_EQ(DpParamsFor(c).value().noisy_clients, 700u);
  c.set_profile(v1::SEC_AGG_PROFILE_CURIOUS);
  EXPECT_EQ(DpParamsFor(c).value().noisy_clients, 800u);
  c.mutable_dp()->set_mechanism(v1::NOISE_MECHANISM_UNSPECIFIED);
  EXPECT_FALSE(DpParamsFor(c).ok());
}

TEST(DpTest, L2ClippingBoundsTheNorm) {
  DpParams p = Params(v1::NOISE_MECHANISM_DISCRETE_GAUSSIAN, 0.0, 1);
  std::vector<float> big(100, 1.0f);  // norm 10
  SeededRandom csprng(7);
  PrgRandom rng(csprng);
  DpEncodeStats st;
  auto enc = EncodeWithDp(big, p, rng, &st).value();
  EXPECT_TRUE(st.clipped);
  EXPECT_NEAR(st.clipped_norm, 1.0, 1e-9);
  double n2 = 0;
  for (uint32_t e : enc) {
    const double v = static_cast<double>(RingToSigned(e, 32)) / FixedPointScale(p.fixed_point);
    n2 += v * v;
  }
  EXPECT_NEAR(std::sqrt(n2), 1.0, 0.01);
}

TEST(DpTest, ModularClippingRateStaysBelowTarget) {
  // A narrow ring (b = 12) where noise does wrap sometimes: the measured rate must stay
  // under the bound used to pick b.
  DpParams p = Params(v1::NOISE_MECHANISM_DISCRETE_GAUSSIAN, 0.0, 10);
  p.fixed_point = {12, 4, 1.0};  // S = 7
  p.central_stddev = 800.0 / 7.0;  // total sigma 800 grid steps, local 800/sqrt(10)
  const double bound = ModularClipProbabilityBound(10, p);
  ASSERT_GT(bound, 1e-6);
  ASSERT_LT(bound, 0.5);
  SeededRandom csprng(8);
  PrgRandom rng(csprng);
  const size_t m = 20000;
  std::vector<int64_t> sum(m, 0);
  std::vector<float> x(m, 1.0f / 200);  // tiny signal, within the clip
  for (int c = 0; c < 10; ++c) {
    auto enc = EncodeWithDp(x, p, rng).value();
    for (size_t i = 0; i < m; ++i) sum[i] += RingToSigned(enc[i], 12);
  }
  size_t wrapped = 0;
  for (int64_t v : sum) wrapped += (v < -2048 || v >= 2048) ? 1 : 0;
  EXPECT_GT(wrapped, 0u);  // the regime is tight enough that wrapping does happen
  EXPECT_LE(static_cast<double>(wrapped) / m, bound);
}

TEST(DpTest, AccountantComposesAndMatchesTheGaussianMechanism) {
  DpAccountant acc;
  // One DDG round with a large noise: eps must be close to the continuous Gaussian's
  // RDP bound for D2/sigma_total = 1: eps(delta) ~ min_a a/2 + log(1/delta)/(a-1).
  acc.AddDiscreteGaussianRound(100.0, 100.0 * 100.0 / 10, 10, 1000);
  const double e1 = acc.Epsilon(1e-5);
  double ref = std::numeric_limits<double>::infinity();
  for (double a = 1.1; a < 300; a += 0.01) ref = std::min(ref, a / 2 + std::log(1e5) / (a - 1));
  EXPECT_NEAR(e1, ref, 0.02 * ref);
  acc.AddDiscreteGaussianRound(100.0, 100.0 * 100.0 / 10, 10, 1000);
  EXPECT_GT(acc.Epsilon(1e-5), e1);
  EXPECT_EQ(acc.rounds(), 2u);
  DpAccountant sk;
  sk.AddSkellamRound(1000, 100.0, 1e4);
  EXPECT_GT(sk.Epsilon(1e-5), ref);  // Skellam pays a little over Gaussian at this variance
  EXPECT_LT(sk.Epsilon(1e-5), 1.5 * ref);
}

}  // namespace
}  // namespace flotilla::aggregation
