#include "flotilla/protocol/testing/in_memory_transport.h"

#include <algorithm>

#include <utility>

namespace flotilla::protocol::testing {

// ---- InMemoryBroker -------------------------------------------------------------------

std::optional<Message> InMemoryBroker::Retained(std::string_view topic) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = retained_.find(topic);
  if (it == retained_.end()) return std::nullopt;
  return it->second;
}

size_t InMemoryBroker::retained_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return retained_.size();
}

size_t InMemoryBroker::connected_clients() const {
  std::lock_guard<std::mutex> lock(mu_);
  return sessions_.size();
}

uint64_t InMemoryBroker::deliveries() const {
  std::lock_guard<std::mutex> lock(mu_);
  return deliveries_;
}

void InMemoryBroker::RouteLocked(const Message& message) {
  if (message.retained) {
    if (message.payload.empty()) retained_.erase(message.topic);
    else retained_[message.topic] = message;
  }
  Message delivered = message;
  delivered.retained = false;  // live delivery: the retain flag is not forwarded
  for (auto& [id, session] : sessions_) {
    for (const auto& [filter, qos] : session.filters) {
      if (TopicMatchesFilter(filter, message.topic)) {
        session.client->DeliverFromBroker(delivered);
        ++deliveries_;
        break;  // one copy per client even when several filters match
      }
    }
  }
}

void InMemoryBroker::DeliverRetainedLocked(InMemoryTransport* client, std::string_view filter) {
  for (const auto& [topic, message] : retained_) {
    if (TopicMatchesFilter(filter, topic)) {
      client->DeliverFromBroker(message);
      ++deliveries_;
    }
  }
}

void InMemoryBroker::Restart() {
  std::lock_guard<std::mutex> lock(mu_);
  retained_.clear();
  for (auto& [id, session] : sessions_) {
    InMemoryTransport* c = session.client;
    c->LoseConnectionFromBroker(ConnectionState::kReconnecting, UnavailableError("broker restarted"));
    // The automatic reconnect succeeds at once; the new session starts empty, so the
    // client restores what it wants.
    session.filters = c->wanted_;
    c->counters_.resubscribes.fetch_add(c->wanted_.size());
    c->counters_.reconnects.fetch_add(1);
    c->SetState(ConnectionState::kConnected, Status::Ok());
  }
}

// ---- InMemoryTransport ----------------------------------------------------------------

InMemoryTransport::InMemoryTransport(std::shared_ptr<InMemoryBroker> broker, InMemoryTransportOptions options)
    : broker_(std::move(broker)), options_(std::move(options)), inbox_(options_.queue_capacity) {}

InMemoryTransport::~InMemoryTransport() { Disconnect().IgnoreError(); }

void InMemoryTransport::SetState(ConnectionState s, Status cause) {
  state_.store(s);
  inbox_.PushState(s, std::move(cause));
}

Status InMemoryTransport::StartConnect() {
  if (options_.client_id.empty()) return InvalidArgumentError("client_id is empty");
  std::lock_guard<std::mutex> lock(broker_->mu_);
  if (state_.load() == ConnectionState::kConnected) return Status::Ok();
  SetState(ConnectionState::kConnecting, Status::Ok());
  auto it = broker_->sessions_.find(options_.client_id);
  if (it != broker_->sessions_.end() && it->second.client != this) {
    // MQTT session takeover: the older connection is closed by the broker.
    it->second.client->LoseConnectionFromBroker(ConnectionState::kDisconnected,
                                                AbortedError("session taken over by a new connection with the same client id"));
  }
  InMemoryBroker::Session& session = broker_->sessions_[options_.client_id];
  session.client = this;
  session.filters = wanted_;
  SetState(ConnectionState::kConnected, Status::Ok());
  for (const auto& [filter, qos] : wanted_) broker_->DeliverRetainedLocked(this, filter);
  return Status::Ok();
}

Status InMemoryTransport::WaitConnected(std::chrono::milliseconds /*timeout*/) {
  if (state_.load() == ConnectionState::kConnected) return Status::Ok();
  return UnavailableError(options_.client_id + ": not connected (" + std::string(ToString(state_.load())) + ")");
}

Status InMemoryTransport::Disconnect() {
  std::lock_guard<std::mutex> lock(broker_->mu_);
  auto it = broker_->sessions_.find(options_.client_id);
  if (it != broker_->sessions_.end() && it->second.client == this) broker_->sessions_.erase(it);
  if (state_.load() != ConnectionState::kDisconnected) SetState(ConnectionState::kDisconnected, Status::Ok());
  return Status::Ok();
}

void InMemoryTransport::DropConnection() {
  std::lock_guard<std::mutex> lock(broker_->mu_);
  auto it = broker_->sessions_.find(options_.client_id);
  if (it == broker_->sessions_.end() || it->second.client != this) return;
  broker_->sessions_.erase(it);
  SetState(ConnectionState::kDisconnected, UnavailableError("connection dropped (fault injection)"));
  if (options_.will) broker_->RouteLocked(*options_.will);
}

void InMemoryTransport::LoseConnectionFromBroker(ConnectionState new_state, Status cause) {
  SetState(new_state, std::move(cause));
}

void InMemoryTransport::DeliverFromBroker(const Message& message) {
  if (message.payload.size() > options_.max_payload_size) {
    counters_.dropped_oversize.fetch_add(1);
    return;
  }
  if (inbox_.PushMessage(message)) counters_.received.fetch_add(1);
}

Status InMemoryTransport::Publish(std::string_view topic, ByteSpan payload, const PublishOptions& options) {
  const size_t cap = options_.max_publish_size != 0 ? std::min(options_.max_publish_size, options_.max_payload_size)
                                                    : options_.max_payload_size;
  Status invalid = ValidatePublish(topic, payload.size(), options, cap);
  if (invalid.ok() && state_.load() != ConnectionState::kConnected) {
    invalid = UnavailableError(options_.client_id + ": publish while " + std::string(ToString(state_.load())));
  }
  if (!invalid.ok()) {
    counters_.publish_failures.fetch_add(1);
    return invalid;
  }
  Message m;
  m.topic = std::string(topic);
  m.payload.assign(payload.begin(), payload.end());
  m.qos = options.qos;
  m.retained = options.retain;
  m.response_topic = options.response_topic;
  m.correlation_data = options.correlation_data;
  std::lock_guard<std::mutex> lock(broker_->mu_);
  broker_->RouteLocked(m);
  counters_.published.fetch_add(1);
  return Status::Ok();
}

Status InMemoryTransport::Subscribe(std::string_view filter, int qos) {
  if (qos != 0 && qos != 1) return InvalidArgumentError("subscription QoS must be 0 or 1");
  FLT_RETURN_IF_ERROR(ValidateTopicFilter(filter));
  std::lock_guard<std::mutex> lock(broker_->mu_);
  wanted_[std::string(filter)] = qos;
  auto it = broker_->sessions_.find(options_.client_id);
  if (it != broker_->sessions_.end() && it->second.client == this) {
    it->second.filters[std::string(filter)] = qos;
    broker_->DeliverRetainedLocked(this, filter);
  }
  return Status::Ok();
}

Status InMemoryTransport::Unsubscribe(std::string_view filter) {
  std::lock_guard<std::mutex> lock(broker_->mu_);
  auto w = wanted_.find(filter);
  if (w == wanted_.end()) return NotFoundError("not subscribed to '" + std::string(filter) + "'");
  wanted_.erase(w);
  auto it = broker_->sessions_.find(options_.client_id);
  if (it != broker_->sessions_.end() && it->second.client == this) {
    auto f = it->second.filters.find(filter);
    if (f != it->second.filters.end()) it->second.filters.erase(f);
  }
  return Status::Ok();
}

size_t InMemoryTransport::Poll(std::chrono::milliseconds timeout, size_t max_events) {
  return inbox_.Dispatch(timeout, max_events, on_message_, on_state_, state_.load());
}

}  // namespace flotilla::protocol::testing
