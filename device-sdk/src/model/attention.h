// Causal grouped-query attention forward, shared by InferenceSession (over its KV cache)
// and the training engine (over a whole sequence), so training logits equal inference
// logits bit for bit by construction. Internal to flotilla_model.
#pragma once

#include <cstdint>

#include "flotilla/model/kernels.h"

namespace flotilla::model {

// Query tokens per attention work item: bounds the score scratch and the causal waste
// (positions a block computes but its earlier tokens mask out). It decides which
// positions a score row is computed over, so every caller must use this one.
inline constexpr int64_t kAttnBlock = 32;

inline int64_t RoundUp8(int64_t n) { return (n + 7) / 8 * 8; }

struct AttentionShape {
  int64_t n;  // query tokens, at positions pos0 .. pos0 + n - 1
  int64_t n_heads;
  int64_t n_kv_heads;
  int64_t head_dim;
  int64_t pos0 = 0;
};

// out [n x q_dim] = softmax(Q K^T / sqrt(head_dim), causal) V per head, head h reading KV
// head h / (n_heads / n_kv_heads). q [n x q_dim] (after RoPE); k: key rows of positions
// 0 .. pos0 + n - 1 [.. x kv_dim] (after RoPE); vt: V transposed, row d at d * stride,
// columns beyond pos0 + n zero up to RoundUp8. scores: `slots` x kAttnBlock x stride floats
// of scratch (slots >= 1). Deterministic for any thread count.
void CausalAttention(const AttentionShape& s, const float* q, const float* k, const float* vt, int64_t stride,
                     float* out, float* scores, int64_t slots, const ComputeContext& ctx);

}  // namespace flotilla::model
