#include "flotilla/aggregation/harary_graph.h"

#include <gtest/gtest.h>

#include <set>

namespace flotilla::aggregation {
namespace {

const Bytes kSeed(32, 0x5a);

TEST(HararyGraphTest, EveryNodeHasKDistinctSymmetricNeighbours) {
  for (auto [n, k] : {std::pair{10u, 4u}, {101u, 30u}, {1000u, 66u}, {7u, 6u}, {8u, 7u}}) {
    auto g = SecAggGraph::Create(n, k, kSeed);
    ASSERT_TRUE(g.ok()) << g.status().ToString();
    for (uint32_t u = 1; u <= n; ++u) {
      const auto nb = g->Neighbours(u);
      ASSERT_EQ(nb.size(), k);
      std::set<uint32_t> unique(nb.begin(), nb.end());
      EXPECT_EQ(unique.size(), k);
      EXPECT_FALSE(unique.count(u));
      for (uint32_t v : nb) {
        EXPECT_TRUE(g->AreNeighbours(u, v));
        EXPECT_TRUE(g->AreNeighbours(v, u));
        const auto back = g->Neighbours(v);
        EXPECT_TRUE(std::binary_search(back.begin(), back.end(), u));
      }
    }
  }
}

TEST(HararyGraphTest, SameSeedSameGraphOtherSeedOtherGraph) {
  auto a = SecAggGraph::Create(500, 20, kSeed).value();
  auto b = SecAggGraph::Create(500, 20, kSeed).value();
  auto c = SecAggGraph::Create(500, 20, Bytes(32, 0x5b)).value();
  size_t differ = 0;
  for (uint32_t u = 1; u <= 500; ++u) {
    EXPECT_EQ(a.Neighbours(u), b.Neighbours(u));
    differ += a.Neighbours(u) != c.Neighbours(u) ? 1 : 0;
  }
  EXPECT_GT(differ, 450u);
}

TEST(HararyGraphTest, RingOrderIsShuffled) {
  // Without the random labelling, 1's neighbours would be 2, 3, n-1, n.
  auto g = SecAggGraph::Create(1000, 4, kSeed).value();
  EXPECT_NE(g.Neighbours(1), (std::vector<uint32_t>{2, 3, 999, 1000}));
}

TEST(HararyGraphTest, RejectsBadDegrees) {
  EXPECT_FALSE(SecAggGraph::Create(10, 3, kSeed).ok());  // odd, not n-1
  EXPECT_FALSE(SecAggGraph::Create(10, 10, kSeed).ok());
  EXPECT_FALSE(SecAggGraph::Create(10, 0, kSeed).ok());
  EXPECT_FALSE(SecAggGraph::Create(1, 0, kSeed).ok());
  EXPECT_FALSE(SecAggGraph::Create(10, 4, {}).ok());
  EXPECT_TRUE(SecAggGraph::Create(10, 9, {}).ok());  // complete graph needs no seed
  auto g = SecAggGraph::Create(10, 4, kSeed).value();
  EXPECT_TRUE(g.Neighbours(0).empty());
  EXPECT_TRUE(g.Neighbours(11).empty());
  EXPECT_FALSE(g.AreNeighbours(3, 3));
}

}  // namespace
}  // namespace flotilla::aggregation
