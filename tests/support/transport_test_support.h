// Test support for transport integration tests and benchmarks (target
// flotilla_transport_test_support): a TCP relay whose connections can be severed
// abruptly (to trigger MQTT Wills and reconnects) and polling helpers.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "flotilla/core/status.h"
#include "flotilla/protocol/transport.h"

namespace flotilla::testsupport {

// Relays TCP connections from a free 127.0.0.1 port to 127.0.0.1:target_port on one
// background thread. Sever() cuts every relayed connection at once without any MQTT
// DISCONNECT (the broker sees a dead client and publishes its Will) and stops accepting.
class TcpRelay {
 public:
  static Result<std::unique_ptr<TcpRelay>> Start(uint16_t target_port);
  ~TcpRelay();
  TcpRelay(const TcpRelay&) = delete;
  TcpRelay& operator=(const TcpRelay&) = delete;

  uint16_t port() const { return port_; }
  std::string uri() const { return "tcp://127.0.0.1:" + std::to_string(port_); }
  // Thread-safe. Returns once every connection is closed.
  void Sever();
  size_t connections_accepted() const { return accepted_.load(); }

 private:
  TcpRelay(int listen_fd, int wake_fd, uint16_t port, uint16_t target);
  void Run();

  int listen_fd_;
  int wake_fd_;  // eventfd: wakes the relay thread for Sever()/shutdown
  uint16_t port_;
  uint16_t target_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> sever_{false};
  std::atomic<bool> severed_{false};
  std::atomic<size_t> accepted_{0};
  std::thread thread_;
};

// Polls every transport (Drain) until `done()` is true or `timeout` passes. Returns
// whether `done()` became true. The transports' handlers run on the calling thread.
bool PollUntil(const std::vector<protocol::Transport*>& transports, const std::function<bool()>& done,
               std::chrono::milliseconds timeout);

}  // namespace flotilla::testsupport
