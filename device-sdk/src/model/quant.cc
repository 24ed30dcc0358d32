// Scalar reference quantizers. The arithmetic (operation order, the nearest_int trick,
// multiplying by 1/d rather than dividing) follows ggml-quants.c so that the output is
// bit-identical to llama.cpp's reference functions; do not "simplify" it.
#include "flotilla/model/quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "flotilla/core/check.h"
#include "flotilla/model/tensor_types.h"

namespace flotilla::model {
namespace {

constexpr float kGroupMaxEps = 1e-15f;

// ggml's nearest_int: round-half-to-even via the 1.5*2^23 trick. Exact for |x| < 2^22;
// beyond that (only reachable with pathological inputs) the result is defined but wrong,
// as in ggml.
int NearestInt(float fval) {
  const float val = fval + 12582912.f;
  int32_t i;
  std::memcpy(&i, &val, sizeof(i));
  return (i & 0x007fffff) - 0x00400000;
}

// C's (int8_t)float conversion, made total: out-of-range and NaN inputs (not reachable
// from finite data) saturate instead of being undefined behaviour.
int ToInt8Trunc(float v) {
  if (!(v > -129.f && v < 128.f)) return std::isnan(v) ? 0 : (v > 0 ? 127 : -128);
  return static_cast<int>(v);
}

float MakeQxQuants(int n, int nmax, const float* x, int8_t* L) {  // rmse_type 1, no qw
  float max = 0;
  float amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = -nmax / max;
  float sumlx = 0;
  float suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = NearestInt(iscale * x[i]);
    l = std::max(-nmax, std::min(nmax - 1, l));
    L[i] = static_cast<int8_t>(l + nmax);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * static_cast<float>(l);
    suml2 += w * static_cast<float>(l) * static_cast<float>(l);
  }
  float scale = suml2 != 0 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(static_cast<float>(nmax) + 0.1f * static_cast<float>(is)) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      int l = NearestInt(iscale * x[i]);
      l = std::max(-nmax, std::min(nmax - 1, l));
      const float w = x[i] * x[i];
      sumlx += w * x[i] * static_cast<float>(l);
      suml2 += w * static_cast<float>(l) * static_cast<float>(l);
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) {
        const int l = NearestInt(iscale * x[i]);
        L[i] = static_cast<int8_t>(nmax + std::max(-nmax, std::min(nmax - 1, l)));
      }
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

float MakeQkx2Quants(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min,
                     uint8_t* Laux, float rmin, float rdelta, int nstep, bool use_mad) {
  float min = x[0];
  float max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    const float w = weights[i];
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *the_min = -min;
    return 0.f;
  }
  float iscale = static_cast<float>(nmax) / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    const int l = NearestInt(iscale * (x[i] - min));
    L[i] = static_cast<uint8_t>(std::max(0, std::min(nmax, l)));
    float diff = scale * L[i] + min - x[i];
    diff = use_mad ? std::fabs(diff) : diff * diff;
    best_error += weights[i] * diff;
  }
  if (nstep < 1) {
    *the_min = -min;
    return scale;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * static_cast<float>(is) + static_cast<float>(nmax)) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      int l = NearestInt(iscale * (x[i] - min));
      l = std::max(0, std::min(nmax, l));
      Laux[i] = static_cast<uint8_t>(l);
      const float w = weights[i];
      const auto fl = static_cast<float>(l);
      sum_l += w * fl;
      sum_l2 += w * fl * fl;
      sum_xl += w * fl * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; ++i) {
        float diff = this_scale * Laux[i] + this_min - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        cur_error += weights[i] * diff;
      }
      if (cur_error < best_error) {
        for (int i = 0; i < n; ++i) L[i] = Laux[i];
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

void CheckBlocks(int64_t n, int64_t block) {
  FLT_CHECK_MSG(n >= 0 && n % block == 0, "row length must be a multiple of the block size");
}

}  // namespace

void GetScaleMinK4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

void QuantizeRowQ8_0(const float* x, BlockQ8_0* y, int64_t n) {
  CheckBlocks(n, kQK8_0);
  for (int64_t i = 0; i < n / kQK8_0; ++i, x += kQK8_0) {
    float amax = 0.0f;
    for (int j = 0; j < kQK8_0; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / ((1 << 7) - 1);
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y[i].d = FloatToHalf(d);
    for (int j = 0; j < kQK8_0; ++j) y[i].qs[j] = static_cast<int8_t>(ToInt8Trunc(std::round(x[j] * id)));
  }
}

void QuantizeRowQ4_0(const float* x, BlockQ4_0* y, int64_t n) {
  CheckBlocks(n, kQK4_0);
  for (int64_t i = 0; i < n / kQK4_0; ++i, x += kQK4_0) {
    float amax = 0.0f;
    float max = 0.0f;
    for (int j = 0; j < kQK4_0; ++j) {
      if (amax < std::fabs(x[j])) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    const float d = max / -8;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y[i].d = FloatToHalf(d);
    for (int j = 0; j < kQK4_0 / 2; ++j) {
      const int xi0 = std::min(15, ToInt8Trunc(x[j] * id + 8.5f));
      const int xi1 = std::min(15, ToInt8Trunc(x[kQK4_0 / 2 + j] * id + 8.5f));
      y[i].qs[j] = static_cast<uint8_t>(static_cast<uint8_t>(xi0) | (static_cast<uint8_t>(xi1) << 4));
    }
  }
}

void QuantizeRowQ4_K(const float* x, BlockQ4_K* y, int64_t n) {
  CheckBlocks(n, kQK_K);
  uint8_t L[kQK_K];
  uint8_t Laux[32];
  float weights[32];
  float mins[kQK_K / 32];
  float scales[kQK_K / 32];
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    float max_scale = 0;
    float max_min = 0;
    for (int j = 0; j < kQK_K / 32; ++j) {
      float sum_x2 = 0;
      for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
      const float av_x = std::sqrt(sum_x2 / 32);
      for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
      scales[j] = MakeQkx2Quants(32, 15, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -1.f, 0.1f, 20, false);
      max_scale = std::max(max_scale, scales[j]);
      max_min = std::max(max_min, mins[j]);
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    std::memset(y[i].scales, 0, sizeof(y[i].scales));
    for (int j = 0; j < kQK_K / 32; ++j) {
      // ggml stores nearest_int into a uint8_t before clamping; keep that truncation.
      auto ls = static_cast<uint8_t>(NearestInt(inv_scale * scales[j]));
      auto lm = static_cast<uint8_t>(NearestInt(inv_min * mins[j]));
      ls = std::min<uint8_t>(63, ls);
      lm = std::min<uint8_t>(63, lm);
      if (j < 4) {
        y[i].scales[j] = ls;
        y[i].scales[j + 4] = lm;
      } else {
        y[i].scales[j + 4] = static_cast<uint8_t>((ls & 0xF) | ((lm & 0xF) << 4));
        y[i].scales[j - 4] = static_cast<uint8_t>(y[i].scales[j - 4] | ((ls >> 4) << 6));
        y[i].scales[j] = static_cast<uint8_t>(y[i].scales[j] | ((lm >> 4) << 6));
      }
    }
    y[i].d = FloatToHalf(max_scale / 63.f);
    y[i].dmin = FloatToHalf(max_min / 63.f);
    for (int j = 0; j < kQK_K / 32; ++j) {
      uint8_t sc, m;
      GetScaleMinK4(j, y[i].scales, &sc, &m);
      const float d = HalfToFloat(y[i].d) * sc;
      if (d == 0) continue;
      const float dm = HalfToFloat(y[i].dmin) * m;
      for (int ii = 0; ii < 32; ++ii) {
        const int l = NearestInt((x[32 * j + ii] + dm) / d);
        L[32 * j + ii] = static_cast<uint8_t>(std::max(0, std::min(15, l)));
      }
    }
    uint8_t* q = y[i].qs;
    for (int j = 0; j < kQK_K; j += 64, q += 32) {
      for (int l = 0; l < 32; ++l) q[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
    }
  }
}

void QuantizeRowQ6_K(const float* x, BlockQ6_K* y, int64_t n) {
  CheckBlocks(n, kQK_K);
  int8_t L[kQK_K];
  float scales[kQK_K / 16];
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    float max_scale = 0;
    float max_abs_scale = 0;
    for (int ib = 0; ib < kQK_K / 16; ++ib) {
      const float scale = MakeQxQuants(16, 32, x + 16 * ib, L + 16 * ib);
      scales[ib] = scale;
      const float abs_scale = std::fabs(scale);
      if (abs_scale > max_abs_scale) {
        max_abs_scale = abs_scale;
        max_scale = scale;
      }
    }
    if (max_abs_scale < kGroupMaxEps) {
      std::memset(&y[i], 0, sizeof(BlockQ6_K));
      y[i].d = FloatToHalf(0.f);
      continue;
    }
    const float iscale = -128.f / max_scale;
    y[i].d = FloatToHalf(1 / iscale);
    for (int ib = 0; ib < kQK_K / 16; ++ib) {
      y[i].scales[ib] = static_cast<int8_t>(std::min(127, NearestInt(iscale * scales[ib])));
    }
    for (int j = 0; j < kQK_K / 16; ++j) {
      const float d = HalfToFloat(y[i].d) * y[i].scales[j];
      if (d == 0) continue;
      for (int ii = 0; ii < 16; ++ii) {
        int l = NearestInt(x[16 * j + ii] / d);
        l = std::max(-32, std::min(31, l));
        L[16 * j + ii] = static_cast<int8_t>(l + 32);
      }
    }
    uint8_t* ql = y[i].ql;
    uint8_t* qh = y[i].qh;
    for (int j = 0; j < kQK_K; j += 128, ql += 64, qh += 32) {
      for (int l = 0; l < 32; ++l) {
        const int q1 = L[j + l + 0] & 0xF;
        const int q2 = L[j + l + 32] & 0xF;
        const int q3 = L[j + l + 64] & 0xF;
        const int q4 = L[j + l + 96] & 0xF;
        ql[l + 0] = static_cast<uint8_t>(q1 | (q3 << 4));
        ql[l + 32] = static_cast<uint8_t>(q2 | (q4 << 4));
        qh[l] = static_cast<uint8_t>((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                                     ((L[j + l + 96] >> 4) << 6));
      }
    }
  }
}

void DequantizeRowQ8_0(const BlockQ8_0* x, float* y, int64_t n) {
  CheckBlocks(n, kQK8_0);
  for (int64_t i = 0; i < n / kQK8_0; ++i) {
    const float d = HalfToFloat(x[i].d);
    for (int j = 0; j < kQK8_0; ++j) *y++ = static_cast<float>(x[i].qs[j]) * d;
  }
}

void DequantizeRowQ4_0(const BlockQ4_0* x, float* y, int64_t n) {
  CheckBlocks(n, kQK4_0);
  for (int64_t i = 0; i < n / kQK4_0; ++i, y += kQK4_0) {
    const float d = HalfToFloat(x[i].d);
    for (int j = 0; j < kQK4_0 / 2; ++j) {
      y[j] = static_cast<float>((x[i].qs[j] & 0x0F) - 8) * d;
      y[j + kQK4_0 / 2] = static_cast<float>((x[i].qs[j] >> 4) - 8) * d;
    }
  }
}

void DequantizeRowQ4_K(const BlockQ4_K* x, float* y, int64_t n) {
  CheckBlocks(n, kQK_K);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const uint8_t* q = x[i].qs;
    const float d = HalfToFloat(x[i].d);
    const float min = HalfToFloat(x[i].dmin);
    for (int j = 0, is = 0; j < kQK_K; j += 64, q += 32, is += 2) {
      uint8_t sc, m;
      GetScaleMinK4(is, x[i].scales, &sc, &m);
      const float d1 = d * sc;
      const float m1 = min * m;
      GetScaleMinK4(is + 1, x[i].scales, &sc, &m);
      const float d2 = d * sc;
      const float m2 = min * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] & 0xF) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>(q[l] >> 4) - m2;
    }
  }
}

void DequantizeRowQ6_K(const BlockQ6_K* x, float* y, int64_t n) {
  CheckBlocks(n, kQK_K);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = HalfToFloat(x[i].d);
    const uint8_t* ql = x[i].ql;
    const uint8_t* qh = x[i].qh;
    const int8_t* sc = x[i].scales;
    for (int half = 0; half < kQK_K; half += 128, y += 128, ql += 64, qh += 32, sc += 8) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l + 0] = d * sc[is + 0] * static_cast<float>(q1);  // (d*sc)*q as in ggml
        y[l + 32] = d * sc[is + 2] * static_cast<float>(q2);
        y[l + 64] = d * sc[is + 4] * static_cast<float>(q3);
        y[l + 96] = d * sc[is + 6] * static_cast<float>(q4);
      }
    }
  }
}

namespace {

// Runs a block function over raw (possibly unaligned) bytes, one block at a time.
template <typename Block, typename Fn>
void QuantizeBlocks(const float* src, uint8_t* dst, int64_t n, int64_t block, Fn fn) {
  Block b;
  for (int64_t i = 0; i < n / block; ++i) {
    fn(src + i * block, &b, block);
    std::memcpy(dst + static_cast<size_t>(i) * sizeof(Block), &b, sizeof(Block));
  }
}

template <typename Block, typename Fn>
void DequantizeBlocks(const uint8_t* src, float* dst, int64_t n, int64_t block, Fn fn) {
  Block b;
  for (int64_t i = 0; i < n / block; ++i) {
    std::memcpy(&b, src + static_cast<size_t>(i) * sizeof(Block), sizeof(Block));
    fn(&b, dst + i * block, block);
  }
}

uint16_t LoadU16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

}  // namespace

Status Quantize(GgmlType type, std::span<const float> src, std::span<uint8_t> dst) {
  const TypeTraits& t = Traits(type);
  if (!t.can_quantize) return InvalidArgumentError("cannot quantize to " + std::string(t.name));
  const auto n = static_cast<int64_t>(src.size());
  FLT_ASSIGN_OR_RETURN(size_t bytes, RowSize(type, n));
  if (dst.size() != bytes) {
    return InvalidArgumentError("destination holds " + std::to_string(dst.size()) + " bytes, " + std::string(t.name) +
                                " needs " + std::to_string(bytes));
  }
  uint8_t* out = dst.data();
  switch (type) {
    case GgmlType::kF32:
      if (n > 0) std::memcpy(out, src.data(), bytes);
      return Status::Ok();
    case GgmlType::kF16:
      for (int64_t i = 0; i < n; ++i) {
        const Half h = FloatToHalf(src[static_cast<size_t>(i)]);
        std::memcpy(out + 2 * i, &h, 2);
      }
      return Status::Ok();
    case GgmlType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        const BF16 h = FloatToBF16(src[static_cast<size_t>(i)]);
        std::memcpy(out + 2 * i, &h, 2);
      }
      return Status::Ok();
    case GgmlType::kQ8_0:
      QuantizeBlocks<BlockQ8_0>(src.data(), out, n, kQK8_0, QuantizeRowQ8_0);
      return Status::Ok();
    case GgmlType::kQ4_0:
      QuantizeBlocks<BlockQ4_0>(src.data(), out, n, kQK4_0, QuantizeRowQ4_0);
      return Status::Ok();
    case GgmlType::kQ4_K:
      QuantizeBlocks<BlockQ4_K>(src.data(), out, n, kQK_K, QuantizeRowQ4_K);
      return Status::Ok();
    case GgmlType::kQ6_K:
      QuantizeBlocks<BlockQ6_K>(src.data(), out, n, kQK_K, QuantizeRowQ6_K);
      return Status::Ok();
    default:
      return InternalError("traits say quantizable but no quantizer for " + std::string(t.name));
  }
}

Status Dequantize(GgmlType type, ByteSpan src, std::span<float> dst) {
  const TypeTraits& t = Traits(type);
  if (!t.can_dequantize) return InvalidArgumentError("cannot dequantize " + std::string(t.name));
  const auto n = static_cast<int64_t>(dst.size());
  FLT_ASSIGN_OR_RETURN(size_t bytes, RowSize(type, n));
  if (src.size() != bytes) {
    return InvalidArgumentError("source holds " + std::to_string(src.size()) + " bytes, " +
                                std::to_string(n) + " " + std::string(t.name) + " elements need " +
                                std::to_string(bytes));
  }
  const uint8_t* in = src.data();
  float* out = dst.data();
  switch (type) {
    case GgmlType::kF32:
      if (n > 0) std::memcpy(out, in, bytes);
      return Status::Ok();
    case GgmlType::kF16:
      for (int64_t i = 0; i < n; ++i) out[i] = HalfToFloat(LoadU16(in + 2 * i));
      return Status::Ok();
    case GgmlType::kBF16:
      for (int64_t i = 0; i < n; ++i) out[i] = BF16ToFloat(LoadU16(in + 2 * i));
      return Status::Ok();
    case GgmlType::kQ8_0:
      DequantizeBlocks<BlockQ8_0>(in, out, n, kQK8_0, DequantizeRowQ8_0);
      return Status::Ok();
    case GgmlType::kQ4_0:
      DequantizeBlocks<BlockQ4_0>(in, out, n, kQK4_0, DequantizeRowQ4_0);
      return Status::Ok();
    case GgmlType::kQ4_K:
      DequantizeBlocks<BlockQ4_K>(in, out, n, kQK_K, DequantizeRowQ4_K);
      return Status::Ok();
    case GgmlType::kQ6_K:
      DequantizeBlocks<BlockQ6_K>(in, out, n, kQK_K, DequantizeRowQ6_K);
      return Status::Ok();
    default:
      return InternalError("traits say dequantizable but no dequantizer for " + std::string(t.name));
  }
}

Result<Bytes> QuantizeToBytes(GgmlType type, std::span<const float> src) {
  FLT_ASSIGN_OR_RETURN(size_t bytes, RowSize(type, static_cast<int64_t>(src.size())));
  Bytes out(bytes);
  FLT_RETURN_IF_ERROR(Quantize(type, src, out));
  return out;
}

Result<std::vector<float>> DequantizeToFloats(GgmlType type, ByteSpan src, int64_t n) {
  if (n < 0) return InvalidArgumentError("negative element count");
  FLT_ASSIGN_OR_RETURN(size_t bytes, RowSize(type, n));
  if (bytes != src.size()) {
    return InvalidArgumentError(std::to_string(n) + " elements of " + std::string(TypeName(type)) + " need " +
                                std::to_string(bytes) + " bytes, got " + std::to_string(src.size()));
  }
  std::vector<float> out(static_cast<size_t>(n));
  FLT_RETURN_IF_ERROR(Dequantize(type, src, out));
  return out;
}

}  // namespace flotilla::model
