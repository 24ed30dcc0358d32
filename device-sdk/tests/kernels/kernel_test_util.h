// Test data and independent double-precision references for the kernel tests.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "flotilla/model/cpu_features.h"
#include "flotilla/model/ggml_type.h"
#include "flotilla/model/kernels.h"
#include "flotilla/model/quant_blocks.h"

namespace flotilla::model::testing {

inline std::vector<float> RandomFloats(std::mt19937& rng, size_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

inline uint8_t RandomByte(std::mt19937& rng) { return static_cast<uint8_t>(rng() & 0xffu); }

// A random fp16 scale of either sign, or exactly 1.0 for the integer-exactness tests.
inline Half RandomScale(std::mt19937& rng, bool unit) {
  if (unit) return FloatToHalf(1.0f);
  std::uniform_real_distribution<float> dist(0.001f, 0.05f);
  const float s = dist(rng);
  return FloatToHalf((rng() & 1u) ? s : -s);
}

// Random weight rows of a quantized type: every code pattern (including -128 for Q8_0)
// can appear. Returns rows * RowBytes(type, cols) bytes.
inline std::vector<unsigned char> RandomWeights(std::mt19937& rng, GgmlType type, int64_t rows, int64_t cols,
                                                bool unit_scales = false) {
  const size_t rb = RowBytes(type, cols);
  std::vector<unsigned char> out(rb * static_cast<size_t>(rows));
  const int64_t nb = cols / BlockSize(type);
  for (int64_t r = 0; r < rows; ++r) {
    unsigned char* row = out.data() + static_cast<size_t>(r) * rb;
    for (int64_t b = 0; b < nb; ++b) {
      switch (type) {
        case GgmlType::kF32: {
          std::uniform_real_distribution<float> d(-1.0f, 1.0f);
          const float v = d(rng);
          std::memcpy(row + b * 4, &v, 4);
          break;
        }
        case GgmlType::kF16: {
          std::uniform_real_distribution<float> d(-1.0f, 1.0f);
          const Half h = FloatToHalf(d(rng));
          std::memcpy(row + b * 2, &h, 2);
          break;
        }
        case GgmlType::kQ8_0: {
          auto* blk = reinterpret_cast<BlockQ8_0*>(row) + b;
          blk->d = RandomScale(rng, unit_scales);
          for (int8_t& q : blk->qs) q = static_cast<int8_t>(RandomByte(rng));
          break;
        }
        case GgmlType::kQ4_0: {
          auto* blk = reinterpret_cast<BlockQ4_0*>(row) + b;
          blk->d = RandomScale(rng, unit_scales);
          for (uint8_t& q : blk->qs) q = RandomByte(rng);
          break;
        }
        case GgmlType::kQ4_K: {
          auto* blk = reinterpret_cast<BlockQ4_K*>(row) + b;
          blk->d = RandomScale(rng, unit_scales);
          blk->dmin = RandomScale(rng, unit_scales);
          for (uint8_t& q : blk->scales) q = RandomByte(rng);
          for (uint8_t& q : blk->qs) q = RandomByte(rng);
          break;
        }
        case GgmlType::kQ6_K: {
          auto* blk = reinterpret_cast<BlockQ6_K*>(row) + b;
          blk->d = RandomScale(rng, unit_scales);
          for (uint8_t& q : blk->ql) q = RandomByte(rng);
          for (uint8_t& q : blk->qh) q = RandomByte(rng);
          for (int8_t& q : blk->scales) q = static_cast<int8_t>(RandomByte(rng));
          break;
        }
        default: break;
      }
    }
  }
  return out;
}

// Independent reference dequantization (written from the format description, not from
// the kernels), in double.
inline std::vector<double> DequantizeRef(GgmlType type, const void* data, int64_t cols) {
  std::vector<double> y(static_cast<size_t>(cols));
  auto H = [](Half h) { return static_cast<double>(HalfToFloat(h)); };
  switch (type) {
    case GgmlType::kF32:
      for (int64_t i = 0; i < cols; ++i) y[i] = static_cast<const float*>(data)[i];
      break;
    case GgmlType::kF16:
      for (int64_t i = 0; i < cols; ++i) y[i] = H(static_cast<const Half*>(data)[i]);
      break;
    case GgmlType::kQ8_0: {
      const auto* b = static_cast<const BlockQ8_0*>(data);
      for (int64_t i = 0; i < cols; ++i) y[i] = H(b[i / 32].d) * b[i / 32].qs[i % 32];
      break;
    }
    case GgmlType::kQ4_0: {
      const auto* b = static_cast<const BlockQ4_0*>(data);
      for (int64_t i = 0; i < cols; ++i) {
        const BlockQ4_0& blk = b[i / 32];
        const int j = static_cast<int>(i % 32);
        const int q = j < 16 ? (blk.qs[j] & 15) : (blk.qs[j - 16] >> 4);
        y[i] = H(blk.d) * (q - 8);
      }
      break;
    }
    case GgmlType::kQ4_K: {
      const auto* b = static_cast<const BlockQ4_K*>(data);
      for (int64_t i = 0; i < cols; ++i) {
        const BlockQ4_K& blk = b[i / 256];
        const int e = static_cast<int>(i % 256);
        const int j = e / 32;  // sub-block
        int sc, m;
        if (j < 4) {
          sc = blk.scales[j] & 63;
          m = blk.scales[j + 4] & 63;
        } else {
          sc = (blk.scales[j + 4] & 0xF) | ((blk.scales[j - 4] >> 6) << 4);
          m = (blk.scales[j + 4] >> 4) | ((blk.scales[j] >> 6) << 4);
        }
        const int chunk = e / 64;
        const int within = e % 64;
        const uint8_t byte = blk.qs[chunk * 32 + within % 32];
        const int q = within < 32 ? (byte & 15) : (byte >> 4);
        y[i] = H(blk.d) * sc * q - H(blk.dmin) * m;
      }
      break;
    }
    case GgmlType::kQ6_K: {
      const auto* b = static_cast<const BlockQ6_K*>(data);
      for (int64_t blk_i = 0; blk_i < cols / 256; ++blk_i) {
        const BlockQ6_K& blk = b[blk_i];
        const uint8_t* ql = blk.ql;
        const uint8_t* qh = blk.qh;
        const int8_t* sc = blk.scales;
        double* out = y.data() + blk_i * 256;
        for (int half = 0; half < 2; ++half) {
          for (int l = 0; l < 32; ++l) {
            const int is = l / 16;
            const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
            const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
            const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            out[l] = H(blk.d) * sc[is] * q1;
            out[l + 32] = H(blk.d) * sc[is + 2] * q2;
            out[l + 64] = H(blk.d) * sc[is + 4] * q3;
            out[l + 96] = H(blk.d) * sc[is + 6] * q4;
          }
          out += 128;
          ql += 64;
          qh += 32;
          sc += 8;
        }
      }
      break;
    }
    default: break;
  }
  return y;
}

// Dequantized activations (Q8_0 / Q8_K rows) in double.
inline std::vector<double> DequantizeActRef(GgmlType weight_type, const void* data, int64_t cols) {
  std::vector<double> y(static_cast<size_t>(cols));
  if (BlockSize(weight_type) == kQK_K) {
    const auto* b = static_cast<const BlockQ8_K*>(data);
    for (int64_t i = 0; i < cols; ++i) y[i] = static_cast<double>(b[i / 256].d) * b[i / 256].qs[i % 256];
  } else if (BlockSize(weight_type) == 32) {
    const auto* b = static_cast<const BlockQ8_0*>(data);
    for (int64_t i = 0; i < cols; ++i) y[i] = static_cast<double>(HalfToFloat(b[i / 32].d)) * b[i / 32].qs[i % 32];
  } else {
    for (int64_t i = 0; i < cols; ++i) y[i] = static_cast<const float*>(data)[i];
  }
  return y;
}

inline const char* TypeName(GgmlType t) {
  switch (t) {
    case GgmlType::kF32: return "F32";
    case GgmlType::kF16: return "F16";
    case GgmlType::kQ8_0: return "Q8_0";
    case GgmlType::kQ4_0: return "Q4_0";
    case GgmlType::kQ4_K: return "Q4_K";
    case GgmlType::kQ6_K: return "Q6_K";
    default: return "?";
  }
}

// Every path this CPU runs except scalar (the paths under test).
inline std::vector<const KernelTable*> OptimizedTables() {
  std::vector<const KernelTable*> out;
  for (CpuPath p : SupportedCpuPaths()) {
    if (p != CpuPath::kScalar) out.push_back(GetKernelTable(p));
  }
  return out;
}

inline const KernelTable& ScalarTable() { return *GetKernelTable(CpuPath::kScalar); }

inline constexpr GgmlType kMatTypes[] = {GgmlType::kF32,  GgmlType::kF16,  GgmlType::kQ8_0,
                                         GgmlType::kQ4_0, GgmlType::kQ4_K, GgmlType::kQ6_K};

// Column counts to test for a type: tails for float types, several block counts.
inline std::vector<int64_t> ColsFor(GgmlType t) {
  switch (BlockSize(t)) {
    case 1: return {1, 7, 8, 33, 288, 777};
    case 32: return {32, 64, 96, 288, 768};
    default: return {256, 512, 768};
  }
}

}  // namespace flotilla::model::testing
