// EngineLocalTrainer: the real LocalTrainer (local_trainer.h) on the model engine. One
// memory-mapped base LlamaModel is shared (read-only) by every trainer of a process, so a
// simulator with a thousand agents maps the weights once; each trainer holds only its
// device's tokenized samples (train and held-out).
//
// Train(): builds the LoRA adapter the round's TrainingConfig describes (targets, rank,
// alpha, frozen-A seed or FedIT), loads `global` into its trainable vector (FedIT from
// the initial adapter, whose A is all zero: A starts from the seeded frozen-A stream), runs
// `local_steps` AdamW steps with the engine's Trainer (lr, clip, batch from the config;
// a short sequence length from the options) and returns delta = trained - global. The
// base model is never written.
//
// AdapterEvaluator measures a global adapter (a trainable vector) on held-out text: the
// simulator's per-device and pooled perplexity.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flotilla/core/status.h"
#include "flotilla/device/local_trainer.h"
#include "flotilla/device/sample_store.h"
#include "flotilla/model/llama_model.h"
#include "flotilla/model/lora.h"
#include "flotilla/model/train.h"
#include "flotilla/model/trainer.h"
#include "flotilla/v1/round.pb.h"

namespace flotilla::device {

// The LoRA configuration a round's TrainingConfig names. InvalidArgument for an unknown
// target, rank 0 or a non-finite alpha. FedIT (LORA_MODE_FEDIT) means A is trained too.
Result<model::LoraConfig> LoraConfigFromTraining(const v1::TrainingConfig& config);
// The trainable vector length of that adapter on `model` (what the coordinator's initial
// global adapter must have).
Result<int64_t> TrainableLength(const model::ModelConfig& model, const v1::TrainingConfig& config);

struct EngineTrainerOptions {
  int64_t seq_len = 32;          // tokens per training window (small: short device samples)
  int n_threads = 1;             // engine threads per Train call; parallelism comes from the pool
  // Windows of the local training data scored before and after training for
  // loss_before/loss_after (0: take them from the trainer's loss curve, no extra passes).
  int64_t loss_windows = 2;
  uint64_t data_seed = 0;        // window order; mixed with the round id per round
  uint64_t memory_budget_bytes = 0;  // TrainEngineOptions::memory_budget_bytes
};

class EngineLocalTrainer final : public LocalTrainer {
 public:
  // From in-memory sample texts. `base` is shared and must not be mutated by anyone.
  // InvalidArgument for a null base or seq_len outside [1, context length].
  static Result<std::unique_ptr<EngineLocalTrainer>> Create(std::shared_ptr<const model::LlamaModel> base,
                                                            std::span<const std::string> train_texts,
                                                            std::span<const std::string> held_out_texts,
                                                            const EngineTrainerOptions& options);
  // From a device's SampleStore (its train and held-out splits, read once now).
  static Result<std::unique_ptr<EngineLocalTrainer>> FromSampleStore(std::shared_ptr<const model::LlamaModel> base,
                                                                     SampleStore& store,
                                                                     const EngineTrainerOptions& options);

  // True when the train split holds at least one full window of seq_len + 1 tokens.
  bool HasData() const override;
  // See the file comment. InvalidArgument if `global` does not have the adapter's
  // trainable length or the config is bad; engine errors as they come. Deterministic for
  // (data, config, global, round id, data_seed). One call at a time per trainer; distinct
  // trainers may train concurrently (the base is only read).
  Result<LocalTrainingResult> Train(std::string_view round_id, const v1::TrainingConfig& config,
                                    std::span<const float> global) override;

  const model::TokenDataset& train_data() const { return train_; }
  const model::TokenDataset& held_out_data() const { return held_out_; }
  size_t train_samples() const { return train_samples_; }
  const EngineTrainerOptions& options() const { return options_; }

 private:
  EngineLocalTrainer(std::shared_ptr<const model::LlamaModel> base, model::TokenDataset train,
                     model::TokenDataset held_out, size_t train_samples, EngineTrainerOptions options)
      : base_(std::move(base)),
        train_(std::move(train)),
        held_out_(std::move(held_out)),
        train_samples_(train_samples),
        options_(options) {}

  std::shared_ptr<const model::LlamaModel> base_;
  model::TokenDataset train_;
  model::TokenDataset held_out_;
  size_t train_samples_;
  EngineTrainerOptions options_;
};

// Scores token data under base + one adapter whose trainable vector is set per call.
// Not thread-safe (one engine); make one per thread.
class AdapterEvaluator {
 public:
  // InvalidArgument for a bad config; `base` must outlive the evaluator.
  static Result<std::unique_ptr<AdapterEvaluator>> Create(std::shared_ptr<const model::LlamaModel> base,
                                                          const v1::TrainingConfig& config, int64_t seq_len,
                                                          int n_threads = 1);
  // Loads `trainable` (empty = the all-zero adapter, i.e. the base model alone).
  // InvalidArgument on a length mismatch.
  Status SetTrainable(std::span<const float> trainable);
  // Mean loss / perplexity over at most `max_windows` windows of `data` (0 = all).
  // InvalidArgument if `data` has no window.
  Result<model::EvalResult> Evaluate(const model::TokenDataset& data, int64_t max_windows = 0);
  int64_t trainable_length() const { return adapter_->TrainableCount(); }

  ~AdapterEvaluator();

 private:
  AdapterEvaluator() = default;
  std::shared_ptr<const model::LlamaModel> base_;
  std::unique_ptr<model::LoraAdapter> adapter_;  // heap: the engine keeps a reference
  std::unique_ptr<model::TrainEngine> engine_;
  int64_t seq_len_ = 0;
};

}  // namespace flotilla::device
