// Strategies against a long-double reference; frozen-A LoRA through the real SecAgg path.
#include "flotilla/aggregation/strategies.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "flotilla/aggregation/fixed_point.h"
#include "flotilla/aggregation/testing/secagg_simulation.h"
#include "flotilla/core/testing/seeded_random.h"

namespace flotilla::aggregation {
namespace {

using flotilla::testing::SeededRandom;

double D(float x) { return static_cast<double>(x); }

std::vector<std::vector<float>> RandomUpdates(size_t n, size_t m, SeededRandom& rng) {
  std::vector<std::vector<float>> u(n, std::vector<float>(m));
  for (auto& v : u) {
    for (float& x : v) x = static_cast<float>((rng.UniformDouble() * 2 - 1) * std::pow(10.0, rng.Uniform(7) - 3.0));
  }
  return u;
}

TEST(StrategiesTest, WeightedFedAvgMatchesLongDoubleReference) {
  SeededRandom rng(1);
  auto u = RandomUpdates(37, 200, rng);
  std::vector<ClientUpdate> in;
  std::vector<double> w;
  for (auto& v : u) {
    w.push_back(1 + rng.Uniform(1000));
    in.push_back({v, w.back()});
  }
  auto avg = WeightedFedAvg(in).value();
  for (size_t j = 0; j < avg.size(); ++j) {
    long double s = 0, tw = 0;
    for (size_t i = 0; i < u.size(); ++i) {
      s += static_cast<long double>(w[i]) * u[i][j];
      tw += w[i];
    }
    const auto ref = static_cast<float>(s / tw);
    EXPECT_LE(std::abs(avg[j] - ref), std::abs(ref) * 2e-7f + 1e-30f) << j;
  }
  std::vector<float> shorter(3);
  in.push_back({shorter, 1.0});
  EXPECT_FALSE(WeightedFedAvg(in).ok());
  EXPECT_FALSE(WeightedFedAvg({}).ok());
}

TEST(StrategiesTest, MedianAndTrimmedMeanMatchReference) {
  SeededRandom rng(2);
  for (size_t n : {1u, 2u, 7u, 10u}) {
    auto u = RandomUpdates(n, 50, rng);
    std::vector<std::span<const float>> spans(u.begin(), u.end());
    auto med = CoordinateMedian(spans).value();
    auto tm = TrimmedMean(spans, 0.2).value();
    const size_t drop = static_cast<size_t>(std::floor(0.2 * n));
    for (size_t j = 0; j < 50; ++j) {
      std::vector<long double> col;
      for (auto& v : u) col.push_back(v[j]);
      std::sort(col.begin(), col.end());
      const long double m = n % 2 ? col[n / 2] : (col[n / 2 - 1] + col[n / 2]) / 2;
      EXPECT_EQ(med[j], static_cast<float>(m));
      long double s = 0;
      for (size_t i = drop; i < n - drop; ++i) s += col[i];
      EXPECT_NEAR(tm[j], static_cast<float>(s / (n - 2 * drop)), std::abs(static_cast<float>(s)) * 1e-6f + 1e-30f);
    }
  }
  // Robustness: one huge outlier barely moves the median and is trimmed away.
  std::vector<std::vector<float>> u = {{1}, {2}, {3}, {4}, {1e9f}};
  std::vector<std::span<const float>> spans(u.begin(), u.end());
  EXPECT_EQ(CoordinateMedian(spans).value()[0], 3.0f);
  EXPECT_FLOAT_EQ(TrimmedMean(spans, 0.2).value()[0], 3.0f);
  EXPECT_FALSE(TrimmedMean(spans, 0.5).ok());
}

TEST(StrategiesTest, UpdateNormBounds) {
  std::vector<float> v = {3, 4};
  EXPECT_DOUBLE_EQ(L2Norm(v), 5.0);
  EXPECT_TRUE(CheckUpdateNorm(v, 5.0).ok());
  EXPECT_EQ(CheckUpdateNorm(v, 4.9).code(), StatusCode::kOutOfRange);
  EXPECT_DOUBLE_EQ(ClipToNorm(v, 1.0), 0.2);
  EXPECT_NEAR(L2Norm(v), 1.0, 1e-7);
}

LoraFactors RandomLora(uint32_t d, uint32_t r, uint32_t k, SeededRandom& rng, const std::vector<float>* a = nullptr) {
  LoraFactors f{d, r, k, std::vector<float>(size_t{d} * r), std::vector<float>(size_t{r} * k)};
  for (float& x : f.b) x = static_cast<float>(rng.UniformDouble() * 0.2 - 0.1);
  if (a) {
    f.a = *a;
  } else {
    for (float& x : f.a) x = static_cast<float>(rng.UniformDouble() * 2 - 1);
  }
  return f;
}

TEST(StrategiesTest, FrozenAEqualsAverageOfProductsExactly) {
  SeededRandom rng(3);
  const uint32_t d = 12, r = 4, k = 9;
  auto shared = RandomLora(d, r, k, rng).a;
  std::vector<LoraFactors> clients;
  std::vector<double> w;
  for (int i = 0; i < 6; ++i) {
    clients.push_back(RandomLora(d, r, k, rng, &shared));
    w.push_back(1 + i);
  }
  auto agg = AggregateFrozenA(clients, w).value();
  auto product = LoraProduct(agg).value();
  double tw = 0;
  for (double x : w) tw += x;
  for (size_t e = 0; e < product.size(); ++e) {
    double ref = 0;
    for (size_t i = 0; i < clients.size(); ++i) ref += w[i] / tw * D(LoraProduct(clients[i]).value()[e]);
    EXPECT_NEAR(product[e], ref, 1e-6);
  }
  clients[2].a[0] += 1;
  EXPECT_FALSE(AggregateFrozenA(clients, w).ok());
}

TEST(StrategiesTest, FedItErrorIsTheFactorCovariance) {
  // delta W* - B_bar A_bar = 1/2 sum_ij p_i p_j (B_i - B_j)(A_i - A_j)  (federated-lora.md)
  SeededRandom rng(4);
  const uint32_t d = 5, r = 2, k = 4;
  std::vector<LoraFactors> c;
  std::vector<double> w = {1, 2, 3};
  for (int i = 0; i < 3; ++i) c.push_back(RandomLora(d, r, k, rng));
  auto agg = AggregateFedIt(c, w).value();
  auto approx = LoraProduct(agg).value();
  const double tw = 6;
  for (uint32_t i = 0; i < d; ++i) {
    for (uint32_t j = 0; j < k; ++j) {
      double ideal = 0, cov = 0;
      for (size_t x = 0; x < 3; ++x) {
        ideal += w[x] / tw * D(LoraProduct(c[x]).value()[i * k + j]);
        for (size_t y = 0; y < 3; ++y) {
          for (uint32_t q = 0; q < r; ++q) {
            cov += 0.5 * w[x] / tw * w[y] / tw * (D(c[x].b[i * r + q]) - D(c[y].b[i * r + q])) *
                   (D(c[x].a[q * k + j]) - D(c[y].a[q * k + j]));
          }
        }
      }
      EXPECT_NEAR(ideal - D(approx[i * k + j]), cov, 1e-6);
    }
  }
}

TEST(StrategiesTest, FrozenAThroughSecureAggregationMatchesWithinFixedPointError) {
  // Devices upload w_i * B_i plus w_i through SecAgg; the coordinator decodes the sum,
  // divides by sum w_i and multiplies by the shared A.
  SeededRandom rng(5);
  const uint32_t d = 8, r = 2, k = 6;
  auto shared = RandomLora(d, r, k, rng).a;
  const uint32_t n = 10;
  const double max_weight = 100;
  testing::SimulationOptions o;
  o.n = n;
  o.profile = v1::SEC_AGG_PROFILE_CURIOUS;
  o.vector_length = size_t{d} * r + 1;
  auto sim = testing::SecAggSimulation::Create(o).value();
  const FixedPointConfig fp{32, QuantBitsFor(32, n), max_weight};  // clip covers w * |B| and w
  std::vector<LoraFactors> clients;
  std::vector<double> w;
  for (uint32_t i = 1; i <= n; ++i) {
    clients.push_back(RandomLora(d, r, k, rng, &shared));
    w.push_back(1 + rng.Uniform(99));
    auto payload = WeightedPayload(clients.back().b, w.back(), max_weight).value();
    sim->SetInput(i, EncodeFixedPoint(payload, fp, rng).value());
  }
  auto out = sim->Run().value();
  auto b_bar = WeightedAverageFromSum(DecodeFixedPointSum(out.sum, fp)).value();
  LoraFactors agg{d, r, k, std::vector<float>(b_bar.begin(), b_bar.end()), shared};
  auto product = LoraProduct(agg).value();
  auto ref = LoraProduct(AggregateFrozenA(clients, w).value()).value();
  // Error per B coordinate <= n / S / sum(w) (plus the weight's own quantization); A's
  // entries are <= 1 in magnitude, r terms per product entry.
  double tw = 0;
  for (double x : w) tw += x;
  const double tol = 2.0 * r * n / FixedPointScale(fp) / tw * (1 + 1.0);
  for (size_t e = 0; e < product.size(); ++e) EXPECT_NEAR(product[e], ref[e], tol) << e;
}

}  // namespace
}  // namespace flotilla::aggregation
