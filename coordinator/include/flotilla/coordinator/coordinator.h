// Coordinator: the process wiring behind `flotilla coordinator run`: the store, metrics,
// the HTTP server and (when a broker is configured) the MQTT device endpoint with
// enrolment and presence. The round engine attaches to store() and endpoint().
//
// Threading: Start/Run/Shutdown from one thread (Run owns the MQTT transport and polls
// it); the HTTP server has its own threads.
#pragma once

#include <atomic>
#include <memory>

#include "flotilla/coordinator/api_server.h"
#include "flotilla/coordinator/config.h"
#include "flotilla/coordinator/device_endpoint.h"
#include "flotilla/coordinator/metrics.h"
#include "flotilla/coordinator/store.h"
#include "flotilla/core/status.h"

namespace flotilla::coordinator {

class Coordinator {
 public:
  // Opens the store (migrations), loads persisted counters, starts HTTP, connects to the
  // broker (waiting up to 15 s) and subscribes. Any failure stops what was started.
  static Result<std::unique_ptr<Coordinator>> Start(const CoordinatorConfig& config);
  ~Coordinator();

  // Pumps MQTT and flushes metrics until `stop` becomes true (checked every 100 ms).
  void Run(const std::atomic<bool>& stop);
  // Stops HTTP, disconnects MQTT, flushes metrics. Idempotent.
  Status Shutdown();

  Store& store() { return *store_; }
  Metrics& metrics() { return metrics_; }
  ApiServer& http() { return *http_; }
  DeviceEndpoint* endpoint() { return endpoint_.get(); }  // nullptr without a broker

 private:
  struct Mqtt;
  Coordinator() = default;

  CoordinatorConfig config_;
  std::unique_ptr<Store> store_;
  Metrics metrics_;
  std::unique_ptr<Enrolment> enrolment_;
  std::unique_ptr<ApiServer> http_;
  std::unique_ptr<Mqtt> mqtt_;
  std::unique_ptr<DeviceEndpoint> endpoint_;
  bool shut_down_ = false;
};

}  // namespace flotilla::coordinator
