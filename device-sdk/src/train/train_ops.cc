#include "train/train_ops.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "flotilla/core/check.h"

namespace flotilla::model::train_ops {

void RmsNormBackward(const float* x, const float* w, const float* dy, int64_t n, int64_t dim, float eps, float* dx,
                     float* dw, ThreadPool* pool) {
  auto inv_rms = [&](const float* xr) {
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(xr[i]) * static_cast<double>(xr[i]);
    return 1.0 / std::sqrt(ss / static_cast<double>(dim) + static_cast<double>(eps));
  };
  // y_i = x_i r w_i, r = (mean(x²) + eps)^(-1/2): dx_i = r g_i − x_i r³ (Σ_j g_j x_j) / dim
  // with g = dy ⊙ w.
  ParallelFor(pool, n, 4, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const float* xr = x + t * dim;
      const float* g = dy + t * dim;
      const double r = inv_rms(xr);
      double gx = 0;
      for (int64_t i = 0; i < dim; ++i) gx += static_cast<double>(g[i] * w[i]) * static_cast<double>(xr[i]);
      const double c = r * r * r * gx / static_cast<double>(dim);
      float* d = dx + t * dim;
      for (int64_t i = 0; i < dim; ++i) {
        d[i] += static_cast<float>(r * static_cast<double>(g[i] * w[i]) - c * static_cast<double>(xr[i]));
      }
    }
  });
  if (dw == nullptr) return;
  // Rows in order: the weight gradient does not depend on the thread count.
  for (int64_t t = 0; t < n; ++t) {
    const float* xr = x + t * dim;
    const float* g = dy + t * dim;
    const auto r = static_cast<float>(inv_rms(xr));
    for (int64_t i = 0; i < dim; ++i) dw[i] += g[i] * (xr[i] * r);
  }
}

void SwiGluBackward(const float* g, const float* u, const float* da, float* dg, float* du, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i];
    const float a = da[i];
    const float sig = 1.0f / (1.0f + std::exp(-gi));
    du[i] = a * (gi * sig);
    dg[i] = a * u[i] * (sig * (1.0f + gi * (1.0f - sig)));
  }
}

void RopeBackward(const KernelTable& k, float* x, int64_t n, int64_t heads, int64_t head_dim, float theta) {
  for (int64_t t = 0; t < n; ++t) k.rope(x + t * heads * head_dim, 1, heads, head_dim, -t, theta);
}

size_t AttentionBackwardScratchFloats(int64_t n) { return 2 * static_cast<size_t>(n) * static_cast<size_t>(RoundUp8(n)); }

void AttentionBackward(const AttentionShape& s, const float* q, const float* k, const float* v, const float* d_out,
                       float* dq, float* dk, float* dv, float* scratch, int64_t slots, const ComputeContext& ctx) {
  const KernelTable& kt = *ctx.kernels;
  const int64_t n = s.n;
  const int64_t hd = s.head_dim;
  const int64_t group = s.n_heads / s.n_kv_heads;
  const int64_t q_dim = s.n_heads * hd;
  const int64_t kv_dim = s.n_kv_heads * hd;
  const int64_t ld = RoundUp8(n);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  slots = std::min(slots, s.n_kv_heads);
  const size_t per_slot = AttentionBackwardScratchFloats(n);

  // Scores/probabilities of query rows [t0, t0 + nt) of head h against keys (or values)
  // [0, seen): one GEMM on the F32 micro-kernel, like the forward.
  auto dot_rows = [&](const float* rows, int64_t ld_rows, const float* x, int64_t ld_x, int64_t nt, int64_t seen,
                      float* y) {
    GemmArgs a{};
    a.w = rows;
    a.w_row_bytes = static_cast<size_t>(ld_rows) * sizeof(float);
    a.x = x;
    a.x_row_bytes = static_cast<size_t>(ld_x) * sizeof(float);
    a.cols = hd;
    a.n_tokens = nt;
    a.y = y;
    a.ldy = ld;
    kt.gemm_f32(a, 0, seen);
  };

  ParallelFor(ctx.pool, slots, 1, [&](int64_t s0, int64_t s1) {
    for (int64_t slot = s0; slot < s1; ++slot) {
      float* p = scratch + static_cast<size_t>(slot) * per_slot;  // P      [n x ld]
      float* ds = p + n * ld;                                      // dP→dS  [n x ld]
      for (int64_t g = slot; g < s.n_kv_heads; g += slots) {
        const int64_t kv_off = g * hd;
        for (int64_t t = 0; t < n; ++t) {
          std::fill(dk + t * kv_dim + kv_off, dk + t * kv_dim + kv_off + hd, 0.0f);
          std::fill(dv + t * kv_dim + kv_off, dv + t * kv_dim + kv_off + hd, 0.0f);
        }
        for (int64_t h = g * group; h < (g + 1) * group; ++h) {
          const int64_t q_off = h * hd;
          for (int64_t t0 = 0; t0 < n; t0 += kAttnBlock) {
            const int64_t nt = std::min(kAttnBlock, n - t0);
            const int64_t seen = t0 + nt;
            // P exactly as the forward computed it.
            dot_rows(k + kv_off, kv_dim, q + t0 * q_dim + q_off, q_dim, nt, seen, p + t0 * ld);
            // dP = dO · Vᵀ.
            dot_rows(v + kv_off, kv_dim, d_out + t0 * q_dim + q_off, q_dim, nt, seen, ds + t0 * ld);
            for (int64_t t = t0; t < seen; ++t) {
              float* pr = p + t * ld;
              float* dr = ds + t * ld;
              const int64_t len = t + 1;
              kt.scale(pr, scale, pr, len);
              kt.softmax(pr, len);
              std::fill(pr + len, pr + ld, 0.0f);
              // Softmax backward: dS_j = P_j (dP_j − Σ_i P_i dP_i), times the score scale.
              double dot = 0;
              for (int64_t j = 0; j < len; ++j) dot += static_cast<double>(pr[j]) * static_cast<double>(dr[j]);
              const auto d = static_cast<float>(dot);
              for (int64_t j = 0; j < len; ++j) dr[j] = pr[j] * (dr[j] - d) * scale;
              std::fill(dr + len, dr + ld, 0.0f);
            }
            // dQ rows of this block: dS · K over the keys they see.
            for (int64_t t = t0; t < seen; ++t) std::fill(dq + t * q_dim + q_off, dq + t * q_dim + q_off + hd, 0.0f);
            kt.gemm_acc_f32(GemmAccArgs{ds + t0 * ld, ld, 1, k + kv_off, kv_dim, dq + t0 * q_dim + q_off, q_dim, nt,
                                        hd, seen});
          }
          // dK += dSᵀ · Q and dV += Pᵀ · dO, key rows [j0, j0 + kAttnBlock) against the
          // query rows that see them (t >= j0).
          for (int64_t j0 = 0; j0 < n; j0 += kAttnBlock) {
            const int64_t nj = std::min(kAttnBlock, n - j0);
            kt.gemm_acc_f32(GemmAccArgs{ds + j0 * ld + j0, 1, ld, q + j0 * q_dim + q_off, q_dim,
                                        dk + j0 * kv_dim + kv_off, kv_dim, nj, hd, n - j0});
            kt.gemm_acc_f32(GemmAccArgs{p + j0 * ld + j0, 1, ld, d_out + j0 * q_dim + q_off, q_dim,
                                        dv + j0 * kv_dim + kv_off, kv_dim, nj, hd, n - j0});
          }
        }
      }
    }
  });
}

double CrossEntropyRows(const KernelTable& k, float* logits, int64_t rows, int64_t vocab, const int32_t* targets,
                        bool grad, int64_t* count, double* row_loss, ThreadPool* pool) {
  ParallelFor(pool, rows, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* z = logits + r * vocab;
      const int32_t target = targets[r];
      row_loss[r] = 0;
      if (target < 0) {
        if (grad) std::fill(z, z + vocab, 0.0f);
        continue;
      }
      k.softmax(z, vocab);
      // −log p_t in double from the float probability: exact to float rounding while p_t
      // is a normal float (losses up to ~87 nats); beyond that it saturates at −log of
      // the smallest denormal (a wrong, very confident model). The gradient is exact.
      const float pt = std::max(z[target], std::numeric_limits<float>::denorm_min());
      row_loss[r] = -std::log(static_cast<double>(pt));
      if (grad) z[target] -= 1.0f;
    }
  });
  double sum = 0;
  for (int64_t r = 0; r < rows; ++r) {
    if (targets[r] >= 0) {
      sum += row_loss[r];
      ++*count;
    }
  }
  return sum;
}

void WeightGradAccumulate(const float* dy, int64_t ld_dy, int64_t rows, const float* x, int64_t ld_x, int64_t cols,
                          int64_t n, float* dw, const ComputeContext& ctx) {
  GemmAccumulate(GemmAccArgs{dy, 1, ld_dy, x, ld_x, dw, cols, rows, cols, n}, ctx);
}

void LoraForward(const LoraRef& m, const float* x, int64_t n, float* y, int64_t ldy, float* sax, float* bax,
                 const ComputeContext& ctx) {
  const KernelTable& k = *ctx.kernels;
  // The operations of LoraApplier::Apply (user scale 1), so logits match inference.
  MatMul(WeightMatrix{GgmlType::kF32, m.a, m.rank, m.in}, x, n, sax, ctx);
  k.scale(sax, m.scale, sax, n * m.rank);
  MatMul(WeightMatrix{GgmlType::kF32, m.b, m.out, m.rank}, sax, n, bax, ctx);
  for (int64_t t = 0; t < n; ++t) k.axpy(1.0f, bax + t * m.out, y + t * ldy, m.out);
}

void LoraBackward(const LoraRef& m, const float* x, const float* sax, const float* dy, int64_t ld_dy, int64_t n,
                  float* dx, int64_t ld_dx, float* g, const ComputeContext& ctx) {
  const KernelTable& k = *ctx.kernels;
  // y = B u with u = sax: ∂B = dyᵀ u.
  GemmAccumulate(GemmAccArgs{dy, 1, ld_dy, sax, m.rank, m.grad_b, m.rank, m.out, m.rank, n}, ctx);
  // ∂u = dy B, and u = s A x: g = s ∂u is the gradient reaching A x.
  std::fill(g, g + n * m.rank, 0.0f);
  GemmAccumulate(GemmAccArgs{dy, ld_dy, 1, m.b, m.rank, g, m.rank, n, m.rank, m.out}, ctx);
  k.scale(g, m.scale, g, n * m.rank);
  if (m.grad_a != nullptr) GemmAccumulate(GemmAccArgs{g, 1, m.rank, x, m.in, m.grad_a, m.in, m.rank, m.in, n}, ctx);
  if (dx != nullptr) GemmAccumulate(GemmAccArgs{g, m.rank, 1, m.a, m.in, dx, ld_dx, n, m.in, m.rank}, ctx);
}

}  // namespace flotilla::model::train_ops
