// The parameter finder against fcp's published vectors (reference section 3 and
// graph_parameter_finder_test.cc: degree exact, threshold an upper bound), our operating
// point, and the client-side floor.
#include "flotilla/aggregation/param_finder.h"

#include <gtest/gtest.h>

namespace flotilla::aggregation {
namespace {

struct Vector {
  uint32_t n;
  double gamma, delta;
  AdversaryModel model;
  uint32_t k, t_max;
};

constexpr auto kHonest = AdversaryModel::kSemiHonest;
constexpr auto kMalicious = AdversaryModel::kSemiMalicious;

class PublishedVectorTest : public ::testing::TestWithParam<Vector> {};

TEST_P(PublishedVectorTest, ReproducesDegreeAndThresholdBound) {
  const Vector& v = GetParam();
  auto p = FindHararyParameters(v.n, v.gamma, v.delta, v.model);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->k, v.k);
  EXPECT_LE(p->t, v.t_max);
  EXPECT_GE(p->t, 2u);
  EXPECT_LE(p->t, p->k);
  // The minimum threshold for that k is the finder's t.
  EXPECT_EQ(MinimumHararyThreshold(v.n, p->k, v.gamma, v.delta, v.model).value(), p->t);
}

INSTANTIATE_TEST_SUITE_P(
    Fcp, PublishedVectorTest,
    ::testing::Values(
        // reference section 3 table
        Vector{1000, 0.05, 0.05, kHonest, 30, 17}, Vector{10000, 0.05, 0.05, kHonest, 34, 20},
        Vector{100000, 0.05, 0.05, kHonest, 36, 21}, Vector{1000, 0.05, 0.05, kMalicious, 52, 37},
        Vector{10000, 0.05, 0.05, kMalicious, 62, 44}, Vector{100000, 0.05, 0.05, kMalicious, 68, 48},
        Vector{1000, 0.05, 0.33, kHonest, 72, 24}, Vector{10000, 0.05, 0.33, kHonest, 86, 29},
        Vector{100000, 0.05, 0.33, kHonest, 96, 32}, Vector{1000, 0.05, 0.33, kMalicious, 398, 223},
        Vector{10000, 0.05, 0.33, kMalicious, 746, 420}, Vector{100000, 0.05, 0.33, kMalicious, 882, 496},
        // more of fcp's table
        Vector{100, 0.45, 0.45, kHonest, 92, 46}, Vector{1000, 0.45, 0.45, kHonest, 822, 417},
        Vector{1000, 0.33, 0.33, kHonest, 286, 150}, Vector{10, 0.33, 0.33, kHonest, 8, 4},
        Vector{1000, 0.3, 0.3, kMalicious, 872, 584}, Vector{1000, 0.33, 0.05, kHonest, 78, 60},
        Vector{1000, 0.33, 0.05, kMalicious, 132, 109}, Vector{10, 0.05, 0.05, kHonest, 2, 2},
        Vector{100, 0.05, 0.05, kMalicious, 16, 11}, Vector{1000, 0.0, 0.33, kMalicious, 228, 115},
        Vector{1000, 0.0, 0.0, kHonest, 2, 2}, Vector{1000000, 0.05, 0.05, kHonest, 38, 22}));

TEST(ParamFinderTest, OurOperatingPoint) {
  // reference section 3: gamma = 0.1, delta = 0.2.
  EXPECT_EQ(FindHararyParameters(1000, 0.1, 0.2, kHonest).value(), (GraphParameters{66, 31, false}));
  EXPECT_EQ(FindHararyParameters(1000, 0.1, 0.2, kMalicious).value(), (GraphParameters{194, 124, false}));
  EXPECT_EQ(FindHararyParameters(10000, 0.1, 0.2, kHonest).value().k, 78u);
  EXPECT_EQ(FindHararyParameters(100000, 0.1, 0.2, kMalicious).value().k, 312u);
}

TEST(ParamFinderTest, RejectsInfeasibleRates) {
  EXPECT_FALSE(FindHararyParameters(1000, 0.5, 0.5, kHonest).ok());
  EXPECT_FALSE(FindHararyParameters(1000, 0.33, 0.33, kMalicious).ok());
  EXPECT_FALSE(FindHararyParameters(1000, 0.1, 1.0, kHonest).ok());
  EXPECT_FALSE(FindHararyParameters(0, 0.1, 0.1, kHonest).ok());
  EXPECT_FALSE(FindHararyParameters(1000, 0.1, 0.1, AdversaryModel::kNone).ok());
}

TEST(ParamFinderTest, SmallCohortsUseTheCompleteGraph) {
  auto p = ChooseGraphParameters(50, 0.1, 0.2, kHonest).value();
  EXPECT_TRUE(p.complete);
  EXPECT_EQ(p.k, 49u);
  EXPECT_EQ(p.t, 6u);  // more than ceil(0.1 * 50) = 5 colluders
  auto h = ChooseGraphParameters(50, 0.1, 0.2, kMalicious).value();
  EXPECT_EQ(h.t, 29u);  // > (50 + 5) / 2
  EXPECT_FALSE(ChooseGraphParameters(1000, 0.1, 0.2, kHonest).value().complete);
}

TEST(ParamFinderTest, ClientFloorAcceptsTheFinderAndSaferConfigs) {
  EXPECT_TRUE(CheckGraphParametersFloor(1000, 30, 17, 0.05, 0.05, kHonest).ok());
  EXPECT_TRUE(CheckGraphParametersFloor(1000, 40, MinimumHararyThreshold(1000, 40, 0.05, 0.05, kHonest).value(),
                                        0.05, 0.05, kHonest)
                  .ok());
  EXPECT_FALSE(CheckGraphParametersFloor(1000, 28, 17, 0.05, 0.05, kHonest).ok());
  EXPECT_FALSE(CheckGraphParametersFloor(1000, 30, 16, 0.05, 0.05, kHonest).ok());
  EXPECT_FALSE(CheckGraphParametersFloor(1000, 30, 31, 0.05, 0.05, kHonest).ok());  // t > k
  // A curious config is below the hardened floor.
  EXPECT_FALSE(CheckGraphParametersFloor(1000, 30, 17, 0.05, 0.05, kMalicious).ok());
  EXPECT_TRUE(CheckGraphParametersFloor(50, 49, 6, 0.1, 0.2, kHonest).ok());
  EXPECT_FALSE(CheckGraphParametersFloor(50, 49, 5, 0.1, 0.2, kHonest).ok());
}

}  // namespace
}  // namespace flotilla::aggregation
