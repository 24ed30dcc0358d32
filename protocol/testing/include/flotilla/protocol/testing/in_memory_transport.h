// InMemoryBroker + InMemoryTransport: a fake MQTT broker and client for unit tests of
// the layers above the Transport seam (device agent, coordinator endpoint, simulator
// logic). Target flotilla_transport_testing.
//
// Behaves like the real thing where higher layers can tell: topic filters with + and #
// ('$' topics not matched by leading wildcards), retained messages (an empty retained
// payload clears), Will on an abrupt drop, session takeover by a second client with the
// same id, the payload cap on send and receive, a bounded inbox drained by Poll()/Drain()
// on the owner's thread, broker restart (retained and sessions lost; clients reconnect
// and restore their subscriptions). QoS is recorded but ignored: delivery is immediate
// and exactly once. No ACLs.
//
// Thread-safe like the real transport: Publish/Subscribe/Unsubscribe from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "flotilla/protocol/transport.h"

namespace flotilla::protocol::testing {

class InMemoryTransport;

class InMemoryBroker {
 public:
  InMemoryBroker() = default;
  InMemoryBroker(const InMemoryBroker&) = delete;
  InMemoryBroker& operator=(const InMemoryBroker&) = delete;

  // The retained message on `topic`, if any.
  std::optional<Message> Retained(std::string_view topic) const;
  size_t retained_count() const;
  size_t connected_clients() const;
  // Messages handed to subscribers (one per subscriber reached).
  uint64_t deliveries() const;

  // Like a Mosquitto restart without persistence: retained messages and sessions are
  // lost; every connected client sees kReconnecting, then kConnected, and restores its
  // subscriptions (as MqttTransport does after a reconnect without a session).
  void Restart();

 private:
  friend class InMemoryTransport;
  struct Session {
    InMemoryTransport* client = nullptr;
    std::map<std::string, int, std::less<>> filters;
  };
  // REQUIRES: mu_ held.
  void RouteLocked(const Message& message);
  void DeliverRetainedLocked(InMemoryTransport* client, std::string_view filter);

  mutable std::mutex mu_;
  std::map<std::string, Session, std::less<>> sessions_;  // GUARDED_BY(mu_) by client id
  std::map<std::string, Message, std::less<>> retained_;  // GUARDED_BY(mu_) by topic
  uint64_t deliveries_ = 0;                               // GUARDED_BY(mu_)
};

struct InMemoryTransportOptions {
  std::string client_id;
  size_t max_payload_size = kDefaultMaxPayloadBytes;
  // A smaller cap on sends only (0: max_payload_size), to test oversize handling of a
  // sender whose peers still send it larger messages.
  size_t max_publish_size = 0;
  size_t queue_capacity = 4096;
  std::optional<Message> will;  // published by the broker on DropConnection()
};

class InMemoryTransport final : public Transport {
 public:
  InMemoryTransport(std::shared_ptr<InMemoryBroker> broker, InMemoryTransportOptions options);
  ~InMemoryTransport() override;

  void SetMessageHandler(MessageHandler handler) override { on_message_ = std::move(handler); }
  void SetConnectionStateHandler(ConnectionStateHandler handler) override { on_state_ = std::move(handler); }
  Status StartConnect() override;
  Status WaitConnected(std::chrono::milliseconds timeout) override;
  Status Connect() override { return StartConnect(); }
  Status Disconnect() override;
  Status Publish(std::string_view topic, ByteSpan payload, const PublishOptions& options) override;
  using Transport::Publish;
  Status Subscribe(std::string_view filter, int qos) override;
  Status Unsubscribe(std::string_view filter) override;
  size_t Poll(std::chrono::milliseconds timeout, size_t max_events = 1024) override;
  ConnectionState state() const override { return state_.load(); }
  TransportStats stats() const override { return counters_.Snapshot(inbox_.dropped()); }
  size_t max_payload_size() const override { return options_.max_payload_size; }
  const std::string& client_id() const override { return options_.client_id; }

  // Fault injection: the connection dies without a DISCONNECT, so the broker publishes
  // the Will. The client ends kDisconnected (cause Unavailable); Connect() again to return.
  void DropConnection();

 private:
  friend class InMemoryBroker;
  // Called by the broker with its mutex held: never calls back into the broker.
  void DeliverFromBroker(const Message& message);
  void LoseConnectionFromBroker(ConnectionState new_state, Status cause);
  void SetState(ConnectionState s, Status cause);

  std::shared_ptr<InMemoryBroker> broker_;
  InMemoryTransportOptions options_;
  TransportInbox inbox_;
  std::atomic<ConnectionState> state_{ConnectionState::kDisconnected};
  TransportCounters counters_;
  MessageHandler on_message_;           // owner thread
  ConnectionStateHandler on_state_;     // owner thread
  std::map<std::string, int, std::less<>> wanted_;  // GUARDED_BY(broker_->mu_) subscriptions to keep
};

}  // namespace flotilla::protocol::testing
