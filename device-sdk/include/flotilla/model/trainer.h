// The optimisation loop over a TrainEngine: AdamW, global-norm clipping, gradient
// accumulation, warm-up + cosine learning rate, packed micro-batches, progress and
// cancellation, checkpoints; and held-out evaluation (mean loss, perplexity).
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flotilla/core/status.h"
#include "flotilla/model/tokenizer.h"
#include "flotilla/model/train.h"

namespace flotilla::model {

// The non-empty lines of `text` (a corpus with one document per line), in order.
std::vector<std::string> SplitNonEmptyLines(std::string_view text);

// A token stream cut into training windows of seq_len + 1 tokens (inputs and the
// next-token targets). Documents are concatenated with BOS/EOS separators ("packing").
class TokenDataset {
 public:
  // Tokenizes each text (BOS first, EOS after each) and concatenates them.
  static TokenDataset FromTexts(const Tokenizer& tokenizer, std::span<const std::string> texts);
  explicit TokenDataset(std::vector<int32_t> tokens) : tokens_(std::move(tokens)) {}

  const std::vector<int32_t>& tokens() const { return tokens_; }
  int64_t size() const { return static_cast<int64_t>(tokens_.size()); }
  // Number of disjoint windows of seq_len + 1 tokens (consecutive windows overlap by one
  // token so every position is a target once).
  int64_t NumWindows(int64_t seq_len) const;
  // Window i: tokens [i·seq_len, i·seq_len + seq_len + 1), clamped to the stream end.
  std::span<const int32_t> Window(int64_t i, int64_t seq_len) const;

 private:
  std::vector<int32_t> tokens_;
};

struct AdamWOptions {
  float learning_rate = 1e-3f;  // peak
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;    // decoupled (AdamW), applied to params with weight_decay
};

struct TrainerOptions {
  AdamWOptions adamw;
  int64_t steps = 100;              // optimizer steps
  int64_t warmup_steps = 0;         // linear warm-up from 0 to the peak lr
  float min_lr_ratio = 0.1f;        // cosine decays to peak · min_lr_ratio at `steps`
  float grad_clip = 1.0f;           // global L2 norm; <= 0 disables
  int64_t seq_len = 128;            // tokens per sequence (<= the engine's max_seq_len)
  int64_t micro_batch = 1;          // sequences per micro-batch
  int64_t accumulation = 1;         // micro-batches per optimizer step
  uint64_t seed = 1;                // window order (a deterministic shuffle per epoch)
};

struct TrainProgress {
  int64_t step = 0;            // completed optimizer steps
  int64_t total_steps = 0;
  double loss = 0;             // mean token loss of this step
  double learning_rate = 0;
  double grad_norm = 0;        // before clipping
  int64_t tokens = 0;          // tokens processed so far
  double seconds = 0;          // wall time so far
};
// Return false to cancel (the trainer stops after the current step: Cancelled).
using ProgressCallback = std::function<bool(const TrainProgress&)>;

struct TrainReport {
  int64_t steps = 0;
  int64_t tokens = 0;
  double seconds = 0;
  double tokens_per_second = 0;
  std::vector<double> loss_curve;  // mean loss of every step so far (earlier Runs and a loaded state too)
};

struct EvalResult {
  double mean_loss = 0;
  double perplexity = 0;  // exp(mean_loss)
  int64_t n_tokens = 0;
};

// Mean next-token loss over every window of `data` (at most max_windows, 0 = all, spread
// evenly over the data). Each window is scored from position 0 on its own.
Result<EvalResult> Evaluate(TrainEngine& engine, const TokenDataset& data, int64_t seq_len, int64_t max_windows = 0);
// The same measure through the inference path (an InferenceSession of its own, n_threads
// as InferenceOptions), optionally with an adapter hook such as a LoraApplier holding
// several adapters with scales, as deployed. `adapter` is not owned and may be null.
Result<EvalResult> Evaluate(const LlamaModel& model, ProjectionAdapter* adapter, const TokenDataset& data,
                            int64_t seq_len, int64_t max_windows = 0, int n_threads = 0);

// The baseline a trained model must beat: perplexity of `held_out` under add-one-smoothed
// unigram frequencies of `train`, over the same targets Evaluate scores (every token but
// the first). Token ids must be in [0, vocab_size) (FLT_CHECK: both come from one
// tokenizer); 0 tokens to score gives 1.
double UnigramPerplexity(const TokenDataset& train, const TokenDataset& held_out, int64_t vocab_size);

class Trainer {
 public:
  // InvalidArgument for bad options (seq_len above the engine's max, non-positive steps…).
  static Result<std::unique_ptr<Trainer>> Create(TrainEngine& engine, const TrainerOptions& options);

  // Runs the remaining steps (from step() to options.steps) on `data`; `cancel` (may be
  // null) is polled between micro-batches. Cancelled if stopped early (the progress so
  // far is kept: Run again to continue). InvalidArgument if data has no full window.
  Result<TrainReport> Run(const TokenDataset& data, const ProgressCallback& progress = {},
                          const std::atomic<bool>* cancel = nullptr);

  int64_t step() const;
  // Target tokens trained on so far, and the mean loss of every step since step 1 (a
  // loaded state's included).
  int64_t tokens() const;
  const std::vector<double>& loss_curve() const;
  // Learning rate at a step (warm-up then cosine).
  double LearningRateAt(int64_t step) const;

  // Optimizer state (step, data cursor, Adam moments) for resume; parameter values are
  // saved by their owner (adapter file or DenseLlamaWeights::Save). Atomic write;
  // LoadState refuses a file for other parameter shapes (InvalidArgument).
  Status SaveState(const std::filesystem::path& path) const;
  Status LoadState(const std::filesystem::path& path);

  ~Trainer();
  class Impl;

 private:
  explicit Trainer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace flotilla::model
