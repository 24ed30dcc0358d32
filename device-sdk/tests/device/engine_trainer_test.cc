// EngineLocalTrainer on a real (tiny, randomly initialised F32) llama model: the update is
// non-zero, deterministic, lowers the device's loss, and never touches the base file.
#include "flotilla/device/engine_trainer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <thread>
#include <vector>

#include "flotilla/core/file.h"
#include "flotilla/model/tokenizer_trainer.h"

namespace flotilla::device {
namespace {

namespace fs = std::filesystem;

// A household's phrasing: a few templates over its own rooms and names, so the text is
// learnable in a handful of steps.
std::vector<std::string> DeviceTexts(int device, size_t count) {
  const std::vector<std::string> rooms = device == 0 ? std::vector<std::string>{"kitchen", "garage", "porch"}
                                                     : std::vector<std::string>{"attic", "study", "nursery"};
  const std::vector<std::string> things = device == 0 ? std::vector<std::string>{"lights", "heater", "radio"}
                                                      : std::vector<std::string>{"fan", "blinds", "speaker"};
  std::vector<std::string> out;
  for (size_t i = 0; i < count; ++i) {
    const std::string& room = rooms[i % rooms.size()];
    const std::string& thing = things[(i / 3) % things.size()];
    switch (i % 4) {
      case 0: out.push_back("please turn on the " + thing + " in the " + room); break;
      case 1: out.push_back("turn off the " + room + " " + thing + " at " + std::to_string(6 + i % 5) + " pm"); break;
      case 2: out.push_back("is the " + thing + " in the " + room + " still on"); break;
      default: out.push_back("good night, dim the " + room + " " + thing); break;
    }
  }
  return out;
}

v1::TrainingConfig Config(uint32_t steps, float lr) {
  v1::TrainingConfig c;
  c.add_lora_targets(v1::LORA_TARGET_Q);
  c.add_lora_targets(v1::LORA_TARGET_V);
  c.add_lora_targets(v1::LORA_TARGET_O);
  c.set_rank(4);
  c.set_alpha(8);
  c.set_frozen_a_seed(42);
  c.set_mode(v1::LORA_MODE_FROZEN_A);
  c.set_local_steps(steps);
  c.set_learning_rate(lr);
  c.set_gradient_clip_norm(1.0f);
  c.set_batch_size(2);
  return c;
}

class EngineTrainerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir(std::move(TempDir::Create("engine_trainer").value()));
    std::vector<std::string> corpus = DeviceTexts(0, 200);
    for (std::string& s : DeviceTexts(1, 200)) corpus.push_back(std::move(s));
    std::vector<std::string_view> views(corpus.begin(), corpus.end());
    model::TokenizerTrainerOptions to;
    to.vocab_size = 300;
    model::Vocabulary vocab = model::TrainTokenizer(views, to).value();
    model::ModelConfig mc = model::NamedConfig("tiny").value();
    mc.dim = 64;
    mc.n_layers = 2;
    mc.n_heads = 4;
    mc.n_kv_heads = 2;
    mc.ffn_dim = 128;
    mc.vocab_size = 300;
    mc.context_length = 64;
    auto weights = std::move(model::DenseLlamaWeights::Init(mc, 7).value());
    path_ = new fs::path(dir_->path() / "base.gguf");
    ASSERT_TRUE(weights->Save(*path_, vocab, "engine-trainer-test").ok());
  }
  static void TearDownTestSuite() {
    delete path_;
    delete dir_;
  }

  static std::shared_ptr<const model::LlamaModel> Base() {
    return std::shared_ptr<const model::LlamaModel>(std::move(model::LlamaModel::Open(*path_).value()));
  }
  static std::unique_ptr<EngineLocalTrainer> MakeTrainer(std::shared_ptr<const model::LlamaModel> base, int device) {
    const std::vector<std::string> texts = DeviceTexts(device, 120);
    const std::vector<std::string> train(texts.begin(), texts.begin() + 100);
    const std::vector<std::string> held(texts.begin() + 100, texts.end());
    EngineTrainerOptions o;
    o.seq_len = 24;
    o.loss_windows = 4;
    auto t = EngineLocalTrainer::Create(std::move(base), train, held, o);
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    return std::move(*t);
  }

  static TempDir* dir_;
  static fs::path* path_;
};
TempDir* EngineTrainerTest::dir_ = nullptr;
fs::path* EngineTrainerTest::path_ = nullptr;

TEST_F(EngineTrainerTest, UpdateIsNonZeroDeterministicAndLowersTheDevicesLoss) {
  const Bytes file_before = ReadFileBytes(*path_).value();
  auto base = Base();
  const v1::TrainingConfig config = Config(12, 1e-2f);
  const int64_t m = TrainableLength(base->config(), config).value();
  // q: 64x4, v: 32x4 (GQA), o: 64x4 per layer, 2 layers.
  ASSERT_EQ(m, 2 * (64 * 4 + 32 * 4 + 64 * 4));
  const std::vector<float> global(static_cast<size_t>(m), 0.0f);

  auto trainer = MakeTrainer(base, 0);
  ASSERT_TRUE(trainer->HasData());
  Result<LocalTrainingResult> r = trainer->Train("round-1", config, global);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->delta.size(), global.size());
  double norm = 0;
  for (float d : r->delta) norm += static_cast<double>(d) * static_cast<double>(d);
  EXPECT_GT(norm, 1e-8);
  EXPECT_EQ(r->examples, 100u);
  EXPECT_EQ(r->steps, 12u);
  EXPECT_LT(r->loss_after, r->loss_before);

  // Same inputs, a fresh trainer: bit-identical update. Another round id: another window
  // order, so another update.
  auto again = MakeTrainer(base, 0)->Train("round-1", config, global);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->delta, r->delta);
  auto other_round = trainer->Train("round-2", config, global);
  ASSERT_TRUE(other_round.ok());
  EXPECT_NE(other_round->delta, r->delta);

  // The device's held-out loss drops under global + delta.
  auto ev = std::move(AdapterEvaluator::Create(base, config, 24).value());
  ASSERT_TRUE(ev->SetTrainable({}).ok());
  const model::EvalResult before = ev->Evaluate(trainer->held_out_data()).value();
  std::vector<float> next(global.size());
  for (size_t i = 0; i < next.size(); ++i) next[i] = global[i] + r->delta[i];
  ASSERT_TRUE(ev->SetTrainable(next).ok());
  const model::EvalResult after = ev->Evaluate(trainer->held_out_data()).value();
  EXPECT_LT(after.perplexity, 0.95 * before.perplexity) << before.perplexity << " -> " << after.perplexity;

  base.reset();
  trainer.reset();
  EXPECT_EQ(ReadFileBytes(*path_).value(), file_before);
}

TEST_F(EngineTrainerTest, TrainsFromANonZeroGlobalAndReturnsTheDifference) {
  auto base = Base();
  const v1::TrainingConfig config = Config(3, 5e-3f);
  const int64_t m = TrainableLength(base->config(), config).value();
  std::vector<float> global(static_cast<size_t>(m));
  for (size_t i = 0; i < global.size(); ++i) global[i] = 0.01f * static_cast<float>(static_cast<int>(i % 7) - 3);
  auto trainer = MakeTrainer(base, 1);
  auto r = trainer->Train("r", config, global);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  // AdamW moves every coordinate by at most ~lr per step.
  for (float d : r->delta) EXPECT_LE(std::fabs(d), 3 * 5e-3f * 1.01f);
  size_t moved = 0;
  for (float d : r->delta) moved += d != 0.0f;
  EXPECT_GT(moved, global.size() / 2);
}

TEST_F(EngineTrainerTest, ConcurrentTrainersShareTheBaseAndMatchSequentialResults) {
  auto base = Base();
  const v1::TrainingConfig config = Config(2, 1e-2f);
  const std::vector<float> global(static_cast<size_t>(TrainableLength(base->config(), config).value()), 0.0f);
  auto a = MakeTrainer(base, 0);
  auto b = MakeTrainer(base, 1);
  const std::vector<float> seq_a = a->Train("r", config, global).value().delta;
  const std::vector<float> seq_b = b->Train("r", config, global).value().delta;
  std::vector<float> par_a, par_b;
  std::thread ta([&] { par_a = a->Train("r", config, global).value().delta; });
  std::thread tb([&] { par_b = b->Train("r", config, global).value().delta; });
  ta.join();
  tb.join();
  EXPECT_EQ(par_a, seq_a);
  EXPECT_EQ(par_b, seq_b);
  EXPECT_NE(seq_a, seq_b);  // non-IID devices, different updates
}

TEST_F(EngineTrainerTest, RefusesBadInput) {
  auto base = Base();
  auto trainer = MakeTrainer(base, 0);
  v1::TrainingConfig config = Config(2, 1e-2f);
  const std::vector<float> wrong(5, 0.0f);
  EXPECT_EQ(trainer->Train("r", config, wrong).status().code(), StatusCode::kInvalidArgument);

  v1::TrainingConfig bad_target = config;
  bad_target.add_lora_targets(static_cast<v1::LoraTarget>(99));
  EXPECT_EQ(LoraConfigFromTraining(bad_target).status().code(), StatusCode::kInvalidArgument);
  v1::TrainingConfig no_rank = config;
  no_rank.set_rank(0);
  EXPECT_FALSE(LoraConfigFromTraining(no_rank).ok());
  v1::TrainingConfig no_steps = config;
  no_steps.set_local_steps(0);
  const std::vector<float> global(static_cast<size_t>(TrainableLength(base->config(), config).value()), 0.0f);
  EXPECT_EQ(trainer->Train("r", no_steps, global).status().code(), StatusCode::kInvalidArgument);

  EngineTrainerOptions o;
  o.seq_len = 1000;  // beyond the context
  EXPECT_EQ(EngineLocalTrainer::Create(base, {}, {}, o).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(EngineLocalTrainer::Create(nullptr, {}, {}, {}).status().code(), StatusCode::kInvalidArgument);

  // Too little text for one window: no data, and Train says so.
  const std::vector<std::string> tiny = {"hi"};
  auto empty = std::move(EngineLocalTrainer::Create(base, tiny, tiny, {}).value());
  EXPECT_FALSE(empty->HasData());
  EXPECT_EQ(empty->Train("r", config, global).status().code(), StatusCode::kFailedPrecondition);
}

TEST_F(EngineTrainerTest, FedItModeTrainsAAndB) {
  auto base = Base();
  v1::TrainingConfig config = Config(2, 1e-2f);
  config.set_mode(v1::LORA_MODE_FEDIT);
  const model::LoraConfig lc = LoraConfigFromTraining(config).value();
  EXPECT_FALSE(lc.frozen_a);
  const int64_t m = TrainableLength(base->config(), config).value();
  EXPECT_EQ(m, 2 * (64 * 4 + 32 * 4 + 64 * 4) + 2 * 3 * (4 * 64));  // + A of q, v, o (rank x in)
  // A non-zero A so B gets gradients, B = 0.
  std::vector<float> global(static_cast<size_t>(m), 0.0f);
  model::LoraAdapter probe = model::LoraAdapter::Create(base->config(), lc, &OsRandom()).value();
  global = probe.FlattenTrainable();
  auto r = MakeTrainer(base, 0)->Train("r", config, global);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  double norm = 0;
  for (float d : r->delta) norm += static_cast<double>(d) * static_cast<double>(d);
  EXPECT_GT(norm, 0);
}

// FedIT from the initial adapter (all zero): A starts from the frozen-A stream of the
// round's seed on every device (A = B = 0 could never learn), and the update is taken
// against the zero vector the device was given, so the coordinator's mean of the
// updates is the FedIT average of the trained A and B factors.
TEST_F(EngineTrainerTest, FedItFromTheInitialAdapterStartsEveryDeviceFromTheSeededA) {
  auto base = Base();
  constexpr uint32_t kSteps = 3;
  constexpr float kLr = 5e-3f;
  v1::TrainingConfig config = Config(kSteps, kLr);
  config.set_mode(v1::LORA_MODE_FEDIT);
  const model::LoraConfig lc = LoraConfigFromTraining(config).value();
  model::LoraConfig frozen = lc;
  frozen.frozen_a = true;
  model::LoraAdapter seeded = model::LoraAdapter::Create(base->config(), frozen).value();
  const std::vector<float> start =
      model::MakeLoraAdapter(base->config(), lc, seeded.matrices()).value().FlattenTrainable();
  const std::vector<float> zero(start.size(), 0.0f);
  ASSERT_EQ(static_cast<int64_t>(start.size()), TrainableLength(base->config(), config).value());

  auto r0 = MakeTrainer(base, 0)->Train("r", config, zero);
  auto r1 = MakeTrainer(base, 1)->Train("r", config, zero);
  ASSERT_TRUE(r0.ok()) << r0.status().ToString();
  ASSERT_TRUE(r1.ok()) << r1.status().ToString();
  size_t a_values = 0, moved = 0;
  double gap = 0;  // the two devices' updates differ by their training only
  for (size_t i = 0; i < start.size(); ++i) {
    // AdamW moves every coordinate by at most ~lr per step from where it started.
    EXPECT_LE(std::fabs(r0->delta[i] - start[i]), kSteps * kLr * 1.01f) << i;
    EXPECT_LE(std::fabs(r1->delta[i] - start[i]), kSteps * kLr * 1.01f) << i;
    a_values += start[i] != 0.0f;
    moved += r0->delta[i] != start[i];
    gap = std::max(gap, static_cast<double>(std::fabs(r0->delta[i] - r1->delta[i])));
  }
  EXPECT_GT(a_values, start.size() / 4);  // A is a real share of the vector, and seeded
  EXPECT_GT(moved, start.size() / 2);     // both factors were trained
  EXPECT_GT(gap, 0.0);
  EXPECT_LE(gap, 2 * kSteps * kLr * 1.01f);
  EXPECT_LT(r0->loss_after, r0->loss_before);

  // From a non-zero global A, the device starts from the global itself.
  std::vector<float> global = start;
  for (float& v : global) v *= 0.5f;
  auto r2 = MakeTrainer(base, 0)->Train("r", config, global);
  ASSERT_TRUE(r2.ok());
  for (float d : r2->delta) EXPECT_LE(std::fabs(d), kSteps * kLr * 1.01f);
}

TEST_F(EngineTrainerTest, ReadsBothSplitsFromTheSampleStore) {
  auto base = Base();
  auto store = std::move(SampleStore::Open(dir_->path() / "samples.sqlite").value());
  const std::vector<std::string> texts = DeviceTexts(1, 200);
  std::vector<NewSample> batch;
  for (size_t i = 0; i < texts.size(); ++i) batch.push_back({texts[i], 1'700'000'000'000 + static_cast<int64_t>(i), {}});
  ASSERT_TRUE(store->AppendBatch(batch).ok());
  EngineTrainerOptions o;
  o.seq_len = 24;
  auto t = EngineLocalTrainer::FromSampleStore(base, *store, o);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  const SampleStoreStats stats = store->Stats().value();
  EXPECT_EQ((*t)->train_samples(), static_cast<size_t>(stats.train_count));
  EXPECT_GT(stats.held_out_count, 0);
  EXPECT_GT((*t)->held_out_data().size(), 0);
  EXPECT_TRUE((*t)->HasData());
}

}  // namespace
}  // namespace flotilla::device
