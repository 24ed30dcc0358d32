#include "flotilla/model/inference.h"

#include <gtest/gtest.h>

#include <cstring>

#include "inference_test_util.h"

namespace flotilla::model {
namespace {

using testing::DVec;
using testing::ModelPath;
using testing::RefForward;
using testing::RelativeError;
using testing::TestTokens;

std::unique_ptr<LlamaModel> Load(const std::filesystem::path& p) {
  Result<std::unique_ptr<LlamaModel>> m = LlamaModel::Open(p);
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  return m.ok() ? std::move(*m) : nullptr;
}

std::unique_ptr<InferenceSession> Session(const LlamaModel& m, InferenceOptions o = {}) {
  Result<std::unique_ptr<InferenceSession>> s = InferenceSession::Create(m, o);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? std::move(*s) : nullptr;
}

std::vector<float> Copy(std::span<const float> v) { return {v.begin(), v.end()}; }

// ---- Forward pass vs the independent reference ----------------------------------------

struct RefCase {
  std::string config;
  std::string recipe;
  size_t n_tokens;
  // Bound on max|logit - ref| / rms(ref logits). F32/F16/BF16 weights differ from the
  // reference only by float rounding (the weights are identical after dequantization);
  // quantized weights also see the 8-bit activation quantization (Q8_0 / Q8_K blocks,
  // ~0.5% RMS error per element), compounded over the layers. Measured on x86 (max over
  // every position and vocabulary entry): F32/F16/BF16 ~1e-6, Q8_0/Q4_0/Q4_K mixes
  // 0.020-0.041; the bounds leave ~1.5x headroom for other CPU paths and seeds.
  double tolerance;
};

std::string CaseName(const ::testing::TestParamInfo<RefCase>& info) {
  std::string s = info.param.config + "_" + info.param.recipe;
  for (char& c : s) {
    if (c == '-') c = '_';
  }
  return s;
}

class ForwardReferenceTest : public ::testing::TestWithParam<RefCase> {};

TEST_P(ForwardReferenceTest, LogitsMatchPlainReference) {
  const RefCase& rc = GetParam();
  auto model = Load(ModelPath(rc.config, rc.recipe));
  ASSERT_NE(model, nullptr);
  const testing::RefModel ref = testing::LoadRef(model->file());
  const std::vector<int32_t> tokens = TestTokens(model->config().vocab_size, rc.n_tokens, 11);
  const std::vector<DVec> want = RefForward(ref, tokens);

  InferenceOptions o;
  o.all_logits = true;
  o.n_threads = 2;
  auto s = Session(*model, o);
  ASSERT_NE(s, nullptr);
  ASSERT_TRUE(s->Eval(tokens).ok());
  double worst = 0;
  for (size_t i = 0; i < tokens.size(); ++i) {
    worst = std::max(worst, RelativeError(s->logits(static_cast<int64_t>(i)), want[i]));
  }
  RecordProperty("max_relative_error", std::to_string(worst));
  EXPECT_LE(worst, rc.tolerance) << rc.config << " " << rc.recipe;
  std::printf("%s %s max relative logit error %.3g\n", rc.config.c_str(), rc.recipe.c_str(), worst);
  // The last-token view agrees with the all-logits row.
  EXPECT_EQ(0, std::memcmp(s->logits().data(), s->logits(static_cast<int64_t>(tokens.size()) - 1).data(),
                           s->logits().size_bytes()));
}

INSTANTIATE_TEST_SUITE_P(
    NamedConfigs, ForwardReferenceTest,
    ::testing::Values(RefCase{"tiny", "f32", 12, 1e-4}, RefCase{"tiny", "f16", 12, 1e-4},
                      RefCase{"tiny", "bf16", 12, 1e-4}, RefCase{"tiny", "q8_0", 12, 0.06},
                      RefCase{"tiny", "q4_0", 12, 0.06}, RefCase{"tiny", "q4_k-mixed", 12, 0.06},
                      RefCase{"train", "f32", 8, 1e-4}, RefCase{"train", "q8_0", 8, 0.06},
                      RefCase{"train", "q4_0", 8, 0.06}, RefCase{"train", "q4_k-mixed", 8, 0.06},
                      RefCase{"15m", "q8_0", 4, 0.06}, RefCase{"15m", "q4_0", 4, 0.06}),
    CaseName);

TEST(ForwardTest, UntiedOutputMatchesReference) {
  auto model = Load(ModelPath("tiny", "q8_0", 7, /*tied=*/false));
  ASSERT_NE(model, nullptr);
  ASSERT_FALSE(model->config().tied_output);
  EXPECT_NE(model->output().data, model->token_embedding().data);
  const testing::RefModel ref = testing::LoadRef(model->file());
  const std::vector<int32_t> tokens = TestTokens(259, 6, 3);
  const std::vector<DVec> want = RefForward(ref, tokens);
  auto s = Session(*model);
  ASSERT_TRUE(s->Eval(tokens).ok());
  EXPECT_LE(RelativeError(s->logits(), want.back()), 0.06);
}

// ---- Prefill vs decode, threads, chunking ------------------------------------------------

class PrefillDecodeTest : public ::testing::TestWithParam<std::string> {};

TEST_P(PrefillDecodeTest, PrefillEqualsTokenByTokenDecodeBitForBit) {
  auto model = Load(ModelPath("train", GetParam()));
  ASSERT_NE(model, nullptr);
  const std::vector<int32_t> tokens = TestTokens(model->config().vocab_size, 40, 5);

  InferenceOptions batched;
  batched.all_logits = true;
  batched.n_threads = 2;
  auto a = Session(*model, batched);
  ASSERT_TRUE(a->Eval(tokens).ok());

  InferenceOptions single;
  single.n_threads = 1;
  auto b = Session(*model, single);
  // Chunked prefill (n_batch 16 < 40 tokens) must agree too.
  InferenceOptions chunked = batched;
  chunked.n_batch = 16;
  auto c = Session(*model, chunked);
  ASSERT_TRUE(c->Eval(tokens).ok());
  for (size_t i = 0; i < tokens.size(); ++i) {
    ASSERT_TRUE(b->Eval(std::span(&tokens[i], 1)).ok());
    const auto want = a->logits(static_cast<int64_t>(i));
    ASSERT_EQ(0, std::memcmp(b->logits().data(), want.data(), want.size_bytes())) << "token " << i;
    ASSERT_EQ(0, std::memcmp(c->logits(static_cast<int64_t>(i)).data(), want.data(), want.size_bytes()))
        << "token " << i;
  }
  EXPECT_EQ(a->n_past(), 40);
  EXPECT_EQ(b->n_past(), 40);
}

INSTANTIATE_TEST_SUITE_P(WeightTypes, PrefillDecodeTest, ::testing::Values("f32", "q8_0", "q4_0", "q4_k-mixed"));

TEST(ForwardTest, EveryCpuPathAgreesWithScalar) {
  auto model = Load(ModelPath("train", "q4_k-mixed"));
  const std::vector<int32_t> tokens = TestTokens(model->config().vocab_size, 10, 9);
  InferenceOptions o;
  o.cpu_path = CpuPath::kScalar;
  auto scalar = Session(*model, o);
  ASSERT_TRUE(scalar->Eval(tokens).ok());
  const std::vector<float> want = Copy(scalar->logits());
  double ss = 0;
  for (float v : want) ss += static_cast<double>(v) * static_cast<double>(v);
  const double rms = std::sqrt(ss / static_cast<double>(want.size()));
  for (CpuPath p : SupportedCpuPaths()) {
    o.cpu_path = p;
    auto s = Session(*model, o);
    ASSERT_EQ(s->cpu_path(), p);
    ASSERT_TRUE(s->Eval(tokens).ok());
    double worst = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      worst = std::max(worst, std::abs(static_cast<double>(s->logits()[i]) - static_cast<double>(want[i])));
    }
    // Paths differ only by float summation order (kernels.h).
    EXPECT_LE(worst / rms, 1e-3) << ToString(p);
  }
}

TEST(ForwardTest, TruncateRollsBackTheCache) {
  auto model = Load(ModelPath("tiny", "q4_0"));
  auto s = Session(*model);
  const std::vector<int32_t> a = TestTokens(259, 10, 1), b = TestTokens(259, 5, 2);
  ASSERT_TRUE(s->Eval(std::span(a).first(6)).ok());
  ASSERT_TRUE(s->Eval(std::span(b)).ok());
  const std::vector<float> with_b = Copy(s->logits());
  ASSERT_TRUE(s->Truncate(6).ok());
  ASSERT_TRUE(s->Eval(std::span(a).subspan(6)).ok());
  ASSERT_TRUE(s->Truncate(6).ok());
  ASSERT_TRUE(s->Eval(std::span(b)).ok());
  EXPECT_EQ(Copy(s->logits()), with_b);
  EXPECT_EQ(s->Truncate(12).code(), StatusCode::kInvalidArgument);
  s->Reset();
  EXPECT_EQ(s->n_past(), 0);
}

// ---- Errors ------------------------------------------------------------------------------

TEST(ForwardTest, ContextOverflowIsAClearErrorAndLeavesTheSessionUsable) {
  auto model = Load(ModelPath("tiny", "q8_0"));
  InferenceOptions o;
  o.n_ctx = 16;
  auto s = Session(*model, o);
  const std::vector<int32_t> t = TestTokens(259, 17, 4);
  Status st = s->Eval(t);
  EXPECT_EQ(st.code(), StatusCode::kOutOfRange);
  EXPECT_NE(st.message().find("context full"), std::string::npos) << st.message();
  EXPECT_EQ(s->n_past(), 0);
  ASSERT_TRUE(s->Eval(std::span(t).first(16)).ok());
  st = s->Eval(std::span(t).last(1));
  EXPECT_EQ(st.code(), StatusCode::kOutOfRange);
  EXPECT_EQ(s->n_past(), 16);
  // The model's own limit: tiny has context_length 64.
  auto full = Session(*model);
  EXPECT_EQ(full->n_ctx(), 64);
  EXPECT_EQ(full->Eval(TestTokens(259, 65, 4)).code(), StatusCode::kOutOfRange);
}

TEST(ForwardTest, RejectsBadTokensAndOptions) {
  auto model = Load(ModelPath("tiny", "f32"));
  auto s = Session(*model);
  const int32_t bad[] = {5, 259};
  Status st = s->Eval(bad);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("index 1"), std::string::npos) << st.message();
  const int32_t negative[] = {-1};
  EXPECT_EQ(s->Eval(negative).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s->Eval({}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s->n_past(), 0);

  InferenceOptions o;
  o.n_ctx = 65;
  EXPECT_EQ(InferenceSession::Create(*model, o).status().code(), StatusCode::kInvalidArgument);
  o = {};
  o.n_threads = -2;
  EXPECT_EQ(InferenceSession::Create(*model, o).status().code(), StatusCode::kInvalidArgument);
}

// ---- Hooks for LoRA and training ---------------------------------------------------------

// y += scale * B(A x) on Q and down, the LoRA form, done naively.
class TestLora : public ProjectionAdapter {
 public:
  TestLora(const ModelConfig& c, int64_t rank, float scale) : c_(c), rank_(rank), scale_(scale) {
    SplitMix64 rng(99);
    for (int p = 0; p < 2; ++p) {
      const int64_t in = p == 0 ? c.dim : c.ffn_dim;
      a_[p].resize(static_cast<size_t>(rank * in));
      b_[p].resize(static_cast<size_t>(c.dim * rank));
      for (double& v : a_[p]) v = 0.2 * static_cast<double>(rng.NextSymmetric());
      for (double& v : b_[p]) v = 0.2 * static_cast<double>(rng.NextSymmetric());
    }
  }
  void Apply(int64_t, Projection p, const float* x, int64_t n, int64_t in_dim, float* y, int64_t ldy, int64_t out_dim,
             const ComputeContext&) override {
    if (p != Projection::kQ && p != Projection::kDown) return;
    const auto& a = a_[p == Projection::kQ ? 0 : 1];
    const auto& b = b_[p == Projection::kQ ? 0 : 1];
    for (int64_t t = 0; t < n; ++t) {
      std::vector<double> ax(static_cast<size_t>(rank_), 0.0);
      for (int64_t r = 0; r < rank_; ++r) {
        for (int64_t i = 0; i < in_dim; ++i) ax[static_cast<size_t>(r)] += a[static_cast<size_t>(r * in_dim + i)] * static_cast<double>(x[t * in_dim + i]);
      }
      for (int64_t o = 0; o < out_dim; ++o) {
        double s = 0;
        for (int64_t r = 0; r < rank_; ++r) s += b[static_cast<size_t>(o * rank_ + r)] * ax[static_cast<size_t>(r)];
        y[t * ldy + o] += static_cast<float>(scale_ * s);
      }
    }
  }
  // The same term for the reference (which = 0 for Q, 6 for down).
  void Ref(int which, const DVec& x, DVec& y) const {
    if (which != 0 && which != 6) return;
    const auto& a = a_[which == 0 ? 0 : 1];
    const auto& b = b_[which == 0 ? 0 : 1];
    const auto in_dim = static_cast<int64_t>(x.size());
    std::vector<double> ax(static_cast<size_t>(rank_), 0.0);
    for (int64_t r = 0; r < rank_; ++r) {
      for (int64_t i = 0; i < in_dim; ++i) ax[static_cast<size_t>(r)] += a[static_cast<size_t>(r * in_dim + i)] * x[static_cast<size_t>(i)];
    }
    for (size_t o = 0; o < y.size(); ++o) {
      double s = 0;
      for (int64_t r = 0; r < rank_; ++r) s += b[o * static_cast<size_t>(rank_) + static_cast<size_t>(r)] * ax[static_cast<size_t>(r)];
      y[o] += scale_ * s;
    }
  }

 private:
  ModelConfig c_;
  int64_t rank_;
  double scale_;
  std::vector<double> a_[2], b_[2];
};

TEST(ForwardTest, ProjectionAdapterAddsToProjectionsLikeLora) {
  auto model = Load(ModelPath("tiny", "f32"));
  TestLora lora(model->config(), 4, 0.5f);
  const std::vector<int32_t> tokens = TestTokens(259, 8, 21);
  const testing::RefModel ref = testing::LoadRef(model->file());
  const std::vector<DVec> want =
      RefForward(ref, tokens, [&](int64_t, int which, const DVec& x, DVec& y) { lora.Ref(which, x, y); });
  const std::vector<DVec> base = RefForward(ref, tokens);
  auto s = Session(*model);
  s->set_adapter(&lora);
  ASSERT_TRUE(s->Eval(tokens).ok());
  EXPECT_LE(RelativeError(s->logits(), want.back()), 1e-4);
  EXPECT_GT(RelativeError(s->logits(), base.back()), 1e-2);  // the adapter mattered
}

TEST(ForwardTest, ObserverSeesEveryLayerWithConsistentBuffers) {
  auto model = Load(ModelPath("tiny", "q8_0"));
  struct Recorder : ForwardObserver {
    std::vector<std::vector<float>> x_in, x_out;
    std::vector<int64_t> layers;
    void OnLayer(const LayerActivations& a) override {
      const auto n = static_cast<size_t>(a.n_tokens * 64);
      layers.push_back(a.layer);
      x_in.emplace_back(a.x_in, a.x_in + n);
      x_out.emplace_back(a.x_out, a.x_out + n);
      // swiglu(gate, up) == ffn_act for the first element
      const float g = a.gate[0];
      EXPECT_NEAR(a.ffn_act[0], g / (1.0f + std::exp(-g)) * a.up[0], 1e-4f);
    }
  } rec;
  auto s = Session(*model);
  s->set_observer(&rec);
  ASSERT_TRUE(s->Eval(TestTokens(259, 5, 8)).ok());
  ASSERT_EQ(rec.layers, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(rec.x_out[0], rec.x_in[1]);
}

}  // namespace
}  // namespace flotilla::model
