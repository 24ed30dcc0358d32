// PublishSinkTransport: an always-connected, publish-only Transport that validates each
// publish like a real one and hands (topic, payload) to a callback. For coordinator parts
// whose only MQTT traffic is outbound hints, run in process by the OTA simulator and the
// OTA benchmark. Subscriptions are accepted and never deliver. Thread-safe.
#pragma once

#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

#include "flotilla/protocol/transport.h"

namespace flotilla::protocol {

class PublishSinkTransport final : public Transport {
 public:
  // Called under the transport's lock (so one call at a time); its error is the publish's.
  using Sink = std::function<Status(std::string_view topic, ByteSpan payload)>;
  explicit PublishSinkTransport(Sink sink, std::string client_id = "coordinator")
      : sink_(std::move(sink)), id_(std::move(client_id)) {}

  void SetMessageHandler(MessageHandler) override {}
  void SetConnectionStateHandler(ConnectionStateHandler) override {}
  Status StartConnect() override { return Status::Ok(); }
  Status WaitConnected(std::chrono::milliseconds) override { return Status::Ok(); }
  Status Connect() override { return Status::Ok(); }
  Status Disconnect() override { return Status::Ok(); }
  Status Publish(std::string_view topic, ByteSpan payload, const PublishOptions& options) override {
    FLT_RETURN_IF_ERROR(ValidatePublish(topic, payload.size(), options, max_payload_size()));
    std::lock_guard<std::mutex> lock(mu_);
    FLT_RETURN_IF_ERROR(sink_(topic, payload));
    ++stats_.published;
    return Status::Ok();
  }
  Status Subscribe(std::string_view, int) override { return Status::Ok(); }
  Status Unsubscribe(std::string_view) override { return Status::Ok(); }
  size_t Poll(std::chrono::milliseconds, size_t) override { return 0; }
  ConnectionState state() const override { return ConnectionState::kConnected; }
  TransportStats stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }
  size_t max_payload_size() const override { return kDefaultMaxPayloadBytes; }
  const std::string& client_id() const override { return id_; }

 private:
  Sink sink_;
  const std::string id_;
  mutable std::mutex mu_;
  TransportStats stats_;  // GUARDED_BY(mu_)
};

}  // namespace flotilla::protocol
