// TrainEngine: forward + backward of one llama sequence for LoRA (frozen quantized base)
// and full F32 training. See train.h for the contract and docs/training.md ("Engine")
// for how the backward pass, the memory budget and determinism work.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <string>
#include <utility>

#include "flotilla/core/check.h"
#include "flotilla/model/train.h"
#include "train/train_ops.h"

namespace flotilla::model {
namespace {

using train_ops::AttentionShape;
using train_ops::LoraRef;

// Logit rows are processed in chunks of at most this many floats (8 MiB), so the
// [seq x vocab] matrix never exists whole.
constexpr int64_t kLogitChunkFloats = int64_t{1} << 21;

// The saved activations of one layer's forward (n_max rows each; see LayerActivations
// in inference.h for their meanings). sax[p] = s · A x of the adapter on projection p.
struct LayerSlot {
  float* attn_in = nullptr;
  float* q = nullptr;
  float* k = nullptr;
  float* v = nullptr;
  float* attn_out = nullptr;
  float* x_mid = nullptr;
  float* ffn_in = nullptr;
  float* gate = nullptr;
  float* up = nullptr;
  float* act = nullptr;
  float* sax[kNumProjections] = {};
};

// Gradient accumulators of one layer's tensors (full mode).
struct LayerGrads {
  float* attn_norm = nullptr;
  float* wq = nullptr;
  float* wk = nullptr;
  float* wv = nullptr;
  float* wo = nullptr;
  float* ffn_norm = nullptr;
  float* gate = nullptr;
  float* up = nullptr;
  float* down = nullptr;
};

// One adapted matrix: where it sits in the adapter, and its gradient accumulators.
struct LoraEntry {
  size_t matrix = 0;     // index into adapter.matrices()
  int64_t param_a = -1;  // index into params_ of A (−1 when frozen)
  int64_t param_b = -1;
};

}  // namespace

class TrainEngine::Impl {
 public:
  Impl(const ModelConfig& config, const TrainEngineOptions& options) : c_(config), options_(options) {}

  Status InitCommon();
  Status InitLora(const LlamaModel& base, LoraAdapter& adapter);
  Status InitFull(DenseLlamaWeights& weights);
  Status InitBuffers();

  Result<LossSum> Run(std::span<const int32_t> tokens, std::span<const int32_t> targets, bool backward);

  ModelConfig c_;
  TrainEngineOptions options_;
  std::unique_ptr<ThreadPool> pool_;
  ComputeContext ctx_;

  // The model as the forward sees it (views into the base model or the dense weights).
  std::vector<LlamaLayerWeights> layers_;
  WeightMatrix embd_;
  WeightMatrix output_;
  const float* output_norm_ = nullptr;
  const LlamaModel* base_ = nullptr;  // LoRA mode
  LoraAdapter* adapter_ = nullptr;     // LoRA mode
  bool full_ = false;

  // Trainable parameters and their gradients.
  std::vector<ParamTensor> params_;
  std::vector<std::vector<float>> grad_storage_;
  std::vector<LoraEntry> lora_;
  std::vector<int32_t> lora_index_;  // [layer * kNumProjections + proj] -> lora_ index or −1
  std::vector<LayerGrads> grads_;    // full mode
  float* g_embd_ = nullptr;
  float* g_output_norm_ = nullptr;
  float* g_output_ = nullptr;  // == g_embd_ when tied
  int64_t lowest_trainable_layer_ = 0;  // −1 in full mode (the embedding trains)

  // Buffers, sized at Create for n_max rows.
  int64_t n_max_ = 0;
  int64_t stride_ = 0;      // V^T row length: n_max rounded up to 8
  int64_t fwd_slots_ = 0;   // attention score slots
  int64_t bwd_slots_ = 0;   // attention backward scratch slots
  int64_t logit_rows_ = 0;  // rows per logits chunk
  int64_t max_rank_ = 1;
  int64_t max_out_ = 0;     // widest adapted projection output
  bool recompute_ = false;
  int64_t stored_layers_ = 0;  // the top stored_layers_ layers keep their activations
  std::vector<float> x_in_;     // [n_layers + 1][n_max x dim]: each layer's input, then the final output
  std::vector<float> slots_;    // one per stored layer, plus the work slot when some are recomputed
  std::vector<LayerSlot> slot_views_;
  std::vector<float> vt_, scores_, tmp_, bax_, logits_, xf_, dxf_, dres_, dnorm_, dq_, dk_, dv_, dattn_, dact_, dup_,
      attn_scratch_, lora_g_;
  std::vector<double> row_loss_;
  QuantizedActivations xq8_0_;
  QuantizedActivations xq8_k_;
  uint64_t buffer_bytes_ = 0;
  TrainEngine::LogitsObserver logits_observer_;

 private:
  struct Proj {
    const WeightMatrix* w;
    float* y;
    int64_t ldy;
    Projection which;
  };
  void Project(int64_t layer, const float* x, int64_t n, std::initializer_list<Proj> projs, const LayerSlot* slot);
  void LayerForward(int64_t l, int64_t n, const float* x_in, float* x_out, const LayerSlot& s);
  void LayerBackward(int64_t l, int64_t n, const float* x_in, const LayerSlot& s);
  // Logits, loss and (with backward) dres = ∂loss/∂(last layer output), chunk by chunk.
  LossSum Head(int64_t n, const int32_t* targets, bool backward);
  bool Adapted(int64_t layer, Projection p) const {
    return lora_index_[static_cast<size_t>(layer * kNumProjections + ProjectionIndex(p))] >= 0;
  }
  LoraRef Lora(int64_t layer, Projection p) const;
  float* XIn(int64_t l) { return x_in_.data() + l * n_max_ * c_.dim; }
  // The slot layer l's forward writes: its own if stored (and the pass saves), else the
  // work slot (the last one).
  const LayerSlot& SlotOf(int64_t l, bool saving) const {
    const int64_t first_stored = c_.n_layers - stored_layers_;
    if (saving && l >= first_stored) return slot_views_[static_cast<size_t>(l - first_stored)];
    return slot_views_.back();
  }
  // Floats of one layer's saved activations; the widest rank adapting projection p.
  uint64_t SlotFloats() const;
  int64_t SaxRank(int proj) const;
};

// ---- Setup -------------------------------------------------------------------------------

Status TrainEngine::Impl::InitCommon() {
  FLT_RETURN_IF_ERROR(c_.Validate());
  const CpuPath path = options_.cpu_path.value_or(ActiveCpuPath());
  ctx_.kernels = GetKernelTable(path);
  if (ctx_.kernels == nullptr) {
    return FailedPreconditionError("CPU path '" + std::string(ToString(path)) + "' is not available on this CPU/build");
  }
  if (options_.max_seq_len < 1 || options_.max_seq_len > c_.context_length) {
    return InvalidArgumentError("max_seq_len " + std::to_string(options_.max_seq_len) + " is outside [1, " +
                                std::to_string(c_.context_length) + "] (the model's context_length)");
  }
  const int threads = options_.n_threads == 0 ? ThreadPool::DefaultThreadCount() : options_.n_threads;
  FLT_ASSIGN_OR_RETURN(pool_, ThreadPool::Create(threads));
  ctx_.pool = pool_.get();
  lora_index_.assign(static_cast<size_t>(c_.n_layers * kNumProjections), -1);
  return Status::Ok();
}

Status TrainEngine::Impl::InitLora(const LlamaModel& base, LoraAdapter& adapter) {
  base_ = &base;
  adapter_ = &adapter;
  for (int64_t l = 0; l < c_.n_layers; ++l) layers_.push_back(base.layer(l));
  embd_ = base.token_embedding();
  output_ = base.output();
  output_norm_ = base.output_norm();
  const float scale = adapter.scale();
  if (!std::isfinite(scale)) return InvalidArgumentError("LoRA scale alpha/rank is not finite");
  const bool frozen_a = adapter.config().frozen_a;
  std::vector<LoraMatrix>& ms = adapter.matrices();
  if (ms.empty()) return InvalidArgumentError("the LoRA adapter has no matrices");
  lowest_trainable_layer_ = c_.n_layers;
  for (size_t i = 0; i < ms.size(); ++i) {
    LoraMatrix& m = ms[i];
    const std::string name = m.layer >= 0 && m.layer < c_.n_layers ? ProjectionTensorName(m.layer, m.proj) : "?";
    if (m.layer < 0 || m.layer >= c_.n_layers) {
      return InvalidArgumentError("LoRA matrix " + std::to_string(i) + " is for layer " + std::to_string(m.layer) +
                                  " but the model has " + std::to_string(c_.n_layers));
    }
    if (m.in_dim != ProjectionInDim(c_, m.proj) || m.out_dim != ProjectionOutDim(c_, m.proj) || m.rank < 1 ||
        m.a.size() != static_cast<size_t>(m.rank * m.in_dim) || m.b.size() != static_cast<size_t>(m.out_dim * m.rank)) {
      return InvalidArgumentError("LoRA matrix for " + name + " has shapes that do not match the base model");
    }
    int32_t& slot = lora_index_[static_cast<size_t>(m.layer * kNumProjections + ProjectionIndex(m.proj))];
    if (slot >= 0) return InvalidArgumentError("LoRA adapter has two matrices for " + name);
    slot = static_cast<int32_t>(lora_.size());
    LoraEntry e;
    e.matrix = i;
    if (!frozen_a) {
      e.param_a = static_cast<int64_t>(params_.size());
      grad_storage_.emplace_back(m.a.size(), 0.0f);
      params_.push_back({name + ".lora_a", m.a.data(), grad_storage_.back().data(), static_cast<int64_t>(m.a.size()), true});
    }
    e.param_b = static_cast<int64_t>(params_.size());
    grad_storage_.emplace_back(m.b.size(), 0.0f);
    params_.push_back({name + ".lora_b", m.b.data(), grad_storage_.back().data(), static_cast<int64_t>(m.b.size()), true});
    lora_.push_back(e);
    lowest_trainable_layer_ = std::min(lowest_trainable_layer_, m.layer);
    max_rank_ = std::max(max_rank_, m.rank);
    max_out_ = std::max(max_out_, m.out_dim);
  }
  return Status::Ok();
}

Status TrainEngine::Impl::InitFull(DenseLlamaWeights& weights) {
  full_ = true;
  lowest_trainable_layer_ = -1;
  // One gradient accumulator per tensor, in LlamaTensorSpecs order; views as F32 matrices.
  auto tensor = [&](const TensorSpec& spec) -> Result<std::pair<float*, float*>> {
    std::span<float> v = weights.Tensor(spec.name);
    int64_t size = 1;
    for (int64_t d : spec.ne) size *= d;
    if (v.data() == nullptr || static_cast<int64_t>(v.size()) != size) {
      return InvalidArgumentError("dense weights lack tensor '" + spec.name + "' of " + std::to_string(size) +
                                  " values");
    }
    grad_storage_.emplace_back(v.size(), 0.0f);
    params_.push_back({spec.name, v.data(), grad_storage_.back().data(), size, !spec.is_norm});
    return std::make_pair(v.data(), grad_storage_.back().data());
  };
  auto matrix = [](const TensorSpec& spec, const float* data) {
    return WeightMatrix{GgmlType::kF32, data, spec.ne[1], spec.ne[0]};
  };
  layers_.resize(static_cast<size_t>(c_.n_layers));
  grads_.resize(static_cast<size_t>(c_.n_layers));
  for (const TensorSpec& spec : LlamaTensorSpecs(c_)) {
    FLT_ASSIGN_OR_RETURN(auto vg, tensor(spec));
    auto [value, grad] = vg;
    if (spec.name == kTokenEmbdName) {
      embd_ = matrix(spec, value);
      g_embd_ = grad;
      continue;
    }
    if (spec.name == kOutputNormName) {
      output_norm_ = value;
      g_output_norm_ = grad;
      continue;
    }
    if (spec.name == kOutputName) {
      output_ = matrix(spec, value);
      g_output_ = grad;
      continue;
    }
    bool found = false;
    for (int64_t l = 0; l < c_.n_layers && !found; ++l) {
      LlamaLayerWeights& w = layers_[static_cast<size_t>(l)];
      LayerGrads& g = grads_[static_cast<size_t>(l)];
      struct Slot {
        LlamaTensor which;
        WeightMatrix* m;
        const float** vec;
        float** grad;
      };
      const Slot table[] = {{LlamaTensor::kAttnNorm, nullptr, &w.attn_norm, &g.attn_norm},
                            {LlamaTensor::kAttnQ, &w.wq, nullptr, &g.wq},
                            {LlamaTensor::kAttnK, &w.wk, nullptr, &g.wk},
                            {LlamaTensor::kAttnV, &w.wv, nullptr, &g.wv},
                            {LlamaTensor::kAttnOutput, &w.wo, nullptr, &g.wo},
                            {LlamaTensor::kFfnNorm, nullptr, &w.ffn_norm, &g.ffn_norm},
                            {LlamaTensor::kFfnGate, &w.gate, nullptr, &g.gate},
                            {LlamaTensor::kFfnUp, &w.up, nullptr, &g.up},
                            {LlamaTensor::kFfnDown, &w.down, nullptr, &g.down}};
      for (const Slot& s : table) {
        if (LayerTensorName(l, s.which) != spec.name) continue;
        if (s.m != nullptr) *s.m = matrix(spec, value);
        if (s.vec != nullptr) *s.vec = value;
        *s.grad = grad;
        found = true;
        break;
      }
    }
    FLT_CHECK_MSG(found, "LlamaTensorSpecs names a tensor the engine does not know");
  }
  if (c_.tied_output) {
    output_ = embd_;
    g_output_ = g_embd_;
  }
  return Status::Ok();
}

int64_t TrainEngine::Impl::SaxRank(int proj) const {
  int64_t rank = 0;
  for (int64_t l = 0; l < c_.n_layers; ++l) {
    const int32_t i = lora_index_[static_cast<size_t>(l * kNumProjections + proj)];
    if (i >= 0) rank = std::max(rank, adapter_->matrices()[lora_[static_cast<size_t>(i)].matrix].rank);
  }
  return rank;
}

uint64_t TrainEngine::Impl::SlotFloats() const {
  // attn_in, q, k, v, attn_out, x_mid, ffn_in, gate, up, act, then the adapters' s·A x.
  int64_t per_row = 3 * c_.dim + 2 * c_.dim + 2 * c_.kv_dim() + 3 * c_.ffn_dim;
  for (int p = 0; p < kNumProjections; ++p) per_row += SaxRank(p);
  return static_cast<uint64_t>(per_row * n_max_);
}

Status TrainEngine::Impl::InitBuffers() {
  n_max_ = options_.max_seq_len;
  stride_ = train_ops::RoundUp8(n_max_);
  const int64_t dim = c_.dim;
  const int64_t q_dim = c_.dim;
  const int64_t kv = c_.kv_dim();
  const int64_t ffn = c_.ffn_dim;
  const int64_t vocab = c_.vocab_size;
  const int threads = pool_->num_threads();
  fwd_slots_ = 4 * static_cast<int64_t>(threads);
  bwd_slots_ = std::min<int64_t>(threads, c_.n_kv_heads);
  logit_rows_ = std::clamp<int64_t>(kLogitChunkFloats / vocab / 8 * 8, 8, n_max_);
  logit_rows_ = std::min(logit_rows_, n_max_);
  const auto n = static_cast<uint64_t>(n_max_);
  const auto lr = static_cast<uint64_t>(logit_rows_);

  // Fixed scratch, in floats (doubles and quantized rows converted to float units).
  struct Buf {
    std::vector<float>* v;
    uint64_t floats;
  };
  const Buf fixed[] = {
      {&vt_, static_cast<uint64_t>(kv) * static_cast<uint64_t>(stride_)},
      {&scores_, static_cast<uint64_t>(fwd_slots_ * train_ops::kAttnBlock * stride_)},
      {&tmp_, n * static_cast<uint64_t>(dim)},
      {&bax_, n * static_cast<uint64_t>(std::max<int64_t>(max_out_, 1))},
      {&logits_, lr * static_cast<uint64_t>(vocab)},
      {&xf_, lr * static_cast<uint64_t>(dim)},
      {&dxf_, lr * static_cast<uint64_t>(dim)},
      {&dres_, n * static_cast<uint64_t>(dim)},
      {&dnorm_, n * static_cast<uint64_t>(dim)},
      {&dq_, n * static_cast<uint64_t>(q_dim)},
      {&dk_, n * static_cast<uint64_t>(kv)},
      {&dv_, n * static_cast<uint64_t>(kv)},
      {&dattn_, n * static_cast<uint64_t>(q_dim)},
      {&dact_, n * static_cast<uint64_t>(ffn)},
      {&dup_, n * static_cast<uint64_t>(ffn)},
      {&attn_scratch_, static_cast<uint64_t>(bwd_slots_) * train_ops::AttentionBackwardScratchFloats(n_max_)},
      {&lora_g_, n * static_cast<uint64_t>(max_rank_)},
  };
  uint64_t fixed_floats = lr * 2;  // row_loss_ (doubles)
  for (const Buf& b : fixed) fixed_floats += b.floats;
  // Quantized activation rows (Q8_0: 34 bytes per 32 values, Q8_K: 292 per 256), ~1/3.6 float.
  const uint64_t max_cols = static_cast<uint64_t>(std::max(dim, ffn));
  const uint64_t quant_bytes = n * (max_cols / kQK8_0 * sizeof(BlockQ8_0) + max_cols / kQK_K * sizeof(BlockQ8_K));
  const uint64_t x_in_floats = static_cast<uint64_t>(c_.n_layers + 1) * n * static_cast<uint64_t>(dim);
  const uint64_t slot = SlotFloats();
  const uint64_t base = (fixed_floats + x_in_floats) * sizeof(float) + quant_bytes;
  const uint64_t slot_bytes = slot * sizeof(float);
  const uint64_t store_all = base + static_cast<uint64_t>(c_.n_layers) * slot_bytes;
  const uint64_t recompute = base + slot_bytes;
  const uint64_t budget = options_.memory_budget_bytes;
  if (budget == 0 || store_all <= budget) {
    stored_layers_ = c_.n_layers;
  } else if (recompute <= budget) {
    // As many of the top layers as fit keep their activations (they are the first the
    // backward needs); the others share one work slot and are recomputed.
    stored_layers_ = std::min<int64_t>(c_.n_layers - 1, static_cast<int64_t>((budget - base) / slot_bytes) - 1);
  } else {
    return ResourceExhaustedError("training buffers need at least " + std::to_string(recompute) +
                                  " bytes with per-layer recomputation (" + std::to_string(store_all) +
                                  " storing every activation); the memory budget is " + std::to_string(budget));
  }
  recompute_ = stored_layers_ < c_.n_layers;
  const int64_t n_slots = stored_layers_ + (recompute_ ? 1 : 0);
  buffer_bytes_ = base + static_cast<uint64_t>(n_slots) * slot_bytes;

  for (const Buf& b : fixed) b.v->assign(b.floats, 0.0f);
  row_loss_.assign(lr, 0.0);
  x_in_.assign(x_in_floats, 0.0f);
  slots_.assign(static_cast<size_t>(n_slots) * slot, 0.0f);
  for (int64_t s = 0; s < n_slots; ++s) {
    float* p = slots_.data() + static_cast<size_t>(s) * slot;
    auto take = [&](int64_t cols) {
      float* r = p;
      p += cols * n_max_;
      return r;
    };
    LayerSlot v;
    v.attn_in = take(dim);
    v.q = take(q_dim);
    v.k = take(kv);
    v.v = take(kv);
    v.attn_out = take(q_dim);
    v.x_mid = take(dim);
    v.ffn_in = take(dim);
    v.gate = take(ffn);
    v.up = take(ffn);
    v.act = take(ffn);
    // Every layer gets the same projections' sax areas (sized for the widest layer).
    for (int proj = 0; proj < kNumProjections; ++proj) {
      if (const int64_t rank = SaxRank(proj); rank > 0) v.sax[proj] = take(rank);
    }
    FLT_CHECK(p <= slots_.data() + static_cast<size_t>(s + 1) * slot);
    slot_views_.push_back(v);
  }
  // Grow the quantized activation buffers to their largest size now (no allocation later).
  std::vector<float> zeros(static_cast<size_t>(n_max_) * max_cols, 0.0f);
  for (int64_t cols : {dim, ffn}) {
    if (cols % kQK8_0 == 0) xq8_0_.Quantize(GgmlType::kQ8_0, zeros.data(), n_max_, cols, {ctx_.kernels, nullptr});
    if (cols % kQK_K == 0) xq8_k_.Quantize(GgmlType::kQ4_K, zeros.data(), n_max_, cols, {ctx_.kernels, nullptr});
  }
  return Status::Ok();
}

// ---- Forward -----------------------------------------------------------------------------

LoraRef TrainEngine::Impl::Lora(int64_t layer, Projection p) const {
  const int32_t i = lora_index_[static_cast<size_t>(layer * kNumProjections + ProjectionIndex(p))];
  const LoraEntry& e = lora_[static_cast<size_t>(i)];
  LoraMatrix& m = adapter_->matrices()[e.matrix];
  return LoraRef{m.a.data(),
                 m.b.data(),
                 m.in_dim,
                 m.out_dim,
                 m.rank,
                 adapter_->scale(),
                 e.param_a >= 0 ? params_[static_cast<size_t>(e.param_a)].grad : nullptr,
                 params_[static_cast<size_t>(e.param_b)].grad};
}

// As InferenceSession::Project: the input quantized once per activation format, every
// matrix's rows in one parallel-for, then the adapters (saving s·A x for the backward).
void TrainEngine::Impl::Project(int64_t layer, const float* x, int64_t n, std::initializer_list<Proj> projs,
                                const LayerSlot* slot) {
  SharedMatMulOutput outs[3];
  size_t n_outs = 0;
  FLT_CHECK(projs.size() <= 3);
  for (const Proj& p : projs) outs[n_outs++] = {p.w, p.y, p.ldy};
  MatMulShared(x, n, std::span(outs, n_outs), xq8_0_, xq8_k_, ctx_);
  if (slot == nullptr || adapter_ == nullptr) return;
  for (const Proj& p : projs) {
    if (!Adapted(layer, p.which)) continue;
    train_ops::LoraForward(Lora(layer, p.which), x, n, p.y, p.ldy, slot->sax[ProjectionIndex(p.which)], bax_.data(),
                           ctx_);
  }
}

void TrainEngine::Impl::LayerForward(int64_t l, int64_t n, const float* x_in, float* x_out, const LayerSlot& s) {
  const KernelTable& k = *ctx_.kernels;
  const LlamaLayerWeights& w = layers_[static_cast<size_t>(l)];
  const int64_t dim = c_.dim;
  const int64_t kv = c_.kv_dim();
  const int64_t ffn = c_.ffn_dim;
  for (int64_t t = 0; t < n; ++t) k.rms_norm(x_in + t * dim, w.attn_norm, s.attn_in + t * dim, dim, c_.rms_eps);
  Project(l, s.attn_in, n,
          {{&w.wq, s.q, dim, Projection::kQ}, {&w.wk, s.k, kv, Projection::kK}, {&w.wv, s.v, kv, Projection::kV}},
          &s);
  k.rope(s.q, n, c_.n_heads, c_.head_dim(), 0, c_.rope_theta);
  k.rope(s.k, n, c_.n_kv_heads, c_.head_dim(), 0, c_.rope_theta);
  // V transposed for the P·V product; the padding columns read with zero weights must
  // hold finite values (zeros).
  const int64_t padded = train_ops::RoundUp8(n);
  for (int64_t d = 0; d < kv; ++d) {
    float* row = vt_.data() + d * stride_;
    for (int64_t t = 0; t < n; ++t) row[t] = s.v[t * kv + d];
    std::fill(row + n, row + padded, 0.0f);
  }
  CausalAttention({n, c_.n_heads, c_.n_kv_heads, c_.head_dim()}, s.q, s.k, vt_.data(), stride_,
                              s.attn_out, scores_.data(), fwd_slots_, ctx_);
  Project(l, s.attn_out, n, {{&w.wo, tmp_.data(), dim, Projection::kO}}, &s);
  k.add(x_in, tmp_.data(), s.x_mid, n * dim);
  for (int64_t t = 0; t < n; ++t) k.rms_norm(s.x_mid + t * dim, w.ffn_norm, s.ffn_in + t * dim, dim, c_.rms_eps);
  Project(l, s.ffn_in, n, {{&w.gate, s.gate, ffn, Projection::kGate}, {&w.up, s.up, ffn, Projection::kUp}}, &s);
  k.swiglu(s.gate, s.up, s.act, n * ffn);
  Project(l, s.act, n, {{&w.down, tmp_.data(), dim, Projection::kDown}}, &s);
  k.add(s.x_mid, tmp_.data(), x_out, n * dim);
}

// ---- Loss and backward -------------------------------------------------------------------

LossSum TrainEngine::Impl::Head(int64_t n, const int32_t* targets, bool backward) {
  const KernelTable& k = *ctx_.kernels;
  const int64_t dim = c_.dim;
  const int64_t vocab = c_.vocab_size;
  const float* x = XIn(c_.n_layers);
  LossSum out;
  for (int64_t c0 = 0; c0 < n; c0 += logit_rows_) {
    const int64_t rows = std::min(logit_rows_, n - c0);
    bool any = false;
    for (int64_t t = 0; t < rows; ++t) any = any || targets[c0 + t] >= 0;
    if (!any) continue;  // no loss, no gradient: skip the vocabulary projection
    for (int64_t t = 0; t < rows; ++t) k.rms_norm(x + (c0 + t) * dim, output_norm_, xf_.data() + t * dim, dim, c_.rms_eps);
    Project(-1, xf_.data(), rows, {{&output_, logits_.data(), vocab, Projection::kO}}, nullptr);
    if (logits_observer_) logits_observer_(c0, rows, logits_.data());
    out.loss_sum += train_ops::CrossEntropyRows(k, logits_.data(), rows, vocab, targets + c0, backward, &out.n_tokens,
                                                row_loss_.data(), ctx_.pool);
    if (!backward) continue;
    MatMulTransposed(output_, logits_.data(), rows, dxf_.data(), ctx_);
    if (full_) train_ops::WeightGradAccumulate(logits_.data(), vocab, vocab, xf_.data(), dim, dim, rows, g_output_, ctx_);
    train_ops::RmsNormBackward(x + c0 * dim, output_norm_, dxf_.data(), rows, dim, c_.rms_eps, dres_.data() + c0 * dim,
                               g_output_norm_, ctx_.pool);
  }
  return out;
}

void TrainEngine::Impl::LayerBackward(int64_t l, int64_t n, const float* x_in, const LayerSlot& s) {
  const KernelTable& k = *ctx_.kernels;
  const LlamaLayerWeights& w = layers_[static_cast<size_t>(l)];
  LayerGrads* g = full_ ? &grads_[static_cast<size_t>(l)] : nullptr;
  const int64_t dim = c_.dim;
  const int64_t kv = c_.kv_dim();
  const int64_t ffn = c_.ffn_dim;
  const ComputeContext& ctx = ctx_;
  // The adapters' backward for projection p (input x, output gradient dy); dx gets the
  // adapter's share of the input gradient when not null.
  auto lora = [&](Projection p, const float* x, const float* dy, int64_t ld_dy, float* dx, int64_t ld_dx) {
    if (adapter_ == nullptr || !Adapted(l, p)) return;
    train_ops::LoraBackward(Lora(l, p), x, s.sax[ProjectionIndex(p)], dy, ld_dy, n, dx, ld_dx, lora_g_.data(), ctx);
  };
  float* dres = dres_.data();  // ∂L/∂x_out on entry, ∂L/∂x_in on exit

  // FFN: x_out = x_mid + Wdown · act, act = silu(gate) ⊙ up, gate/up = W · ffn_in.
  MatMulTransposed(w.down, dres, n, dact_.data(), ctx);
  lora(Projection::kDown, s.act, dres, dim, dact_.data(), ffn);
  if (g != nullptr) train_ops::WeightGradAccumulate(dres, dim, dim, s.act, ffn, ffn, n, g->down, ctx);
  float* dgate = dact_.data();  // SwiGluBackward writes d gate over d act
  ParallelFor(ctx.pool, n, 1, [&](int64_t t0, int64_t t1) {
    const int64_t o = t0 * ffn;
    train_ops::SwiGluBackward(s.gate + o, s.up + o, dact_.data() + o, dgate + o, dup_.data() + o, (t1 - t0) * ffn);
  });
  MatMulTransposed(w.gate, dgate, n, dnorm_.data(), ctx);
  MatMulTransposedAccumulate(w.up, dup_.data(), n, dnorm_.data(), ctx);
  lora(Projection::kGate, s.ffn_in, dgate, ffn, dnorm_.data(), dim);
  lora(Projection::kUp, s.ffn_in, dup_.data(), ffn, dnorm_.data(), dim);
  if (g != nullptr) {
    train_ops::WeightGradAccumulate(dgate, ffn, ffn, s.ffn_in, dim, dim, n, g->gate, ctx);
    train_ops::WeightGradAccumulate(dup_.data(), ffn, ffn, s.ffn_in, dim, dim, n, g->up, ctx);
  }
  train_ops::RmsNormBackward(s.x_mid, w.ffn_norm, dnorm_.data(), n, dim, c_.rms_eps, dres,
                             g != nullptr ? g->ffn_norm : nullptr, ctx.pool);
  // dres = ∂L/∂x_mid now. Below the lowest trainable layer's attention nothing needs it.
  const bool need_dx_in = full_ || l > lowest_trainable_layer_;
  const bool attn_adapted = adapter_ != nullptr && (Adapted(l, Projection::kQ) || Adapted(l, Projection::kK) ||
                                                    Adapted(l, Projection::kV) || Adapted(l, Projection::kO));
  if (!need_dx_in && !attn_adapted) return;

  // Attention: x_mid = x_in + Wo · attn(RoPE(Wq·a), RoPE(Wk·a), Wv·a), a = RMSNorm(x_in).
  MatMulTransposed(w.wo, dres, n, dattn_.data(), ctx);
  lora(Projection::kO, s.attn_out, dres, dim, dattn_.data(), dim);
  if (g != nullptr) train_ops::WeightGradAccumulate(dres, dim, dim, s.attn_out, dim, dim, n, g->wo, ctx);
  train_ops::AttentionBackward({n, c_.n_heads, c_.n_kv_heads, c_.head_dim()}, s.q, s.k, s.v, dattn_.data(), dq_.data(),
                               dk_.data(), dv_.data(), attn_scratch_.data(), bwd_slots_, ctx);
  train_ops::RopeBackward(k, dq_.data(), n, c_.n_heads, c_.head_dim(), c_.rope_theta);
  train_ops::RopeBackward(k, dk_.data(), n, c_.n_kv_heads, c_.head_dim(), c_.rope_theta);
  float* dnorm = need_dx_in ? dnorm_.data() : nullptr;
  if (need_dx_in) {
    MatMulTransposed(w.wq, dq_.data(), n, dnorm, ctx);
    MatMulTransposedAccumulate(w.wk, dk_.data(), n, dnorm, ctx);
    MatMulTransposedAccumulate(w.wv, dv_.data(), n, dnorm, ctx);
  }
  lora(Projection::kQ, s.attn_in, dq_.data(), dim, dnorm, dim);
  lora(Projection::kK, s.attn_in, dk_.data(), kv, dnorm, dim);
  lora(Projection::kV, s.attn_in, dv_.data(), kv, dnorm, dim);
  if (g != nullptr) {
    train_ops::WeightGradAccumulate(dq_.data(), dim, dim, s.attn_in, dim, dim, n, g->wq, ctx);
    train_ops::WeightGradAccumulate(dk_.data(), kv, kv, s.attn_in, dim, dim, n, g->wk, ctx);
    train_ops::WeightGradAccumulate(dv_.data(), kv, kv, s.attn_in, dim, dim, n, g->wv, ctx);
  }
  if (need_dx_in) {
    train_ops::RmsNormBackward(x_in, w.attn_norm, dnorm, n, dim, c_.rms_eps, dres,
                               g != nullptr ? g->attn_norm : nullptr, ctx.pool);
  }
}

Result<LossSum> TrainEngine::Impl::Run(std::span<const int32_t> tokens, std::span<const int32_t> targets,
                                       bool backward) {
  if (tokens.size() != targets.size()) {
    return InvalidArgumentError("tokens (" + std::to_string(tokens.size()) + ") and targets (" +
                                std::to_string(targets.size()) + ") differ in length");
  }
  const auto n = static_cast<int64_t>(tokens.size());
  if (n < 1 || n > n_max_) {
    return InvalidArgumentError("sequence length " + std::to_string(n) + " is outside [1, " + std::to_string(n_max_) +
                                "] (max_seq_len)");
  }
  const int64_t vocab = c_.vocab_size;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t t = tokens[static_cast<size_t>(i)];
    const int32_t y = targets[static_cast<size_t>(i)];
    if (t < 0 || t >= vocab) {
      return InvalidArgumentError("token id " + std::to_string(t) + " at index " + std::to_string(i) +
                                  " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
    }
    if (y < -1 || y >= vocab) {
      return InvalidArgumentError("target id " + std::to_string(y) + " at index " + std::to_string(i) +
                                  " is outside [-1, " + std::to_string(vocab) + ")");
    }
  }
  // The optimizer may have replaced the adapter's vectors' storage: re-point the params.
  if (adapter_ != nullptr) {
    for (const LoraEntry& e : lora_) {
      LoraMatrix& m = adapter_->matrices()[e.matrix];
      if (e.param_a >= 0) params_[static_cast<size_t>(e.param_a)].value = m.a.data();
      params_[static_cast<size_t>(e.param_b)].value = m.b.data();
    }
  }

  const int64_t dim = c_.dim;
  const int64_t layers = c_.n_layers;
  for (int64_t t = 0; t < n; ++t) {
    float* row = XIn(0) + t * dim;
    if (base_ != nullptr) {
      base_->EmbedToken(tokens[static_cast<size_t>(t)], row);
    } else {
      const float* e = static_cast<const float*>(embd_.data) + static_cast<int64_t>(tokens[static_cast<size_t>(t)]) * dim;
      std::memcpy(row, e, static_cast<size_t>(dim) * sizeof(float));
    }
  }
  // Stored layers fill their own slot, the others (and a forward without backward) the
  // work slot; every layer's input is kept in x_in_.
  for (int64_t l = 0; l < layers; ++l) LayerForward(l, n, XIn(l), XIn(l + 1), SlotOf(l, backward));
  if (backward) std::fill(dres_.begin(), dres_.begin() + n * dim, 0.0f);
  const LossSum loss = Head(n, targets.data(), backward);
  if (!backward || loss.n_tokens == 0) return loss;

  for (int64_t l = layers - 1; l >= std::max<int64_t>(lowest_trainable_layer_, 0); --l) {
    const LayerSlot& s = SlotOf(l, true);
    // Checkpointing: recompute this layer's activations from its saved input. The same
    // kernels on the same input give the same bits as the first forward. Its output
    // (already known) goes to dnorm_, which is free until the backward below uses it.
    if (l < layers - stored_layers_) LayerForward(l, n, XIn(l), dnorm_.data(), s);
    LayerBackward(l, n, XIn(l), s);
  }
  if (full_) {
    // Scatter-add into the embedding rows, in token order.
    for (int64_t t = 0; t < n; ++t) {
      float* g = g_embd_ + static_cast<int64_t>(tokens[static_cast<size_t>(t)]) * dim;
      const float* d = dres_.data() + t * dim;
      for (int64_t i = 0; i < dim; ++i) g[i] += d[i];
    }
  }
  return loss;
}

// ---- TrainEngine ---------------------------------------------------------------------------

TrainEngine::TrainEngine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TrainEngine::~TrainEngine() = default;

Result<std::unique_ptr<TrainEngine>> TrainEngine::CreateLora(const LlamaModel& base, LoraAdapter& adapter,
                                                             const TrainEngineOptions& options) {
  auto impl = std::make_unique<Impl>(base.config(), options);
  FLT_RETURN_IF_ERROR(impl->InitCommon());
  FLT_RETURN_IF_ERROR(impl->InitLora(base, adapter));
  FLT_RETURN_IF_ERROR(impl->InitBuffers());
  return std::unique_ptr<TrainEngine>(new TrainEngine(std::move(impl)));
}

Result<std::unique_ptr<TrainEngine>> TrainEngine::CreateFull(DenseLlamaWeights& weights,
                                                             const TrainEngineOptions& options) {
  auto impl = std::make_unique<Impl>(weights.config(), options);
  FLT_RETURN_IF_ERROR(impl->InitCommon());
  FLT_RETURN_IF_ERROR(impl->InitFull(weights));
  FLT_RETURN_IF_ERROR(impl->InitBuffers());
  return std::unique_ptr<TrainEngine>(new TrainEngine(std::move(impl)));
}

Result<LossSum> TrainEngine::ForwardBackward(std::span<const int32_t> tokens, std::span<const int32_t> targets) {
  return impl_->Run(tokens, targets, /*backward=*/true);
}

Result<LossSum> TrainEngine::Forward(std::span<const int32_t> tokens, std::span<const int32_t> targets) {
  return impl_->Run(tokens, targets, /*backward=*/false);
}

std::span<const ParamTensor> TrainEngine::params() const { return impl_->params_; }

void TrainEngine::ZeroGrad() {
  for (std::vector<float>& g : impl_->grad_storage_) std::fill(g.begin(), g.end(), 0.0f);
}

const ModelConfig& TrainEngine::config() const { return impl_->c_; }
int TrainEngine::n_threads() const { return impl_->pool_->num_threads(); }
int64_t TrainEngine::max_seq_len() const { return impl_->n_max_; }
uint64_t TrainEngine::buffer_bytes() const { return impl_->buffer_bytes_; }
bool TrainEngine::recomputes() const { return impl_->recompute_; }
void TrainEngine::set_logits_observer(LogitsObserver observer) { impl_->logits_observer_ = std::move(observer); }

}  // namespace flotilla::model
