#include "flotilla/model/lora.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>

#include "flotilla/core/bytes.h"
#include "flotilla/core/testing/seeded_random.h"
#include "flotilla/model/inference.h"
#include "flotilla/model/llama_model.h"
#include "inference_test_util.h"
#include "lora_test_util.h"

namespace flotilla::model {
namespace {

using testing::DVec;
using testing::ModelPath;
using testing::RelativeError;
using testing::TestTokens;

ModelConfig TinyConfig() {
  Result<ModelConfig> c = NamedConfig("tiny");
  FLT_CHECK_OK(c.status());
  return *c;
}

std::unique_ptr<LlamaModel> Load(const std::filesystem::path& p) {
  Result<std::unique_ptr<LlamaModel>> m = LlamaModel::Open(p);
  FLT_CHECK_OK(m.status());
  return std::move(*m);
}

std::unique_ptr<InferenceSession> Session(const LlamaModel& m, int threads = 2) {
  InferenceOptions o;
  o.n_threads = threads;
  o.all_logits = true;
  Result<std::unique_ptr<InferenceSession>> s = InferenceSession::Create(m, o);
  FLT_CHECK_OK(s.status());
  return std::move(*s);
}

// A frozen-A adapter whose B holds seeded values in [-amp, amp).
LoraAdapter RandomAdapter(const ModelConfig& mc, const LoraConfig& lc, uint64_t b_seed, float amp) {
  Result<LoraAdapter> a = LoraAdapter::Create(mc, lc);
  FLT_CHECK_OK(a.status());
  ::flotilla::model::testing::FillRandomB(*a, b_seed, amp);
  return std::move(*a);
}

LoraConfig AllTargets(int64_t rank, float alpha, uint64_t seed) {
  LoraConfig c;
  c.rank = rank;
  c.alpha = alpha;
  c.targets = {Projection::kQ, Projection::kK, Projection::kV, Projection::kO,
               Projection::kGate, Projection::kUp, Projection::kDown};
  c.a_seed = seed;
  return c;
}

// Plain double y += s * B (A x) for one matrix.
void RefLoraTerm(const LoraMatrix& m, double s, const DVec& x, DVec& y) {
  DVec ax(static_cast<size_t>(m.rank), 0.0);
  for (int64_t r = 0; r < m.rank; ++r) {
    for (int64_t i = 0; i < m.in_dim; ++i) {
      ax[static_cast<size_t>(r)] += static_cast<double>(m.a[static_cast<size_t>(r * m.in_dim + i)]) * x[static_cast<size_t>(i)];
    }
  }
  for (int64_t o = 0; o < m.out_dim; ++o) {
    double acc = 0;
    for (int64_t r = 0; r < m.rank; ++r) acc += static_cast<double>(m.b[static_cast<size_t>(o * m.rank + r)]) * ax[static_cast<size_t>(r)];
    y[static_cast<size_t>(o)] += s * acc;
  }
}

// ---- ChaCha20 and the frozen-A stream ---------------------------------------------------

TEST(ChaCha20Test, MatchesRfc8439BlockFunctionVector) {
  // RFC 8439 §2.3.2.
  std::array<uint8_t, 32> key;
  for (size_t i = 0; i < key.size(); ++i) key[i] = static_cast<uint8_t>(i);
  const std::array<uint8_t, 12> nonce = {0, 0, 0, 0x09, 0, 0, 0, 0x4a, 0, 0, 0, 0};
  std::array<uint8_t, 64> out;
  ChaCha20Block(key, 1, nonce, out);
  EXPECT_EQ(ToHex(out),
            "10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e"
            "d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e");
}

TEST(ChaCha20Test, MatchesRfc8439KeystreamVectorWithZeroKeyAndCounter) {
  // RFC 8439 A.1 test vector #1 (counter 0, as the frozen-A stream starts).
  const std::array<uint8_t, 32> key{};
  const std::array<uint8_t, 12> nonce{};
  std::array<uint8_t, 64> out;
  ChaCha20Block(key, 0, nonce, out);
  EXPECT_EQ(ToHex(out),
            "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"
            "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586");
}

struct Golden {
  size_t index;
  float value;
};

// Values computed independently with the `cryptography` package's ChaCha20 (Python) and
// the mapping of lora.h. A platform whose math or byte order differs fails here (this
// test also runs on aarch64 under qemu).
TEST(FrozenATest, MatchesGoldenValues) {
  struct Case {
    uint64_t seed;
    int64_t layer;
    Projection proj;
    int64_t rank, in_dim;
    std::vector<Golden> want;
  };
  const std::vector<Case> cases = {
      {0, 0, Projection::kQ, 8, 64,
       {{0, 0x1.aa236p-4f}, {1, 0x1.fb7d6p-5f}, {2, -0x1.5fadd8p-4f}, {15, 0x1.9a5054p-4f},
        {16, -0x1.8046ep-7f}, {17, 0x1.b64bdcp-4f}, {511, 0x1.76e37p-4f}}},
      {0x0123456789abcdefULL, 3, Projection::kDown, 4, 128,
       {{0, -0x1.18e38p-5f}, {100, 0x1.74712p-6f}, {511, 0x1.e61ff6p-12f}}},
      {42, 1, Projection::kO, 8, 288,
       {{0, 0x1.6095f8p-5f}, {287, -0x1.55c5c6p-6f}, {288, 0x1.7f43fep-5f}, {2303, 0x1.9141cep-5f}}},
  };
  for (const Case& c : cases) {
    std::vector<float> a(static_cast<size_t>(c.rank * c.in_dim));
    GenerateFrozenA(c.seed, c.layer, c.proj, c.rank, c.in_dim, a);
    for (const Golden& g : c.want) {
      EXPECT_EQ(std::bit_cast<uint32_t>(a[g.index]), std::bit_cast<uint32_t>(g.value))
          << "seed " << c.seed << " layer " << c.layer << " index " << g.index << ": " << a[g.index];
    }
  }
}

TEST(FrozenATest, StreamsDifferPerSeedLayerAndProjectionAndStayInBounds) {
  const int64_t rank = 8, in = 64;
  std::vector<float> base(rank * in), other(rank * in);
  GenerateFrozenA(5, 1, Projection::kV, rank, in, base);
  GenerateFrozenA(6, 1, Projection::kV, rank, in, other);
  EXPECT_NE(base, other);
  GenerateFrozenA(5, 2, Projection::kV, rank, in, other);
  EXPECT_NE(base, other);
  GenerateFrozenA(5, 1, Projection::kK, rank, in, other);
  EXPECT_NE(base, other);
  GenerateFrozenA(5, 1, Projection::kV, rank, in, other);
  EXPECT_EQ(base, other);
  // A shorter request is a prefix of the longer stream (row-major, counter from 0).
  std::vector<float> prefix(3 * in);
  GenerateFrozenA(5, 1, Projection::kV, 3, in, prefix);
  EXPECT_TRUE(std::equal(prefix.begin(), prefix.end(), base.begin()));

  std::vector<float> big(16 * 4096);
  GenerateFrozenA(9, 0, Projection::kQ, 16, 4096, big);
  const float bound = 1.0f / 64.0f;
  const double b = bound;
  double sum = 0, sq = 0;
  for (float v : big) {
    ASSERT_GE(v, -bound);
    ASSERT_LT(v, bound);
    const auto d = static_cast<double>(v);
    sum += d;
    sq += d * d;
  }
  const double n = static_cast<double>(big.size());
  EXPECT_NEAR(sum / n, 0.0, 4 * b / std::sqrt(3 * n));       // mean of U(-b, b), 4 sigma
  EXPECT_NEAR(sq / n, b * b / 3.0, 0.02 * b * b / 3.0);  // variance b²/3
}

// ---- Projections and config -------------------------------------------------------------

TEST(ProjectionsTest, ParsesListsAliasesAndCanonicalOrder) {
  Result<std::vector<Projection>> p = ParseProjections("v, q ,k,o");
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(FormatProjections(*p), "q,k,v,o");
  p = ParseProjections("attn");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(FormatProjections(*p), "q,k,v,o");
  p = ParseProjections("all");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(FormatProjections(*p), "q,k,v,o,gate,up,down");
  p = ParseProjections("down,gate,up");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(FormatProjections(*p), "gate,up,down");
}

TEST(ProjectionsTest, RejectsUnknownRepeatedAndEmptyNames) {
  for (const char* bad : {"", "q,,v", "q,", "x", "q,q", "attn,k", "Q", "all,down"}) {
    Result<std::vector<Projection>> p = ParseProjections(bad);
    ASSERT_FALSE(p.ok()) << bad;
    EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_NE(ParseProjections("q,zz").status().message().find("zz"), std::string::npos);
}

TEST(ProjectionsTest, NamesAndDimensionsFollowTheLlamaLayout) {
  const ModelConfig c = TinyConfig();  // dim 64, 4 heads / 2 kv heads, ffn 128
  EXPECT_EQ(ProjectionTensorName(3, Projection::kQ), "blk.3.attn_q.weight");
  EXPECT_EQ(ProjectionTensorName(0, Projection::kO), "blk.0.attn_output.weight");
  EXPECT_EQ(ProjectionTensorName(1, Projection::kDown), "blk.1.ffn_down.weight");
  EXPECT_EQ(ProjectionOutDim(c, Projection::kQ), 64);
  EXPECT_EQ(ProjectionOutDim(c, Projection::kK), 32);
  EXPECT_EQ(ProjectionOutDim(c, Projection::kV), 32);
  EXPECT_EQ(ProjectionInDim(c, Projection::kO), 64);
  EXPECT_EQ(ProjectionOutDim(c, Projection::kGate), 128);
  EXPECT_EQ(ProjectionInDim(c, Projection::kDown), 128);
  EXPECT_EQ(ProjectionOutDim(c, Projection::kDown), 64);
  EXPECT_EQ(ProjectionIndex(Projection::kDown), 6);
}

TEST(LoraConfigTest, ValidateRejectsBadValues) {
  LoraConfig c;
  EXPECT_TRUE(c.Validate().ok());
  c.rank = 0;
  EXPECT_FALSE(c.Validate().ok());
  c.rank = 1025;
  EXPECT_FALSE(c.Validate().ok());
  c.rank = 8;
  c.alpha = std::numeric_limits<float>::infinity();
  EXPECT_FALSE(c.Validate().ok());
  c.alpha = std::nanf("");
  EXPECT_FALSE(c.Validate().ok());
  c.alpha = 16;
  c.targets = {};
  EXPECT_FALSE(c.Validate().ok());
  c.targets = {Projection::kQ, Projection::kQ};
  EXPECT_FALSE(c.Validate().ok());
}

// ---- Adapter ----------------------------------------------------------------------------

TEST(LoraAdapterTest, CreateFrozenAGeneratesAFromTheSeedAndZeroB) {
  const ModelConfig mc = TinyConfig();
  LoraConfig lc;
  lc.rank = 4;
  lc.targets = {Projection::kV, Projection::kQ, Projection::kDown};  // any order
  lc.a_seed = 77;
  Result<LoraAdapter> a = LoraAdapter::Create(mc, lc);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(FormatProjections(a->config().targets), "q,v,down");
  ASSERT_EQ(a->matrices().size(), static_cast<size_t>(mc.n_layers * 3));
  EXPECT_FLOAT_EQ(a->scale(), 4.0f);
  size_t i = 0;
  for (int64_t layer = 0; layer < mc.n_layers; ++layer) {
    for (Projection p : {Projection::kQ, Projection::kV, Projection::kDown}) {
      const LoraMatrix& m = a->matrices()[i++];
      EXPECT_EQ(m.layer, layer);
      EXPECT_EQ(m.proj, p);
      EXPECT_EQ(m.in_dim, ProjectionInDim(mc, p));
      EXPECT_EQ(m.out_dim, ProjectionOutDim(mc, p));
      EXPECT_EQ(a->Find(layer, p), &m);
      std::vector<float> want(static_cast<size_t>(4 * m.in_dim));
      GenerateFrozenA(77, layer, p, 4, m.in_dim, want);
      EXPECT_EQ(m.a, want);
      EXPECT_TRUE(std::all_of(m.b.begin(), m.b.end(), [](float v) { return v == 0.0f; }));
    }
  }
  EXPECT_EQ(a->Find(0, Projection::kK), nullptr);
  EXPECT_EQ(a->Find(mc.n_layers, Projection::kQ), nullptr);
  EXPECT_EQ(a->Find(-1, Projection::kQ), nullptr);
}

TEST(LoraAdapterTest, CreateWithTrainableADrawsFromTheRandomSource) {
  const ModelConfig mc = TinyConfig();
  LoraConfig lc;
  lc.frozen_a = false;
  EXPECT_EQ(LoraAdapter::Create(mc, lc).status().code(), StatusCode::kInvalidArgument);  // no rng
  flotilla::testing::SeededRandom r1(3), r2(3), r3(4);
  Result<LoraAdapter> a = LoraAdapter::Create(mc, lc, &r1);
  Result<LoraAdapter> b = LoraAdapter::Create(mc, lc, &r2);
  Result<LoraAdapter> c = LoraAdapter::Create(mc, lc, &r3);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->matrices()[0].a, b->matrices()[0].a);
  EXPECT_NE(a->matrices()[0].a, c->matrices()[0].a);
  std::vector<float> frozen(a->matrices()[0].a.size());
  GenerateFrozenA(0, 0, Projection::kQ, 8, 64, frozen);
  EXPECT_NE(a->matrices()[0].a, frozen);
  for (float v : a->matrices()[0].a) {
    EXPECT_GE(v, -0.125f);
    EXPECT_LT(v, 0.125f);
  }
}

TEST(LoraAdapterTest, FlattenAndSetTrainableRoundTripAndRefuseBadInput) {
  const ModelConfig mc = TinyConfig();
  Result<LoraAdapter> frozen = LoraAdapter::Create(mc, LoraConfig{});
  ASSERT_TRUE(frozen.ok());
  int64_t b_count = 0;
  for (const LoraMatrix& m : frozen->matrices()) b_count += static_cast<int64_t>(m.b.size());
  EXPECT_EQ(frozen->TrainableCount(), b_count);
  std::vector<float> v(static_cast<size_t>(b_count));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i) * 1e-3f;
  ASSERT_TRUE(frozen->SetTrainable(v).ok());
  EXPECT_EQ(frozen->FlattenTrainable(), v);
  EXPECT_EQ(frozen->matrices()[1].b[0], v[frozen->matrices()[0].b.size()]);  // B of matrix 1 follows B of 0

  std::vector<float> bad = v;
  bad[17] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(frozen->SetTrainable(bad).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(frozen->FlattenTrainable(), v);  // unchanged
  bad.pop_back();
  EXPECT_EQ(frozen->SetTrainable(bad).code(), StatusCode::kInvalidArgument);

  LoraConfig lc;
  lc.frozen_a = false;
  flotilla::testing::SeededRandom rng(1);
  Result<LoraAdapter> full = LoraAdapter::Create(mc, lc, &rng);
  ASSERT_TRUE(full.ok());
  const LoraMatrix& m0 = full->matrices()[0];
  int64_t a_count = 0;
  for (const LoraMatrix& m : full->matrices()) a_count += static_cast<int64_t>(m.a.size());
  EXPECT_EQ(full->TrainableCount(), a_count + b_count);
  std::vector<float> flat = full->FlattenTrainable();
  EXPECT_TRUE(std::equal(m0.a.begin(), m0.a.end(), flat.begin()));  // A first, then B
  EXPECT_EQ(flat[m0.a.size()], 0.0f);
  for (float& x : flat) x += 0.5f;
  ASSERT_TRUE(full->SetTrainable(flat).ok());
  EXPECT_EQ(full->FlattenTrainable(), flat);
}

TEST(LoraAdapterTest, MakeLoraAdapterRefusesInconsistentMatrices) {
  const ModelConfig mc = TinyConfig();
  LoraConfig lc;
  lc.rank = 2;
  lc.targets = {Projection::kQ, Projection::kV};
  Result<LoraAdapter> good = LoraAdapter::Create(mc, lc);
  ASSERT_TRUE(good.ok());
  auto with = [&](auto edit) {
    std::vector<LoraMatrix> ms = good->matrices();
    edit(ms);
    return MakeLoraAdapter(mc, lc, std::move(ms)).status();
  };
  EXPECT_TRUE(with([](std::vector<LoraMatrix>&) {}).ok());
  // Order does not matter.
  EXPECT_TRUE(with([](std::vector<LoraMatrix>& ms) { std::reverse(ms.begin(), ms.end()); }).ok());
  Status s = with([](std::vector<LoraMatrix>& ms) { ms.pop_back(); });
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("blk.1.attn_v.weight"), std::string::npos) << s.message();
  s = with([](std::vector<LoraMatrix>& ms) { ms.push_back(ms[0]); });
  EXPECT_NE(s.message().find("twice"), std::string::npos) << s.message();
  s = with([](std::vector<LoraMatrix>& ms) { ms[0].layer = 9; });
  EXPECT_NE(s.message().find("layer 9"), std::string::npos) << s.message();
  s = with([](std::vector<LoraMatrix>& ms) { ms[0].proj = Projection::kK; });
  EXPECT_NE(s.message().find("not among the targets"), std::string::npos) << s.message();
  s = with([](std::vector<LoraMatrix>& ms) {
    ms[1].out_dim = 64;  // v is kv_dim = 32 wide
    ms[1].b.resize(64 * 2);
  });
  EXPECT_NE(s.message().find("expected"), std::string::npos) << s.message();
  s = with([](std::vector<LoraMatrix>& ms) { ms[0].b.pop_back(); });
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  s = with([](std::vector<LoraMatrix>& ms) {
    ms[0].rank = 3;
    ms[0].a.resize(3 * 64);
    ms[0].b.resize(64 * 3);
  });
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
}

// ---- Applier ----------------------------------------------------------------------------

TEST(LoraApplierTest, MatchesPlainDoubleReferenceWithTwoAdaptersAndRowStride) {
  const ModelConfig mc = TinyConfig();
  LoraConfig c2 = AllTargets(4, 4.0f, 2);
  c2.targets = {Projection::kK, Projection::kDown};
  LoraAdapter a1 = RandomAdapter(mc, AllTargets(8, 16.0f, 1), 11, 0.05f);
  LoraAdapter a2 = RandomAdapter(mc, c2, 12, 0.05f);
  Result<std::unique_ptr<ThreadPool>> pool = ThreadPool::Create(2);
  ASSERT_TRUE(pool.ok());
  const ComputeContext ctx{nullptr, pool->get()};

  LoraApplier applier;
  EXPECT_TRUE(applier.empty());
  applier.Add(&a1, 0.75f);
  applier.Add(&a2, -1.5f);
  EXPECT_FALSE(applier.empty());
  SplitMix64 rng(99);
  for (Projection p : {Projection::kQ, Projection::kK, Projection::kDown}) {
    const int64_t in = ProjectionInDim(mc, p), out = ProjectionOutDim(mc, p), n = 37, ldy = out + 5;
    std::vector<float> x(static_cast<size_t>(n * in)), y(static_cast<size_t>(n * ldy));
    for (float& v : x) v = rng.NextSymmetric();
    for (float& v : y) v = rng.NextSymmetric();
    const std::vector<float> y0 = y;
    applier.Apply(1, p, x.data(), n, in, y.data(), ldy, out, ctx);
    double worst = 0;
    for (int64_t t = 0; t < n; ++t) {
      DVec xt(x.begin() + t * in, x.begin() + (t + 1) * in);
      DVec want(y0.begin() + t * ldy, y0.begin() + t * ldy + out);
      RefLoraTerm(*a1.Find(1, p), 0.75 * 2.0, xt, want);
      if (const LoraMatrix* m = a2.Find(1, p)) RefLoraTerm(*m, -1.5 * 1.0, xt, want);
      for (int64_t o = 0; o < out; ++o) worst = std::max(worst, std::abs(want[static_cast<size_t>(o)] - static_cast<double>(y[static_cast<size_t>(t * ldy + o)])));
      // The padding between rows is untouched.
      for (int64_t o = out; o < ldy; ++o) ASSERT_EQ(y[static_cast<size_t>(t * ldy + o)], y0[static_cast<size_t>(t * ldy + o)]);
    }
    EXPECT_LT(worst, 1e-5) << ToString(p);
  }
  applier.Clear();
  EXPECT_TRUE(applier.empty());
}

TEST(LoraApplierTest, ZeroBGivesBitIdenticalLogits) {
  for (const char* recipe : {"f32", "q4_0"}) {
    auto model = Load(ModelPath("tiny", recipe));
    Result<LoraAdapter> a = LoraAdapter::Create(model->config(), AllTargets(8, 16.0f, 3));
    ASSERT_TRUE(a.ok());
    const std::vector<int32_t> tokens = TestTokens(259, 12, 5);
    auto plain = Session(*model);
    ASSERT_TRUE(plain->Eval(tokens).ok());
    LoraApplier applier;
    applier.Add(&*a, 1.0f);
    auto adapted = Session(*model);
    adapted->set_adapter(&applier);
    ASSERT_TRUE(adapted->Eval(tokens).ok());
    for (int64_t i = 0; i < static_cast<int64_t>(tokens.size()); ++i) {
      const auto want = plain->logits(i);
      const auto got = adapted->logits(i);
      ASSERT_EQ(std::memcmp(want.data(), got.data(), want.size_bytes()), 0) << recipe << " token " << i;
    }
  }
}

TEST(LoraApplierTest, SessionWithTwoScaledAdaptersMatchesReferenceForward) {
  auto model = Load(ModelPath("tiny", "f32"));
  const ModelConfig& mc = model->config();
  LoraConfig c2 = AllTargets(2, 4.0f, 2);
  c2.targets = {Projection::kV, Projection::kUp};
  LoraAdapter a1 = RandomAdapter(mc, AllTargets(8, 16.0f, 1), 21, 0.1f);
  LoraAdapter a2 = RandomAdapter(mc, c2, 22, 0.1f);
  const std::vector<int32_t> tokens = TestTokens(259, 10, 8);
  const testing::RefModel ref = testing::LoadRef(model->file());
  const std::vector<DVec> base = testing::RefForward(ref, tokens);
  const std::vector<DVec> want = testing::RefForward(ref, tokens, [&](int64_t l, int which, const DVec& x, DVec& y) {
    const auto p = static_cast<Projection>(which);
    if (const LoraMatrix* m = a1.Find(l, p)) RefLoraTerm(*m, 0.5 * static_cast<double>(a1.scale()), x, y);
    if (const LoraMatrix* m = a2.Find(l, p)) RefLoraTerm(*m, 2.0 * static_cast<double>(a2.scale()), x, y);
  });
  LoraApplier applier;
  applier.Add(&a1, 0.5f);
  applier.Add(&a2, 2.0f);
  for (int threads : {1, 2}) {
    auto s = Session(*model, threads);
    s->set_adapter(&applier);
    ASSERT_TRUE(s->Eval(tokens).ok());
    double worst = 0;
    for (size_t i = 0; i < tokens.size(); ++i) {
      worst = std::max(worst, RelativeError(s->logits(static_cast<int64_t>(i)), want[i]));
    }
    EXPECT_LE(worst, 1e-4) << threads;
    EXPECT_GT(RelativeError(s->logits(), base.back()), 1e-2);  // the adapters mattered
  }
  // Changing B between Evals takes effect (the applier reads adapters on every call).
  auto s = Session(*model);
  s->set_adapter(&applier);
  ASSERT_TRUE(s->Eval(tokens).ok());
  const std::vector<float> before(s->logits().begin(), s->logits().end());
  for (LoraMatrix& m : a2.matrices()) std::fill(m.b.begin(), m.b.end(), 0.0f);
  for (LoraMatrix& m : a1.matrices()) std::fill(m.b.begin(), m.b.end(), 0.0f);
  s->Reset();
  ASSERT_TRUE(s->Eval(tokens).ok());
  EXPECT_LE(RelativeError(s->logits(), base.back()), 1e-4);
  EXPECT_NE(std::vector<float>(s->logits().begin(), s->logits().end()), before);
}

}  // namespace
}  // namespace flotilla::model
