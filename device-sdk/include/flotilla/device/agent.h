// DeviceAgent: the device side of Flotilla's federated rounds (ARCHITECTURE.md 4.2,
// docs/rounds.md). One agent owns one device identity, a data directory with its SQLite
// state file (agent.db), and one Transport session (MQTT with mTLS in production, the
// in-memory fake in unit tests).
//
// What it does: presence (retained ONLINE, pre-signed OFFLINE as the MQTT Will), reported
// state (versions, capabilities, eligibility), enrolment, and rounds:
//   RoundAnnouncement -> RoundCheckIn (if the local policy allows)
//   RoundInvitation   -> RoundResponse (accept/decline) -> train (LocalTrainer) -> clip +
//                        fixed-point encode -> SecAggClient through every stage -> masked
//                        input sealed to the coordinator, inline or uploaded (claim check)
//   AggregateResult   -> fetch the new adapter vector, check its sha256, persist it.
// Every inbound envelope is signature-checked, bound to its topic and run through a
// ReplayWindow; handlers are idempotent (QoS 1 redelivers). The agent never blocks the
// MQTT library's threads: the transport queues, the agent's owner thread (Poll() or its
// own thread via Start()) dispatches, and heavy work (training, crypto) runs as one task
// at a time on an optional shared TaskRunner.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "flotilla/aggregation/crypto_suite.h"
#include "flotilla/core/clock.h"
#include "flotilla/core/random.h"
#include "flotilla/core/status.h"
#include "flotilla/device/blob_client.h"
#include "flotilla/device/local_trainer.h"
#include "flotilla/device/worker_pool.h"
#include "flotilla/protocol/signer.h"
#include "flotilla/protocol/transport.h"
#include "flotilla/v1/device.pb.h"
#include "flotilla/v1/round.pb.h"

namespace flotilla::device {

// The local policy: the device checks in / accepts only when its current facts meet
// these minimums (and the announcement's).
struct EligibilityPolicy {
  bool require_charging = false;
  bool require_idle = false;
  bool require_unmetered = false;
  uint64_t min_free_memory_bytes = 0;
  uint32_t min_battery_percent = 0;
};

// Empty string if `facts` meets both `policy` and `announced`, else why not.
std::string EligibilityShortfall(const v1::Eligibility& facts, const EligibilityPolicy& policy,
                                 const v1::Eligibility& announced);

struct DeviceAgentConfig {
  std::string device_id;              // = certificate CN = MQTT client id
  std::filesystem::path data_dir;     // agent.db lives here (created if missing)
  std::vector<std::string> groups;    // round announcements are read from these groups
  std::string coordinator_id = "coordinator";
  v1::ModelVersion base_model;        // the base model this device runs (version + sha256)
  v1::Capabilities capabilities;
  std::string firmware_version;
  EligibilityPolicy policy;
  // Enrolment: when certificate_pem is set and the agent is not enrolled yet, it sends an
  // EnrolmentRequest after connecting (identity_public_key_der = its SPKI).
  std::string certificate_pem;
  Bytes identity_public_key_der;
  std::string enrolment_token;
  // No EnrolmentResponse yet (the coordinator was down or not subscribed): re-send after
  // this, doubling up to the max, jittered.
  std::chrono::milliseconds enrolment_retry{std::chrono::seconds(5)};
  std::chrono::milliseconds enrolment_retry_max{std::chrono::minutes(5)};
  // Hardened SecAgg profile: an agent with a certificate_pem sends it (DER) with its key
  // advert. With fleet_ca_pem set and no DeviceAgentDeps::peer_verifier, it takes each
  // neighbour's identity key from the certificate in their advert, checked against this
  // CA and the neighbour's device id. Neither: hardened invitations are declined.
  std::string fleet_ca_pem;
  // Send the certificate with hardened key adverts (above). A fleet whose devices are all
  // provisioned with each other's keys (DeviceAgentDeps::peer_verifier) can turn this
  // off: each advert is then ~450 bytes smaller, which keeps NeighbourKeys under the
  // 128 KiB MQTT payload cap for cohorts with more than ~190 neighbours per device.
  bool advertise_certificate = true;
  // A masked input whose sealed envelope would exceed this goes over HTTP (claim check).
  size_t max_inline_envelope_bytes = 64 * 1024;
  // A round is forgotten (state "abandoned") this long after its last stage deadline.
  std::chrono::milliseconds round_grace{std::chrono::seconds(30)};
  // Largest adapter vector the agent fetches.
  size_t max_adapter_bytes = size_t{256} << 20;
};

// Round stages as the agent sees them (for status and fault injection).
enum class AgentStage : uint8_t {
  kCheckIn,
  kResponse,
  kAdvertiseKeys,
  kShareKeys,
  kMaskedInput,
  kConsistencyCheck,
  kUnmask,
};
std::string_view ToString(AgentStage stage);

// TEST ONLY: what the device computed in a round, so a test can check that the
// coordinator's aggregate is exactly the sum of the survivors' encoded inputs.
struct PlaintextUpdateRecord {
  std::string device_id;
  std::string round_id;
  uint32_t index = 0;                 // cohort index
  std::vector<float> delta;           // the trainer's update (before weighting)
  double weight = 0;                  // FedAvg weight in (0, 1]
  std::vector<uint32_t> encoded;      // the SecAgg input (weighted delta + weight, fixed point)
};

// Builds the session's Transport. The agent passes the Will it wants registered (topic
// fl/v1/d/{id}/up/presence, a pre-signed OFFLINE Presence, retained, QoS 1).
using TransportFactory = std::function<Result<std::unique_ptr<protocol::Transport>>(const protocol::Message& will)>;

struct DeviceAgentDeps {
  TransportFactory transport_factory;                         // required
  std::shared_ptr<const protocol::Signer> signer;             // required; identity() == device_id
  std::shared_ptr<const protocol::SignatureVerifier> verifier;  // required; knows the coordinator's key
  // Hardened SecAgg profile: verifies the neighbours' identity signatures on key adverts
  // and consistency checks with keys provisioned out of band (the simulator's shared
  // keyring). Null: the certified keys in the adverts are used (config.fleet_ca_pem), and
  // without a CA either, hardened invitations are declined with PARAMETERS_REFUSED.
  std::shared_ptr<const protocol::SignatureVerifier> peer_verifier;
  std::shared_ptr<LocalTrainer> trainer;                      // required
  std::shared_ptr<UpdateUploader> uploader;   // null: inputs over the MQTT budget make the device drop out
  std::shared_ptr<AdapterFetcher> fetcher;    // null: new adapters cannot be fetched
  TaskRunner* runner = nullptr;               // null: heavy work runs inside Poll(); not owned
  const Clock* clock = nullptr;               // null: RealClock()
  Random* random = nullptr;                   // null: OsRandom(); must be a CSPRNG in production
  const aggregation::CryptoSuite* crypto = nullptr;  // null: DeviceCryptoSuite() (mbedTLS)
  // Current eligibility facts; null = charging, idle, unmetered, battery 100.
  std::function<v1::Eligibility()> eligibility;
  // TEST ONLY hooks: record the plaintext update; make the device silently drop out
  // right before it would send the message of `stage` (returns true to drop).
  std::function<void(const PlaintextUpdateRecord&)> test_plaintext_hook;
  std::function<bool(std::string_view round_id, AgentStage stage)> test_drop_before;
};

// A snapshot for hosts, the C API and tests.
struct AgentStatus {
  protocol::ConnectionState connection = protocol::ConnectionState::kDisconnected;
  bool enrolled = false;
  std::string adapter_version;  // current global adapter ("" = none yet)
  Bytes adapter_sha256;
  std::string last_round_id;
  std::string last_round_state;  // checked_in, accepted, declined, training, ..., completed, aborted, abandoned
  std::string last_round_detail;
  uint64_t rounds_completed = 0;
  uint64_t rounds_aborted = 0;
  uint64_t messages_accepted = 0;
  uint64_t messages_rejected = 0;   // bad topic, signature, binding, malformed, wrong round
  uint64_t messages_duplicate = 0;  // replay window hits (QoS 1 redeliveries, replays)
};

class DeviceAgent {
 public:
  // Opens (or creates) <data_dir>/agent.db, reloads the adapter and marks rounds that were
  // in flight when the agent stopped as abandoned (their SecAgg secrets were in memory).
  // InvalidArgument for a bad config or missing dependency; SQLite errors as Unavailable.
  static Result<std::unique_ptr<DeviceAgent>> Open(DeviceAgentConfig config, DeviceAgentDeps deps);
  // Stops the own thread if running, waits for an in-flight task, disconnects.
  ~DeviceAgent();
  DeviceAgent(const DeviceAgent&) = delete;
  DeviceAgent& operator=(const DeviceAgent&) = delete;

  // Builds the transport (first call), subscribes and starts connecting; returns at once.
  // Owner thread.
  Status StartConnect();
  // StartConnect, then waits until connected (or the transport's error / DeadlineExceeded).
  Status Connect(std::chrono::milliseconds timeout);
  // Clean MQTT disconnect (no Will). Owner thread.
  Status Disconnect();

  // Owner thread: dispatches transport events (waiting up to `timeout` for the first),
  // finished tasks and due deadlines. Returns the number of events handled.
  size_t Poll(std::chrono::milliseconds timeout);
  // Runs Poll() on an own thread until Stop(). Do not call Poll() yourself meanwhile.
  Status Start();
  void Stop();

  // True when no task is in flight and no received message waits for one: nothing will
  // happen until a message arrives or a deadline passes. Owner thread.
  bool idle() const;

  // Re-publishes the retained reported state (e.g. after eligibility changed). Owner thread.
  Status PublishReportedState();

  AgentStatus status() const;  // thread-safe
  // The current global adapter's trainable vector (empty before the first one). Thread-safe.
  std::vector<float> adapter() const;
  const std::string& device_id() const;
  // The session transport (null before StartConnect); for fault injection in tests.
  protocol::Transport* transport();

  struct Impl;

 private:
  explicit DeviceAgent(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace flotilla::device
