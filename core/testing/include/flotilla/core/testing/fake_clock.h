// FakeClock: a Clock that moves only when told. Thread-safe.
#pragma once

#include <atomic>
#include <chrono>

#include "flotilla/core/clock.h"

namespace flotilla::testing {

class FakeClock final : public Clock {
 public:
  explicit FakeClock(std::chrono::system_clock::time_point start = std::chrono::system_clock::time_point(
                         std::chrono::seconds(1'700'000'000)))
      : offset_ns_(0), wall_start_(start) {}

  std::chrono::system_clock::time_point Now() const override {
    return wall_start_ + std::chrono::duration_cast<std::chrono::system_clock::duration>(
                             std::chrono::nanoseconds(offset_ns_.load()));
  }
  std::chrono::steady_clock::time_point SteadyNow() const override {
    return std::chrono::steady_clock::time_point(std::chrono::nanoseconds(offset_ns_.load()));
  }
  void Advance(std::chrono::nanoseconds d) { offset_ns_.fetch_add(d.count()); }

 private:
  std::atomic<int64_t> offset_ns_;
  std::chrono::system_clock::time_point wall_start_;
};

}  // namespace flotilla::testing
