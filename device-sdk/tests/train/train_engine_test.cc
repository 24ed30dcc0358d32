// TrainEngine: forward equals inference, the loss contract, gradient accumulation,
// input validation, parameters, memory budget (recomputation is bit-identical) and
// determinism across thread counts and runs.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "flotilla/model/inference.h"
#include "flotilla/model/lora.h"
#include "flotilla/model/train.h"
#include "train_test_util.h"

namespace flotilla::model {
namespace {

using testing::AllGrads;
using testing::EngineOptions;
using testing::OpenTestModel;
using testing::ShiftedTargets;
using testing::TestAdapter;
using testing::TestTokens;

const std::vector<Projection> kAll = {Projection::kQ,    Projection::kK,  Projection::kV,   Projection::kO,
                                      Projection::kGate, Projection::kUp, Projection::kDown};

// Logits of every position, as the engine's forward computed them.
std::vector<float> EngineLogits(TrainEngine& e, const std::vector<int32_t>& tokens) {
  const int64_t vocab = e.config().vocab_size;
  std::vector<float> out(tokens.size() * static_cast<size_t>(vocab));
  e.set_logits_observer([&](int64_t row0, int64_t rows, const float* z) {
    std::memcpy(out.data() + row0 * vocab, z, static_cast<size_t>(rows * vocab) * sizeof(float));
  });
  const std::vector<int32_t> targets = ShiftedTargets(tokens, 1);
  EXPECT_TRUE(e.Forward(tokens, targets).ok());
  e.set_logits_observer({});
  return out;
}

class EngineMatchesInferenceTest : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {};

// The training forward (with a LoRA adapter on every projection) reproduces
// InferenceSession + LoraApplier bit for bit: same kernels, same operation order.
TEST_P(EngineMatchesInferenceTest, LogitsAreBitIdentical) {
  const auto& [config, recipe] = GetParam();
  auto model = OpenTestModel(config, recipe);
  LoraAdapter adapter = TestAdapter(model->config(), kAll, /*frozen_a=*/true);
  // 40 tokens: more than one attention block of 32 query rows.
  const std::vector<int32_t> tokens = TestTokens(model->config().vocab_size, 40, 11);
  auto engine = TrainEngine::CreateLora(*model, adapter, EngineOptions(2, 48));
  ASSERT_TRUE(engine.ok()) << engine.status().ToString();
  const std::vector<float> got = EngineLogits(**engine, tokens);

  InferenceOptions io;
  io.n_threads = 2;
  io.all_logits = true;
  auto session = InferenceSession::Create(*model, io);
  ASSERT_TRUE(session.ok());
  LoraApplier applier;
  applier.Add(&adapter);
  (*session)->set_adapter(&applier);
  ASSERT_TRUE((*session)->Eval(tokens).ok());
  const auto vocab = static_cast<size_t>(model->config().vocab_size);
  for (size_t t = 0; t < tokens.size(); ++t) {
    const std::span<const float> want = (*session)->logits(static_cast<int64_t>(t));
    ASSERT_EQ(0, std::memcmp(got.data() + t * vocab, want.data(), vocab * sizeof(float)))
        << config << "/" << recipe << " position " << t;
  }
}

INSTANTIATE_TEST_SUITE_P(Models, EngineMatchesInferenceTest,
                         ::testing::Combine(::testing::Values("tiny", "train"),
                                            ::testing::Values("f32", "q8_0", "q4_0")),
                         [](const auto& p) {
                           return std::get<0>(p.param) + "_" + std::get<1>(p.param);
                         });

TEST(TrainEngineTest, LossMatchesReferenceAndIgnoresMinusOneTargets) {
  auto model = OpenTestModel("tiny", "f32");
  LoraAdapter adapter = TestAdapter(model->config(), kAll, true);
  auto engine = TrainEngine::CreateLora(*model, adapter, EngineOptions(2, 16));
  ASSERT_TRUE(engine.ok());
  const std::vector<int32_t> tokens = TestTokens(259, 12, 5);
  std::vector<int32_t> targets = ShiftedTargets(tokens, 7);
  targets[3] = -1;
  targets[8] = -1;
  auto gguf = GgufFile::Open(testing::ModelPath("tiny", "f32"));
  ASSERT_TRUE(gguf.ok());
  const testing::RefModel ref = testing::LoadRef(**gguf);
  const double want = testing::RefLoss(ref, tokens, targets, &adapter);

  auto fwd = (*engine)->Forward(tokens, targets);
  ASSERT_TRUE(fwd.ok());
  EXPECT_EQ(fwd->n_tokens, 10);
  EXPECT_NEAR(fwd->loss_sum, want, 1e-5 * want);
  auto fb = (*engine)->ForwardBackward(tokens, targets);
  ASSERT_TRUE(fb.ok());
  EXPECT_EQ(fb->n_tokens, 10);
  EXPECT_EQ(fb->loss_sum, fwd->loss_sum);  // the same forward

  // All targets ignored: no loss, and the gradients stay untouched.
  (*engine)->ZeroGrad();
  const std::vector<int32_t> none(tokens.size(), -1);
  auto empty = (*engine)->ForwardBackward(tokens, none);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->n_tokens, 0);
  EXPECT_EQ(empty->loss_sum, 0.0);
  for (float g : AllGrads(**engine)) ASSERT_EQ(g, 0.0f);
}

TEST(TrainEngineTest, GradientsAddUpAcrossCallsUntilZeroGrad) {
  auto model = OpenTestModel("tiny", "q8_0");
  LoraAdapter adapter = TestAdapter(model->config(), kAll, false);
  auto engine = TrainEngine::CreateLora(*model, adapter, EngineOptions(1, 16));
  ASSERT_TRUE(engine.ok());
  const std::vector<int32_t> tokens = TestTokens(259, 16, 6);
  ASSERT_TRUE((*engine)->ForwardBackward(tokens, ShiftedTargets(tokens, 4)).ok());
  const std::vector<float> once = AllGrads(**engine);
  ASSERT_TRUE((*engine)->ForwardBackward(tokens, ShiftedTargets(tokens, 4)).ok());
  const std::vector<float> twice = AllGrads(**engine);
  double norm = 0;
  float scale = 0;
  for (float g : once) scale = std::max(scale, std::fabs(g));
  for (size_t i = 0; i < once.size(); ++i) {
    // Accumulation continues each FMA chain from the stored value, so 2g holds up to
    // float rounding of the partial sums (relative to the largest gradient: sums cancel).
    ASSERT_NEAR(twice[i], 2.0f * once[i], 1e-5f * scale) << i;
    norm += static_cast<double>(once[i] * once[i]);
  }
  EXPECT_GT(norm, 0.0);
  (*engine)->ZeroGrad();
  for (float g : AllGrads(**engine)) ASSERT_EQ(g, 0.0f);
}

TEST(TrainEngineTest, RejectsBadInputWithoutTouchingGradients) {
  auto model = OpenTestModel("tiny", "q4_0");
  LoraAdapter adapter = TestAdapter(model->config(), {Projection::kQ, Projection::kV}, true);
  auto engine = TrainEngine::CreateLora(*model, adapter, EngineOptions(1, 8));
  ASSERT_TRUE(engine.ok());
  TrainEngine& e = **engine;
  const std::vector<int32_t> ok = {1, 2, 3, 4};
  ASSERT_TRUE(e.ForwardBackward(ok, ShiftedTargets(ok, 5)).ok());
  const std::vector<float> before = AllGrads(e);
  auto expect_invalid = [&](std::vector<int32_t> tokens, std::vector<int32_t> targets, const std::string& what) {
    auto r = e.ForwardBackward(tokens, targets);
    ASSERT_FALSE(r.ok()) << what;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << what;
    EXPECT_EQ(AllGrads(e), before) << what;
  };
  expect_invalid({1, 2, 3}, {1, 2}, "length mismatch");
  expect_invalid({}, {}, "empty");
  expect_invalid(std::vector<int32_t>(9, 1), std::vector<int32_t>(9, 1), "longer than max_seq_len");
  expect_invalid({1, 259}, {1, 2}, "token out of vocabulary");
  expect_invalid({1, -1}, {1, 2}, "negative token");
  expect_invalid({1, 2}, {1, 259}, "target out of vocabulary");
  expect_invalid({1, 2}, {-2, 2}, "target below -1");
  EXPECT_EQ(e.max_seq_len(), 8);
}

TEST(TrainEngineTest, CreateValidatesOptionsAndAdapter) {
  auto model = OpenTestModel("tiny", "q8_0");
  LoraAdapter adapter = TestAdapter(model->config(), {Projection::kQ}, true);
  EXPECT_EQ(TrainEngine::CreateLora(*model, adapter, EngineOptions(1, 65)).status().code(),
            StatusCode::kInvalidArgument);  // context_length is 64
  EXPECT_EQ(TrainEngine::CreateLora(*model, adapter, EngineOptions(1, 0)).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(TrainEngine::CreateLora(*model, adapter, EngineOptions(-1, 8)).status().code(),
            StatusCode::kInvalidArgument);
  // An adapter made for another model shape.
  ModelConfig other = model->config();
  other.ffn_dim = 96;
  LoraAdapter wrong = TestAdapter(other, {Projection::kGate}, true);
  auto r = TrainEngine::CreateLora(*model, wrong, EngineOptions(1, 8));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("blk.0.ffn_gate.weight"), std::string::npos) << r.status().ToString();
}

TEST(TrainEngineTest, ParamsFollowTheAdapterTrainableOrder) {
  auto model = OpenTestModel("tiny", "q8_0");
  for (bool frozen : {true, false}) {
    LoraAdapter adapter = TestAdapter(model->config(), {Projection::kK, Projection::kDown}, frozen);
    auto engine = TrainEngine::CreateLora(*model, adapter, EngineOptions(1, 8));
    ASSERT_TRUE(engine.ok());
    std::vector<float> values;
    std::vector<std::string> names;
    for (const ParamTensor& p : (*engine)->params()) {
      values.insert(values.end(), p.value, p.value + p.size);
      names.push_back(p.name);
      EXPECT_TRUE(p.weight_decay);
    }
    EXPECT_EQ(values, adapter.FlattenTrainable());
    ASSERT_EQ(names.size(), frozen ? 4u : 8u);
    EXPECT_EQ(names[0], frozen ? "blk.0.attn_k.weight.lora_b" : "blk.0.attn_k.weight.lora_a");
    EXPECT_EQ(names.back(), "blk.1.ffn_down.weight.lora_b");
  }
}

TEST(TrainEngineTest, FullModeParamsAreEveryTensorAndLossMatchesReference) {
  auto dense = DenseLlamaWeights::Init(*NamedConfig("tiny"), 9);
  ASSERT_TRUE(dense.ok());
  auto engine = TrainEngine::CreateFull(**dense, EngineOptions(2, 12));
  ASSERT_TRUE(engine.ok()) << engine.status().ToString();
  ASSERT_EQ((*engine)->params().size(), (*dense)->names().size());
  for (size_t i = 0; i < (*engine)->params().size(); ++i) {
    const ParamTensor& p = (*engine)->params()[i];
    EXPECT_EQ(p.name, (*dense)->names()[i]);
    EXPECT_EQ(p.value, (*dense)->Tensor(p.name).data());
    EXPECT_EQ(p.weight_decay, p.name.find("norm") == std::string::npos) << p.name;
  }
  testing::RefModel ref = testing::RefFromDense(**dense);
  const std::vector<int32_t> tokens = TestTokens(259, 12, 8);
  const std::vector<int32_t> targets = ShiftedTargets(tokens, 9);
  auto r = (*engine)->ForwardBackward(tokens, targets);
  ASSERT_TRUE(r.ok());
  const double want = testing::RefLoss(ref, tokens, targets);
  EXPECT_NEAR(r->loss_sum, want, 1e-5 * want);
}

// ---- Memory budget and determinism ------------------------------------------------------

// Gradients (and loss) of one ForwardBackward.
struct RunResult {
  double loss;
  std::vector<float> grads;
  uint64_t bytes;
  bool recomputes;
};

RunResult LoraRun(const LlamaModel& model, const TrainEngineOptions& o, const std::vector<int32_t>& tokens) {
  LoraAdapter adapter = TestAdapter(model.config(), kAll, false);
  auto engine = TrainEngine::CreateLora(model, adapter, o);
  FLT_CHECK_OK(engine.status());
  auto r = (*engine)->ForwardBackward(tokens, ShiftedTargets(tokens, 3));
  FLT_CHECK_OK(r.status());
  return {r->loss_sum, AllGrads(**engine), (*engine)->buffer_bytes(), (*engine)->recomputes()};
}

RunResult FullRun(const TrainEngineOptions& o, const std::vector<int32_t>& tokens) {
  auto dense = DenseLlamaWeights::Init(*NamedConfig("tiny"), 5);
  FLT_CHECK_OK(dense.status());
  auto engine = TrainEngine::CreateFull(**dense, o);
  FLT_CHECK_OK(engine.status());
  auto r = (*engine)->ForwardBackward(tokens, ShiftedTargets(tokens, 3));
  FLT_CHECK_OK(r.status());
  return {r->loss_sum, AllGrads(**engine), (*engine)->buffer_bytes(), (*engine)->recomputes()};
}

void ExpectSameBits(const RunResult& a, const RunResult& b, const std::string& what) {
  EXPECT_EQ(a.loss, b.loss) << what;
  ASSERT_EQ(a.grads.size(), b.grads.size()) << what;
  EXPECT_EQ(0, std::memcmp(a.grads.data(), b.grads.data(), a.grads.size() * sizeof(float))) << what;
}

// Each step down in budget stores one layer fewer (down to recomputing every layer from
// its input), until even that does not fit. Every level gives the same bits.
TEST(TrainEngineTest, MemoryBudgetRecomputesLayersWithBitIdenticalGradients) {
  auto model = OpenTestModel("train", "q4_0");
  const std::vector<int32_t> tokens = TestTokens(512, 48, 3);
  const RunResult all = LoraRun(*model, EngineOptions(2, 48), tokens);
  EXPECT_FALSE(all.recomputes);
  uint64_t budget = all.bytes - 1;
  int levels = 0;
  for (;; ++levels) {
    LoraAdapter adapter = TestAdapter(model->config(), kAll, false);
    auto engine = TrainEngine::CreateLora(*model, adapter, EngineOptions(2, 48, budget));
    if (!engine.ok()) {
      EXPECT_EQ(engine.status().code(), StatusCode::kResourceExhausted);
      break;
    }
    EXPECT_TRUE((*engine)->recomputes());
    EXPECT_LE((*engine)->buffer_bytes(), budget);
    ASSERT_TRUE((*engine)->ForwardBackward(tokens, ShiftedTargets(tokens, 3)).ok());
    auto r = (*engine)->Forward(tokens, ShiftedTargets(tokens, 3));
    ExpectSameBits(all, RunResult{r->loss_sum, AllGrads(**engine), 0, true}, "budget " + std::to_string(budget));
    budget = (*engine)->buffer_bytes() - 1;
  }
  EXPECT_EQ(levels, 3);  // 2, 1 and 0 of the 4 layers stored (3 + the work slot = all 4)

  const std::vector<int32_t> small = TestTokens(259, 20, 4);
  const RunResult full = FullRun(EngineOptions(2, 20), small);
  const RunResult full_cp = FullRun(EngineOptions(2, 20, full.bytes - 1), small);
  EXPECT_TRUE(full_cp.recomputes);
  ExpectSameBits(full, full_cp, "full recompute");
}

TEST(TrainEngineTest, DeterministicForAnyThreadCountAndAcrossRuns) {
  auto model = OpenTestModel("train", "q4_0");
  const std::vector<int32_t> tokens = TestTokens(512, 40, 12);
  const RunResult one = LoraRun(*model, EngineOptions(1, 40), tokens);
  ExpectSameBits(one, LoraRun(*model, EngineOptions(2, 40), tokens), "LoRA 1 vs 2 threads");
  ExpectSameBits(one, LoraRun(*model, EngineOptions(3, 40), tokens), "LoRA 1 vs 3 threads");
  ExpectSameBits(one, LoraRun(*model, EngineOptions(2, 40), tokens), "LoRA rerun");
  const std::vector<int32_t> small = TestTokens(259, 20, 13);
  const RunResult f1 = FullRun(EngineOptions(1, 20), small);
  ExpectSameBits(f1, FullRun(EngineOptions(2, 20), small), "full 1 vs 2 threads");
  ExpectSameBits(f1, FullRun(EngineOptions(2, 20), small), "full rerun");
}

}  // namespace
}  // namespace flotilla::model
