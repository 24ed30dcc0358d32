// Tensor element types with ggml's numeric ids (stored in GGUF files; append-only), and
// the scalar half/bfloat16 conversions every part of the engine agrees on.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "flotilla/model/quant_blocks.h"

namespace flotilla::model {

enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kBF16 = 30,
};

// IEEE binary16 → float (exact; handles subnormals, inf, NaN).
inline float HalfToFloat(Half h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      mant &= 0x3ffu;
      bits = sign | ((112u - static_cast<uint32_t>(e)) << 23) | (mant << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 112u) << 23) | (mant << 13);
  }
  return std::bit_cast<float>(bits);
}

// float → IEEE binary16, round to nearest even (as F16C / ggml's fp32_to_fp16).
inline Half FloatToHalf(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<Half>(sign | 0x7e00u);  // NaN
  if (abs >= 0x477ff000u) return static_cast<Half>(sign | 0x7c00u);  // overflow → inf
  if (abs < 0x38800000u) {                                          // subnormal or zero half
    if (abs < 0x33000000u) return static_cast<Half>(sign);          // < half of min subnormal
    const uint32_t e = abs >> 23;
    const uint32_t m = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - e;  // 14..24
    uint32_t h = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (h & 1u))) ++h;
    return static_cast<Half>(sign | h);
  }
  uint32_t h = ((abs - 0x38000000u) >> 13);
  const uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return static_cast<Half>(sign | h);
}

using BF16 = uint16_t;
inline float BF16ToFloat(BF16 b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }
// Round to nearest even; NaN stays NaN (as ggml_compute_fp32_to_bf16).
inline BF16 FloatToBF16(float f) {
  uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<BF16>((x >> 16) | 64u);
  return static_cast<BF16>((x + (0x7fffu + ((x >> 16) & 1u))) >> 16);
}

}  // namespace flotilla::model
