// OtaClient: the device-side update state machine (reference/ota.md 6.3, docs/ota.md).
//
//   IDLE → CHECK → DOWNLOAD → VERIFY → STAGE → SWITCH → HEALTH → COMMIT → REPORT → IDLE
//                                                          └──→ ROLLBACK ─┘
// Every state is journaled in SQLite before its action runs, and every action is
// idempotent, so a restart after power loss replays the journaled state: the device is
// always on the old or the new artifact, never on neither. A failed report never rolls
// back a good install; it stays pending and is retried by later cycles.
//
// Slots: <install_dir>/{A,B}/artifact (+ target.pb, the TargetInfo it holds) and the
// symlink <install_dir>/current → A|B, switched by an atomic rename.
// Not thread-safe: drive it from one thread (the device agent's).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "flotilla/core/bytes.h"
#include "flotilla/core/clock.h"
#include "flotilla/core/random.h"
#include "flotilla/core/status.h"
#include "flotilla/ota/fetcher.h"
#include "flotilla/ota/journal.h"
#include "flotilla/ota/verifier.h"
#include "flotilla/protocol/signer.h"
#include "flotilla/v1/ota.pb.h"

namespace flotilla::ota {

enum class OtaState : uint8_t {
  kIdle, kCheck, kDownload, kVerify, kStage, kSwitch, kHealth, kCommit, kRollback, kReport,
};
enum class OtaEvent : uint8_t {
  kStart,          // IDLE: a cycle begins
  kNoUpdate,       // CHECK: nothing assigned or already installed
  kAbort,          // CHECK: metadata refused (expired, bad signature...): no install, no report
  kUpdateFound,    // CHECK: a verified target to install
  kFail,           // any pre-switch step failed: report the failure
  kDownloaded,     // DOWNLOAD: every chunk verified
  kRetryDownload,  // VERIFY/STAGE: the staged bytes are not what was verified: fetch again
  kVerified,       // VERIFY: full length and SHA-256 match
  kStaged,         // STAGE: artifact is in the inactive slot, fsynced
  kSwitched,       // SWITCH: `current` points at the new slot
  kRetryHealth,    // HEALTH: a failed try, tries left
  kHealthy,        // HEALTH: passed
  kUnhealthy,      // HEALTH: out of tries
  kCommitted,      // COMMIT
  kRolledBack,     // ROLLBACK
  kReportDone,     // REPORT: delivered, or kept pending for a later cycle
};

std::string_view ToString(OtaState state);
std::string_view ToString(OtaEvent event);
v1::OtaState ToProto(OtaState state);
OtaState FromProto(v1::OtaState state);
// The one transition table; nullopt for an event the state does not accept.
std::optional<OtaState> NextState(OtaState state, OtaEvent event);

struct HealthCheckContext {
  std::filesystem::path artifact;  // the newly switched-in file
  const v1::TargetInfo* target = nullptr;
  uint32_t attempt = 0;  // 1-based; crashes during a try count as tries
};

// Implemented by the device agent with the engine (load, golden prompts, budgets).
class HealthChecker {
 public:
  virtual ~HealthChecker() = default;
  // OK with figures when healthy; any error means this try failed.
  virtual Result<v1::HealthFigures> Check(const HealthCheckContext& context) = 0;
};

// Delivers a sealed OtaReport envelope (MQTT event in the device agent).
class ReportSink {
 public:
  virtual ~ReportSink() = default;
  virtual Status Send(ByteSpan sealed_envelope, const v1::OtaReport& report) = 0;
};

struct OtaClientOptions {
  std::filesystem::path data_dir;     // journal (ota_journal.db) and staging/
  std::filesystem::path install_dir;  // A/, B/, current
  std::string target_name;            // the target this client installs
  DeviceIdentity device;
  Bytes provisioned_root;             // trust anchor, used until the journal holds a state
  // Adapters: the SHA-256 of the installed base model (checked against base_model_sha256).
  std::function<Bytes()> installed_base_sha256;
  uint32_t max_download_attempts = 5;
  std::chrono::milliseconds backoff_initial{500};
  std::chrono::milliseconds backoff_max{std::chrono::minutes(5)};
  uint32_t max_health_attempts = 3;
  uint32_t max_report_attempts = 20;
  // A server that ignores Range (or changes ETag) mid-download: restart from zero, or
  // fail cleanly (metered links).
  bool allow_full_restart = true;
};

struct OtaClientDeps {
  ArtifactFetcher* fetcher = nullptr;     // required
  HealthChecker* health = nullptr;        // required
  ReportSink* reports = nullptr;          // required
  const protocol::Signer* signer = nullptr;  // device identity; required
  std::string report_recipient = "coordinator";
  const Clock* clock = nullptr;           // default RealClock()
  Random* random = nullptr;               // jitter + envelope ids; default OsRandom()
  CrashHook crash_hook;                   // tests: simulate power loss at named points
  std::function<void(std::chrono::milliseconds)> sleep;  // default std::this_thread::sleep_for
};

struct CycleResult {
  v1::OtaOutcome outcome = v1::OTA_OUTCOME_UNSPECIFIED;  // UNSPECIFIED: nothing to install
  std::string error;
  bool report_delivered = false;
  uint64_t bytes_downloaded = 0;
};

class OtaClient {
 public:
  static Result<std::unique_ptr<OtaClient>> Open(OtaClientOptions options, OtaClientDeps deps);
  ~OtaClient();

  // Runs one cycle to IDLE, first finishing a journaled one (after a crash) and
  // retrying a pending report. Errors are internal failures (journal, disk); update
  // outcomes, including refused metadata, are in the result.
  Result<CycleResult> RunCycle();

  OtaState state() const;
  // TargetInfo of the slot `current` points at, nullopt if nothing is installed.
  Result<std::optional<v1::TargetInfo>> InstalledTarget() const;
  std::filesystem::path CurrentArtifactPath() const;
  Journal& journal();

 private:
  struct Impl;
  explicit OtaClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace flotilla::ota
