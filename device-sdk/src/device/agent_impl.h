// DeviceAgent internals shared by agent.cc (session, inbound, tasks) and agent_round.cc
// (round handlers).
//
// Threads: everything here belongs to the owner thread (the one calling Poll) except
// what a task touches while `task_running`: the ActiveRound's SecAgg client and input
// (never touched by the owner while a task runs: inbound messages wait in `pending`),
// and the thread-safe Send/SealTo (signer, clock, CSPRNG and Transport::Publish are
// thread-safe). A task returns a closure that the owner runs to apply its outcome.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "agent_store.h"
#include "flotilla/aggregation/secagg_client.h"
#include "flotilla/core/check.h"
#include "flotilla/device/agent.h"
#include "flotilla/protocol/envelope.h"
#include "flotilla/protocol/payload.h"
#include "flotilla/protocol/replay_window.h"
#include "flotilla/protocol/topics.h"
#include "flotilla/security/identity.h"

namespace flotilla::device {

// The round this device is in (at most one at a time).
struct ActiveRound {
  std::string round_id;
  std::string state;  // as persisted: checked_in, accepted, advertised, shares_sent, masked_input_sent, ...
  uint32_t index = 0;
  v1::RoundInvitation invitation;
  std::unique_ptr<aggregation::SecAggClient> client;  // set on accept
  // Hardened profile with certified keys: neighbours' identity keys, filled from their
  // advert certificates before the client sees NeighbourKeys. Null otherwise.
  std::shared_ptr<security::KeyRing> peer_keys;
  std::vector<uint32_t> input;                         // fixed-point SecAgg input (task-owned)
  int64_t expires_ms = 0;                              // forget the round after this (wall clock)
  // The last message this device sent in the round, re-published after a reconnect.
  std::string last_topic;
  Bytes last_wire;
};

struct DeviceAgent::Impl {
  Impl(DeviceAgentConfig config, DeviceAgentDeps deps);

  // agent.cc
  Status LoadState();
  void OnConnectionState(protocol::ConnectionState state, const Status& cause);
  void OnMessage(const protocol::Message& m);
  void Pump();
  void Dispatch(const protocol::OpenedEnvelope& env);
  void Reject(std::string_view what, const Status& why);
  Status PublishReported();
  Status SendEnrolment();
  // SendEnrolment now (logging a failure) and schedule the next try.
  void EnrolNow();
  // Poll(): re-sends a due enrolment while connected and not enrolled.
  void RetryEnrolment();
  void HandleEnrolmentResponse(const protocol::OpenedEnvelope& env);
  // agent_round.cc: hardened profile with certified keys: neighbours' keys from their
  // advert certificates (checked against the fleet CA) into r.peer_keys.
  Status LearnCertifiedKeys(ActiveRound& r, const v1::NeighbourKeys& m);
  v1::Eligibility CurrentEligibility() const;
  bool status_snapshot_enrolled();
  // Runs `work` as the one task in flight (on the runner, or inline without one); the
  // closure it returns runs on the owner thread afterwards.
  void RunTask(std::function<std::function<void()>()> work);
  size_t RunCompletions();
  void WaitForTask();

  // agent_round.cc
  void HandleAnnouncement(const protocol::OpenedEnvelope& env);
  void HandleInvitation(const protocol::OpenedEnvelope& env);
  void HandleSecAggMessage(const protocol::OpenedEnvelope& env);
  void HandleAggregateResult(const protocol::OpenedEnvelope& env);
  void HandleRoundAbort(const protocol::OpenedEnvelope& env);
  void CheckDeadlines();
  void Decline(const std::string& round_id, v1::DeclineReason reason, const std::string& detail);
  // Persists the round's state (owner thread) and mirrors it into status().
  void SetRoundState(const std::string& round_id, const std::string& state, uint32_t index, const std::string& detail);
  void EndRound(const std::string& state, const std::string& detail);
  // Re-publishes the last round message (the same bytes: receivers drop a duplicate).
  void ResendLast();
  bool DropBefore(const std::string& round_id, AgentStage stage) const {
    return deps.test_drop_before && deps.test_drop_before(round_id, stage);
  }

  // Seals `msg` from this device to `recipient`. Thread-safe.
  template <typename Msg>
  Result<Bytes> SealTo(const Msg& msg, std::string_view recipient) const {
    return protocol::SealMessage(*deps.signer, msg, recipient, clock, random);
  }
  // Seals `msg` to the coordinator and publishes it on its uplink route. Thread-safe.
  // `wire_out`/`topic_out` receive what was sent (for re-sending after a reconnect); with
  // them, a publish refused only because the link is down counts as sent (it is re-sent).
  template <typename Msg>
  Status Send(const Msg& msg, Bytes* wire_out = nullptr, std::string* topic_out = nullptr) const {
    if (!transport) return FailedPreconditionError("DeviceAgent: no transport");
    const protocol::PayloadType type = protocol::PayloadTypeOf<Msg>::value;
    const protocol::PayloadRoute* route = nullptr;
    for (const auto& r : protocol::RoutesFor(type)) {
      if (protocol::IsUplink(r.kind)) route = &r;
    }
    if (route == nullptr) return InternalError("no uplink route for " + protocol::PayloadTypeName(type));
    protocol::Topic topic{route->kind, config.device_id, {}, std::string(route->name)};
    FLT_ASSIGN_OR_RETURN(std::string topic_name, protocol::FormatTopic(topic));
    FLT_ASSIGN_OR_RETURN(Bytes wire, SealTo(msg, config.coordinator_id));
    const protocol::TopicPolicy policy = protocol::PolicyFor(route->kind);
    protocol::PublishOptions po;
    po.qos = policy.qos;
    po.retain = policy.retain;
    Status published = transport->Publish(topic_name, wire, po);
    if (wire_out != nullptr && topic_out != nullptr) {
      *wire_out = std::move(wire);
      *topic_out = std::move(topic_name);
      // Kept for the re-send after the reconnect (round messages only).
      if (published.code() == StatusCode::kUnavailable) return Status::Ok();
    }
    return published;
  }

  DeviceAgentConfig config;
  DeviceAgentDeps deps;
  const Clock& clock;
  Random& random;
  const aggregation::CryptoSuite& crypto;
  std::unique_ptr<AgentStore> store;
  std::unique_ptr<protocol::Transport> transport;
  protocol::ReplayWindow replay;
  protocol::OpenOptions open_options;
  std::string session_id;
  Bytes certificate_der;  // own certificate (config.certificate_pem), sent with hardened key adverts
  bool ever_connected = false;
  // Enrolment retries (owner thread): an EnrolmentRequest published while the coordinator
  // was not subscribed is lost, so it is re-sent with jittered doubling back-off until a
  // response arrives. 0 = nothing scheduled.
  int64_t next_enrolment_ms = 0;
  int64_t enrolment_backoff_ms = 0;
  int64_t last_resend_ms = 0;  // rate limit of re-sends triggered by duplicates

  mutable std::mutex status_mu;
  AgentStatus status;      // GUARDED_BY(status_mu)
  StoredAdapter adapter;   // GUARDED_BY(status_mu); written by the owner thread only

  std::deque<protocol::OpenedEnvelope> pending;  // verified inbound, waiting for the strand
  std::unique_ptr<ActiveRound> round;
  bool task_running = false;  // owner thread

  std::mutex done_mu;
  std::condition_variable done_cv;
  std::vector<std::function<void()>> done;  // GUARDED_BY(done_mu)
  bool task_finished = false;               // GUARDED_BY(done_mu)

  std::thread thread;
  std::atomic<bool> stop{false};
};

}  // namespace flotilla::device
