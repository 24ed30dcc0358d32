// ggml quantization block layouts, bit-exact with llama.cpp (ggml-common.h).
// Shared by the GGUF code, the reference (de)quantizers and the optimized kernels.
// Bump kQuantFormatVersion on any change (mirrors GGML_QNT_VERSION = 2).
#pragma once

#include <cstddef>
#include <cstdint>

namespace flotilla::model {

inline constexpr uint32_t kQuantFormatVersion = 2;

// IEEE binary16 bits ("ggml_half").
using Half = uint16_t;

inline constexpr int kQK8_0 = 32;
inline constexpr int kQK4_0 = 32;
inline constexpr int kQK_K = 256;

struct BlockQ8_0 {
  Half d;
  int8_t qs[kQK8_0];
};
static_assert(sizeof(BlockQ8_0) == 34, "Q8_0 block must be 34 bytes");

struct BlockQ4_0 {
  Half d;
  uint8_t qs[kQK4_0 / 2];  // low nibble = element j, high nibble = element j+16
};
static_assert(sizeof(BlockQ4_0) == 18, "Q4_0 block must be 18 bytes");

struct BlockQ4_K {
  Half d;
  Half dmin;
  uint8_t scales[12];
  uint8_t qs[kQK_K / 2];
};
static_assert(sizeof(BlockQ4_K) == 144, "Q4_K block must be 144 bytes");

struct BlockQ6_K {
  uint8_t ql[kQK_K / 2];
  uint8_t qh[kQK_K / 4];
  int8_t scales[kQK_K / 16];
  Half d;
};
static_assert(sizeof(BlockQ6_K) == 210, "Q6_K block must be 210 bytes");

// Activations for K-quant dot products.
struct BlockQ8_K {
  float d;
  int8_t qs[kQK_K];
  int16_t bsums[kQK_K / 16];
};
static_assert(sizeof(BlockQ8_K) == 292, "Q8_K block must be 292 bytes");

}  // namespace flotilla::model
