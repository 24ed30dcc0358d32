// MqttTransport: the Transport seam on Paho MQTT C++ 1.2.0, MQTT v5 (target
// flotilla_protocol_mqtt). Paho types stay in src/platform/paho/.
//
// What it takes care of (details and the traps behind them: docs/transport.md,
// reference/mqtt.md): v5 with clean start and session expiry set explicitly; no file
// persistence; Paho's callbacks only TryPush into a bounded queue that the owner drains
// with Poll()/Drain() (a slow handler never stalls Paho's one shared receive thread);
// payload cap enforced on send and receive; per-client randomised reconnect back-off;
// subscriptions restored after a reconnect that did not resume the session (broker
// restart); every Paho exception turned into a Status carrying the reason code text.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "flotilla/core/random.h"
#include "flotilla/core/status.h"
#include "flotilla/protocol/transport.h"

namespace flotilla::protocol {

struct MqttTlsOptions {
  std::string ca_file;      // PEM trust store for the broker certificate
  std::string cert_file;    // PEM client certificate for mTLS (empty: none)
  std::string key_file;     // PEM private key of cert_file
  bool verify_server = true;  // check the broker's chain and that its SAN matches the host
};

// Last Will: published by the broker when the connection dies without a DISCONNECT.
struct MqttWill {
  std::string topic;             // e.g. fl/v1/d/{id}/up/presence
  Bytes payload;                 // e.g. "offline"
  bool retain = true;
  int qos = 1;
  uint32_t delay_seconds = 0;    // v5 Will Delay Interval (a quick reconnect cancels it)
};

struct MqttTransportOptions {
  std::string server_uri;  // tcp://host:port or ssl://host:port
  std::string client_id;   // with mTLS the broker replaces it by the certificate CN
  std::chrono::seconds keepalive{60};
  // MQTT v5: Paho's set_mqtt_version(5) silently leaves clean start = false, so both are
  // always sent explicitly. Session expiry 0 = the session ends with the connection.
  bool clean_start = true;
  uint32_t session_expiry_seconds = 0;
  std::optional<MqttWill> will;
  // Automatic reconnect. The first retry waits a per-client random whole number of
  // seconds in [reconnect_min_backoff_low, reconnect_min_backoff_high] (spreads a herd
  // after a broker restart); Paho then doubles it up to reconnect_max_backoff.
  bool automatic_reconnect = true;
  std::chrono::seconds reconnect_min_backoff_low{1};
  std::chrono::seconds reconnect_min_backoff_high{3};
  std::chrono::seconds reconnect_max_backoff{60};
  Random* random = nullptr;  // jitter source; nullptr = OsRandom(). Must outlive Create().
  std::chrono::milliseconds connect_timeout{10000};
  std::chrono::milliseconds operation_timeout{10000};  // SUBACK / UNSUBACK / DISCONNECT
  std::optional<MqttTlsOptions> tls;  // required for ssl:// URIs
  size_t max_payload_size = kDefaultMaxPayloadBytes;
  size_t queue_capacity = 4096;  // events waiting for Poll(); beyond it messages drop (counted)
  // 0: unlimited. N: payloads of messages waiting for Poll() stay in memory up to N bytes;
  // beyond it they wait in an anonymous file in queue_spill_dir (empty: the system's
  // temporary directory) — a burst from thousands of senders costs file pages, not heap.
  size_t queue_memory_budget = 0;
  std::filesystem::path queue_spill_dir;
  // Paho's cap on queued outgoing commands (default 100 → error -12 under load).
  int max_buffered_messages = 10000;
  // 0: unlimited. N: while connected, Publish waits until fewer than N of this client's
  // publishes are incomplete (QoS 1: no PUBACK yet), at most operation_timeout (then it
  // publishes anyway, with a warning). Paho holds every publish until then, so a sender
  // of bursts (the coordinator: a stage's message to each of thousands of devices) keeps
  // its memory bounded instead of queueing the whole burst.
  size_t max_publishes_in_flight = 0;
};

class MqttTransport final : public Transport {
 public:
  // Validates options and creates the (unconnected) client. InvalidArgument for a bad
  // URI/id/option; errors from Paho as a Status.
  static Result<std::unique_ptr<MqttTransport>> Create(MqttTransportOptions options);
  // Disconnects cleanly and waits (bounded) for Paho's pending actions before
  // destroying the client (paho.mqtt.cpp #204). Never call from a handler.
  ~MqttTransport() override;

  void SetMessageHandler(MessageHandler handler) override;
  void SetConnectionStateHandler(ConnectionStateHandler handler) override;
  Status StartConnect() override;
  Status WaitConnected(std::chrono::milliseconds timeout) override;
  Status Connect() override;
  Status Disconnect() override;
  Status Publish(std::string_view topic, ByteSpan payload, const PublishOptions& options) override;
  using Transport::Publish;
  Status Subscribe(std::string_view filter, int qos) override;
  Status Unsubscribe(std::string_view filter) override;
  size_t Poll(std::chrono::milliseconds timeout, size_t max_events = 1024) override;
  ConnectionState state() const override;
  TransportStats stats() const override;
  size_t max_payload_size() const override;
  const std::string& client_id() const override;

  // The reconnect back-off this client drew at Create(): {first retry, maximum}.
  std::pair<std::chrono::seconds, std::chrono::seconds> reconnect_backoff() const;

  struct Impl;

 private:
  explicit MqttTransport(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Raises this process's RLIMIT_NOFILE soft limit to its hard limit (one socket per MQTT
// client; Debian's default soft limit is 1024). Returns the new soft limit.
Result<uint64_t> RaiseFileDescriptorLimit();

}  // namespace flotilla::protocol
