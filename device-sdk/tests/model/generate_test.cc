// Generation end to end on small random models: determinism, seeds, stop conditions.
#include <gtest/gtest.h>

#include "flotilla/model/inference.h"
#include "inference_test_util.h"

namespace flotilla::model {
namespace {

using testing::ModelPath;
using testing::TestTokens;

struct Fixture {
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<InferenceSession> session;
};

Fixture Open(const std::string& config, const std::string& recipe, InferenceOptions o = {}) {
  Fixture f;
  Result<std::unique_ptr<LlamaModel>> m = LlamaModel::Open(ModelPath(config, recipe));
  FLT_CHECK_OK(m.status());
  f.model = std::move(*m);
  Result<std::unique_ptr<InferenceSession>> s = InferenceSession::Create(*f.model, o);
  FLT_CHECK_OK(s.status());
  f.session = std::move(*s);
  return f;
}

std::unique_ptr<Sampler> MakeSampler(const LlamaModel& m, SamplerParams p) {
  Result<std::unique_ptr<Sampler>> s = Sampler::Create(p, m.config().vocab_size);
  FLT_CHECK_OK(s.status());
  return std::move(*s);
}

SamplerParams Greedy() {
  SamplerParams p;
  p.temperature = 0.0f;
  return p;
}

// Random models have very peaked logits (tied random embeddings give logits with a
// standard deviation of ~10), so sample hot to make every draw matter.
SamplerParams Random(uint64_t seed) {
  SamplerParams p;
  p.temperature = 10.0f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.seed = seed;
  return p;
}

std::vector<int32_t> GenerateTokens(Fixture& f, SamplerParams p, const std::vector<int32_t>& prompt, int64_t n,
                         GenerateOptions go = {}) {
  f.session->Reset();
  auto sampler = MakeSampler(*f.model, p);
  go.max_tokens = n;
  go.stop_at_eos = false;
  Result<GenerateResult> r = Generate(*f.session, *sampler, prompt, go);
  FLT_CHECK_OK(r.status());
  return r->tokens;
}

TEST(GenerateTest, GreedyIsDeterministicAndEqualsArgmaxDecoding) {
  Fixture f = Open("train", "q4_0");
  const std::vector<int32_t> prompt = TestTokens(512, 6, 1);
  const std::vector<int32_t> a = GenerateTokens(f, Greedy(), prompt, 24);
  EXPECT_EQ(a.size(), 24u);
  EXPECT_EQ(GenerateTokens(f, Greedy(), prompt, 24), a);
  // Same thing by hand: argmax of the logits, one Eval per token, on a 1-thread session.
  InferenceOptions o;
  o.n_threads = 1;
  Fixture g = Open("train", "q4_0", o);
  ASSERT_TRUE(g.session->Eval(prompt).ok());
  for (size_t i = 0; i < a.size(); ++i) {
    const auto l = g.session->logits();
    const auto best = static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
    ASSERT_EQ(best, a[i]) << "token " << i;
    ASSERT_TRUE(g.session->Eval(std::span(&a[i], 1)).ok());
  }
  EXPECT_EQ(f.session->n_past(), static_cast<int64_t>(prompt.size() + a.size()));
}

TEST(GenerateTest, SeedFixesSampledTokens) {
  Fixture f = Open("train", "q8_0");
  const std::vector<int32_t> prompt = TestTokens(512, 4, 2);
  const std::vector<int32_t> a = GenerateTokens(f, Random(7), prompt, 20);
  EXPECT_EQ(GenerateTokens(f, Random(7), prompt, 20), a);
  EXPECT_NE(GenerateTokens(f, Random(8), prompt, 20), a);
}

TEST(GenerateTest, TopKOneEqualsGreedy) {
  Fixture f = Open("tiny", "q8_0");
  const std::vector<int32_t> prompt = TestTokens(259, 5, 3);
  SamplerParams p = Random(99);
  p.top_k = 1;
  p.temperature = 2.0f;
  EXPECT_EQ(GenerateTokens(f, p, prompt, 16), GenerateTokens(f, Greedy(), prompt, 16));
}

TEST(GenerateTest, StopsAtStopTokensAndWhenTheCallbackSaysSo) {
  Fixture f = Open("tiny", "q4_0");
  const std::vector<int32_t> prompt = TestTokens(259, 5, 4);
  const std::vector<int32_t> free_run = GenerateTokens(f, Greedy(), prompt, 12);

  // The 4th greedy token as a user stop token: three tokens come out, the stop is not
  // evaluated. (If it appeared earlier, generation stops there.)
  const int32_t stop = free_run[3];
  const auto first = static_cast<size_t>(std::find(free_run.begin(), free_run.end(), stop) - free_run.begin());
  f.session->Reset();
  auto sampler = MakeSampler(*f.model, Greedy());
  GenerateOptions go;
  go.max_tokens = 12;
  go.stop_tokens = {stop};
  Result<GenerateResult> r = Generate(*f.session, *sampler, prompt, go);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->stop_reason, StopReason::kStopToken);
  EXPECT_EQ(r->stop_token, stop);
  EXPECT_EQ(r->tokens, std::vector<int32_t>(free_run.begin(), free_run.begin() + static_cast<long>(first)));
  EXPECT_EQ(f.session->n_past(), static_cast<int64_t>(prompt.size() + first));

  // The callback sees each token with its text and can stop.
  f.session->Reset();
  sampler->Reset();
  std::vector<int32_t> seen;
  std::string text;
  go.stop_tokens.clear();
  r = Generate(*f.session, *sampler, prompt, go, [&](int32_t t, std::string_view piece) {
    seen.push_back(t);
    text += piece;
    return seen.size() < 5;
  });
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->stop_reason, StopReason::kCallback);
  EXPECT_EQ(r->tokens, std::vector<int32_t>(free_run.begin(), free_run.begin() + 5));
  EXPECT_EQ(seen, r->tokens);
  EXPECT_EQ(text, f.model->tokenizer().Decode(r->tokens));
}

TEST(GenerateTest, EndsCleanlyWhenTheContextFillsAndRefusesOversizedPrompts) {
  InferenceOptions o;
  o.n_ctx = 12;
  Fixture f = Open("tiny", "f32", o);
  auto sampler = MakeSampler(*f.model, Greedy());
  GenerateOptions go;
  go.max_tokens = 100;
  go.stop_at_eos = false;
  Result<GenerateResult> r = Generate(*f.session, *sampler, TestTokens(259, 8, 5), go);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->stop_reason, StopReason::kContextFull);
  EXPECT_EQ(r->tokens.size(), 5u);  // 4 evaluated to fill 12 positions, the 5th sampled last
  EXPECT_EQ(f.session->n_past(), 12);

  f.session->Reset();
  r = Generate(*f.session, *sampler, TestTokens(259, 13, 5), go);
  EXPECT_EQ(r.status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(Generate(*f.session, *sampler, {}, go).status().code(), StatusCode::kInvalidArgument);
}

TEST(GenerateTest, TextPromptRoundTripsThroughTheTokenizer) {
  Fixture f = Open("tiny", "q8_0");
  const Tokenizer& tok = f.model->tokenizer();
  const std::vector<int32_t> prompt = tok.Encode("Hello, device!", true);
  ASSERT_EQ(prompt.front(), tok.bos_id());
  auto sampler = MakeSampler(*f.model, Random(5));
  GenerateOptions go;
  go.max_tokens = 8;
  go.stop_at_eos = false;
  Result<GenerateResult> r = Generate(*f.session, *sampler, prompt, go);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->prompt_tokens, static_cast<int64_t>(prompt.size()));
  EXPECT_EQ(r->tokens.size(), 8u);
  EXPECT_GT(r->prefill_seconds, 0.0);
}

}  // namespace
}  // namespace flotilla::model
