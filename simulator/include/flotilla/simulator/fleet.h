// Fleet simulator (ARCHITECTURE.md section 10): N real device agents (flotilla_device) in
// one process against a real Mosquitto broker (mTLS + per-device ACLs) and a real
// coordinator round engine (RoundDriver journaling into the coordinator's Store through
// StoreRoundJournal, devices enrolled in the Store, signatures checked against its keys),
// all in process.
//
//   <out_dir>/coordinator.db      the coordinator's Store: devices, rounds and their journal,
//                                 adapter versions, audit
//   <out_dir>/artifacts/          content-addressed adapter vectors (StoreAdapterRegistry)
//   <out_dir>/pki/                fleet CA, coordinator, broker and device certificates
//   <out_dir>/broker/             mosquitto.conf, acl, mosquitto.log
//   <out_dir>/devices/<id>/       agent.db and samples.sqlite of each device
//   <out_dir>/report.json         written by the caller (WriteReport)
//
// Each device has its own ECDSA P-256 identity (the same key as its mTLS certificate),
// its own data dir and non-IID samples from the synthetic generators (split into train
// and held-out by its SampleStore). Training and SecAgg crypto run on one bounded
// WorkerPool shared by all agents; agents are driven by a few poll threads; connects are
// staggered; RLIMIT_NOFILE is raised.
//
// Threading: one owner thread calls Open/Connect/RunRound/Evaluate/Run; progress goes to
// stderr. Not copyable.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "flotilla/core/status.h"
#include "flotilla/coordinator/round_driver.h"
#include "flotilla/device/agent.h"
#include "flotilla/simulator/faults.h"
#include "flotilla/simulator/report.h"
#include "flotilla/v1/round.pb.h"

namespace flotilla::simulator {

enum class TrainerKind { kEngine, kSeeded };
std::string_view ToString(TrainerKind kind);
Result<TrainerKind> ParseTrainerKind(std::string_view name);

struct FleetOptions {
  std::filesystem::path out_dir;   // required; created; earlier simulator output in it is replaced
  size_t devices = 100;
  uint32_t rounds = 3;
  uint32_t cohort = 50;            // target cohort per round
  uint32_t min_cohort = 0;         // 0: max(2, cohort / 2)
  uint64_t seed = 1;               // data, faults, frozen-A seed (identities always come from the CSPRNG)

  TrainerKind trainer = TrainerKind::kEngine;
  std::filesystem::path model;     // base GGUF (required for kEngine)
  uint32_t local_steps = 2;
  float learning_rate = 1e-2f;
  float gradient_clip = 1.0f;
  uint32_t batch_size = 2;
  int64_t seq_len = 32;
  uint32_t lora_rank = 4;
  float lora_alpha = 8.0f;
  std::string lora_targets = "q,k,v,o";
  // LORA_MODE_FROZEN_A (B trained, A fixed by the seed) or LORA_MODE_FEDIT (A and B
  // trained and averaged separately, A starting from the same seeded values).
  v1::LoraMode lora_mode = v1::LORA_MODE_FROZEN_A;
  int64_t seeded_trainable_length = 4096;  // kSeeded: the adapter vector length

  size_t samples_per_device = 64;
  double held_out_fraction = 0.25;

  v1::SecAggProfile profile = v1::SEC_AGG_PROFILE_HARDENED;
  std::chrono::milliseconds check_in_timeout{std::chrono::seconds(20)};
  std::chrono::milliseconds training_timeout{std::chrono::seconds(180)};
  std::chrono::milliseconds stage_timeout{std::chrono::seconds(60)};

  unsigned worker_threads = 0;     // training + crypto pool (0 = hardware concurrency)
  unsigned poll_threads = 2;       // threads driving the agents' Poll()
  std::chrono::microseconds connect_stagger{1500};  // between two devices' connects
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(120)};

  // Held-out evaluation of each published adapter (engine trainer only): per-device over
  // at most eval_devices devices (0 = all), eval_windows windows each (0 = all), pooled
  // over at most pooled_windows windows (0 = all).
  bool evaluate = true;
  size_t eval_devices = 200;
  int64_t eval_windows = 4;
  int64_t pooled_windows = 256;

  FaultOptions faults;
  bool progress = true;            // progress bar / lines on stderr

  // TEST ONLY hooks, passed through to the agents and the round driver.
  std::function<void(const device::PlaintextUpdateRecord&)> test_plaintext_hook;
  std::function<void(const rounds::RoundTestRecord&)> test_round_hook;
};

class Fleet {
 public:
  // Validates the options, makes the PKI, device data, broker, coordinator and agents
  // (nothing connected yet). InvalidArgument for bad options; whatever failed otherwise.
  static Result<std::unique_ptr<Fleet>> Open(FleetOptions options);
  // Stops the agents, the coordinator and the broker.
  ~Fleet();
  Fleet(const Fleet&) = delete;
  Fleet& operator=(const Fleet&) = delete;

  // Connects every agent (staggered) and the coordinator; DeadlineExceeded if not all
  // agents are connected within connect_timeout.
  Status Connect();
  // Runs one round to its end (published or failed); the report says which. Errors only
  // when the round could not be run at all.
  Result<RoundReport> RunRound(uint32_t number);
  // Held-out perplexity of the current global adapter (NotFound for the seeded trainer).
  Result<PerplexityStats> Evaluate();
  // Connect, initial evaluation, every round (with evaluation), the report. The report
  // is returned even when rounds failed; errors only for setup failures.
  Result<SimulationReport> Run();

  // The report so far (parameters, setup timings, rounds run).
  const SimulationReport& report() const;
  // Current global adapter vector (empty before the first published round).
  Result<std::vector<float>> CurrentAdapter();
  // Per-device agent status (index < devices), for tests.
  device::AgentStatus AgentStatusOf(size_t index) const;

  struct Impl;

 private:
  explicit Fleet(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Open + Run, then writes <out_dir>/report.json.
Result<SimulationReport> RunSimulation(FleetOptions options);

// The frozen-A seed (FedIT: the seed of A's starting values) a run with `seed` uses. It
// is public: it travels in the round's TrainingConfig.
uint64_t FrozenASeedForRun(uint64_t seed);

// A small base model for simulations and the demo, made from scratch: the generic
// synthetic corpus -> a learned tokenizer -> full-weight F32 pretraining -> Q8_0.
// Deterministic for a seed and thread count. Writes `out` (Q8_0) and `out`.f32.gguf.
struct BaseModelOptions {
  std::filesystem::path out;
  int64_t steps = 300;
  int64_t dim = 96;
  int64_t n_layers = 2;
  int64_t n_heads = 4;
  int64_t n_kv_heads = 2;
  int64_t ffn_dim = 256;
  int64_t vocab_size = 320;
  int64_t context_length = 64;
  int64_t seq_len = 48;
  int64_t batch = 4;
  float learning_rate = 5e-3f;
  size_t corpus_bytes = 300'000;
  uint64_t seed = 2024;
  int threads = 0;  // 0 = all cores
  // Called after every optimizer step (step, total, loss); may be empty.
  std::function<void(int64_t, int64_t, double)> progress;
};
struct BaseModelInfo {
  std::filesystem::path path;
  double held_out_perplexity = 0;
  double seconds = 0;
  int64_t parameters = 0;
};
Result<BaseModelInfo> PretrainBaseModel(const BaseModelOptions& options);

}  // namespace flotilla::simulator
