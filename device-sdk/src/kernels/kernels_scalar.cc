// The portable scalar kernels: the plain reference every optimized path is tested
// against. Written for clarity and exactness (integer block sums, wide float sums where
// ggml uses them), not speed.
#include <cmath>
#include <cstring>

#include "flotilla/model/quant.h"
#include "kernels_internal.h"

namespace flotilla::model::internal {
namespace {

inline float H(Half h) { return HalfToFloat(h); }

// ggml's nearest_int: round half to even through the float mantissa (|f| < 2^22).
inline int NearestInt(float f) {
  const float v = f + 12582912.0f;
  int32_t i;
  std::memcpy(&i, &v, sizeof(i));
  return (i & 0x007fffff) - 0x00400000;
}

}  // namespace

void QuantizeRowQ8KScalar(const float* x, BlockQ8_K* y, int64_t n) {
  const int64_t nb = n / kQK_K;
  for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
    float max = 0.0f;
    float amax = 0.0f;
    for (int j = 0; j < kQK_K; ++j) {
      const float ax = std::fabs(x[j]);
      if (ax > amax) {
        amax = ax;
        max = x[j];
      }
    }
    if (amax == 0.0f) {
      std::memset(&y[i], 0, sizeof(y[i]));
      continue;
    }
    const float iscale = -127.0f / max;
    for (int j = 0; j < kQK_K; ++j) {
      const int v = NearestInt(iscale * x[j]);
      y[i].qs[j] = static_cast<int8_t>(v < 127 ? v : 127);
    }
    for (int j = 0; j < kQK_K / 16; ++j) {
      int sum = 0;
      for (int l = 0; l < 16; ++l) sum += y[i].qs[j * 16 + l];
      y[i].bsums[j] = static_cast<int16_t>(sum);
    }
    y[i].d = 1.0f / iscale;
  }
}

namespace {

float DotQ8_0(const BlockQ8_0* w, const BlockQ8_0* x, int64_t n) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK8_0; ++i) {
    int isum = 0;
    for (int j = 0; j < kQK8_0; ++j) isum += w[i].qs[j] * x[i].qs[j];
    sum += static_cast<float>(isum) * (H(w[i].d) * H(x[i].d));
  }
  return sum;
}

float DotQ4_0(const BlockQ4_0* w, const BlockQ8_0* x, int64_t n) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK4_0; ++i) {
    int isum = 0;
    for (int j = 0; j < kQK4_0 / 2; ++j) {
      isum += ((w[i].qs[j] & 0x0f) - 8) * x[i].qs[j];
      isum += ((w[i].qs[j] >> 4) - 8) * x[i].qs[j + kQK4_0 / 2];
    }
    sum += static_cast<float>(isum) * (H(w[i].d) * H(x[i].d));
  }
  return sum;
}

// get_scale_min_k4 of ggml: the 6-bit scale and min of Q4_K sub-block j.
inline void ScaleMinK4(int j, const uint8_t* q, int* sc, int* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

float DotQ4_K(const BlockQ4_K* w, const BlockQ8_K* x, int64_t n) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    int isum = 0;
    int msum = 0;
    for (int j = 0; j < kQK_K / 32; ++j) {
      int sc = 0;
      int m = 0;
      ScaleMinK4(j, w[i].scales, &sc, &m);
      const uint8_t* q = w[i].qs + (j / 2) * 32;
      const int shift = (j % 2) * 4;
      int s = 0;
      for (int l = 0; l < 32; ++l) s += ((q[l] >> shift) & 0x0f) * x[i].qs[j * 32 + l];
      isum += sc * s;
      msum += m * (x[i].bsums[2 * j] + x[i].bsums[2 * j + 1]);
    }
    sum += x[i].d * H(w[i].d) * static_cast<float>(isum) - x[i].d * H(w[i].dmin) * static_cast<float>(msum);
  }
  return sum;
}

// Q6_K element l (0..255) of a block as a signed 6-bit value.
inline int Q6KValue(const BlockQ6_K& b, int l) {
  const int half = l / 128;
  const int r = l % 128;
  const uint8_t* ql = b.ql + half * 64;
  const uint8_t* qh = b.qh + half * 32;
  const int part = r / 32;  // 0..3
  const int k = r % 32;
  const int lo = part == 0 ? (ql[k] & 0x0f) : part == 1 ? (ql[k + 32] & 0x0f) : part == 2 ? (ql[k] >> 4) : (ql[k + 32] >> 4);
  const int hi = (qh[k] >> (2 * part)) & 3;
  return (lo | (hi << 4)) - 32;
}

float DotQ6_K(const BlockQ6_K* w, const BlockQ8_K* x, int64_t n) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    int isum = 0;
    for (int s = 0; s < kQK_K / 16; ++s) {
      int ss = 0;
      for (int l = s * 16; l < s * 16 + 16; ++l) ss += Q6KValue(w[i], l) * x[i].qs[l];
      isum += w[i].scales[s] * ss;
    }
    sum += x[i].d * H(w[i].d) * static_cast<float>(isum);
  }
  return sum;
}

float DotF32(const float* w, const float* x, int64_t n) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(w[i]) * static_cast<double>(x[i]);
  return static_cast<float>(sum);
}

float DotF16(const Half* w, const float* x, int64_t n) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(H(w[i])) * static_cast<double>(x[i]);
  return static_cast<float>(sum);
}

// Reference GEMM: one dot product per output element.
template <typename W, typename X, float (*kDot)(const W*, const X*, int64_t)>
void GemmViaDot(const GemmArgs& a, int64_t r0, int64_t r1) {
  const auto* wb = static_cast<const unsigned char*>(a.w);
  const auto* xb = static_cast<const unsigned char*>(a.x);
  for (int64_t r = r0; r < r1; ++r) {
    const W* w = reinterpret_cast<const W*>(wb + static_cast<size_t>(r) * a.w_row_bytes);
    for (int64_t t = 0; t < a.n_tokens; ++t) {
      const X* x = reinterpret_cast<const X*>(xb + static_cast<size_t>(t) * a.x_row_bytes);
      a.y[t * a.ldy + r] = kDot(w, x, a.cols);
    }
  }
}

void ConvertF16(const Half* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = H(x[i]);
}

void RmsNorm(const float* x, const float* weight, float* y, int64_t n, float eps) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  const float mean = static_cast<float>(sum / static_cast<double>(n));
  const float scale = 1.0f / std::sqrt(mean + eps);
  for (int64_t i = 0; i < n; ++i) y[i] = weight != nullptr ? (x[i] * scale) * weight[i] : x[i] * scale;
}

void Softmax(float* x, int64_t n) {
  float max = x[0];
  for (int64_t i = 1; i < n; ++i) max = std::fmax(max, x[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - max);
    sum += static_cast<double>(x[i]);
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

inline float SiluOne(float v) { return v / (1.0f + std::exp(-v)); }

void Silu(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = SiluOne(x[i]);
}

void SwiGlu(const float* gate, const float* up, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = SiluOne(gate[i]) * up[i];
}

void Add(const float* a, const float* b, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

void Scale(const float* x, float s, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = s * x[i];
}

void Axpy(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

// The reference accumulating GEMM: one fused multiply-add chain per C element. fmaf
// (not a*b+c) so every SIMD path can match it bit for bit with its FMA instructions.
void GemmAccF32(const GemmAccArgs& g) {
  for (int64_t i = 0; i < g.m; ++i) {
    float* c = g.c + i * g.ldc;
    const float* a = g.a + i * g.a_si;
    for (int64_t j = 0; j < g.n; ++j) {
      float acc = c[j];
      for (int64_t p = 0; p < g.k; ++p) acc = __builtin_fmaf(a[p * g.a_sk], g.b[p * g.ldb + j], acc);
      c[j] = acc;
    }
  }
}

}  // namespace

// Angles in double (theta_i = pos * base^(-2i/d)), then rounded: more accurate than
// ggml's running product theta *= theta_scale in float, which drifts by ~1e-6 relative
// per pair index (up to ~1e-3 rad at position 1000).
void RopeScalar(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t pos0, float theta_base) {
  const int64_t half = head_dim / 2;
  for (int64_t t = 0; t < n_tokens; ++t) {
    const double pos = static_cast<double>(pos0 + t);
    float* xt = x + t * n_heads * head_dim;
    for (int64_t i = 0; i < half; ++i) {
      const double theta =
          pos * std::pow(static_cast<double>(theta_base), -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
      const float c = static_cast<float>(std::cos(theta));
      const float s = static_cast<float>(std::sin(theta));
      for (int64_t h = 0; h < n_heads; ++h) {
        float* p = xt + h * head_dim + 2 * i;
        const float x0 = p[0];
        const float x1 = p[1];
        p[0] = x0 * c - x1 * s;
        p[1] = x0 * s + x1 * c;
      }
    }
  }
}

void FillScalarKernels(KernelTable* t) {
  t->path = CpuPath::kScalar;
  t->quantize_row_q8_0 = QuantizeRowQ8_0;
  t->quantize_row_q8_k = QuantizeRowQ8KScalar;
  t->dot_q8_0_q8_0 = DotQ8_0;
  t->dot_q4_0_q8_0 = DotQ4_0;
  t->dot_q4_k_q8_k = DotQ4_K;
  t->dot_q6_k_q8_k = DotQ6_K;
  t->dot_f32 = DotF32;
  t->dot_f16_f32 = DotF16;
  t->gemm_f32 = GemmViaDot<float, float, DotF32>;
  t->gemm_f16 = GemmViaDot<Half, float, DotF16>;
  t->gemm_q8_0 = GemmViaDot<BlockQ8_0, BlockQ8_0, DotQ8_0>;
  t->gemm_q4_0 = GemmViaDot<BlockQ4_0, BlockQ8_0, DotQ4_0>;
  t->gemm_q4_k = GemmViaDot<BlockQ4_K, BlockQ8_K, DotQ4_K>;
  t->gemm_q6_k = GemmViaDot<BlockQ6_K, BlockQ8_K, DotQ6_K>;
  t->dequantize_row_q8_0 = DequantizeRowQ8_0;
  t->dequantize_row_q4_0 = DequantizeRowQ4_0;
  t->dequantize_row_q4_k = DequantizeRowQ4_K;
  t->dequantize_row_q6_k = DequantizeRowQ6_K;
  t->convert_f16_f32 = ConvertF16;
  t->rms_norm = RmsNorm;
  t->softmax = Softmax;
  t->silu = Silu;
  t->swiglu = SwiGlu;
  t->add = Add;
  t->scale = Scale;
  t->axpy = Axpy;
  t->rope = RopeScalar;
  t->gemm_acc_f32 = GemmAccF32;
}

}  // namespace flotilla::model::internal
