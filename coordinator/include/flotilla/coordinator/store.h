// The coordinator's durable state: one SQLite file (WAL, versioned migrations applied by
// Store::Open) plus content-addressed artifact files (artifact_store.h) under one data
// directory:
//
//   <data_dir>/coordinator.db                       devices, tokens, rounds, versions, audit, ...
//   <data_dir>/artifacts/sha256/ab/cdef...          immutable blobs named by their SHA-256
//
// Every change that touches several rows (a device and its groups, a token and the
// device it enrols, a round transition and its audit entry) is one transaction. Every
// operator-visible change appends to the audit log in the same transaction; the audit
// table refuses UPDATE and DELETE (SQLite triggers), so history is append-only.
//
// Thread safety: a Store is safe to use from any number of threads (one connection
// behind a mutex). For parallel writers (the round engine next to the HTTP server) open a
// second Store on the same data dir: WAL lets readers run while one writer commits.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flotilla/coordinator/artifact_store.h"
#include "flotilla/coordinator/round_journal.h"
#include "flotilla/coordinator/round_state.h"
#include "flotilla/core/bytes.h"
#include "flotilla/core/clock.h"
#include "flotilla/core/random.h"
#include "flotilla/core/status.h"

namespace flotilla::sqlite {
class Database;
}

namespace flotilla::coordinator {

// Newest schema version this build writes (PRAGMA user_version after Open).
inline constexpr int kStoreSchemaVersion = 3;

// ---------------------------------------------------------------- devices

enum class DeviceStatus : uint8_t { kActive = 1, kRevoked = 2 };
enum class PresenceState : uint8_t { kUnknown = 0, kOnline = 1, kOffline = 2 };
std::string_view ToString(DeviceStatus status);
std::string_view ToString(PresenceState state);

struct DeviceRecord {
  std::string id;                 // = certificate CN = MQTT client id
  Bytes identity_public_key;      // SubjectPublicKeyInfo DER (ECDSA P-256)
  std::string certificate_pem;    // empty if enrolled with a token and no certificate
  DeviceStatus status = DeviceStatus::kActive;
  std::vector<std::string> groups;  // sorted
  Bytes hardware;                 // serialized flotilla.v1.HardwareInfo (may be empty)
  std::string firmware_version;
  std::string sdk_version;
  int64_t first_seen_ms = 0;      // enrolment time
  int64_t last_seen_ms = 0;       // last message of any kind
  PresenceState presence = PresenceState::kUnknown;
  std::string session_id;         // MQTT session of the last presence
  int64_t presence_changed_ms = 0;
  Bytes reported_state;           // last serialized flotilla.v1.ReportedState
  int64_t reported_ms = 0;
  int64_t revoked_ms = 0;
  std::string revoked_reason;
};

struct DeviceFilter {
  std::optional<DeviceStatus> status;
  std::optional<PresenceState> presence;
  std::string group;              // empty: any
  std::string after_id;           // keyset pagination: ids > after_id
  int limit = 1000;
};

// What Enrolment (enrolment.h) has verified and asks the store to record.
struct EnrolDeviceRequest {
  std::string device_id;
  Bytes identity_public_key;
  std::string certificate_pem;
  Bytes hardware;
  std::string firmware_version;
  std::string sdk_version;
  std::string enrolment_token;    // plaintext; empty when enrolling by certificate only
  bool require_token = false;     // policy: refuse without a valid token
};

// ---------------------------------------------------------------- tokens

// Scopes of API tokens. "admin" implies every other scope.
inline constexpr std::string_view kScopeRead = "read";      // every GET
inline constexpr std::string_view kScopeRounds = "rounds";  // start / cancel rounds
inline constexpr std::string_view kScopeAdmin = "admin";    // devices, tokens, everything
bool IsKnownScope(std::string_view scope);

struct ApiTokenRecord {
  std::string id;                 // public part of the token (16 hex chars)
  std::string name;
  std::vector<std::string> scopes;
  int64_t created_ms = 0;
  bool revoked = false;
  bool HasScope(std::string_view scope) const;
};

struct EnrolmentTokenRecord {
  std::string id;
  std::string device_id;          // empty: any device id may use it
  std::vector<std::string> groups;  // assigned to the device it enrols
  int64_t created_ms = 0;
  int64_t expires_ms = 0;
  int64_t used_ms = 0;            // 0 while unused
  std::string used_by;
};

// A freshly made token: the plaintext exists only here (the store keeps its SHA-256).
template <typename Record>
struct IssuedToken {
  Record record;
  std::string token;
};

// ---------------------------------------------------------------- rounds

// Round states: the round engine's vocabulary (round_state.h; the transition table is
// the engine's). The store only persists states by name (compare-and-set), so a
// restarted coordinator resumes.
using rounds::AllRoundStates;
using rounds::IsTerminal;
using rounds::ParseRoundState;
using rounds::RoundState;
using rounds::ToString;

struct RoundRecord {
  std::string id;
  std::string group;
  RoundState state = RoundState::kCreated;
  std::string reason;             // why it failed / was cancelled
  std::string config_json;        // round configuration (JSON object), owned by the engine
  int64_t created_ms = 0;
  int64_t updated_ms = 0;
  bool cancel_requested = false;
  std::string cancel_reason;
  std::map<std::string, int64_t> deadlines_ms;  // stage name -> absolute Unix ms
  std::string aggregate_sha256;   // hex artifact of the aggregate, empty until aggregated
  std::string result_version;     // adapter version the round produced
  // The round engine's RoundSpec (JSON). Empty while the round waits in the queue (made
  // by POST /rounds or the scheduler); the engine adopts it by filling this in.
  std::string spec_json;
};

struct NewRound {
  std::string id;                 // empty: generated ("r-<unix ms>-<8 hex>")
  std::string group;
  std::string config_json = "{}";
};

struct ParticipantRecord {
  std::string round_id;
  std::string device_id;
  uint32_t cohort_index = 0;      // 1..n (Shamir x-coordinate); 0 before selection
  std::map<std::string, std::string> stages;  // stage -> status ("ok", "dropped", ...)
  int64_t updated_ms = 0;
  std::string last_stage;         // the stage row committed last, and its status
  std::string last_status;
};

struct StageUpdate {
  std::string device_id;
  std::string stage;
  std::string status;
};

// stage -> status -> number of participants.
using StageCounts = std::map<std::string, std::map<std::string, int64_t>>;

struct UploadRecord {
  std::string round_id;
  std::string device_id;
  std::string sha256;             // hex
  uint64_t size = 0;
  int64_t created_ms = 0;
};

// ---------------------------------------------------------------- registry

enum class VersionKind : uint8_t { kModel, kAdapter };
std::string_view ToString(VersionKind kind);

struct VersionRecord {
  std::string id;                 // "base-3", "adapter-17"
  std::string kind;               // free-form class: "base", "merged", "lora-frozen-a", ...
  std::string parent_id;          // previous version of the same table (lineage); may be empty
  std::string base_model_id;      // adapters: the base model they apply to
  std::string round_id;           // round that produced it, if any
  std::string sha256;             // hex; an artifact of the store
  uint64_t size = 0;
  std::string metrics_json = "{}";
  int64_t created_ms = 0;
};

// ---------------------------------------------------------------- audit

struct AuditEntry {
  int64_t id = 0;                 // increasing
  int64_t at_ms = 0;
  std::string actor;              // "api:<token id>", "cli", "mqtt", "engine"
  std::string action;             // "device.revoke", "round.create", ...
  std::string subject;            // the object's id
  std::string detail_json = "{}";
};

// What the signature checks of a device's envelopes need (one indexed lookup).
struct DeviceIdentity {
  DeviceStatus status = DeviceStatus::kActive;
  Bytes identity_public_key;      // SubjectPublicKeyInfo DER
};

struct StoreOptions {
  Clock* clock = nullptr;         // default RealClock()
  Random* random = nullptr;       // default OsRandom() (tokens, upload secrets, round ids)
  bool synchronous_full = true;   // fsync every commit (off only in benchmarks)
  int cache_kib = 0;              // SQLite page cache limit (0: SQLite's default, 2,000 KiB)
};

class Store {
 public:
  // Opens (creating if needed) <data_dir>/coordinator.db and <data_dir>/artifacts, and
  // applies pending migrations. FailedPrecondition if the file was written by a newer
  // schema; Unavailable for I/O errors.
  static Result<std::unique_ptr<Store>> Open(const std::filesystem::path& data_dir, StoreOptions options = {});
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  const std::filesystem::path& data_dir() const { return data_dir_; }
  ArtifactStore& artifacts() { return *artifacts_; }
  Result<int> SchemaVersion();
  Status IntegrityCheck();

  // ---- devices
  // Records a verified enrolment in one transaction: consumes the token (one-time,
  // unexpired, bound device id), inserts the device or re-keys an existing one (only with
  // a token bound to that id), assigns the token's groups, audits. Refusals:
  // PermissionDenied (revoked device, bad/used/expired token, token required),
  // AlreadyExists (known device, different key, no token). Re-sending the same
  // enrolment for an active device succeeds (QoS 1 redelivery) and changes nothing.
  Result<DeviceRecord> EnrolDevice(const EnrolDeviceRequest& request, std::string_view actor);
  Result<DeviceRecord> GetDevice(std::string_view id);
  Result<std::vector<DeviceRecord>> ListDevices(const DeviceFilter& filter = {});
  // NotFound for unknown ids; revoking twice is OK and keeps the first reason.
  Status RevokeDevice(std::string_view id, std::string_view reason, std::string_view actor);
  // Replaces the device's groups (names must be safe topic names), creating groups.
  Status SetDeviceGroups(std::string_view id, std::span<const std::string> groups, std::string_view actor);
  // Presence from the retained presence topic / Will. An OFFLINE for another session than
  // the current one is ignored (a late Will of an old session), as are updates older
  // than the stored one. Returns whether the state changed. NotFound for unknown ids.
  Result<bool> SetPresence(std::string_view id, PresenceState state, std::string_view session_id,
                           int64_t timestamp_ms);
  // Stores the last serialized ReportedState (older timestamps ignored).
  Status SetReportedState(std::string_view id, ByteSpan reported, int64_t timestamp_ms);
  Status TouchDevice(std::string_view id);
  Result<int64_t> CountDevices(std::optional<PresenceState> presence, std::optional<DeviceStatus> status);
  Result<std::vector<std::string>> ListGroups();
  // Status and identity key only; NotFound for unknown ids. For per-message checks.
  Result<DeviceIdentity> GetDeviceIdentity(std::string_view id);

  // ---- API tokens (stored as SHA-256; plaintext "flt_<id>_<secret>" returned once)
  Result<IssuedToken<ApiTokenRecord>> CreateApiToken(std::string_view name, std::span<const std::string> scopes,
                                                     std::string_view actor);
  // The token's record, or Unauthenticated (unknown, malformed, revoked). The secret is
  // compared in constant time.
  Result<ApiTokenRecord> AuthenticateApiToken(std::string_view token);
  Status RevokeApiToken(std::string_view id, std::string_view actor);
  Result<std::vector<ApiTokenRecord>> ListApiTokens();

  // ---- enrolment tokens ("fle_<id>_<secret>")
  Result<IssuedToken<EnrolmentTokenRecord>> CreateEnrolmentToken(std::string_view device_id,
                                                                 std::span<const std::string> groups,
                                                                 std::chrono::seconds ttl, std::string_view actor);
  Result<std::vector<EnrolmentTokenRecord>> ListEnrolmentTokens();

  // ---- rounds
  Result<RoundRecord> CreateRound(const NewRound& round, std::string_view actor);
  Result<RoundRecord> GetRound(std::string_view id);
  // Newest first, at most `limit`; `state` filters.
  Result<std::vector<RoundRecord>> ListRounds(std::optional<RoundState> state = std::nullopt, int limit = 100);
  // Compare-and-set: Aborted if the round is not in `from` (someone else moved it),
  // FailedPrecondition if it is already terminal. Audited with `reason`.
  Status TransitionRound(std::string_view id, RoundState from, RoundState to, std::string_view reason,
                         std::string_view actor);
  Status SetRoundDeadline(std::string_view id, std::string_view stage, int64_t deadline_ms);
  Status SetRoundResult(std::string_view id, std::string_view aggregate_sha256, std::string_view result_version);
  // Records the request; the engine honours it at its next step. FailedPrecondition if
  // the round is already terminal.
  Status RequestCancelRound(std::string_view id, std::string_view reason, std::string_view actor);
  Result<std::map<RoundState, int64_t>> CountRoundsByState();

  // ---- participants
  // Inserts the cohort in one transaction (AlreadyExists if a device is already in it).
  Status AddParticipants(std::string_view round_id, std::span<const std::pair<std::string, uint32_t>> cohort);
  Status SetParticipantStages(std::string_view round_id, std::span<const StageUpdate> updates);
  Result<std::vector<ParticipantRecord>> ListParticipants(std::string_view round_id);
  Result<bool> IsParticipant(std::string_view round_id, std::string_view device_id);
  Result<StageCounts> CountParticipantsByStage(std::string_view round_id);
  // Rows of round_participants (the cohort once selected), without reading them.
  Result<int64_t> CountParticipants(std::string_view round_id);

  // ---- the round engine's journal (StoreRoundJournal, store_round_journal.h)
  // Records a round the engine starts (state created, `spec_json` set), or adopts a
  // queued one (state created, empty spec: what POST /rounds and the scheduler insert)
  // by filling in its spec and group. AlreadyExists for any other existing id. Audited
  // ("round.create" / "round.adopt") in the same transaction.
  Status CreateEngineRound(std::string_view id, std::string_view group, std::string_view spec_json,
                           std::string_view actor);
  // ONE transaction: compare-and-set of the state `from` -> `to` with `reason` (Aborted
  // if the round is elsewhere, NotFound if unknown), every participant's cohort index and
  // stage row, the result when `result_version` is non-null (with the hex sha256 of its
  // artifact, which must be recorded), and an audit entry. Nothing is written on error.
  Status JournalTransition(std::string_view id, RoundState from, RoundState to, std::string_view reason,
                           std::span<const rounds::ParticipantStage> participants, const std::string* result_version,
                           std::string_view result_sha256_hex, std::string_view actor);
  // Engine rounds (spec set) not in a terminal state, oldest first.
  Result<std::vector<RoundRecord>> ListUnfinishedEngineRounds();
  // Queued rounds (state created, no spec yet), oldest first, at most `limit`.
  Result<std::vector<RoundRecord>> ListQueuedRounds(int limit = 100);
  // One device's stage rows in a round, in commit order.
  Result<std::vector<rounds::ParticipantStage>> ParticipantStageHistory(std::string_view round_id,
                                                                        std::string_view device_id);
  // IntegrityCheck() plus the round invariants (docs/coordinator.md "Store"): DataLoss
  // naming the first violation.
  Status CheckRoundInvariants();

  // ---- uploads (large masked inputs over HTTP, announced by a ClaimCheck)
  // Token for one device's upload in one round: HMAC-SHA256(round upload secret,
  // round || 0 || device), hex. Stateless to verify; useless for any other (round, device).
  Result<std::string> UploadToken(std::string_view round_id, std::string_view device_id);
  // OK or Unauthenticated (constant-time comparison). NotFound for an unknown round.
  Status VerifyUploadToken(std::string_view round_id, std::string_view device_id, std::string_view token);
  // AlreadyExists if the device already uploaded different bytes for the round; the same
  // bytes again succeed (a retried upload).
  Status RecordUpload(const UploadRecord& upload);
  Result<UploadRecord> GetUpload(std::string_view round_id, std::string_view device_id);
  // The uploaded bytes (a serialized SealedBox), hash-checked on read: what the round
  // engine's UploadSource::Fetch returns. NotFound if the device uploaded nothing.
  Result<Bytes> ReadUpload(std::string_view round_id, std::string_view device_id, uint64_t max_bytes);
  // Deletes the uploads of rounds in a terminal state: their rows, and their artifact
  // rows and files unless something else (a version, another upload) names the same
  // bytes. Returns how many uploads went. Idempotent; safe to call at any time.
  Result<int64_t> PurgeFinishedRoundUploads();

  // ---- model and adapter registry
  // The artifact must exist (FailedPrecondition); parent/base must exist (NotFound).
  Status AddVersion(VersionKind kind, const VersionRecord& version, std::string_view actor);
  Result<VersionRecord> GetVersion(VersionKind kind, std::string_view id);
  Result<std::vector<VersionRecord>> ListVersions(VersionKind kind, int limit = 100);
  // `id` first, then its parent, grandparent, ... (cycle-safe, at most 10,000 steps).
  Result<std::vector<VersionRecord>> Lineage(VersionKind kind, std::string_view id);
  // Replaces a version's metrics (JSON object). NotFound for unknown versions.
  Status SetVersionMetrics(VersionKind kind, std::string_view id, std::string_view metrics_json);
  // The version new rounds start from (registry_current); "" if never set. Setting it
  // needs an existing version (NotFound) and is audited.
  Result<std::string> CurrentVersion(VersionKind kind);
  Status SetCurrentVersion(VersionKind kind, std::string_view id, std::string_view actor);
  // True if a model or adapter version names this artifact: what devices may download
  // without a token (GET /api/v1/artifacts/sha256/{hex}).
  Result<bool> IsVersionArtifact(std::string_view sha256_hex);

  // ---- artifacts (files via artifacts(), rows here)
  // Writes `data` to the artifact store and records it; idempotent.
  Result<ArtifactInfo> PutArtifact(ByteSpan data, std::string_view media_type);
  // Records an artifact already committed through ArtifactStore::NewWriter.
  Status RecordArtifact(const ArtifactInfo& info, std::string_view media_type);
  Result<ArtifactInfo> GetArtifact(std::string_view sha256_hex);

  // ---- audit log
  Status AppendAudit(std::string_view actor, std::string_view action, std::string_view subject,
                     std::string_view detail_json = "{}");
  Result<std::vector<AuditEntry>> ListAudit(int64_t after_id, int limit);

  // ---- persisted counters (metrics that must survive restarts)
  Status AddCounters(const std::map<std::string, int64_t>& deltas);
  Result<std::map<std::string, int64_t>> Counters();

  Clock& clock() { return *clock_; }

 private:
  Store(std::filesystem::path data_dir, std::unique_ptr<sqlite::Database> db, std::unique_ptr<ArtifactStore> artifacts,
        Clock* clock, Random* random);
  // REQUIRES: mu_ held.
  Status AuditLocked(std::string_view actor, std::string_view action, std::string_view subject,
                     std::string_view detail_json);
  Result<DeviceRecord> GetDeviceLocked(std::string_view id);
  Result<RoundRecord> GetRoundLocked(std::string_view id);
  Result<Bytes> UploadSecretLocked(std::string_view round_id);
  Result<int64_t> NextStageSeqLocked(std::string_view round_id);
  Result<std::vector<RoundRecord>> ListRoundsWhereLocked(std::string_view where, int limit);
  std::string RandomHex(size_t bytes);

  std::filesystem::path data_dir_;
  std::mutex mu_;
  std::unique_ptr<sqlite::Database> db_;  // GUARDED_BY(mu_)
  std::unique_ptr<ArtifactStore> artifacts_;
  Clock* clock_;
  Random* random_;
};

}  // namespace flotilla::coordinator
