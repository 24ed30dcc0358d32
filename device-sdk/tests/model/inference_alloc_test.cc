// Decoding a token must not allocate: the session preallocates every buffer. Counts
// global operator new calls on the calling thread (the replacement below applies to the
// whole test binary; it only counts).
#include <gtest/gtest.h>

#include <cstdlib>
#include <new>

#include "flotilla/model/inference.h"
#include "inference_test_util.h"

namespace {
thread_local long t_news = 0;
}  // namespace

// new and delete are replaced together (malloc/free), so they always match; GCC cannot
// see that across the replacement.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t n) {
  ++t_news;
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#pragma GCC diagnostic pop

namespace flotilla::model {
namespace {

TEST(InferenceAllocTest, DecodeAndSamplingAllocateNothing) {
  for (const char* recipe : {"q8_0", "q4_k-mixed"}) {
    Result<std::unique_ptr<LlamaModel>> m = LlamaModel::Open(testing::ModelPath("train", recipe));
    ASSERT_TRUE(m.ok());
    InferenceOptions o;
    o.n_threads = 2;
    Result<std::unique_ptr<InferenceSession>> s = InferenceSession::Create(**m, o);
    ASSERT_TRUE(s.ok());
    SamplerParams sp;
    sp.seed = 1;
    sp.repeat_penalty = 1.1f;
    Result<std::unique_ptr<Sampler>> sampler = Sampler::Create(sp, 512);
    ASSERT_TRUE(sampler.ok());
    const std::vector<int32_t> prompt = testing::TestTokens(512, 40, 3);
    ASSERT_TRUE((*s)->Eval(prompt).ok());  // prefill (40 tokens, all buffers at full size)
    int32_t t = 5;
    const long before = t_news;
    for (int i = 0; i < 20; ++i) {
      t = (*sampler)->Sample((*s)->logits());
      (*sampler)->Accept(t);
      ASSERT_TRUE((*s)->Eval(std::span(&t, 1)).ok());
    }
    EXPECT_EQ(t_news - before, 0) << recipe;
    // A second prefill of the same size does not allocate either.
    (*s)->Reset();
    const long before_prefill = t_news;
    ASSERT_TRUE((*s)->Eval(prompt).ok());
    EXPECT_EQ(t_news - before_prefill, 0) << recipe;
  }
}

}  // namespace
}  // namespace flotilla::model
