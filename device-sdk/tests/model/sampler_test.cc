#include "flotilla/model/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>
#include <vector>

namespace flotilla::model {
namespace {

std::unique_ptr<Sampler> Make(SamplerParams p, int64_t vocab) {
  Result<std::unique_ptr<Sampler>> s = Sampler::Create(p, vocab);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return std::move(*s);
}

SamplerParams Plain(float temperature, uint64_t seed = 1) {
  SamplerParams p;
  p.temperature = temperature;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.seed = seed;
  return p;
}

std::vector<float> RampLogits(int n) {
  std::vector<float> l(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) l[static_cast<size_t>(i)] = 0.05f * static_cast<float>((i * 37) % n);
  return l;
}

TEST(SamplerTest, GreedyPicksTheArgmaxAndTheLowestIdOnTies) {
  auto s = Make(Plain(0.0f), 5);
  EXPECT_TRUE(s->greedy());
  const std::vector<float> l = {0.1f, 3.0f, -1.0f, 3.0f, 2.9f};
  EXPECT_EQ(s->Sample(l), 1);
  EXPECT_EQ(s->Sample(l), 1);
}

TEST(SamplerTest, SameSeedSameTokensDifferentSeedDifferentTokens) {
  const std::vector<float> l = RampLogits(200);
  auto draw = [&](uint64_t seed) {
    auto s = Make(Plain(1.5f, seed), 200);
    std::vector<int32_t> out;
    for (int i = 0; i < 64; ++i) out.push_back(s->Sample(l));
    return out;
  };
  EXPECT_EQ(draw(42), draw(42));
  EXPECT_NE(draw(42), draw(43));
  // Reset replays the sequence.
  auto s = Make(Plain(1.5f, 9), 200);
  std::vector<int32_t> a, b;
  for (int i = 0; i < 16; ++i) a.push_back(s->Sample(l));
  s->Reset();
  for (int i = 0; i < 16; ++i) b.push_back(s->Sample(l));
  EXPECT_EQ(a, b);
}

TEST(SamplerTest, UnseededSamplersGetDifferentSeeds) {
  SamplerParams p = Plain(1.0f);
  p.seed.reset();
  EXPECT_NE(Make(p, 10)->seed(), Make(p, 10)->seed());
}

TEST(SamplerTest, TopKOneEqualsGreedyAtAnyTemperature) {
  const std::vector<float> l = RampLogits(300);
  auto greedy = Make(Plain(0.0f), 300);
  SamplerParams p = Plain(5.0f, 3);
  p.top_k = 1;
  auto k1 = Make(p, 300);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(k1->Sample(l), greedy->Sample(l));
}

TEST(SamplerTest, TopKOnlyDrawsTheKBest) {
  const std::vector<float> l = {1.0f, 5.0f, 4.0f, 0.0f, 4.5f, -2.0f};
  SamplerParams p = Plain(10.0f, 5);  // hot: without top-k every token would appear
  p.top_k = 3;
  auto s = Make(p, 6);
  std::set<int32_t> seen;
  for (int i = 0; i < 2000; ++i) seen.insert(s->Sample(l));
  EXPECT_EQ(seen, (std::set<int32_t>{1, 2, 4}));
}

TEST(SamplerTest, TopPKeepsTheSmallestPrefixReachingP) {
  // Probabilities 0.5, 0.3, 0.2 (logits are their logs).
  const std::vector<float> l = {std::log(0.2f), std::log(0.5f), std::log(0.3f)};
  auto run = [&](float top_p) {
    SamplerParams p = Plain(1.0f, 11);
    p.top_p = top_p;
    auto s = Make(p, 3);
    std::set<int32_t> seen;
    for (int i = 0; i < 3000; ++i) seen.insert(s->Sample(l));
    return seen;
  };
  EXPECT_EQ(run(0.45f), (std::set<int32_t>{1}));
  EXPECT_EQ(run(0.7f), (std::set<int32_t>{1, 2}));
  EXPECT_EQ(run(0.99f), (std::set<int32_t>{0, 1, 2}));
}

TEST(SamplerTest, TemperatureSamplingFollowsTheSoftmax) {
  const std::vector<float> l = {0.0f, 1.0f, 2.0f};
  const float t = 0.7f;
  auto s = Make(Plain(t, 17), 3);
  std::map<int32_t, int> count;
  const int n = 30000;
  for (int i = 0; i < n; ++i) ++count[s->Sample(l)];
  double z = 0;
  for (float v : l) z += std::exp(static_cast<double>(v / t));
  for (int i = 0; i < 3; ++i) {
    const double want = std::exp(static_cast<double>(l[static_cast<size_t>(i)] / t)) / z;
    // 5 sigma of a binomial proportion at n = 30000 is < 0.015.
    EXPECT_NEAR(static_cast<double>(count[i]) / n, want, 0.015) << "token " << i;
  }
}

TEST(SamplerTest, RepetitionPenaltyDemotesRecentTokensWithinTheWindow) {
  SamplerParams p = Plain(0.0f);
  p.repeat_penalty = 1.5f;
  p.repeat_last_n = 2;
  auto s = Make(p, 4);
  const std::vector<float> l = {2.0f, 1.9f, -0.5f, -0.6f};
  EXPECT_EQ(s->Sample(l), 0);
  s->Accept(0);  // 2.0 / 1.5 = 1.33 < 1.9
  EXPECT_EQ(s->Sample(l), 1);
  s->Accept(0);  // repeated in the window: still one penalty, not two
  s->Accept(1);  // window now {0, 1}: 1.33 vs 1.27
  EXPECT_EQ(s->Sample(l), 0);
  s->Accept(3);
  s->Accept(3);  // window {3, 3}: 0 and 1 are out again
  EXPECT_EQ(s->Sample(l), 0);
  // Negative logits are multiplied (moved down): 2 beats a penalized 3 by more.
  SamplerParams q = Plain(0.0f);
  q.repeat_penalty = 2.0f;
  auto neg = Make(q, 2);
  const std::vector<float> m = {-1.0f, -0.9f};
  neg->Accept(1);  // -0.9 * 2 = -1.8
  EXPECT_EQ(neg->Sample(m), 0);
}

TEST(SamplerTest, RejectsBadParameters) {
  SamplerParams p;
  EXPECT_EQ(Sampler::Create(p, 0).status().code(), StatusCode::kInvalidArgument);
  p.temperature = -1.0f;
  EXPECT_EQ(Sampler::Create(p, 10).status().code(), StatusCode::kInvalidArgument);
  p = {};
  p.temperature = NAN;
  EXPECT_EQ(Sampler::Create(p, 10).status().code(), StatusCode::kInvalidArgument);
  p = {};
  p.top_p = 0.0f;
  EXPECT_EQ(Sampler::Create(p, 10).status().code(), StatusCode::kInvalidArgument);
  p = {};
  p.repeat_penalty = 0.0f;
  EXPECT_EQ(Sampler::Create(p, 10).status().code(), StatusCode::kInvalidArgument);
  p = {};
  p.repeat_last_n = -1;
  EXPECT_EQ(Sampler::Create(p, 10).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace flotilla::model
