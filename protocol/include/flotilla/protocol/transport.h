// Transport: the seam between Flotilla and a publish/subscribe broker (MQTT v5).
//
// Implementations: MqttTransport (Paho, mqtt_transport.h) for real brokers and
// InMemoryTransport (protocol/testing) for unit tests of higher layers.
//
// Threading model (every implementation):
//  - Publish, Subscribe, Unsubscribe, state(), stats() and max_payload_size() may be
//    called from any thread.
//  - Connect, Disconnect, Poll, Drain and the Set*Handler calls belong to the OWNER
//    thread (the one that drives the transport).
//  - The library's network threads never run user code: they only TryPush events into a
//    bounded internal queue (never blocking, drops counted). Handlers run ONLY on the
//    owner's thread, from inside Poll()/Drain(). Connection-state events and messages
//    are each delivered in arrival order; a state event is never lost (if the queue was
//    full, the latest state is re-announced on the next Poll/Drain).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include "flotilla/core/bounded_queue.h"
#include "flotilla/core/bytes.h"
#include "flotilla/core/spool.h"
#include "flotilla/core/status.h"

namespace flotilla::protocol {

// Hard upper bound of the payload policy (ARCHITECTURE.md §5): 128 KiB.
inline constexpr size_t kDefaultMaxPayloadBytes = 128 * 1024;

enum class ConnectionState : uint8_t {
  kDisconnected = 0,   // never connected, or Disconnect() finished, or a connect failed
  kConnecting = 1,     // first connect in progress
  kConnected = 2,      // CONNACK received; publishes flow
  kReconnecting = 3,   // connection lost; automatic reconnect is trying
};

constexpr std::string_view ToString(ConnectionState state) {
  switch (state) {
    case ConnectionState::kDisconnected: return "disconnected";
    case ConnectionState::kConnecting: return "connecting";
    case ConnectionState::kConnected: return "connected";
    case ConnectionState::kReconnecting: return "reconnecting";
  }
  return "unknown";
}

struct PublishOptions {
  int qos = 1;                          // 0 or 1; QoS 2 is refused (InvalidArgument)
  bool retain = false;
  uint32_t message_expiry_seconds = 0;  // 0 = no expiry (MQTT v5 Message Expiry Interval)
  std::string response_topic;           // optional MQTT v5 request/response
  Bytes correlation_data;               // optional, with response_topic
  // 0: return once the message is handed to the client library (failures later are only
  // counted in stats). > 0 (QoS 1): wait up to this long for the PUBACK and return the
  // broker's verdict (PermissionDenied for "not authorized", DeadlineExceeded on timeout).
  std::chrono::milliseconds ack_timeout{0};
};

struct Message {
  std::string topic;
  Bytes payload;
  int qos = 0;
  bool retained = false;  // true when delivered from the broker's retained store
  std::string response_topic;
  Bytes correlation_data;
};

struct TransportStats {
  uint64_t published = 0;          // messages accepted by Publish()
  uint64_t publish_failures = 0;   // refused locally or by the broker (incl. async PUBACK errors)
  uint64_t received = 0;           // messages queued for the owner
  uint64_t dropped_queue_full = 0; // messages lost because the owner did not drain in time
  uint64_t dropped_oversize = 0;   // inbound messages over max_payload_size(), never delivered
  uint64_t reconnects = 0;         // successful automatic reconnects
  uint64_t resubscribes = 0;       // filters re-sent after a reconnect without a session
  uint64_t parked = 0;             // inbound payloads that waited in the spill file (queue_memory_budget)
};

using MessageHandler = std::function<void(const Message&)>;
// `cause` is OK for a normal transition, else why the connection went away.
using ConnectionStateHandler = std::function<void(ConnectionState state, const Status& cause)>;

class Transport {
 public:
  virtual ~Transport() = default;

  // Handlers run only on the owner thread inside Poll()/Drain(). Set them before Connect.
  virtual void SetMessageHandler(MessageHandler handler) = 0;
  virtual void SetConnectionStateHandler(ConnectionStateHandler handler) = 0;

  // Starts the first connection and returns at once; the outcome arrives as a state event
  // (and through WaitConnected). Lets one thread bring up 1,000 clients in parallel.
  virtual Status StartConnect() = 0;
  // Blocks until connected (OK), the connect failed (its Status: Unavailable,
  // Unauthenticated, PermissionDenied, ...) or `timeout` passed (DeadlineExceeded).
  // Subscriptions registered before connecting are in place when it returns OK.
  virtual Status WaitConnected(std::chrono::milliseconds timeout) = 0;
  // StartConnect + WaitConnected with the implementation's connect timeout.
  virtual Status Connect() = 0;
  // Clean MQTT DISCONNECT (no Will). Safe to call twice or when never connected.
  virtual Status Disconnect() = 0;

  // Publishes `payload` on a topic name (no wildcards). ResourceExhausted, with nothing
  // sent, when payload > max_payload_size(); InvalidArgument for a bad topic or QoS 2;
  // Unavailable when not connected. Any thread.
  virtual Status Publish(std::string_view topic, ByteSpan payload, const PublishOptions& options) = 0;
  Status Publish(std::string_view topic, std::string_view payload, const PublishOptions& options) {
    return Publish(topic, AsBytes(payload), options);
  }

  // Subscribes to a filter (+ and # allowed) with QoS 0/1 and remembers it, so it is
  // restored after a reconnect without a session. When connected, waits for the SUBACK
  // and returns the broker's verdict (PermissionDenied if refused); when not yet
  // connected it is sent on connect. Any thread.
  virtual Status Subscribe(std::string_view filter, int qos) = 0;
  virtual Status Unsubscribe(std::string_view filter) = 0;

  // Owner thread. Waits up to `timeout` for one event, then dispatches it and everything
  // already queued (at most `max_events`). Returns the number of events dispatched.
  virtual size_t Poll(std::chrono::milliseconds timeout, size_t max_events = 1024) = 0;
  // Owner thread. Dispatches up to `max_events` queued events without waiting.
  virtual size_t Drain(size_t max_events = 1024) { return Poll(std::chrono::milliseconds(0), max_events); }

  virtual ConnectionState state() const = 0;
  virtual TransportStats stats() const = 0;
  virtual size_t max_payload_size() const = 0;
  virtual const std::string& client_id() const = 0;
};

// ---- MQTT topic rules shared by every implementation --------------------------------

// A topic NAME (what one publishes to): 1..65535 bytes, no NUL, no + or #.
inline Status ValidateTopicName(std::string_view topic) {
  if (topic.empty()) return InvalidArgumentError("topic name is empty");
  if (topic.size() > 65535) return InvalidArgumentError("topic name longer than 65535 bytes");
  for (char c : topic) {
    if (c == '\0') return InvalidArgumentError("topic name contains NUL: '" + std::string(topic) + "'");
    if (c == '+' || c == '#')
      return InvalidArgumentError("topic name contains a wildcard: '" + std::string(topic) + "'");
  }
  return Status::Ok();
}

// A topic FILTER: like a name, but '+' may fill a whole level and '#' may only be the
// whole last level.
inline Status ValidateTopicFilter(std::string_view filter) {
  if (filter.empty()) return InvalidArgumentError("topic filter is empty");
  if (filter.size() > 65535) return InvalidArgumentError("topic filter longer than 65535 bytes");
  for (size_t i = 0; i < filter.size(); ++i) {
    const char c = filter[i];
    const bool level_start = i == 0 || filter[i - 1] == '/';
    const bool level_end = i + 1 == filter.size() || filter[i + 1] == '/';
    if (c == '\0') return InvalidArgumentError("topic filter contains NUL");
    if (c == '+' && !(level_start && level_end))
      return InvalidArgumentError("'+' must fill a whole level in filter '" + std::string(filter) + "'");
    if (c == '#' && !(level_start && i + 1 == filter.size()))
      return InvalidArgumentError("'#' must be the whole last level in filter '" + std::string(filter) + "'");
  }
  return Status::Ok();
}

// MQTT matching of a valid topic name against a valid filter, including the rule that
// wildcards at the first level do not match topics starting with '$' ($SYS, $share).
inline bool TopicMatchesFilter(std::string_view filter, std::string_view topic) {
  if (!topic.empty() && topic.front() == '$' && !filter.empty() && (filter.front() == '+' || filter.front() == '#'))
    return false;
  size_t f = 0;
  size_t t = 0;
  while (true) {
    const size_t f_end = std::min(filter.find('/', f), filter.size());
    const std::string_view f_level = filter.substr(f, f_end - f);
    if (f_level == "#") return true;  // matches the parent level and everything below
    const size_t t_end = std::min(topic.find('/', t), topic.size());
    const std::string_view t_level = topic.substr(t, t_end - t);
    if (f_level != "+" && f_level != t_level) return false;
    const bool f_last = f_end == filter.size();
    const bool t_last = t_end == topic.size();
    if (f_last || t_last) {
      if (f_last && t_last) return true;
      // "a/#" matches "a": the filter's next (and last) level is '#'.
      return t_last && !f_last && filter.substr(f_end + 1) == "#";
    }
    f = f_end + 1;
    t = t_end + 1;
  }
}

// The checks every Publish makes before anything is sent: QoS 0/1 only, the payload
// cap (ResourceExhausted, with the claim-check hint), a valid topic name.
inline Status ValidatePublish(std::string_view topic, size_t payload_size, const PublishOptions& options,
                              size_t max_payload_size) {
  if (options.qos != 0 && options.qos != 1)
    return InvalidArgumentError("QoS " + std::to_string(options.qos) + " refused: Flotilla publishes with QoS 0 or 1");
  if (payload_size > max_payload_size)
    return ResourceExhaustedError("payload of " + std::to_string(payload_size) + " bytes on '" + std::string(topic) +
                                  "' exceeds the transport limit of " + std::to_string(max_payload_size) +
                                  " bytes; nothing was sent (large blobs go over HTTP with a claim check)");
  return ValidateTopicName(topic);
}

// ---- Plumbing shared by implementations ----------------------------------------------

// The counters behind TransportStats, bumped from any thread.
struct TransportCounters {
  std::atomic<uint64_t> published{0}, publish_failures{0}, received{0}, dropped_oversize{0}, reconnects{0},
      resubscribes{0};

  TransportStats Snapshot(uint64_t dropped_queue_full, uint64_t parked = 0) const {
    TransportStats s;
    s.parked = parked;
    s.published = published.load();
    s.publish_failures = publish_failures.load();
    s.received = received.load();
    s.dropped_queue_full = dropped_queue_full;
    s.dropped_oversize = dropped_oversize.load();
    s.reconnects = reconnects.load();
    s.resubscribes = resubscribes.load();
    return s;
  }
};

// The bounded event queue between network threads (producers, never blocked) and the
// owner thread (Poll/Drain), with handler dispatch. Thread-safe.
//
// With a memory budget, the payloads of queued messages are held in memory only up to
// that many bytes: a message arriving beyond it is parked in an anonymous spool file
// (flotilla::Spool, in `spill_dir`) and read back when dispatched, so a burst of uplink
// messages from thousands of devices costs file pages, not heap. Order is kept; the
// spool is emptied whenever no parked message is left. If the spool cannot be written
// the message is held in memory instead: a budget never loses a message.
class TransportInbox {
 public:
  explicit TransportInbox(size_t capacity, size_t memory_budget = 0, std::filesystem::path spill_dir = {});
  ~TransportInbox();
  TransportInbox(const TransportInbox&) = delete;
  TransportInbox& operator=(const TransportInbox&) = delete;

  // Any thread; never blocks on the owner. False (and counted in dropped()) when the
  // queue is full.
  bool PushMessage(Message message);
  // Any thread; never blocks. If the queue is full the event is coalesced: the next
  // Dispatch re-announces the then-current state, so the owner never misses the last one.
  void PushState(ConnectionState state, Status cause) {
    if (!queue_.TryPush(Event(StateEvent{state, std::move(cause)}))) state_lost_.store(true);
  }

  // Owner thread: waits up to `timeout` for the first event, then dispatches up to
  // `max_events` in order. `current` is the state to re-announce after a coalesced drop.
  size_t Dispatch(std::chrono::milliseconds timeout, size_t max_events, const MessageHandler& on_message,
                  const ConnectionStateHandler& on_state, ConnectionState current);

  // Events refused because the queue was full (a refused state event is coalesced, not
  // lost), plus parked messages that could not be read back.
  uint64_t dropped() const { return queue_.dropped() + unreadable_.load(); }
  // Payload bytes of queued messages held in memory now, and messages parked so far.
  size_t bytes_in_memory() const;
  uint64_t parked() const { return parked_total_.load(); }
  void Close() { queue_.Close(); }

 private:
  struct StateEvent {
    ConnectionState state;
    Status cause;
  };
  // A message whose payload waits in the spool.
  struct Parked {
    Message message;  // payload empty
    uint64_t offset = 0;
    size_t size = 0;
  };
  using Event = std::variant<Message, Parked, StateEvent>;
  static size_t Cost(const Message& m) { return m.payload.size() + m.topic.size(); }
  // Turns a Parked event back into its message; nullopt (counted) if the spool fails.
  std::optional<Message> Unpark(Parked parked);

  BoundedQueue<Event> queue_;
  std::atomic<bool> state_lost_{false};
  const size_t memory_budget_;  // 0: unlimited, nothing is parked
  const std::filesystem::path spill_dir_;
  mutable std::mutex spill_mu_;
  std::unique_ptr<Spool> spool_;  // GUARDED_BY(spill_mu_); created on the first park
  size_t in_memory_ = 0;          // GUARDED_BY(spill_mu_)
  size_t parked_queued_ = 0;      // GUARDED_BY(spill_mu_)
  bool spool_failed_ = false;     // GUARDED_BY(spill_mu_); stop trying after a failure
  std::atomic<uint64_t> parked_total_{0}, unreadable_{0};
};

}  // namespace flotilla::protocol
