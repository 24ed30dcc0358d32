#include "model/attention.h"

#include <algorithm>
#include <cmath>

namespace flotilla::model {

void CausalAttention(const AttentionShape& s, const float* q, const float* k, const float* vt, int64_t stride,
                     float* out, float* scores, int64_t slots, const ComputeContext& ctx) {
  const KernelTable& kt = *ctx.kernels;
  const int64_t hd = s.head_dim;
  const int64_t group = s.n_heads / s.n_kv_heads;
  const int64_t q_dim = s.n_heads * hd;
  const int64_t kv_dim = s.n_kv_heads * hd;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int64_t blocks = (s.n + kAttnBlock - 1) / kAttnBlock;
  const int64_t items = s.n_heads * blocks;
  slots = std::min(slots, items);
  // Work item = (head, block of up to kAttnBlock query tokens). Per item, two GEMMs on the
  // kernels' F32 micro-kernels: S = Q_h · K^T over the positions the block can see, then
  // O_h = P · V (V^T rows). Every output element is computed the same way whatever the
  // block, so prefill and decode agree bit for bit: the P·V length is rounded up to a
  // multiple of 8 with zero weights (cols never reach the kernel's scalar tail), and
  // softmax runs over exactly the causal length of each token.
  ParallelFor(ctx.pool, slots, 1, [&](int64_t s0, int64_t s1) {
    for (int64_t slot = s0; slot < s1; ++slot) {
      float* sc = scores + slot * kAttnBlock * stride;
      for (int64_t item = slot; item < items; item += slots) {
        const int64_t h = item % s.n_heads;
        const int64_t t0 = item / s.n_heads * kAttnBlock;
        const int64_t nt = std::min(kAttnBlock, s.n - t0);
        const int64_t seen = s.pos0 + t0 + nt;  // positions the block's last token sees
        const int64_t padded = RoundUp8(seen);
        const int64_t kv_off = (h / group) * hd;

        GemmArgs qk{};
        qk.w = k + kv_off;
        qk.w_row_bytes = static_cast<size_t>(kv_dim) * sizeof(float);
        qk.x = q + t0 * q_dim + h * hd;
        qk.x_row_bytes = static_cast<size_t>(q_dim) * sizeof(float);
        qk.cols = hd;
        qk.n_tokens = nt;
        qk.y = sc;
        qk.ldy = stride;
        kt.gemm_f32(qk, 0, seen);

        for (int64_t t = 0; t < nt; ++t) {
          float* row = sc + t * stride;
          const int64_t len = s.pos0 + t0 + t + 1;
          kt.scale(row, scale, row, len);
          kt.softmax(row, len);
          std::fill(row + len, row + padded, 0.0f);
        }

        GemmArgs pv{};
        pv.w = vt + kv_off * stride;
        pv.w_row_bytes = static_cast<size_t>(stride) * sizeof(float);
        pv.x = sc;
        pv.x_row_bytes = static_cast<size_t>(stride) * sizeof(float);
        pv.cols = padded;
        pv.n_tokens = nt;
        pv.y = out + t0 * q_dim + h * hd;
        pv.ldy = q_dim;
        kt.gemm_f32(pv, 0, hd);
      }
    }
  });
}

}  // namespace flotilla::model
