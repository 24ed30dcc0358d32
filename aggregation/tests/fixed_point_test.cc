#include "flotilla/aggregation/fixed_point.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "flotilla/core/testing/seeded_random.h"

namespace flotilla::aggregation {
namespace {

using flotilla::testing::SeededRandom;

TEST(FixedPointTest, QuantBitsFollowTheCohortSize) {
  EXPECT_EQ(QuantBitsFor(32, 1024), 22u);
  EXPECT_EQ(QuantBitsFor(32, 1025), 21u);
  EXPECT_EQ(QuantBitsFor(32, 131072), 15u);
  EXPECT_EQ(QuantBitsFor(32, 1), 32u);
}

TEST(FixedPointTest, ValidateRefusesOverflowAndBadConfigs) {
  EXPECT_TRUE(ValidateFixedPoint({32, 22, 1.0}, 1024).ok());
  EXPECT_FALSE(ValidateFixedPoint({32, 22, 1.0}, 1025).ok());
  EXPECT_FALSE(ValidateFixedPoint({33, 22, 1.0}, 10).ok());
  EXPECT_FALSE(ValidateFixedPoint({16, 17, 1.0}, 1).ok());
  EXPECT_FALSE(ValidateFixedPoint({32, 22, 0.0}, 10).ok());
  EXPECT_FALSE(ValidateFixedPoint({32, 22, std::numeric_limits<double>::quiet_NaN()}, 10).ok());
}

TEST(FixedPointTest, RingConversionsAreTwosComplement) {
  EXPECT_EQ(SignedToRing(-1, 16), 0xffffu);
  EXPECT_EQ(RingToSigned(0xffffu, 16), -1);
  EXPECT_EQ(RingToSigned(0x8000u, 16), -32768);
  EXPECT_EQ(RingToSigned(0x7fffu, 16), 32767);
  EXPECT_EQ(RingToSigned(0x80000000u, 32), INT64_C(-2147483648));
  EXPECT_EQ(SignedToRing(-5, 32), 0xfffffffbu);
}

TEST(FixedPointTest, EncodingIsClippedUnbiasedAndWithinOneStep) {
  const FixedPointConfig cfg{32, 22, 2.0};
  const double scale = FixedPointScale(cfg);
  SeededRandom rng(1);
  const double x = 0.123456789;
  std::vector<double> xs(20000, x);
  auto enc = EncodeFixedPoint(xs, cfg, rng).value();
  double mean = 0;
  for (uint32_t e : enc) {
    const double d = static_cast<double>(RingToSigned(e, 32)) / scale;
    EXPECT_LE(std::abs(d - x), 1.0 / scale);
    mean += d;
  }
  mean /= static_cast<double>(enc.size());
  EXPECT_NEAR(mean, x, 5.0 / scale / std::sqrt(20000.0));
  // Clipping: beyond +-c decodes to exactly +-c.
  std::vector<double> big = {1e9, -1e9, 2.0, -2.0};
  auto e2 = EncodeFixedPoint(big, cfg, rng).value();
  EXPECT_EQ(DecodeFixedPointSum(e2, cfg), (std::vector<double>{2.0, -2.0, 2.0, -2.0}));
}

TEST(FixedPointTest, RejectsNonFiniteValues) {
  SeededRandom rng(2);
  std::vector<double> xs = {0.1, std::numeric_limits<double>::quiet_NaN()};
  auto r = EncodeFixedPoint(xs, {32, 22, 1.0}, rng);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("value 1"), std::string::npos);
}

TEST(FixedPointTest, SumOfEncodingsDecodesToTheSumWithinNOverS) {
  const FixedPointConfig cfg{32, QuantBitsFor(32, 100), 1.0};
  SeededRandom rng(3);
  std::vector<uint32_t> sum(64, 0);
  std::vector<double> truth(64, 0);
  for (int c = 0; c < 100; ++c) {
    std::vector<float> x(64);
    for (size_t i = 0; i < x.size(); ++i) {
      x[i] = static_cast<float>(rng.UniformDouble() * 2 - 1);
      truth[i] += static_cast<double>(x[i]);
    }
    auto e = EncodeFixedPoint(x, cfg, rng).value();
    for (size_t i = 0; i < e.size(); ++i) sum[i] += e[i];
  }
  auto d = DecodeFixedPointSum(sum, cfg);
  for (size_t i = 0; i < d.size(); ++i) EXPECT_NEAR(d[i], truth[i], 100 / FixedPointScale(cfg));
}

TEST(FixedPointTest, WeightedAverageRidesAlongAsOneCoordinate) {
  std::vector<float> a = {1.0f, -2.0f}, b = {3.0f, 4.0f};
  auto pa = WeightedPayload(a, 1.0, 10).value();
  auto pb = WeightedPayload(b, 3.0, 10).value();
  std::vector<double> sum(3);
  for (size_t i = 0; i < 3; ++i) sum[i] = pa[i] + pb[i];
  auto avg = WeightedAverageFromSum(sum).value();
  EXPECT_DOUBLE_EQ(avg[0], (1.0 + 9.0) / 4.0);
  EXPECT_DOUBLE_EQ(avg[1], (-2.0 + 12.0) / 4.0);
  EXPECT_FALSE(WeightedPayload(a, 11.0, 10).ok());
  EXPECT_FALSE(WeightedPayload(a, 0.0, 10).ok());
  EXPECT_FALSE(WeightedAverageFromSum(std::vector<double>{1.0, 0.0}).ok());
}

}  // namespace
}  // namespace flotilla::aggregation
