// Internal: arithmetic in GF(p), p = 2^61 - 1. Inputs must be reduced (< p); outputs are.
#pragma once

#include <cstdint>

#include "flotilla/security/shamir.h"

namespace flotilla::security::gf61 {

inline constexpr uint64_t kP = kShamirPrime;
__extension__ typedef unsigned __int128 Uint128;  // GCC/Clang builtin; __extension__ for -Wpedantic

constexpr uint64_t Add(uint64_t a, uint64_t b) {
  uint64_t s = a + b;  // < 2^62
  return s >= kP ? s - kP : s;
}

constexpr uint64_t Sub(uint64_t a, uint64_t b) { return a >= b ? a - b : a + kP - b; }

// 2^61 == 1 (mod p), so the product splits into its low 61 bits plus everything above.
constexpr uint64_t Mul(uint64_t a, uint64_t b) {
  const Uint128 z = static_cast<Uint128>(a) * b;  // < 2^122
  const uint64_t lo = static_cast<uint64_t>(z) & kP;
  const uint64_t hi = static_cast<uint64_t>(z >> 61);  // < 2^61
  const uint64_t s = lo + hi;                           // < 2^62
  return s >= kP ? s - kP : s;
}

constexpr uint64_t Pow(uint64_t a, uint64_t e) {
  uint64_t r = 1;
  while (e != 0) {
    if (e & 1) r = Mul(r, a);
    a = Mul(a, a);
    e >>= 1;
  }
  return r;
}

// Fermat: a^(p-2). REQUIRES: a != 0.
constexpr uint64_t Inv(uint64_t a) { return Pow(a, kP - 2); }

}  // namespace flotilla::security::gf61
