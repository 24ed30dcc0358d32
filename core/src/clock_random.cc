#include <sys/random.h>

#include <cerrno>
#include <cstring>

#include "flotilla/core/check.h"
#include "flotilla/core/clock.h"
#include "flotilla/core/random.h"

namespace flotilla {
namespace {

class SystemClock final : public Clock {
 public:
  std::chrono::system_clock::time_point Now() const override { return std::chrono::system_clock::now(); }
  std::chrono::steady_clock::time_point SteadyNow() const override { return std::chrono::steady_clock::now(); }
};

class KernelRandom final : public Random {
 public:
  void Fill(std::span<uint8_t> out) override {
    size_t done = 0;
    while (done < out.size()) {
      ssize_t n = getrandom(out.data() + done, out.size() - done, 0);
      if (n < 0) {
        FLT_CHECK_MSG(errno == EINTR, std::strerror(errno));
        continue;
      }
      done += static_cast<size_t>(n);
    }
  }
};

}  // namespace

Clock& RealClock() {
  static SystemClock* clock = new SystemClock();
  return *clock;
}

Random& OsRandom() {
  static KernelRandom* random = new KernelRandom();
  return *random;
}

uint64_t Random::NextU64() {
  uint8_t b[8];
  Fill(b);
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(b[i]) << (8 * i);
  return v;
}

uint32_t Random::NextU32() { return static_cast<uint32_t>(NextU64() >> 32); }

uint64_t Random::Uniform(uint64_t n) {
  FLT_CHECK(n > 0);
  // Rejection sampling: accept values below the largest multiple of n.
  const uint64_t limit = UINT64_MAX - (UINT64_MAX % n + 1) % n;
  for (;;) {
    uint64_t v = NextU64();
    if (v <= limit) return v % n;
  }
}

double Random::UniformDouble() { return static_cast<double>(NextU64() >> 11) * 0x1.0p-53; }

}  // namespace flotilla
