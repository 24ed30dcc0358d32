// One LoRA fine-tuning job on a frozen (quantized) base: the adapter, its TrainEngine and
// Trainer, built the same way for every front end (`flotilla model finetune`, the C API's
// flt_finetune). The caller owns the loop (progress display, cancellation, checkpoints)
// and the data; this owns the setup so both train identically.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "flotilla/core/status.h"
#include "flotilla/model/cpu_features.h"
#include "flotilla/model/llama_model.h"
#include "flotilla/model/lora.h"
#include "flotilla/model/train.h"
#include "flotilla/model/trainer.h"

namespace flotilla::model {

// The loop settings `model finetune` uses by default: 100 steps, lr 2e-3 (peak) with
// steps/20 warm-up and cosine to 10%, beta2 0.99 (short runs on small models), no weight
// decay, clip 1, seq 128, 4 sequences per step.
TrainerOptions DefaultFinetuneTrainerOptions();

struct LoraFinetuneOptions {
  int64_t rank = 8;
  float alpha = 16.0f;
  std::string targets = "q,k,v,o";        // ParseProjections syntax ("all", "attn", "q,v", ...)
  std::optional<uint64_t> frozen_a_seed;  // unset: drawn from the OS CSPRNG
  bool train_a = false;                   // FedIT-style: random A (OS CSPRNG), trained too
  std::string base_sha256;                // hex; recorded in the adapter ("" = unknown)
  std::string name;                       // "" = "<base name>-lora"
  uint64_t adapter_version = 0;
  TrainerOptions trainer = DefaultFinetuneTrainerOptions();  // trainer.seq_len also sizes the engine
  int n_threads = 0;                      // 0: ThreadPool::DefaultThreadCount()
  uint64_t memory_budget_bytes = 0;       // TrainEngineOptions::memory_budget_bytes
  std::optional<CpuPath> cpu_path;
};

class LoraFinetuneJob {
 public:
  // Builds the adapter (B = 0), the LoRA TrainEngine over `base` and the Trainer.
  // InvalidArgument for bad options (unknown target, rank, seq_len above the context...),
  // ResourceExhausted when the memory budget cannot hold even full recomputation.
  // `base` must outlive the job. Not thread-safe (one training loop).
  static Result<std::unique_ptr<LoraFinetuneJob>> Create(const LlamaModel& base, const LoraFinetuneOptions& options);
  ~LoraFinetuneJob();

  // Mean loss / perplexity of `data` under base + the adapter as it is now, over windows
  // of the training seq_len (max_windows 0 = all). InvalidArgument if data has < 2 tokens.
  Result<EvalResult> Evaluate(const TokenDataset& data, int64_t max_windows = 0);

  LoraAdapter& adapter() { return *adapter_; }
  // Moves the adapter out; the job is unusable afterwards.
  std::unique_ptr<LoraAdapter> TakeAdapter();
  TrainEngine& engine() { return *engine_; }
  Trainer& trainer() { return *trainer_; }
  const TrainerOptions& trainer_options() const { return trainer_options_; }

 private:
  LoraFinetuneJob() = default;
  std::unique_ptr<LoraAdapter> adapter_;  // heap: the engine keeps a reference
  std::unique_ptr<TrainEngine> engine_;
  std::unique_ptr<Trainer> trainer_;
  TrainerOptions trainer_options_;
};

}  // namespace flotilla::model
