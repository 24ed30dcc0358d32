// OTA fleet simulator (docs/simulator.md "OTA rollouts", issue 7 item 5): N devices, each
// a real OtaClient with its own data dir, SQLite journal and A/B slots, take one signed
// artifact from a real repository served over loopback HTTP (the coordinator's
// ArtifactServer) while a real RolloutManager (SQLite, component "rollouts" in
// <out_dir>/coordinator.db) drives the phases. Injected faults:
//   - health-check failures: a fixed share of the non-canary devices fail every try;
//   - download faults: a faulting HTTP proxy in front of the ArtifactServer answers a
//     share of artifact requests with a 503, a truncated body or a stall past the
//     device's read timeout (metadata is never faulted);
//   - crashes: chosen devices run their first cycle in a fork()ed child that _exit()s at
//     the first crash point (OtaClient's CrashHook names) matching a prefix, like a
//     killed process; the device then restarts from its journal in this process.
// Time is simulated (a clock shared by repository, rollouts and devices moves by
// `tick_interval` per rollout tick), so rate caps and expiry behave as in production
// while a run takes seconds. Hints go through an in-process Transport that only records
// their recipients; reports are real signed OtaReport envelopes handed to
// RolloutManager::HandleMessage with the device's uplink topic.
//
// Not thread-safe: one thread calls Run() and the accessors; Run() uses its own workers.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "flotilla/coordinator/rollout.h"
#include "flotilla/core/random.h"
#include "flotilla/core/status.h"
#include "flotilla/v1/ota.pb.h"

namespace flotilla::simulator {

// "canary:5,10,50,100": an optional canary phase of N devices, then cumulative
// percentages (the last 100). InvalidArgument naming the bad entry.
struct OtaPhasePlan {
  uint32_t canary_devices = 0;
  std::vector<double> percents = {1, 10, 50, 100};
};
Result<OtaPhasePlan> ParseOtaPhases(std::string_view spec);

enum class DownloadFault : uint8_t {
  kServerError,  // 503 Service Unavailable, no body
  kTruncated,    // the right headers, then the connection closes halfway through the body
  kStalled,      // part of the body, then silence longer than the device's read timeout
};
std::string_view ToString(DownloadFault fault);
// "5xx,truncate,stall" (any subset). InvalidArgument naming an unknown kind.
Result<std::vector<DownloadFault>> ParseDownloadFaults(std::string_view spec);

struct OtaFleetOptions {
  uint32_t devices = 100;
  // Everything the run writes: repo/ (signed metadata + artifacts), devices/<id>/,
  // coordinator.db (rollout state), report.json. Created; must not hold an earlier run.
  std::filesystem::path out_dir;
  // The artifact to roll out (a GGUF file is chunked at tensor boundaries); empty: a
  // seeded synthetic artifact of `generate_bytes` in `chunk_bytes` chunks.
  std::filesystem::path artifact;
  uint64_t generate_bytes = uint64_t{2} << 20;
  uint64_t chunk_bytes = uint64_t{256} << 10;  // also the sub-split of GGUF chunks
  OtaPhasePlan phases;
  coordinator::PhaseSpec thresholds;  // success / failure thresholds of every phase
  uint32_t max_assignments_per_minute = 0;
  double health_failure_rate = 0;    // share of non-canary devices whose health check always fails
  double download_fault_rate = 0;    // share of artifact requests answered with a fault
  std::vector<DownloadFault> download_faults = {DownloadFault::kServerError, DownloadFault::kTruncated,
                                                DownloadFault::kStalled};
  std::chrono::milliseconds device_read_timeout{1000};  // a stall lasts 1.5x this
  uint32_t max_download_attempts = 5;
  std::string crash_at;   // crash-point prefix, e.g. "journal:STAGE" or "rename:current"; empty: none
  double crash_rate = 0;  // share of devices that crash (once, in their first cycle) at crash_at
  uint32_t workers = 4;   // devices running at once
  uint32_t max_ticks = 500;
  std::chrono::seconds tick_interval{61};  // simulated time per rollout tick
  uint64_t seed = 1;                       // fault injection and synthetic data (not membership)
  bool verify_installed_bytes = true;      // hash every device's installed artifact at the end
  bool progress = false;                   // one line per tick on stderr
  // Membership draws of the rollout; default OsRandom() (tests pass a seeded one).
  Random* membership_random = nullptr;
  // Each tick's summary (after the tick's devices ran), e.g. to check invariants.
  std::function<void(const coordinator::RolloutSummary&)> on_tick;
};

struct OtaPhaseReport {
  std::string name;
  std::string outcome;  // "advanced", "completed", "halted", "paused", "not reached", "active"
  uint64_t assigned = 0;
  uint64_t installed = 0;    // on the new artifact at the end
  uint64_t healthy = 0;      // signed success report accepted
  uint64_t failed = 0;       // signed failure report accepted (download failure or health rollback)
  uint64_t rolled_back = 0;  // health check failed, device went back to its previous slot
  uint64_t download_failures = 0;
  uint64_t crashes = 0;
  uint64_t bytes_downloaded = 0;
  uint32_t ticks = 0;
  int64_t wall_ms = 0;
  int64_t simulated_ms = 0;
};

struct OtaFleetReport {
  uint32_t devices = 0;
  std::string artifact_sha256;
  uint64_t artifact_bytes = 0;
  uint32_t artifact_chunks = 0;
  std::string final_state;  // RolloutState name
  std::string reason;       // why halted / completed
  std::vector<OtaPhaseReport> phases;
  coordinator::RolloutCounts counts;  // the coordinator's view
  // The devices' view at the end: every device must be on the old or the new artifact.
  uint64_t on_new = 0, on_old = 0, on_neither = 0;
  uint64_t crashes = 0;                  // crashed cycles (then restarted)
  uint64_t download_faults_injected = 0;
  uint64_t bytes_downloaded = 0;
  uint64_t reports_accepted = 0, reports_rejected = 0;
  uint64_t quota_violations = 0;  // ticks where more devices were assigned than the phase allows
  uint64_t mismatches = 0;        // devices whose coordinator status disagrees with their disk
  uint32_t ticks = 0;
  int64_t setup_ms = 0, wall_ms = 0, simulated_ms = 0;
};
std::string OtaFleetReportToJson(const OtaFleetReport& report, int indent = 2);

// One device at the end of a run.
struct OtaDeviceResult {
  std::string id;
  bool canary = false;
  bool health_fails = false;  // injected
  coordinator::DeviceRolloutStatus status = coordinator::DeviceRolloutStatus::kPending;
  int32_t phase = -1;
  v1::OtaOutcome last_outcome = v1::OTA_OUTCOME_UNSPECIFIED;
  std::string installed_sha256;  // hex; "" if nothing is installed
  uint32_t cycles = 0;
  uint32_t crashes = 0;
  uint64_t bytes_downloaded = 0;
};

class OtaFleet {
 public:
  // Keys, repository (the artifact published as release 1), device identities and dirs,
  // servers and the rollout manager. InvalidArgument for bad options.
  static Result<std::unique_ptr<OtaFleet>> Create(OtaFleetOptions options);
  ~OtaFleet();

  // Creates the rollout and ticks until it is no longer active and no assigned device
  // is still working (or max_ticks), running hinted devices on the workers. Writes
  // <out_dir>/report.json. Errors are infrastructure failures, not rollout outcomes.
  Result<OtaFleetReport> Run();

  // After Run(): one check cycle for each of `ids` (as polling devices do).
  Status RunDevices(const std::vector<std::string>& ids);
  std::vector<OtaDeviceResult> Devices() const;
  coordinator::RolloutManager& manager();
  int64_t rollout_id() const;
  const std::filesystem::path& repository_dir() const;

 private:
  struct Impl;
  explicit OtaFleet(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace flotilla::simulator
