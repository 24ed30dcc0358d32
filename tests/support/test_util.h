// Small helpers shared by the integration tests and benchmarks (header-only).
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <thread>

#include "flotilla/core/status.h"

namespace flotilla::testsupport {

// The value, or the error on stderr and abort (setup steps that cannot continue; the
// test run fails with the message).
template <typename T>
T Must(Result<T> r) {
  if (!r.ok()) {
    std::fprintf(stderr, "setup failed: %s\n", r.status().ToString().c_str());
    std::abort();
  }
  return std::move(r).value();
}

// Polls `done` every 50 ms until it holds or `timeout` passes; its last answer.
inline bool WaitFor(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return done();
}

// A loopback TCP port that was free a moment ago (for servers that must keep one port
// across restarts, so URLs that name it stay valid).
inline int FreeLoopbackPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  const bool ok = fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  if (fd >= 0) ::close(fd);
  if (!ok) std::abort();
  return ntohs(a.sin_port);
}

}  // namespace flotilla::testsupport
