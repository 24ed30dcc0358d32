// The fleet simulator end to end: real DeviceAgents (engine trainer: LoRA on a tiny
// pretrained Q8_0 base) over a real Mosquitto with mTLS and ACLs, the in-process
// RoundDriver with its SQLite journal and the coordinator Store. Checks that rounds
// complete, the aggregate is exactly the sum of the survivors' encoded inputs, held-out
// perplexity improves over the rounds, and report.json / coordinator.db hold the story.
#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "flotilla/coordinator/store.h"
#include "flotilla/core/file.h"
#include "flotilla/core/log.h"
#include "flotilla/model/llama_model.h"
#include "flotilla/model/lora.h"
#include "flotilla/simulator/fleet.h"

namespace flotilla::simulator {
namespace {

namespace fs = std::filesystem;

// Records what devices encoded and what the coordinator summed, per round.
struct SumRecorder {
  std::mutex mu;
  std::map<std::string, std::map<std::string, std::vector<uint32_t>>> inputs;  // round -> device -> encoded
  std::vector<rounds::RoundTestRecord> rounds;

  void Install(FleetOptions& o) {
    o.test_plaintext_hook = [this](const device::PlaintextUpdateRecord& p) {
      std::lock_guard<std::mutex> lock(mu);
      inputs[p.round_id][p.device_id] = p.encoded;
    };
    o.test_round_hook = [this](const rounds::RoundTestRecord& r) {
      std::lock_guard<std::mutex> lock(mu);
      rounds.push_back(r);
    };
  }

  void Check() {
    std::lock_guard<std::mutex> lock(mu);
    ASSERT_FALSE(rounds.empty());
    for (const rounds::RoundTestRecord& r : rounds) {
      ASSERT_FALSE(r.survivors.empty()) << r.round_id;
      std::vector<uint32_t> expected(r.sum.size(), 0);
      for (const std::string& dev : r.survivors) {
        const auto& enc = inputs[r.round_id][dev];
        ASSERT_EQ(enc.size(), expected.size()) << dev;
        for (size_t i = 0; i < enc.size(); ++i) expected[i] += enc[i];  // arithmetic mod 2^32
      }
      EXPECT_EQ(r.sum, expected) << "round " << r.round_id << ": the aggregate is not the survivors' sum";
    }
  }
};

class SimulateTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    SetLogLevel(LogLevel::kWarn);  // every enrolment logs at info
    dir_ = new TempDir(std::move(TempDir::Create("simulate_test").value()));
    BaseModelOptions bo;
    bo.out = dir_->path() / "base-q8_0.gguf";
    bo.steps = 80;  // a weak base (dim 96, 2 layers, ~0.23 M parameters): room to improve
    bo.threads = 2;
    Result<BaseModelInfo> info = PretrainBaseModel(bo);
    ASSERT_TRUE(info.ok()) << info.status().ToString();
    std::printf("base: %lld parameters, held-out perplexity %.2f, pretrained in %.1f s\n",
                static_cast<long long>(info->parameters), info->held_out_perplexity, info->seconds);
    model_ = new fs::path(info->path);
  }
  static void TearDownTestSuite() {
    delete model_;
    delete dir_;
  }
  // Engine-trainer fleet of `devices` on the pretrained base: 3 rounds of `cohort`,
  // 8 local steps at lr 1e-2, rank 8, every device evaluated.
  static FleetOptions EngineFleet(const char* run, uint32_t devices, uint32_t cohort, uint64_t seed) {
    FleetOptions o;
    o.out_dir = dir_->path() / run;
    o.devices = devices;
    o.rounds = 3;
    o.cohort = cohort;
    o.local_steps = 8;
    o.learning_rate = 1e-2f;
    o.lora_rank = 8;
    o.lora_alpha = 16;
    o.seq_len = 32;
    o.samples_per_device = 48;
    o.model = *model_;
    o.worker_threads = 2;
    o.eval_devices = 0;  // all
    o.eval_windows = 0;
    o.check_in_timeout = std::chrono::seconds(10);
    o.progress = false;
    o.seed = seed;
    return o;
  }

  static TempDir* dir_;
  static fs::path* model_;
};
TempDir* SimulateTest::dir_ = nullptr;
fs::path* SimulateTest::model_ = nullptr;

TEST_F(SimulateTest, EngineFleetCompletesRoundsAndImprovesHeldOutPerplexity) {
  SumRecorder rec;
  FleetOptions o = EngineFleet("engine-run", 50, 20, 11);
  rec.Install(o);
  Result<SimulationReport> report = RunSimulation(o);
  ASSERT_TRUE(report.ok()) << report.status().ToString();

  ASSERT_EQ(report->rounds.size(), 3u);
  EXPECT_EQ(report->connected, 50u);
  ASSERT_TRUE(report->initial_eval.has_value());
  double last_pooled = report->initial_eval->pooled;
  std::printf("base: %s\n", FormatPerplexity(*report->initial_eval).c_str());
  for (const RoundReport& r : report->rounds) {
    std::printf("%s\n", FormatRoundLine(r, 3).c_str());
    EXPECT_EQ(r.state, "published") << r.reason;
    EXPECT_EQ(r.cohort, 20u);
    EXPECT_GE(r.survivors, 10u);
    EXPECT_EQ(r.trained, r.cohort);
    EXPECT_FALSE(r.stages.empty());
    EXPECT_GT(r.bytes_in, 0u);
    EXPECT_GT(r.bytes_out, 0u);
    ASSERT_TRUE(r.eval.has_value());
    EXPECT_EQ(r.eval->devices, 50u);
    EXPECT_LE(r.eval->min, r.eval->mean);
    EXPECT_LE(r.eval->mean, r.eval->max);
    EXPECT_LT(r.loss_after_mean, r.loss_before_mean);  // local training lowered local loss
    last_pooled = r.eval->pooled;
  }
  // Held-out perplexity of the fleet improves over the rounds: stated margin, the pooled
  // perplexity after 3 rounds is at least 1.5% below the base's, and so is the device mean.
  EXPECT_LT(last_pooled, 0.985 * report->initial_eval->pooled);
  EXPECT_LT(report->rounds.back().eval->mean, 0.985 * report->initial_eval->mean);

  // The coordinator's sum is exactly the survivors' encoded inputs.
  ASSERT_EQ(rec.rounds.size(), 3u);
  rec.Check();

  // report.json
  Result<std::string> text = ReadFileString(o.out_dir / "report.json");
  ASSERT_TRUE(text.ok());
  const nlohmann::json j = nlohmann::json::parse(*text);
  EXPECT_EQ(j["schema"], "flotilla.simulate.v1");
  ASSERT_EQ(j["rounds"].size(), 3u);
  for (const char* key : {"cohort", "survivors", "stages", "traffic", "training", "perplexity", "faults"}) {
    EXPECT_TRUE(j["rounds"][0].contains(key)) << key;
  }
  EXPECT_TRUE(j["rounds"][2]["perplexity"].contains("pooled"));

  // coordinator.db: the enrolled fleet, the rounds and the adapter lineage.
  auto store = coordinator::Store::Open(o.out_dir);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_TRUE((*store)->IntegrityCheck().ok());
  EXPECT_EQ((*store)->CountDevices(std::nullopt, std::nullopt).value(), 50);
  auto rounds_db = (*store)->ListRounds();
  ASSERT_TRUE(rounds_db.ok());
  ASSERT_EQ(rounds_db->size(), 3u);
  for (const coordinator::RoundRecord& r : *rounds_db) {
    EXPECT_EQ(r.state, coordinator::RoundState::kPublished);
    EXPECT_EQ((*store)->ListParticipants(r.id).value().size(), 20u);
  }
  auto lineage = (*store)->Lineage(coordinator::VersionKind::kAdapter, report->rounds.back().adapter_version);
  ASSERT_TRUE(lineage.ok()) << lineage.status().ToString();
  EXPECT_EQ(lineage->size(), 3u);
  // The round engine journals into coordinator.db (StoreRoundJournal): one file.
  EXPECT_FALSE(std::filesystem::exists(o.out_dir / "round_journal.db"));
  Status invariants = (*store)->CheckRoundInvariants();
  EXPECT_TRUE(invariants.ok()) << invariants.ToString();
}

// FedIT: A and B both trained on the devices and averaged separately by the same
// SecAgg+ sum. The first round starts from the initial (all-zero) adapter, so every
// device starts A from the seeded values and the new global A is their average near it.
TEST_F(SimulateTest, FedItFleetAveragesBothFactorsAndImprovesHeldOutPerplexity) {
  SumRecorder rec;
  FleetOptions o = EngineFleet("fedit-run", 30, 15, 23);
  o.lora_targets = "q,k,v,o";
  o.lora_mode = v1::LORA_MODE_FEDIT;
  rec.Install(o);
  Result<SimulationReport> report = RunSimulation(o);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  ASSERT_EQ(report->rounds.size(), 3u);
  ASSERT_TRUE(report->initial_eval.has_value());
  std::printf("base: %s\n", FormatPerplexity(*report->initial_eval).c_str());
  for (const RoundReport& r : report->rounds) {
    std::printf("%s\n", FormatRoundLine(r, 3).c_str());
    EXPECT_EQ(r.state, "published") << r.reason;
    EXPECT_GE(r.survivors, 8u);
    ASSERT_TRUE(r.eval.has_value());
  }
  EXPECT_LT(report->rounds.back().eval->pooled, 0.985 * report->initial_eval->pooled);
  rec.Check();

  // The vector is A and B of every (layer, target): the FedIT adapter, not B alone.
  auto base = model::LlamaModel::Open(*model_);
  ASSERT_TRUE(base.ok());
  model::LoraConfig lc;
  lc.rank = 8;
  lc.alpha = 16;
  lc.targets = {model::Projection::kQ, model::Projection::kK, model::Projection::kV, model::Projection::kO};
  lc.a_seed = FrozenASeedForRun(o.seed);
  model::LoraAdapter seeded = model::LoraAdapter::Create((*base)->config(), lc).value();
  lc.frozen_a = false;
  const std::vector<float> start =
      model::MakeLoraAdapter((*base)->config(), lc, seeded.matrices()).value().FlattenTrainable();
  std::lock_guard<std::mutex> lock(rec.mu);
  ASSERT_EQ(rec.rounds.size(), 3u);
  const rounds::RoundTestRecord& first = rec.rounds[0];
  ASSERT_EQ(first.next.size(), start.size());
  size_t a_moved = 0, a_values = 0;
  for (size_t i = 0; i < start.size(); ++i) {
    EXPECT_EQ(first.previous[i], 0.0f);
    // Each device moved each value by at most ~lr per step from the seeded start; so does
    // their weighted mean (plus the fixed-point step).
    EXPECT_NEAR(first.next[i], start[i], o.local_steps * static_cast<double>(o.learning_rate) * 1.01 + 1e-3) << i;
    if (start[i] != 0.0f) {
      ++a_values;
      a_moved += first.next[i] != start[i];
    }
  }
  EXPECT_GT(a_values, start.size() / 3);
  EXPECT_GT(a_moved, a_values / 2);  // A was trained and averaged, not just carried
  for (size_t k = 1; k < rec.rounds.size(); ++k) EXPECT_EQ(rec.rounds[k].previous, rec.rounds[k - 1].next);
}

TEST_F(SimulateTest, DropoutsAtEveryStageStillGiveTheSurvivorsExactSum) {
  SumRecorder rec;
  FleetOptions o;
  o.out_dir = dir_->path() / "dropout-run";
  o.devices = 40;
  o.rounds = 2;
  o.cohort = 30;
  o.min_cohort = 10;
  o.trainer = TrainerKind::kSeeded;
  o.seeded_trainable_length = 2000;
  o.worker_threads = 2;
  o.check_in_timeout = std::chrono::seconds(8);
  o.training_timeout = std::chrono::seconds(10);  // devices that drop before their key advert
  o.stage_timeout = std::chrono::seconds(8);
  o.progress = false;
  o.seed = 5;
  // ~3.3 expected drops per round of 30: a published round needs at least the planner's
  // min_survivors (22 of 30, hardened), which 5/5/8 % missed now and then (8+ drops).
  o.faults.dropout = ParseDropouts("advertise_keys=0.03,share_keys=0.03,masked_input=0.05").value();
  rec.Install(o);
  Result<SimulationReport> report = RunSimulation(o);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  ASSERT_EQ(report->rounds.size(), 2u);
  uint64_t drops = 0;
  for (const RoundReport& r : report->rounds) {
    std::printf("%s\n", FormatRoundLine(r, 2).c_str());
    EXPECT_EQ(r.state, "published") << r.reason;
    EXPECT_FALSE(r.eval.has_value());  // the seeded trainer has no model to evaluate
    uint64_t round_drops = 0;
    for (const auto& [stage, n] : r.drops) round_drops += n;
    drops += round_drops;
    EXPECT_LE(r.survivors + round_drops, r.cohort);
  }
  EXPECT_GT(drops, 0u);
  rec.Check();
}

// The shipped command: a seeded (protocol-only) fleet, report and database left behind.
TEST_F(SimulateTest, CliRunsAFleetAndLeavesTheReport) {
  const fs::path out = dir_->path() / "cli-run";
  const std::string cmd = std::string(FLOTILLA_CLI) +
                          " simulate --devices 12 --rounds 1 --cohort 8 --trainer seeded --workers 2 --quiet"
                          " --check-in-timeout 8 --out-dir " + out.string() + " 2>&1";
  std::string output;
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) output.append(buf, n);
  const int status = pclose(p);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << output;
  EXPECT_NE(output.find("1 of 1 rounds published"), std::string::npos) << output;
  EXPECT_TRUE(fs::exists(out / "report.json"));
  EXPECT_TRUE(fs::exists(out / "coordinator.db"));

  // Bad flags fail with a clear message.
  FILE* q = popen((std::string(FLOTILLA_CLI) + " simulate --devices 5 --cohort 3 --out-dir " + out.string() +
                   " 2>&1").c_str(), "r");
  ASSERT_NE(q, nullptr);
  std::string err;
  while ((n = fread(buf, 1, sizeof(buf), q)) > 0) err.append(buf, n);
  const int st2 = pclose(q);
  EXPECT_NE(WEXITSTATUS(st2), 0);
  EXPECT_NE(err.find("--model"), std::string::npos) << err;
}

}  // namespace
}  // namespace flotilla::simulator
