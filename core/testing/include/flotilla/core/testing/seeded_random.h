// SeededRandom: deterministic xoshiro256** bytes for reproducible TEST DATA only.
// Not a CSPRNG; never use it for keys, masks or anything a production path consumes.
#pragma once

#include <cstdint>
#include <mutex>

#include "flotilla/core/random.h"

namespace flotilla::testing {

class SeededRandom final : public Random {
 public:
  explicit SeededRandom(uint64_t seed) {
    uint64_t x = seed;
    for (auto& s : s_) {  // splitmix64 expansion of the seed
      x += 0x9e3779b97f4a7c15ULL;
      uint64_t z = x;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
      s = z ^ (z >> 31);
    }
  }
  void Fill(std::span<uint8_t> out) override {
    std::lock_guard<std::mutex> lock(mu_);
    size_t i = 0;
    while (i < out.size()) {
      uint64_t v = Next();
      for (int b = 0; b < 8 && i < out.size(); ++b, ++i) out[i] = static_cast<uint8_t>(v >> (8 * b));
    }
  }

 private:
  static uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t Next() {
    uint64_t result = Rotl(s_[1] * 5, 7) * 9;
    uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = Rotl(s_[3], 45);
    return result;
  }
  std::mutex mu_;
  uint64_t s_[4];
};

}  // namespace flotilla::testing
