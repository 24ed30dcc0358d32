// Staged OTA rollouts (ARCHITECTURE.md §9, reference/ota.md §6.4, docs/ota.md "Rollouts").
//
// A rollout takes one published target set (names in the OTA repository) to the fleet in
// phases: an optional canary phase (named devices), then cumulative percentage phases
// (e.g. 1, 10, 50, 100 % of the eligible non-canary devices). Membership is random: each
// device gets a 63-bit draw from the Random seam (a CSPRNG in production) the first time
// the rollout sees it, recorded in SQLite; a percentage phase assigns the lowest draws
// until ceil(p% x eligible devices) are assigned, so devices that join late get a draw
// and are counted in the current phase's percentage.
//
// Per phase: a success threshold (share of the phase's members that reported success)
// advances it; an error threshold (a failure count, or a failure percentage once a
// minimum number of devices finished, both counted over the whole rollout, as AWS IoT
// Jobs' abort criteria) halts it. A rate cap bounds *new* assignments per minute; abort
// (retraction), rollback and re-signing before expiry are never capped, so taking the
// fleet back does not crawl.
// Only Tick() assigns, and it evaluates the thresholds first, so no device outside the
// active phase is ever assigned.
//
// Every state change is committed to SQLite (component "rollouts", migrated on its own)
// before its side effect (director signature, MQTT hint), and Tick() finishes side effects that a
// crash left undone, so a restarted coordinator resumes. Device status comes only from
// OtaReport envelopes signed by the device key and bound to the assignment's nonce.
//
// Rollback signs a new release of the previous artifact of each target (same bytes,
// release counter + 1: devices never accept a lower counter) and assigns it to every
// device the rollout assigned; devices still hold it in their other A/B slot, so nothing
// is downloaded.
//
// Thread-safe: one internal mutex serializes every public call (HTTP handlers, the MQTT
// owner thread and the service loop may call concurrently). One RolloutManager per
// database file and repository directory.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "flotilla/core/bytes.h"
#include "flotilla/core/clock.h"
#include "flotilla/core/random.h"
#include "flotilla/core/status.h"
#include "flotilla/protocol/signer.h"
#include "flotilla/protocol/transport.h"

namespace flotilla::ota {
class Repository;
}

namespace flotilla::coordinator {

// Append-only values (stored by name in SQLite).
enum class RolloutState : uint8_t {
  kActive,       // assigning the current phase
  kPaused,       // operator pause, or a phase with pause_after finished
  kHalted,       // an error threshold was crossed
  kCompleted,    // the last phase met its success threshold; late joiners still assigned
  kAborted,      // no more assignments; assignments without a report are retracted
  kRollingBack,  // assigning the previous release to every assigned device
  kRolledBack,
};
enum class RolloutEvent : uint8_t { kPause, kResume, kHalt, kComplete, kAbort, kRollback, kRollbackDone };

std::string_view ToString(RolloutState state);
std::string_view ToString(RolloutEvent event);
Result<RolloutState> ParseRolloutState(std::string_view name);
// The one transition table; nullopt for an event the state does not accept.
std::optional<RolloutState> NextRolloutState(RolloutState state, RolloutEvent event);

// Per-device status inside one rollout (stored by name).
enum class DeviceRolloutStatus : uint8_t {
  kPending,    // seen, not assigned
  kAssigned,   // director assignment committed (signed unless a crash intervened)
  kSucceeded,  // signed report: installed and healthy
  kFailed,     // signed report: failed before the switch, or rolled back by its health check
  kRetracted,  // assigned, then the rollout was aborted before a report arrived
  kReverted,   // rollback release reported installed
  kReverting,  // rollback release assigned, no report yet
};
std::string_view ToString(DeviceRolloutStatus status);
Result<DeviceRolloutStatus> ParseDeviceRolloutStatus(std::string_view name);

struct PhaseSpec {
  std::string name;                // "canary", "1%", ...
  bool canary = false;             // only as the first phase: assigns RolloutSpec::canary_devices
  double percent = 0;              // cumulative share of eligible non-canary devices, (0, 100]
  double success_percent = 100;    // share of this phase's members that must succeed to advance
  uint32_t max_failures = 0;       // halt at this many failures in the rollout (0: off)
  double max_failure_percent = 0;  // halt at failed/finished >= this... (0: off)
  uint32_t min_finished = 0;       // ...once this many devices finished (reported)
  bool pause_after = false;        // wait for Resume() before the next phase
};

struct RolloutSpec {
  std::string name;
  std::vector<std::string> targets;         // published target names, as devices install them
  std::vector<std::string> canary_devices;  // used by a canary phase
  std::vector<PhaseSpec> phases;            // percentages non-decreasing, the last one 100
  uint32_t max_assignments_per_minute = 0;  // new assignments in any sliding minute; 0: no cap
  std::string repository_url;               // put in MQTT hints (devices re-check the director)
};

// Canary (if `canary` is non-empty) then one phase per percentage, each with the same
// thresholds. A convenience for the CLI, REST API and tests.
RolloutSpec MakeRolloutSpec(std::string name, std::vector<std::string> targets, std::vector<std::string> canary,
                            const std::vector<double>& percents, const PhaseSpec& thresholds);
// InvalidArgument naming the rule: names present and safe, phases ordered, last 100 %...
Status ValidateRolloutSpec(const RolloutSpec& spec);

// The JSON forms shared by the REST API, `flotilla ota rollout create --spec` and the
// database (docs/ota.md "Rollouts"). FromJson treats its input as untrusted:
// InvalidArgument naming the field. Pure, thread-safe.
Result<RolloutSpec> RolloutSpecFromJson(std::string_view json);
std::string RolloutSpecToJson(const RolloutSpec& spec);

struct RolloutCounts {
  uint64_t eligible = 0;  // devices the rollout has seen (compatible hardware)
  uint64_t assigned = 0;  // ever assigned (every status but pending)
  uint64_t succeeded = 0;
  uint64_t failed = 0;
  uint64_t in_progress = 0;  // assigned, no final report yet
  uint64_t retracted = 0;
  uint64_t reverting = 0;
  uint64_t reverted = 0;
};

struct RolloutSummary {
  int64_t id = 0;
  std::string name;
  std::string deployment_id;  // director deployment id and OtaReport.deployment_id
  RolloutState state = RolloutState::kActive;
  uint32_t phase = 0;  // index into spec.phases
  std::string reason;  // why halted / paused / aborted
  RolloutSpec spec;
  RolloutCounts counts;
  uint64_t phase_quota = 0;  // devices the current phase assigns in total (all phases so far)
  int64_t created_ms = 0;
  int64_t updated_ms = 0;
};

std::string RolloutSummaryToJson(const RolloutSummary& summary, int indent = -1);

struct DeviceStatusRow {
  std::string device_id;
  DeviceRolloutStatus status = DeviceRolloutStatus::kPending;
  bool canary = false;
  int32_t phase = -1;  // phase it was assigned in; -1: not assigned
  int64_t assigned_ms = 0;
  int64_t reported_ms = 0;
  std::string error;
};

// The fleet as the coordinator's device registry sees it. Implemented by the coordinator
// store; tests use a vector.
struct FleetDevice {
  std::string device_id;
  std::string hardware_class;
};
class FleetView {
 public:
  virtual ~FleetView() = default;
  // Every enrolled device. Called from Tick(); must be thread-safe w.r.t. its writers.
  virtual Result<std::vector<FleetDevice>> ListDevices() = 0;
};

struct RolloutStats {
  uint64_t reports_accepted = 0;
  uint64_t reports_rejected = 0;  // bad signature, unknown deployment/device, wrong nonce...
  uint64_t assignments_signed = 0;
  uint64_t assignments_refreshed = 0;  // re-signed before expiry (counted in assignments_signed too)
  uint64_t hints_sent = 0;
  uint64_t hint_failures = 0;
};

struct RolloutOptions {
  // Created if missing and migrated as component "rollouts" (Database::Migrate): the
  // coordinator's <data_dir>/coordinator.db next to its Store (a separate connection;
  // SQLite's busy timeout lets both write), or a file of its own (the CLI's
  // <state>/rollouts.db).
  std::filesystem::path db_path;
  // Reports may be delivered late (devices retry pending reports at later cycles); the
  // nonce binds them to one assignment, so the age bound is generous.
  std::chrono::milliseconds report_max_age{std::chrono::hours(24 * 7)};
  uint32_t hint_expiry_seconds = 3600;
  // Director assignments expire (the repository's director expiry, 7 days by default).
  // Tick() re-signs those expiring within this window — same targets, new nonce, new
  // expiry, no hint; reports bound to the replaced nonce still count — as long as the
  // device's director file is still this rollout's. Not rate-capped. 0: never.
  std::chrono::milliseconds director_refresh_window{std::chrono::hours(48)};
  bool synchronous_full = true;  // SQLite synchronous=FULL (NORMAL for benchmarks on tmpfs)
};

// Side-effect seams. Everything but `clock` and `random` may be null: without `repository`
// only state changes and queries work (Create and Tick need it); without `fleet` Tick
// assigns no new devices; without `transport`/`signer` no hints; without `device_keys`
// every report is rejected. Borrowed; must outlive the manager.
struct RolloutDeps {
  ota::Repository* repository = nullptr;
  FleetView* fleet = nullptr;
  protocol::Transport* transport = nullptr;                  // hints on fl/v1/d/{id}/dn/cmd/ota
  const protocol::Signer* signer = nullptr;                  // coordinator identity (hint envelopes)
  const protocol::SignatureVerifier* device_keys = nullptr;  // device identities (reports)
  const Clock* clock = nullptr;                              // default RealClock()
  Random* random = nullptr;                                  // draws, nonces; default OsRandom()
  // Tests: called at named points ("assign:committed", "assign:signed",
  // "rollback:published"); an error stops the call there, as a crash would.
  std::function<Status(std::string_view point)> fault_hook;
};

class RolloutManager {
 public:
  static Result<std::unique_ptr<RolloutManager>> Open(RolloutOptions options, RolloutDeps deps);
  ~RolloutManager();

  // Records a rollout of `spec.targets` as currently published in the repository, with
  // the previous release of each (for rollback) when the repository still has one.
  // InvalidArgument for a bad spec, NotFound for an unpublished target,
  // FailedPrecondition if another unfinished rollout covers one of the targets.
  Result<RolloutSummary> Create(const RolloutSpec& spec);
  Result<std::vector<RolloutSummary>> List();
  Result<RolloutSummary> Get(int64_t id);
  // Devices of a rollout, optionally only one status, at most `limit` (0: all).
  Result<std::vector<DeviceStatusRow>> Devices(int64_t id, std::optional<DeviceRolloutStatus> status = {},
                                               size_t limit = 0);

  // Operator commands: FailedPrecondition if the state does not accept them. They only
  // commit the new state; Tick() performs what follows (retractions, rollback).
  Status Pause(int64_t id, std::string reason = "paused by operator");
  Status Resume(int64_t id);
  Status Abort(int64_t id, std::string reason = "aborted by operator");
  // FailedPrecondition if a target has no previous release to return to.
  Status Rollback(int64_t id, std::string reason = "rollback by operator");

  // One step of every unfinished rollout: pick up new fleet devices, evaluate thresholds,
  // assign within the phase quota and the rate cap, sign director assignments, send
  // hints, retract (abort), publish and assign the previous release (rollback), and
  // redo any of those a crash interrupted. Call periodically and after commands.
  Status Tick();

  // Verifies a sealed OtaReport envelope (device signature, recipient "coordinator",
  // age) and records the device's outcome if it matches an assignment (deployment id,
  // device, nonce). Rejected reports change nothing: Unauthenticated / PermissionDenied /
  // NotFound / InvalidArgument say why.
  Status HandleReport(ByteSpan envelope);
  // For a Transport message handler: reports arriving on fl/v1/d/{id}/up/event/ota-report
  // (the topic's {id} must be the signer); other topics are ignored. Logs rejections.
  void HandleMessage(const protocol::Message& message);

  RolloutStats stats() const;

 private:
  struct Impl;
  explicit RolloutManager(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace flotilla::coordinator
