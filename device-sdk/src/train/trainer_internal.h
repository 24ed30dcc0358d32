// Internals of the Trainer, exposed to its unit tests: the optimizer maths as free
// functions, and the loop over a small GradientSource seam so the loop (accumulation,
// clipping, cancellation, checkpoint/resume, window order) can be tested against an
// exactly differentiable toy model as well as the real TrainEngine.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "flotilla/core/status.h"
#include "flotilla/model/train.h"
#include "flotilla/model/trainer.h"

namespace flotilla::model::train_internal {

// What the optimisation loop needs from a model. TrainEngine is the production source.
class GradientSource {
 public:
  virtual ~GradientSource() = default;
  // Same contracts as TrainEngine::ForwardBackward / Forward.
  virtual Result<LossSum> ForwardBackward(std::span<const int32_t> tokens, std::span<const int32_t> targets) = 0;
  virtual Result<LossSum> Forward(std::span<const int32_t> tokens, std::span<const int32_t> targets) = 0;
  virtual std::span<const ParamTensor> params() const = 0;
  virtual void ZeroGrad() = 0;
  // Longest sequence the source accepts (Trainer::Create refuses a longer seq_len).
  virtual int64_t max_seq_len() const = 0;
};

// A non-owning GradientSource over a TrainEngine.
std::unique_ptr<GradientSource> EngineSource(TrainEngine& engine);

// Learning rate for optimizer step `step` (0-based): linear warm-up peak·(step+1)/warmup
// for step < warmup, then cosine from peak down to peak·min_lr_ratio at step == steps.
double LearningRate(const TrainerOptions& options, int64_t step);

// One AdamW step (PyTorch's torch.optim.AdamW, non-amsgrad) on one tensor. `t` is the
// 1-based step for bias correction; `grad_scale` multiplies every gradient first (the
// 1/tokens mean and the clipping factor folded into one pass). Decoupled weight decay
// p -= lr·wd·p before the Adam update when `decay`.
void AdamWUpdate(const AdamWOptions& options, double lr, int64_t t, bool decay, float grad_scale,
                 std::span<float> value, std::span<const float> grad, std::span<float> m, std::span<float> v);

// sqrt(Σ grad²) over every param, accumulated in double in param order.
double GlobalGradNorm(std::span<const ParamTensor> params);

// Order in which epoch `epoch` visits windows 0..n-1: a Fisher–Yates shuffle driven by
// SplitMix64 from (seed, epoch). Deterministic on every platform.
std::vector<int64_t> WindowOrder(uint64_t seed, int64_t epoch, int64_t n);

// A Trainer over any source (it owns the source).
Result<std::unique_ptr<Trainer>> CreateTrainer(std::unique_ptr<GradientSource> source, const TrainerOptions& options);

Result<EvalResult> EvaluateSource(GradientSource& source, const TokenDataset& data, int64_t seq_len,
                                  int64_t max_windows);

}  // namespace flotilla::model::train_internal
