// Internal to the training engine: the forward and backward pieces of one llama layer,
// on plain float arrays, so they can be tested one by one against finite differences
// (tests/train/gradcheck_test.cc) and composed by train_engine.cc.
//
// Conventions: row-major, one row per token; `ld*` are row strides in floats. Forward
// pieces reproduce InferenceSession's math exactly (same kernels, same operation order),
// so training logits equal inference logits bit for bit. Backward pieces accumulate with
// fixed-order sums (GemmAccumulate chains, serial double sums), so results do not depend
// on the thread count. None of them allocates.
#pragma once

#include <cstddef>
#include <cstdint>

#include "flotilla/model/kernels.h"
#include "model/attention.h"

namespace flotilla::model::train_ops {

// The attention forward and its block size are shared with inference (model/attention.h).
using ::flotilla::model::AttentionShape;
using ::flotilla::model::CausalAttention;
using ::flotilla::model::kAttnBlock;
using ::flotilla::model::RoundUp8;

// ---- Norms and element-wise -------------------------------------------------------------

// Backward of y = x · r · w per row (r = 1/sqrt(mean(x²) + eps)) for n rows of `dim`:
// dx += ∂L/∂x and, when dw is not null, dw += Σ_rows dy ⊙ x·r. Sums in double.
void RmsNormBackward(const float* x, const float* w, const float* dy, int64_t n, int64_t dim, float eps, float* dx,
                     float* dw, ThreadPool* pool);

// Backward of a = silu(g) · u over n elements: dg = da·u·silu'(g), du = da·silu(g).
// dg may alias da.
void SwiGluBackward(const float* g, const float* u, const float* da, float* dg, float* du, int64_t n);

// Backward of RoPE at positions 0..n-1 (in place on x[n][heads][head_dim]): the
// transpose of a rotation by +angle is the rotation by −angle, i.e. the kernel's rope at
// position −t.
void RopeBackward(const KernelTable& k, float* x, int64_t n, int64_t heads, int64_t head_dim, float theta);

// ---- Attention --------------------------------------------------------------------------

// Floats of scratch AttentionBackward needs per slot.
size_t AttentionBackwardScratchFloats(int64_t n);

// Backward of CausalAttention at pos0 = 0: recomputes the probabilities exactly as the forward did,
// then writes dq [n x q_dim] and dk, dv [n x kv_dim] (overwritten) from d_out [n x q_dim].
// v holds the value rows [n x kv_dim]. One work item per KV head (it accumulates the
// gradients of its query heads in order), `slots` scratch areas.
void AttentionBackward(const AttentionShape& s, const float* q, const float* k, const float* v, const float* d_out,
                       float* dq, float* dk, float* dv, float* scratch, int64_t slots, const ComputeContext& ctx);

// ---- Loss -------------------------------------------------------------------------------

// Cross-entropy of `rows` logit rows [rows x vocab] against targets (−1 = ignored).
// Returns Σ (logsumexp − logit[target]) over counted rows and adds their number to
// *count. With `grad` each row is replaced by ∂loss/∂logits = softmax − onehot (zero for
// ignored rows). row_loss: `rows` doubles of scratch.
double CrossEntropyRows(const KernelTable& k, float* logits, int64_t rows, int64_t vocab, const int32_t* targets,
                        bool grad, int64_t* count, double* row_loss, ThreadPool* pool);

// ---- Matrices ---------------------------------------------------------------------------

// dW[rows x cols] += dYᵀ · X for dY [n x rows] (row stride ld_dy) and X [n x cols]
// (row stride ld_x): the base weight gradient of full training.
void WeightGradAccumulate(const float* dy, int64_t ld_dy, int64_t rows, const float* x, int64_t ld_x, int64_t cols,
                          int64_t n, float* dw, const ComputeContext& ctx);

// One LoRA matrix pair seen by the engine: y += s · B (A x).
struct LoraRef {
  const float* a;   // [rank x in]
  const float* b;   // [out x rank]
  int64_t in;
  int64_t out;
  int64_t rank;
  float scale;      // s = alpha / rank
  float* grad_a;    // [rank x in], null when A is frozen
  float* grad_b;    // [out x rank]
};

// y[n x out] (row stride ldy) += s · B (A x) exactly as LoraApplier::Apply computes it,
// saving sax = s · A x [n x rank] for the backward. bax: n x out floats of scratch.
void LoraForward(const LoraRef& m, const float* x, int64_t n, float* y, int64_t ldy, float* sax, float* bax,
                 const ComputeContext& ctx);

// Given dy = ∂L/∂y [n x out] (row stride ld_dy): grad_b += dyᵀ · sax; g = s · dy · B;
// grad_a += gᵀ · x (when grad_a); dx += g · A (when dx, row stride ld_dx).
// g: n x rank floats of scratch.
void LoraBackward(const LoraRef& m, const float* x, const float* sax, const float* dy, int64_t ld_dy, int64_t n,
                  float* dx, int64_t ld_dx, float* g, const ComputeContext& ctx);

}  // namespace flotilla::model::train_ops
