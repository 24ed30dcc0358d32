// Coordinator: the process wiring behind `flotilla coordinator run` (docs/coordinator.md):
//   - the Store (coordinator.db + artifacts), metrics and the HTTP server (REST, uploads,
//     content-addressed artifact downloads, /metrics);
//   - with a broker: the MQTT transport shared by the DeviceEndpoint (enrolment,
//     presence, reported state), the round engine (RoundDriver journaling into the Store
//     through StoreRoundJournal, adapters in StoreAdapterRegistry, uploads through the
//     ApiServer) and the rollouts' device reports;
//   - the round queue: rounds created by POST /api/v1/rounds or the scheduler
//     ("rounds.schedule_seconds") are started one at a time, cancel requests honoured;
//   - with an "ota" section: the RolloutManager (REST routes, Tick, timestamp refresh).
//
// TEST ONLY: FLOTILLA_TEST_CRASH_AFTER=<round state> (ToString(RoundState) names) makes
// the process raise(SIGKILL) right after the journal transaction that entered that state
// committed, before any side effect. Read once by Start().
//
// Threading: Start/Run/Step/Shutdown from one thread (the owner: it polls MQTT and drives
// rounds and rollouts); the HTTP server has its own threads; the accessors' objects are
// thread-safe (Store, Metrics, RoundDriver::status()).
#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>

#include "flotilla/coordinator/api_server.h"
#include "flotilla/coordinator/config.h"
#include "flotilla/coordinator/device_endpoint.h"
#include "flotilla/coordinator/metrics.h"
#include "flotilla/coordinator/round_driver.h"
#include "flotilla/coordinator/store.h"
#include "flotilla/coordinator/store_round_journal.h"
#include "flotilla/core/status.h"

namespace flotilla::coordinator {

class RolloutManager;

// Where the service keeps rollout state (one place, so moving it into coordinator.db is
// a one-line change).
std::filesystem::path RolloutDatabasePath(const CoordinatorConfig& config);

class Coordinator {
 public:
  // Opens the store (migrations), resolves the round defaults, opens the rollouts (with
  // "ota"), starts HTTP, and with a broker: opens the round engine (recovering unfinished
  // rounds from the journal), connects (waiting up to 15 s) and subscribes. Any failure
  // stops what was started.
  static Result<std::unique_ptr<Coordinator>> Start(const CoordinatorConfig& config);
  ~Coordinator();

  // Calls Step(100 ms) until `stop` becomes true.
  void Run(const std::atomic<bool>& stop);
  // One loop iteration: MQTT for up to `timeout`, round deadlines, the round queue,
  // scheduler and cancel requests, rollouts, metrics flush.
  void Step(std::chrono::milliseconds timeout);
  // Stops HTTP, disconnects MQTT, flushes metrics. Idempotent.
  Status Shutdown();

  Store& store() { return *store_; }
  Metrics& metrics() { return metrics_; }
  ApiServer& http() { return *http_; }
  DeviceEndpoint* endpoint() { return endpoint_.get(); }  // nullptr without a broker
  rounds::RoundDriver* round_driver();                     // nullptr without a broker
  StoreRoundJournal& journal() { return *journal_; }
  RolloutManager* rollouts();                              // nullptr without "ota"

 private:
  struct Mqtt;
  struct Rounds;
  struct Ota;
  Coordinator();

  Status StartRounds();
  Status StartOta();
  void RouteMessage(const protocol::Message& message);
  void PumpRounds();
  // Ends cancelled queued rounds; with `may_start` (driver idle) starts the oldest queued
  // round, or queues a scheduled one when the queue is empty and one is due.
  void ServeQueue(bool may_start);
  void FinishRound(const rounds::RoundStatus& status);
  void TickOta();

  CoordinatorConfig config_;
  std::unique_ptr<Store> store_;
  Metrics metrics_;
  std::unique_ptr<StoreRoundJournal> journal_;
  std::unique_ptr<Enrolment> enrolment_;
  std::unique_ptr<Ota> ota_;
  std::unique_ptr<ApiServer> http_;
  std::unique_ptr<Mqtt> mqtt_;
  std::unique_ptr<DeviceEndpoint> endpoint_;
  std::unique_ptr<Rounds> rounds_;
  std::chrono::steady_clock::time_point next_flush_;
  bool shut_down_ = false;
};

}  // namespace flotilla::coordinator
