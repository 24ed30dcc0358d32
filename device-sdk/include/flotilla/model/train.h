// Training forward/backward for the llama architecture.
//
// Two modes over one implementation:
//  - LoRA (QLoRA-style): the base model stays frozen in whatever type it is stored in
//    (Q4_0, Q8_0, F32, …); activation gradients flow through every base matrix with
//    MatMulTransposed (dX = dY·W on the quantized rows, no dequantized copy of W, no base
//    weight gradient). Only adapter parameters get gradients (B only in frozen-A mode).
//  - Full F32 (pretraining small base models): every tensor of a DenseLlamaWeights is a
//    parameter with a gradient.
//
// Loss: mean-free sum of token cross-entropies −log softmax(logits)[target] over the
// positions whose target is >= 0 (target −1 = ignored, e.g. padding). Callers divide by
// the token count (the Trainer does).
//
// Memory: buffers are sized at Create for max_seq_len. With a memory budget the engine
// keeps only each layer's input and recomputes the layer's forward during backward
// (activation checkpointing) when storing everything would exceed the budget — for as
// few layers as the budget allows (the top layers keep their activations); logits are
// processed in row chunks so the [seq x vocab] matrix is never whole.
//
// Determinism: for a fixed CPU path the losses and gradients are bit-identical for any
// thread count and across runs (the kernels are; reductions use a fixed order).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "flotilla/core/status.h"
#include "flotilla/model/cpu_features.h"
#include "flotilla/model/llama_model.h"
#include "flotilla/model/lora.h"
#include "flotilla/model/thread_pool.h"
#include "flotilla/model/tokenizer.h"

namespace flotilla::model {

// All weights of a llama model as owned, mutable F32 arrays (pretraining). Tensor order
// and names as LlamaTensorSpecs; matrices row-major [rows x cols] as in kernels.h.
class DenseLlamaWeights {
 public:
  // Seeded initialisation for training from scratch: matrices N(0, 0.02²)-like scaled
  // uniform (deterministic from `seed`, SplitMix64 test-quality — weights, not secrets),
  // residual output projections (wo, down) scaled by 1/sqrt(2·n_layers), norms 1.
  static Result<std::unique_ptr<DenseLlamaWeights>> Init(const ModelConfig& config, uint64_t seed);
  // Dequantized copy of a loaded model's weights.
  static Result<std::unique_ptr<DenseLlamaWeights>> FromModel(const LlamaModel& model);

  const ModelConfig& config() const { return config_; }
  // The tensor called `name`; nullptr if absent.
  std::span<float> Tensor(std::string_view name);
  std::span<const float> Tensor(std::string_view name) const;
  const std::vector<std::string>& names() const { return names_; }
  // Writes an F32 llama GGUF (config keys, `vocab`, general.name) that LlamaModel::Open
  // loads; atomic.
  Status Save(const std::filesystem::path& path, const Vocabulary& vocab, const std::string& name) const;

 private:
  DenseLlamaWeights() = default;
  ModelConfig config_;
  std::vector<std::string> names_;
  std::vector<std::vector<float>> values_;
};

// One trainable tensor: value and its gradient accumulator, same size.
struct ParamTensor {
  std::string name;      // e.g. "blk.0.attn_q.weight.lora_b"
  float* value = nullptr;
  float* grad = nullptr;
  int64_t size = 0;
  bool weight_decay = true;  // false for norms
};

struct TrainEngineOptions {
  int n_threads = 0;                 // 0: ThreadPool::DefaultThreadCount()
  std::optional<CpuPath> cpu_path;   // unset: ActiveCpuPath()
  int64_t max_seq_len = 128;         // longest sequence ForwardBackward accepts
  // Bytes the engine may use for saved activations and scratch; 0 = no limit (store
  // everything). Create fails with ResourceExhausted if even full recomputation cannot
  // fit.
  uint64_t memory_budget_bytes = 0;
};

struct LossSum {
  double loss_sum = 0;   // Σ −log p(target)
  int64_t n_tokens = 0;  // targets counted
};

class TrainEngine {
 public:
  // LoRA mode. `base` and `adapter` must outlive the engine; the adapter's values are
  // read on every call (the optimizer updates them in place through params()).
  static Result<std::unique_ptr<TrainEngine>> CreateLora(const LlamaModel& base, LoraAdapter& adapter,
                                                         const TrainEngineOptions& options);
  // Full F32 mode over `weights` (must outlive the engine).
  static Result<std::unique_ptr<TrainEngine>> CreateFull(DenseLlamaWeights& weights,
                                                         const TrainEngineOptions& options);
  ~TrainEngine();

  // Forward + backward of one sequence (positions 0..n-1): ADDS the gradients of
  // loss_sum to every param's grad. tokens.size() == targets.size() <= max_seq_len;
  // InvalidArgument for bad ids (targets may be −1). Nothing changes on error.
  Result<LossSum> ForwardBackward(std::span<const int32_t> tokens, std::span<const int32_t> targets);
  // Forward only (evaluation); no gradients touched.
  Result<LossSum> Forward(std::span<const int32_t> tokens, std::span<const int32_t> targets);

  // The trainable tensors, in a stable order.
  std::span<const ParamTensor> params() const;
  void ZeroGrad();

  const ModelConfig& config() const;
  int n_threads() const;
  // The longest sequence ForwardBackward accepts (options.max_seq_len).
  int64_t max_seq_len() const;
  // Diagnostics and tests: called with each chunk of logit rows as Forward and
  // ForwardBackward compute them, before the loss: rows [row0, row0 + rows) of the
  // sequence, rows x vocab floats valid during the call. Chunks in which every target is
  // −1 are never computed. An empty function removes the observer.
  using LogitsObserver = std::function<void(int64_t row0, int64_t rows, const float* logits)>;
  void set_logits_observer(LogitsObserver observer);
  // Bytes of activations + scratch the engine holds, and whether it recomputes layers.
  uint64_t buffer_bytes() const;
  bool recomputes() const;

  class Impl;

 private:
  explicit TrainEngine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace flotilla::model
