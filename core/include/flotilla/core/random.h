// Random seam. Production randomness comes only from a CSPRNG: OsRandom() (getrandom(2))
// here, or the CTR_DRBG in flotilla/security. Seeded generators for tests live in
// core/testing and must never ship in production paths.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace flotilla {

class Random {
 public:
  virtual ~Random() = default;
  // Fills `out` with random bytes. Implementations are thread-safe unless they say otherwise.
  virtual void Fill(std::span<uint8_t> out) = 0;

  uint64_t NextU64();
  uint32_t NextU32();
  // Uniform in [0, n) without modulo bias; n must be > 0.
  uint64_t Uniform(uint64_t n);
  // Uniform double in [0, 1) with 53 random bits.
  double UniformDouble();
};

// Kernel CSPRNG via getrandom(2). Thread-safe; aborts if the kernel refuses (never
// falls back to a weak source).
Random& OsRandom();

}  // namespace flotilla
