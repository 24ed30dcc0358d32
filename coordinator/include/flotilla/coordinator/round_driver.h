// RoundDriver: the coordinator side of a federated round over MQTT (docs/rounds.md).
//
//   announce (g/{group}/dn/round) -> collect RoundCheckIn until the target cohort or the
//   deadline -> sample the cohort with the CSPRNG -> PlanRound (parameter finder) ->
//   RoundInvitation per device (d/{id}/dn/cmd/round) -> SecAggServer stages, each closed
//   when every expected device answered or at its deadline -> Finish -> decode the
//   fixed-point sum -> new global vector = old + weighted mean delta (frozen-A) -> store it
//   (AdapterRegistry) -> AggregateResult to the cohort.
//
// Durability: every state change is committed to the RoundJournal before its side effect
// (messages, adapter promotion). Open() recovers: a round that was in a SecAgg stage is
// failed with "coordinator restarted during <stage>" (its secrets were in memory); one in
// created/selecting is announced again; an aggregated one is published.
//
// Bad input (unsigned, mis-signed, replayed, oversized, malformed, wrong round, wrong
// index, from a device not allowed) is dropped, logged and counted; it never changes the
// round. Memory: the SecAggServer keeps a running sum (O(update)), never the inputs.
//
// Threading: one owner thread calls Poll()/HandleMessage()/Tick()/StartRound()/Cancel();
// status() and stats() are thread-safe. One round runs at a time.
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

#include "flotilla/aggregation/crypto_suite.h"
#include "flotilla/core/clock.h"
#include "flotilla/core/random.h"
#include "flotilla/core/status.h"
#include "flotilla/coordinator/round_journal.h"
#include "flotilla/coordinator/round_ports.h"
#include "flotilla/coordinator/round_state.h"
#include "flotilla/protocol/signer.h"
#include "flotilla/protocol/transport.h"
#include "flotilla/v1/device.pb.h"
#include "flotilla/v1/round.pb.h"

namespace flotilla::rounds {

// What to run. Serialized into the journal (RoundSpecToJson) so a restart can resume.
struct RoundSpec {
  std::string round_id;                // empty: generated ("r<unix ms>-<8 hex>")
  std::string group;
  v1::ModelVersion base_model;         // sha256 (32 bytes) is H(M), bound into SecAgg
  // Template: base_model_sha256 and the adapter fields are filled in by the driver.
  v1::TrainingConfig training;
  v1::Eligibility min_eligibility;
  uint32_t min_cohort = 3;             // fewer check-ins at the deadline: the round fails
  uint32_t target_cohort = 10;         // sampled from the check-ins (the whole set if fewer)
  std::chrono::milliseconds check_in_timeout{std::chrono::seconds(30)};
  std::chrono::milliseconds training_timeout{std::chrono::seconds(120)};  // invitation -> keys advertised
  std::chrono::milliseconds stage_timeout{std::chrono::seconds(30)};      // each later stage
  v1::SecAggProfile profile = v1::SEC_AGG_PROFILE_HARDENED;
  double max_colluding_fraction = 0.1;
  double max_dropout_rate = 0.2;
  uint32_t bit_width = 32;
  double clip_bound = 1.0;             // fixed-point clip c (covers weight * |delta| and the weight)
  uint32_t min_survivors = 0;          // 0 = PlanRound's default
  v1::DpConfig dp;
};

std::string RoundSpecToJson(const RoundSpec& spec);
Result<RoundSpec> RoundSpecFromJson(std::string_view json);

// Wall time per stage (closed stages only), milliseconds.
struct StageTiming {
  std::string stage;
  int64_t duration_ms = 0;
  uint32_t answered = 0;
  uint32_t expected = 0;
};

struct RoundStatus {
  std::string round_id;
  RoundState state = RoundState::kCreated;
  std::string reason;
  uint32_t check_ins = 0;
  uint32_t cohort = 0;      // n
  uint32_t declined = 0;
  uint32_t survivors = 0;   // |U3|
  std::string adapter_version;
  std::vector<StageTiming> stages;
  int64_t duration_ms = 0;  // announcement to publish/failure
  // Time spent inside Finish (unmasking) and decoding, milliseconds.
  int64_t unmask_ms = 0;
};

struct RoundDriverStats {
  uint64_t messages_accepted = 0;
  uint64_t messages_rejected = 0;   // every drop except duplicates
  uint64_t messages_duplicate = 0;  // replay window hits
  uint64_t messages_sent = 0;
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  uint64_t uploads_fetched = 0;
};

// TEST ONLY: what the coordinator aggregated, so a test can compare it with the devices'
// plaintext inputs.
struct RoundTestRecord {
  std::string round_id;
  std::vector<std::string> survivors;  // device ids of U3
  std::vector<uint32_t> sum;           // the unmasked ring sum (length m)
  std::vector<float> mean_delta;       // weighted mean update
  std::vector<float> previous;         // the global vector the round started from
  std::vector<float> next;             // the new global vector
};

struct RoundDriverOptions {
  std::string coordinator_id = "coordinator";
  protocol::Transport* transport = nullptr;                     // required, not owned
  std::shared_ptr<const protocol::Signer> signer;               // required; identity() == coordinator_id
  std::shared_ptr<const protocol::SignatureVerifier> verifier;  // required; device identity keys
  // Called for every sender before anything else is looked at; false = refused (revoked,
  // not enrolled). Null: every device the verifier knows.
  std::function<bool(std::string_view device_id)> device_allowed;
  RoundJournal* journal = nullptr;         // required, not owned
  AdapterRegistry* adapters = nullptr;     // required, not owned
  UploadSource* uploads = nullptr;         // null: claim checks are refused (inline inputs only)
  const Clock* clock = nullptr;            // null: RealClock()
  Random* random = nullptr;                // null: OsRandom(); a CSPRNG (cohort sampling, keys)
  const aggregation::CryptoSuite* crypto = nullptr;  // null: CoordinatorCryptoSuite() (OpenSSL)
  unsigned unmask_threads = 1;             // SecAggServer workers for Finish (0 = all cores)
  size_t replay_capacity = 256 * 1024;     // replay window entries (peak message rate x 10 min)
  // Where the round's anonymous spool files go (SecAgg shares in flight, the sealed stage
  // messages kept for re-sends): empty = the system's temporary directory.
  std::filesystem::path spool_dir;
  std::function<void(const RoundTestRecord&)> test_hook;  // TEST ONLY
};

class RoundDriver {
 public:
  // Validates the options and recovers unfinished rounds from the journal (see above).
  // Messages the recovery needs (aborts, re-announcement) go out on the next Poll/Tick
  // with the transport connected.
  static Result<std::unique_ptr<RoundDriver>> Open(RoundDriverOptions options);
  ~RoundDriver();
  RoundDriver(const RoundDriver&) = delete;
  RoundDriver& operator=(const RoundDriver&) = delete;

  // Standalone use: installs the transport's handlers and subscribes to the uplink round
  // and SecAgg events (fl/v1/d/+/up/event/round|secagg). A service that shares its
  // transport routes messages to HandleMessage() itself instead.
  Status Attach();

  // Journals the round (kCreated), then announces it. FailedPrecondition while another
  // round runs; InvalidArgument for a bad spec. Returns the round id.
  Result<std::string> StartRound(RoundSpec spec);
  // Fails the running round as cancelled (journal first, then RoundAbort to the cohort).
  Status Cancel(std::string_view round_id, std::string_view reason);

  // Owner thread: one uplink message (any topic; others are ignored).
  void HandleMessage(const protocol::Message& message);
  // Owner thread: deadlines, pending sends. Cheap; call it often.
  void Tick();
  // Owner thread: transport->Poll(timeout) (with Attach) + Tick(). Returns events handled.
  size_t Poll(std::chrono::milliseconds timeout);

  // True when no round is running.
  bool idle() const;
  // A snapshot of a round this driver ran or recovered (nullopt for unknown ids). Thread-safe.
  std::optional<RoundStatus> status(std::string_view round_id) const;
  RoundDriverStats stats() const;

  struct Impl;

 private:
  explicit RoundDriver(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace flotilla::rounds
