// Llama forward pass (batched prefill and one-token decode over a KV cache) and text
// generation.
//
// Per layer: x += Wo·Attn(RoPE(Wq·n1), RoPE(Wk·n1), Wv·n1) with n1 = RMSNorm(x)·attn_norm,
// then x += Wdown·(silu(Wgate·n2) ⊙ Wup·n2) with n2 = RMSNorm(x)·ffn_norm; logits =
// Wout·(RMSNorm(x)·output_norm). Attention is causal grouped-query attention (head h
// reads KV head h / (n_heads / n_kv_heads)), scale 1/sqrt(head_dim), F32 KV cache.
//
// Determinism: for one CPU path, a token's logits are bit-identical whether it is
// evaluated in a batch or alone and whatever the thread count (the kernels guarantee it
// for the matrices; attention computes each (token, head) the same way in every case).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flotilla/core/status.h"
#include "flotilla/model/cpu_features.h"
#include "flotilla/model/kernels.h"
#include "flotilla/model/kv_cache.h"
#include "flotilla/model/llama_model.h"
#include "flotilla/model/sampler.h"
#include "flotilla/model/thread_pool.h"

namespace flotilla::model {

struct InferenceOptions {
  int n_threads = 0;      // 0: ThreadPool::DefaultThreadCount()
  int64_t n_ctx = 0;      // 0: the model's context_length; larger is refused
  int64_t n_batch = 0;    // tokens per forward chunk (longer prompts are split); 0: min(n_ctx, 512)
  std::optional<CpuPath> cpu_path;  // unset: ActiveCpuPath()
  bool all_logits = false;          // keep logits of every token of an Eval, not just the last
};

// The seven projections, for adapters and observers.
enum class Projection { kQ, kK, kV, kO, kGate, kUp, kDown };
std::string_view ToString(Projection p);

// Adds to a projection's output after the base matmul (before RoPE for Q/K): the LoRA
// hook, y += scale * B(A x). Called on the session's thread; it may use ctx.pool.
class ProjectionAdapter {
 public:
  virtual ~ProjectionAdapter() = default;
  // x: n rows of in_dim; y: n rows of out_dim at row stride ldy, to be added into.
  virtual void Apply(int64_t layer, Projection p, const float* x, int64_t n, int64_t in_dim, float* y, int64_t ldy,
                     int64_t out_dim, const ComputeContext& ctx) = 0;
};

// The buffers of one layer's forward for a chunk of n tokens at positions pos0.., all
// row-major with n rows, valid only during ForwardObserver::OnLayer. What a backward pass
// needs (inputs of every matmul, the attention inputs, the FFN pre-activations).
struct LayerActivations {
  int64_t layer;
  int64_t n_tokens;
  int64_t pos0;
  const float* x_in;       // [n x dim] residual stream entering the layer
  const float* attn_in;    // [n x dim] RMSNorm(x_in) * attn_norm (input of Q, K, V)
  const float* q;          // [n x q_dim] after RoPE
  const float* v;          // [n x kv_dim] the new tokens' values
  const float* k_cache;    // keys of positions 0..pos0+n-1 (after RoPE), row pos at pos * kv_dim
  const float* v_t_cache;  // values transposed: (d, pos) at d * v_stride + pos
  int64_t v_stride;
  const float* attn_out;   // [n x q_dim] attention output (input of Wo)
  const float* x_mid;      // [n x dim] residual after attention
  const float* ffn_in;     // [n x dim] RMSNorm(x_mid) * ffn_norm (input of gate, up)
  const float* gate;       // [n x ffn] Wgate·ffn_in (before SiLU)
  const float* up;         // [n x ffn] Wup·ffn_in
  const float* ffn_act;    // [n x ffn] silu(gate) * up (input of Wdown)
  const float* x_out;      // [n x dim] residual leaving the layer
};

class ForwardObserver {
 public:
  virtual ~ForwardObserver() = default;
  virtual void OnLayer(const LayerActivations& a) = 0;
};

// One sequence's state: KV cache, scratch buffers, thread pool. All buffers are sized at
// Create: Eval allocates nothing. Not thread-safe (one caller at a time); the model may
// be shared with other sessions.
class InferenceSession {
 public:
  // InvalidArgument for bad options (n_ctx above the model's context_length, threads out
  // of range), FailedPrecondition if cpu_path cannot run here, ResourceExhausted if the
  // buffers are too large. `model` must outlive the session.
  static Result<std::unique_ptr<InferenceSession>> Create(const LlamaModel& model, const InferenceOptions& options = {});
  ~InferenceSession();
  InferenceSession(const InferenceSession&) = delete;
  InferenceSession& operator=(const InferenceSession&) = delete;

  // Appends `tokens` at positions n_past().. and computes their logits. InvalidArgument
  // for an empty span or an id outside the vocabulary; OutOfRange ("context full") if
  // n_past() + tokens.size() > n_ctx() — the session is unchanged on any error.
  Status Eval(std::span<const int32_t> tokens);
  // Logits of the last token of the last Eval (vocab_size floats).
  std::span<const float> logits() const;
  // With all_logits: logits of token i of the last Eval. FLT_CHECK on i / the option.
  std::span<const float> logits(int64_t i) const;

  int64_t n_past() const { return cache_->size(); }
  int64_t n_ctx() const { return cache_->n_ctx(); }
  // Forgets all positions (a new sequence).
  void Reset() { cache_->Clear(); }
  // Keeps positions [0, n); InvalidArgument if n > n_past().
  Status Truncate(int64_t n);

  // Optional hooks (null to remove); not owned, must outlive their use.
  void set_adapter(ProjectionAdapter* a) { adapter_ = a; }
  void set_observer(ForwardObserver* o) { observer_ = o; }

  const LlamaModel& model() const { return model_; }
  const ComputeContext& compute() const { return ctx_; }
  int n_threads() const { return pool_->num_threads(); }
  CpuPath cpu_path() const { return ctx_.kernels->path; }
  // KV cache plus scratch buffers.
  size_t buffer_bytes() const;

 private:
  InferenceSession(const LlamaModel& model, const InferenceOptions& options);
  Status Init();
  void ForwardChunk(const int32_t* tokens, int64_t n, bool last_chunk);
  void ForwardLayer(int64_t layer, int64_t n, int64_t pos0);
  void Attention(int64_t layer, int64_t n, int64_t pos0);
  // Y_i = X . W_i^T for up to three matrices sharing the input, in one parallel-for.
  struct Proj {
    const WeightMatrix* w;
    float* y;
    int64_t ldy;
    Projection which;
  };
  void Project(int64_t layer, const float* x, int64_t n, std::initializer_list<Proj> projs);

  const LlamaModel& model_;
  InferenceOptions options_;
  std::unique_ptr<ThreadPool> pool_;
  ComputeContext ctx_;
  std::unique_ptr<KvCache> cache_;
  ProjectionAdapter* adapter_ = nullptr;
  ForwardObserver* observer_ = nullptr;
  int64_t n_batch_ = 0;
  int64_t last_eval_n_ = 0;  // tokens of the last Eval
  int64_t logit_row_ = 0;    // all_logits: next row of logits_ to fill

  // Scratch, n_batch rows each (see LayerActivations for meanings).
  std::vector<float> x_, x_in_, attn_in_, q_, v_, attn_out_, x_mid_, ffn_in_, gate_, up_, ffn_act_, tmp_;
  std::vector<float> logits_;  // [n_logit_rows x vocab]
  std::vector<float> scores_;  // attention score slots, each kAttnBlock x n_ctx
  // Activations quantized once per input and shared by the matmuls reading it, one per
  // activation format (Q8_0 family, Q8_K family; F32/F16 weights read floats directly).
  QuantizedActivations xq8_0_;
  QuantizedActivations xq8_k_;
};

// ---- Generation ------------------------------------------------------------------------

struct GenerateOptions {
  int64_t max_tokens = 128;         // tokens to generate at most (after the prompt)
  bool stop_at_eos = true;          // stop on the tokenizer's EOS
  std::vector<int32_t> stop_tokens; // more stop tokens
  bool penalize_prompt = true;      // prompt tokens enter the repetition-penalty window
};

enum class StopReason { kMaxTokens, kStopToken, kCallback, kContextFull };
std::string_view ToString(StopReason r);

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated, stop token excluded
  StopReason stop_reason = StopReason::kMaxTokens;
  int32_t stop_token = -1;      // the stop token that ended generation, if any
  int64_t prompt_tokens = 0;
  double prefill_seconds = 0;   // prompt evaluation
  double decode_seconds = 0;    // sampling + evaluating generated tokens
};

// Called with each generated token and its text piece; return false to stop (the token
// is kept). The piece view is valid during the call only.
using TokenCallback = std::function<bool(int32_t token, std::string_view piece)>;

// Evaluates `prompt` (non-empty) after whatever the session already holds, then samples
// and evaluates up to max_tokens tokens, so the session ends holding prompt + generated
// tokens. Stops at a stop token (not evaluated, not passed to the callback), when the
// callback returns false, or when the context is full (kContextFull, not an error; the
// last token is then returned but could not be evaluated). OutOfRange if the prompt itself does not fit;
// InvalidArgument for an empty prompt or bad token ids.
Result<GenerateResult> Generate(InferenceSession& session, Sampler& sampler, std::span<const int32_t> prompt,
                                const GenerateOptions& options, const TokenCallback& on_token = {});

}  // namespace flotilla::model
