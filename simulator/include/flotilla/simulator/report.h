// The fleet simulator's report: what each round did (cohort, survivors, stage timings,
// bytes, local training), how good the global adapter is on held-out text, and how long
// the setup took. Written as JSON (ReportToJson, schema "flotilla.simulate.v1"; fields in
// docs/simulator.md) and summarised as text lines for the console.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "flotilla/core/status.h"

namespace flotilla::simulator {

// Held-out perplexity of one global adapter: per device (mean/min/max over the evaluated
// devices) and on the pooled held-out set (every evaluated device's held-out text).
struct PerplexityStats {
  size_t devices = 0;
  double mean = 0;
  double min = 0;
  double max = 0;
  double pooled = 0;
  double pooled_loss = 0;  // mean token loss of the pooled set
  int64_t pooled_tokens = 0;
  int64_t eval_ms = 0;
};

struct StageReport {
  std::string stage;
  int64_t duration_ms = 0;
  uint32_t answered = 0;
  uint32_t expected = 0;
};

struct RoundReport {
  uint32_t number = 0;  // 1-based
  std::string round_id;
  std::string state;    // "published", "failed", "cancelled", or the last state seen at a time-out
  std::string reason;
  uint32_t check_ins = 0;
  uint32_t cohort = 0;
  uint32_t declined = 0;
  uint32_t survivors = 0;
  std::vector<StageReport> stages;
  int64_t duration_ms = 0;  // the coordinator's view: announcement to publish/failure
  int64_t wall_ms = 0;      // the simulator's view: StartRound to terminal
  int64_t unmask_ms = 0;
  std::string adapter_version;
  // Coordinator traffic during the round (its MQTT session).
  uint64_t messages_in = 0;
  uint64_t messages_out = 0;
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  uint64_t uploads = 0;
  uint64_t messages_rejected = 0;
  // Local training of the cohort (as the devices' trainers saw it).
  uint32_t trained = 0;            // Train calls that succeeded
  uint32_t training_failures = 0;
  double train_seconds_total = 0;  // summed over devices (CPU work, not wall time)
  double train_seconds_max = 0;
  double loss_before_mean = 0;
  double loss_after_mean = 0;
  // Faults injected in this round.
  std::map<std::string, uint64_t> drops;
  uint32_t disconnects = 0;
  std::optional<PerplexityStats> eval;  // of the adapter this round published
};

struct SimulationReport {
  // Run parameters (echoed for the record).
  size_t devices = 0;
  uint32_t rounds_requested = 0;
  uint32_t cohort = 0;
  uint32_t local_steps = 0;
  uint64_t seed = 0;
  std::string trainer;        // "engine" | "seeded"
  std::string model;          // base model path ("" for seeded)
  std::string model_sha256;   // hex
  int64_t trainable_length = 0;
  std::string lora;           // e.g. "rank 4, alpha 8, targets q,k,v,o, frozen-A seed 7"
  std::string secagg_profile;
  std::string dropouts;
  double disconnect_rate = 0;
  unsigned worker_threads = 0;
  // Setup, milliseconds.
  int64_t pki_ms = 0;
  int64_t data_ms = 0;
  int64_t broker_ms = 0;
  int64_t agents_ms = 0;
  int64_t connect_ms = 0;
  size_t connected = 0;
  std::optional<PerplexityStats> initial_eval;  // the base model (all-zero adapter)
  std::vector<RoundReport> rounds;
  uint32_t rounds_published = 0;
  int64_t wall_ms = 0;
  std::string out_dir;
  std::string coordinator_db;
  std::string journal_db;
};

// The JSON document (2-space indent).
std::string ReportToJson(const SimulationReport& report);
// Writes ReportToJson atomically.
Status WriteReport(const SimulationReport& report, const std::filesystem::path& path);
// One console line per round, e.g.
// "round 2/3 published: cohort 100, survivors 98, 6.1 s (train 4.2 s), ppl 31.2 (min 20.1, max 45.0, pooled 30.9)".
std::string FormatRoundLine(const RoundReport& round, uint32_t of);
std::string FormatPerplexity(const PerplexityStats& stats);

}  // namespace flotilla::simulator
