#include "flotilla/model/inference.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#include "flotilla/core/check.h"
#include "model/attention.h"

namespace flotilla::model {

std::string_view ToString(Projection p) {
  switch (p) {
    case Projection::kQ: return "q";
    case Projection::kK: return "k";
    case Projection::kV: return "v";
    case Projection::kO: return "o";
    case Projection::kGate: return "gate";
    case Projection::kUp: return "up";
    case Projection::kDown: return "down";
  }
  return "?";
}

std::string_view ToString(StopReason r) {
  switch (r) {
    case StopReason::kMaxTokens: return "max_tokens";
    case StopReason::kStopToken: return "stop_token";
    case StopReason::kCallback: return "callback";
    case StopReason::kContextFull: return "context_full";
  }
  return "?";
}

InferenceSession::InferenceSession(const LlamaModel& model, const InferenceOptions& options)
    : model_(model), options_(options) {}

InferenceSession::~InferenceSession() = default;

Result<std::unique_ptr<InferenceSession>> InferenceSession::Create(const LlamaModel& model,
                                                                   const InferenceOptions& options) {
  std::unique_ptr<InferenceSession> s(new InferenceSession(model, options));
  FLT_RETURN_IF_ERROR(s->Init());
  return s;
}

Status InferenceSession::Init() {
  const ModelConfig& c = model_.config();
  const CpuPath path = options_.cpu_path.value_or(ActiveCpuPath());
  ctx_.kernels = GetKernelTable(path);
  if (ctx_.kernels == nullptr) {
    return FailedPreconditionError("CPU path '" + std::string(ToString(path)) + "' is not available on this CPU/build");
  }

  const int64_t n_ctx = options_.n_ctx == 0 ? c.context_length : options_.n_ctx;
  if (n_ctx < 1 || n_ctx > c.context_length) {
    return InvalidArgumentError("n_ctx " + std::to_string(n_ctx) + " is outside [1, " +
                                std::to_string(c.context_length) + "] (the model's context_length)");
  }
  if (options_.n_batch < 0) return InvalidArgumentError("n_batch must be >= 0");
  n_batch_ = std::min<int64_t>(options_.n_batch == 0 ? 512 : options_.n_batch, n_ctx);
  FLT_ASSIGN_OR_RETURN(cache_, KvCache::Create(c.n_layers, n_ctx, c.kv_dim()));
  const int threads = options_.n_threads == 0 ? ThreadPool::DefaultThreadCount() : options_.n_threads;
  FLT_ASSIGN_OR_RETURN(pool_, ThreadPool::Create(threads));
  ctx_.pool = pool_.get();

  const auto rows = static_cast<size_t>(n_batch_);
  const auto dim = static_cast<size_t>(c.dim);
  const auto ffn = static_cast<size_t>(c.ffn_dim);
  for (std::vector<float>* b : {&x_, &x_in_, &attn_in_, &q_, &attn_out_, &x_mid_, &ffn_in_, &tmp_}) b->resize(rows * dim);
  v_.resize(rows * static_cast<size_t>(c.kv_dim()));
  for (std::vector<float>* b : {&gate_, &up_, &ffn_act_}) b->resize(rows * ffn);
  const size_t logit_rows = options_.all_logits ? static_cast<size_t>(n_ctx) : 1;
  logits_.resize(logit_rows * static_cast<size_t>(c.vocab_size));
  // Attention scratch: a few slots per thread so uneven causal rows still balance.
  scores_.resize(static_cast<size_t>(4 * n_threads() * kAttnBlock) * static_cast<size_t>(cache_->v_stride()));
  // Grow the activation buffers to their largest size now, so Eval never allocates.
  const int64_t max_cols = std::max(c.dim, c.ffn_dim);
  std::vector<float> zeros(static_cast<size_t>(n_batch_ * max_cols), 0.0f);
  for (int64_t cols : {c.dim, c.ffn_dim}) {
    if (cols % kQK8_0 == 0) xq8_0_.Quantize(GgmlType::kQ8_0, zeros.data(), n_batch_, cols, {ctx_.kernels, nullptr});
    if (cols % kQK_K == 0) xq8_k_.Quantize(GgmlType::kQ4_K, zeros.data(), n_batch_, cols, {ctx_.kernels, nullptr});
  }
  return Status::Ok();
}

size_t InferenceSession::buffer_bytes() const {
  size_t floats = 0;
  for (const std::vector<float>* b : {&x_, &x_in_, &attn_in_, &q_, &v_, &attn_out_, &x_mid_, &ffn_in_, &tmp_, &gate_,
                                      &up_, &ffn_act_, &logits_, &scores_}) {
    floats += b->size();
  }
  return cache_->bytes() + floats * sizeof(float);
}


Status InferenceSession::Truncate(int64_t n) {
  if (n < 0 || n > n_past()) {
    return InvalidArgumentError("cannot truncate to " + std::to_string(n) + " positions: the session holds " +
                                std::to_string(n_past()));
  }
  cache_->set_size(n);
  return Status::Ok();
}

std::span<const float> InferenceSession::logits() const {
  const auto vocab = static_cast<size_t>(model_.config().vocab_size);
  const size_t row = options_.all_logits && last_eval_n_ > 0 ? static_cast<size_t>(last_eval_n_ - 1) : 0;
  return {logits_.data() + row * vocab, vocab};
}

std::span<const float> InferenceSession::logits(int64_t i) const {
  FLT_CHECK_MSG(options_.all_logits, "logits(i) needs InferenceOptions::all_logits");
  FLT_CHECK(i >= 0 && i < last_eval_n_);
  const auto vocab = static_cast<size_t>(model_.config().vocab_size);
  return {logits_.data() + static_cast<size_t>(i) * vocab, vocab};
}

Status InferenceSession::Eval(std::span<const int32_t> tokens) {
  if (tokens.empty()) return InvalidArgumentError("Eval needs at least one token");
  const auto n = static_cast<int64_t>(tokens.size());
  if (n > n_ctx() - n_past()) {
    return OutOfRangeError("context full: " + std::to_string(n_past()) + " positions used + " + std::to_string(n) +
                           " new tokens > n_ctx " + std::to_string(n_ctx()));
  }
  const int64_t vocab = model_.config().vocab_size;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab) {
      return InvalidArgumentError("token id " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                                  " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
    }
  }
  last_eval_n_ = n;
  logit_row_ = 0;
  for (int64_t done = 0; done < n;) {
    const int64_t chunk = std::min(n_batch_, n - done);
    ForwardChunk(tokens.data() + done, chunk, done + chunk == n);
    done += chunk;
  }
  return Status::Ok();
}

void InferenceSession::Project(int64_t layer, const float* x, int64_t n, std::initializer_list<Proj> projs) {
  const int64_t cols = projs.begin()->w->cols;
  SharedMatMulOutput outs[3];
  size_t n_outs = 0;
  FLT_CHECK(projs.size() <= 3);
  for (const Proj& p : projs) outs[n_outs++] = {p.w, p.y, p.ldy};
  MatMulShared(x, n, std::span(outs, n_outs), xq8_0_, xq8_k_, ctx_);
  if (adapter_ != nullptr && layer >= 0) {
    for (const Proj& p : projs) adapter_->Apply(layer, p.which, x, n, cols, p.y, p.ldy, p.w->rows, ctx_);
  }
}

void InferenceSession::Attention(int64_t layer, int64_t n, int64_t pos0) {
  const ModelConfig& c = model_.config();
  const int64_t stride = cache_->v_stride();  // score rows and V^T rows: n_ctx padded to 8
  const int64_t slots = static_cast<int64_t>(scores_.size()) / (kAttnBlock * stride);
  CausalAttention({n, c.n_heads, c.n_kv_heads, c.head_dim(), pos0}, q_.data(), cache_->k(layer, 0),
                  cache_->v_t(layer), stride, attn_out_.data(), scores_.data(), slots, ctx_);
}

void InferenceSession::ForwardLayer(int64_t layer, int64_t n, int64_t pos0) {
  const ModelConfig& c = model_.config();
  const KernelTable& k = *ctx_.kernels;
  const LlamaLayerWeights& w = model_.layer(layer);
  const int64_t dim = c.dim;
  const int64_t kv_dim = c.kv_dim();
  const int64_t ffn = c.ffn_dim;
  const float* x_in = x_in_.data();  // ForwardChunk swaps x_ / x_in_ per layer
  float* x_out = x_.data();

  for (int64_t t = 0; t < n; ++t) k.rms_norm(x_in + t * dim, w.attn_norm, attn_in_.data() + t * dim, dim, c.rms_eps);
  float* k_new = cache_->k(layer, pos0);
  Project(layer, attn_in_.data(), n,
          {{&w.wq, q_.data(), dim, Projection::kQ},
           {&w.wk, k_new, kv_dim, Projection::kK},
           {&w.wv, v_.data(), kv_dim, Projection::kV}});
  k.rope(q_.data(), n, c.n_heads, c.head_dim(), pos0, c.rope_theta);
  k.rope(k_new, n, c.n_kv_heads, c.head_dim(), pos0, c.rope_theta);
  float* vt = cache_->v_t(layer);
  const int64_t v_stride = cache_->v_stride();
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t d = 0; d < kv_dim; ++d) vt[d * v_stride + pos0 + t] = v_[static_cast<size_t>(t * kv_dim + d)];
  }
  Attention(layer, n, pos0);
  Project(layer, attn_out_.data(), n, {{&w.wo, tmp_.data(), dim, Projection::kO}});
  k.add(x_in, tmp_.data(), x_mid_.data(), n * dim);

  for (int64_t t = 0; t < n; ++t) k.rms_norm(x_mid_.data() + t * dim, w.ffn_norm, ffn_in_.data() + t * dim, dim, c.rms_eps);
  Project(layer, ffn_in_.data(), n,
          {{&w.gate, gate_.data(), ffn, Projection::kGate}, {&w.up, up_.data(), ffn, Projection::kUp}});
  k.swiglu(gate_.data(), up_.data(), ffn_act_.data(), n * ffn);
  Project(layer, ffn_act_.data(), n, {{&w.down, tmp_.data(), dim, Projection::kDown}});
  k.add(x_mid_.data(), tmp_.data(), x_out, n * dim);

  if (observer_ != nullptr) {
    LayerActivations a{};
    a.layer = layer;
    a.n_tokens = n;
    a.pos0 = pos0;
    a.x_in = x_in;
    a.attn_in = attn_in_.data();
    a.q = q_.data();
    a.v = v_.data();
    a.k_cache = cache_->k(layer, 0);
    a.v_t_cache = cache_->v_t(layer);
    a.v_stride = v_stride;
    a.attn_out = attn_out_.data();
    a.x_mid = x_mid_.data();
    a.ffn_in = ffn_in_.data();
    a.gate = gate_.data();
    a.up = up_.data();
    a.ffn_act = ffn_act_.data();
    a.x_out = x_out;
    observer_->OnLayer(a);
  }
}

void InferenceSession::ForwardChunk(const int32_t* tokens, int64_t n, bool last_chunk) {
  const ModelConfig& c = model_.config();
  const KernelTable& k = *ctx_.kernels;
  const int64_t dim = c.dim;
  const int64_t pos0 = cache_->size();
  // Each layer reads x_in_ and writes x_; swapping the vectors (pointer swap, no copy)
  // makes the output the next layer's input.
  for (int64_t t = 0; t < n; ++t) model_.EmbedToken(tokens[t], x_in_.data() + t * dim);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    ForwardLayer(l, n, pos0);
    std::swap(x_, x_in_);
  }
  cache_->set_size(pos0 + n);
  const float* x = x_in_.data();  // the last layer's output after the final swap

  // Logits: every token with all_logits, else only the Eval's last token.
  int64_t first = n - 1;
  float* out = logits_.data();
  if (options_.all_logits) {
    first = 0;
    out = logits_.data() + static_cast<size_t>(logit_row_) * static_cast<size_t>(c.vocab_size);
    logit_row_ += n;
  } else if (!last_chunk) {
    return;
  }
  const int64_t rows = n - first;
  for (int64_t t = first; t < n; ++t) {
    k.rms_norm(x + t * dim, model_.output_norm(), tmp_.data() + (t - first) * dim, dim, c.rms_eps);
  }
  Project(-1, tmp_.data(), rows, {{&model_.output(), out, c.vocab_size, Projection::kO}});
}

// ---- Generation ------------------------------------------------------------------------

Result<GenerateResult> Generate(InferenceSession& session, Sampler& sampler, std::span<const int32_t> prompt,
                                const GenerateOptions& options, const TokenCallback& on_token) {
  using Clock = std::chrono::steady_clock;
  if (prompt.empty()) return InvalidArgumentError("the prompt must hold at least one token");
  if (options.max_tokens < 0) return InvalidArgumentError("max_tokens must be >= 0");
  const Tokenizer& tok = session.model().tokenizer();
  GenerateResult r;
  r.prompt_tokens = static_cast<int64_t>(prompt.size());
  r.tokens.reserve(static_cast<size_t>(std::min(options.max_tokens, session.n_ctx())));

  const auto t0 = Clock::now();
  FLT_RETURN_IF_ERROR(session.Eval(prompt));
  const auto t1 = Clock::now();
  r.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
  if (options.penalize_prompt) {
    for (int32_t t : prompt) sampler.Accept(t);
  }
  auto is_stop = [&](int32_t t) {
    if (options.stop_at_eos && t == tok.eos_id()) return true;
    return std::find(options.stop_tokens.begin(), options.stop_tokens.end(), t) != options.stop_tokens.end();
  };

  r.stop_reason = StopReason::kMaxTokens;
  for (int64_t i = 0; i < options.max_tokens; ++i) {
    const int32_t t = sampler.Sample(session.logits());
    if (is_stop(t)) {
      r.stop_reason = StopReason::kStopToken;
      r.stop_token = t;
      break;
    }
    sampler.Accept(t);
    r.tokens.push_back(t);
    const bool go_on = !on_token || on_token(t, tok.TokenPiece(t));
    if (session.n_past() >= session.n_ctx()) {  // no room to evaluate it
      r.stop_reason = go_on ? StopReason::kContextFull : StopReason::kCallback;
      break;
    }
    const int32_t one[1] = {t};
    FLT_RETURN_IF_ERROR(session.Eval(one));
    if (!go_on) {
      r.stop_reason = StopReason::kCallback;
      break;
    }
  }
  r.decode_seconds = std::chrono::duration<double>(Clock::now() - t1).count();
  return r;
}

}  // namespace flotilla::model
