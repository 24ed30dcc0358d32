// Clock seam: wall time (timestamps, expiry) and monotonic time (deadlines, timeouts).
// The real clock is thread-safe; FakeClock (core/testing) is for unit tests.
#pragma once

#include <chrono>
#include <cstdint>

namespace flotilla {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual std::chrono::system_clock::time_point Now() const = 0;
  virtual std::chrono::steady_clock::time_point SteadyNow() const = 0;

  // Milliseconds since the Unix epoch (wire timestamps).
  int64_t NowUnixMillis() const {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Now().time_since_epoch()).count();
  }
};

// The process-wide real clock (std::chrono). Never destroyed.
Clock& RealClock();

}  // namespace flotilla
