#include "flotilla/device/engine_trainer.h"

#include <cmath>
#include <string>
#include <utility>


namespace flotilla::device {
namespace {

Result<model::Projection> ProjectionOf(v1::LoraTarget target) {
  switch (target) {
    case v1::LORA_TARGET_Q: return model::Projection::kQ;
    case v1::LORA_TARGET_K: return model::Projection::kK;
    case v1::LORA_TARGET_V: return model::Projection::kV;
    case v1::LORA_TARGET_O: return model::Projection::kO;
    case v1::LORA_TARGET_GATE: return model::Projection::kGate;
    case v1::LORA_TARGET_UP: return model::Projection::kUp;
    case v1::LORA_TARGET_DOWN: return model::Projection::kDown;
    default: break;
  }
  return InvalidArgumentError("training config: unknown LoRA target " + std::to_string(static_cast<int>(target)));
}

// FNV-1a over the round id, mixed with the data seed: the window order differs per round
// but is reproducible (test data order, not a secret).
uint64_t RoundSeed(uint64_t data_seed, std::string_view round_id) {
  uint64_t h = 1469598103934665603ull ^ data_seed;
  for (char c : round_id) {
    h ^= static_cast<uint8_t>(c);
    h *= 1099511628211ull;
  }
  return h == 0 ? 1 : h;
}

// Builds the round's adapter on `model`: A from the frozen-A stream of the round's seed,
// B = 0. In FedIT mode A is trainable too, and this same seeded A is where training
// starts from the initial adapter (its A is all zero, which could never learn: with
// A = B = 0 neither gets a gradient). Every device derives the same A, so averaging the
// A factors of the first round averages updates of one shared starting point.
Result<model::LoraAdapter> MakeAdapter(const model::ModelConfig& model, const v1::TrainingConfig& config) {
  FLT_ASSIGN_OR_RETURN(model::LoraConfig lc, LoraConfigFromTraining(config));
  model::LoraConfig seeded = lc;
  seeded.frozen_a = true;
  FLT_ASSIGN_OR_RETURN(model::LoraAdapter adapter, model::LoraAdapter::Create(model, seeded));
  if (lc.frozen_a) return adapter;
  return model::MakeLoraAdapter(model, lc, std::move(adapter.matrices()));
}

// Loads `global` into `adapter`. FedIT: if every A factor of `global` is zero (the
// initial adapter), the adapter keeps its seeded A (MakeAdapter) and takes only B.
Status LoadGlobal(model::LoraAdapter& adapter, std::span<const float> global) {
  if (adapter.config().frozen_a) return adapter.SetTrainable(global);
  std::vector<std::vector<float>> seeded_a;
  seeded_a.reserve(adapter.matrices().size());
  for (const model::LoraMatrix& m : adapter.matrices()) seeded_a.push_back(m.a);
  FLT_RETURN_IF_ERROR(adapter.SetTrainable(global));
  for (const model::LoraMatrix& m : adapter.matrices()) {
    for (float v : m.a) {
      if (v != 0.0f) return Status::Ok();
    }
  }
  for (size_t i = 0; i < seeded_a.size(); ++i) adapter.matrices()[i].a = std::move(seeded_a[i]);
  return Status::Ok();
}

Status CheckSeqLen(const model::LlamaModel& base, int64_t seq_len) {
  if (seq_len < 1 || seq_len > base.config().context_length) {
    return InvalidArgumentError("engine trainer: seq_len " + std::to_string(seq_len) + " outside [1, " +
                                std::to_string(base.config().context_length) + "]");
  }
  return Status::Ok();
}

}  // namespace

Result<model::LoraConfig> LoraConfigFromTraining(const v1::TrainingConfig& config) {
  model::LoraConfig lc;
  lc.rank = config.rank();
  lc.alpha = config.alpha();
  lc.targets.clear();
  for (int t : config.lora_targets()) {
    FLT_ASSIGN_OR_RETURN(model::Projection p, ProjectionOf(static_cast<v1::LoraTarget>(t)));
    lc.targets.push_back(p);
  }
  lc.frozen_a = config.mode() != v1::LORA_MODE_FEDIT;
  lc.a_seed = config.frozen_a_seed();
  FLT_RETURN_IF_ERROR(lc.Validate());
  return lc;
}

Result<int64_t> TrainableLength(const model::ModelConfig& model, const v1::TrainingConfig& config) {
  FLT_ASSIGN_OR_RETURN(model::LoraAdapter adapter, MakeAdapter(model, config));
  return adapter.TrainableCount();
}

// ---------------------------------------------------------------- EngineLocalTrainer

Result<std::unique_ptr<EngineLocalTrainer>> EngineLocalTrainer::Create(std::shared_ptr<const model::LlamaModel> base,
                                                                       std::span<const std::string> train_texts,
                                                                       std::span<const std::string> held_out_texts,
                                                                       const EngineTrainerOptions& options) {
  if (base == nullptr) return InvalidArgumentError("engine trainer: no base model");
  FLT_RETURN_IF_ERROR(CheckSeqLen(*base, options.seq_len));
  if (options.n_threads < 0 || options.loss_windows < 0) {
    return InvalidArgumentError("engine trainer: negative n_threads or loss_windows");
  }
  model::TokenDataset train = model::TokenDataset::FromTexts(base->tokenizer(), train_texts);
  model::TokenDataset held = model::TokenDataset::FromTexts(base->tokenizer(), held_out_texts);
  return std::unique_ptr<EngineLocalTrainer>(
      new EngineLocalTrainer(std::move(base), std::move(train), std::move(held), train_texts.size(), options));
}

Result<std::unique_ptr<EngineLocalTrainer>> EngineLocalTrainer::FromSampleStore(
    std::shared_ptr<const model::LlamaModel> base, SampleStore& store, const EngineTrainerOptions& options) {
  FLT_ASSIGN_OR_RETURN(std::vector<std::string> train, store.TrainTexts());
  FLT_ASSIGN_OR_RETURN(std::vector<std::string> held, store.HeldOutTexts());
  return Create(std::move(base), train, held, options);
}

// TokenDataset::NumWindows counts a short last window too; the Trainer needs a full one.
bool EngineLocalTrainer::HasData() const { return train_.size() >= options_.seq_len + 1; }

Result<LocalTrainingResult> EngineLocalTrainer::Train(std::string_view round_id, const v1::TrainingConfig& config,
                                                      std::span<const float> global) {
  if (!HasData()) return FailedPreconditionError("engine trainer: no full training window");
  if (config.local_steps() == 0) return InvalidArgumentError("training config: local_steps is 0");
  FLT_ASSIGN_OR_RETURN(model::LoraAdapter adapter, MakeAdapter(base_->config(), config));
  if (adapter.TrainableCount() != static_cast<int64_t>(global.size())) {
    return InvalidArgumentError("engine trainer: global vector has " + std::to_string(global.size()) +
                                " values, the adapter " + std::to_string(adapter.TrainableCount()));
  }
  FLT_RETURN_IF_ERROR(LoadGlobal(adapter, global));

  model::TrainEngineOptions eo;
  eo.n_threads = options_.n_threads == 0 ? 1 : options_.n_threads;
  eo.max_seq_len = options_.seq_len;
  eo.memory_budget_bytes = options_.memory_budget_bytes;
  FLT_ASSIGN_OR_RETURN(std::unique_ptr<model::TrainEngine> engine, model::TrainEngine::CreateLora(*base_, adapter, eo));

  model::TrainerOptions to;
  to.adamw.learning_rate = config.learning_rate() > 0 ? config.learning_rate() : 1e-3f;
  to.steps = config.local_steps();
  to.warmup_steps = 0;
  to.min_lr_ratio = 1.0f;  // a few local steps: constant learning rate, no cosine tail
  to.grad_clip = config.gradient_clip_norm();
  to.seq_len = options_.seq_len;
  to.micro_batch = config.batch_size() > 0 ? config.batch_size() : 1;
  to.accumulation = 1;
  to.seed = RoundSeed(options_.data_seed, round_id);
  FLT_ASSIGN_OR_RETURN(std::unique_ptr<model::Trainer> trainer, model::Trainer::Create(*engine, to));

  LocalTrainingResult result;
  if (options_.loss_windows > 0) {
    FLT_ASSIGN_OR_RETURN(model::EvalResult before, model::Evaluate(*engine, train_, options_.seq_len,
                                                                   options_.loss_windows));
    result.loss_before = static_cast<float>(before.mean_loss);
  }
  FLT_ASSIGN_OR_RETURN(model::TrainReport report, trainer->Run(train_));
  if (options_.loss_windows > 0) {
    FLT_ASSIGN_OR_RETURN(model::EvalResult after, model::Evaluate(*engine, train_, options_.seq_len,
                                                                  options_.loss_windows));
    result.loss_after = static_cast<float>(after.mean_loss);
  } else if (!report.loss_curve.empty()) {
    result.loss_before = static_cast<float>(report.loss_curve.front());
    result.loss_after = static_cast<float>(report.loss_curve.back());
  }

  std::vector<float> trained = adapter.FlattenTrainable();
  result.delta.resize(global.size());
  for (size_t i = 0; i < global.size(); ++i) {
    result.delta[i] = trained[i] - global[i];
    if (!std::isfinite(result.delta[i])) return InternalError("engine trainer: training diverged (non-finite update)");
  }
  result.examples = train_samples_;
  result.steps = static_cast<uint32_t>(report.steps);
  return result;
}

// ---------------------------------------------------------------- AdapterEvaluator

AdapterEvaluator::~AdapterEvaluator() = default;

Result<std::unique_ptr<AdapterEvaluator>> AdapterEvaluator::Create(std::shared_ptr<const model::LlamaModel> base,
                                                                   const v1::TrainingConfig& config, int64_t seq_len,
                                                                   int n_threads) {
  if (base == nullptr) return InvalidArgumentError("adapter evaluator: no base model");
  FLT_RETURN_IF_ERROR(CheckSeqLen(*base, seq_len));
  std::unique_ptr<AdapterEvaluator> ev(new AdapterEvaluator());
  FLT_ASSIGN_OR_RETURN(model::LoraAdapter adapter, MakeAdapter(base->config(), config));
  ev->adapter_ = std::make_unique<model::LoraAdapter>(std::move(adapter));
  model::TrainEngineOptions eo;
  eo.n_threads = n_threads <= 0 ? 1 : n_threads;
  eo.max_seq_len = seq_len;
  FLT_ASSIGN_OR_RETURN(ev->engine_, model::TrainEngine::CreateLora(*base, *ev->adapter_, eo));
  ev->base_ = std::move(base);
  ev->seq_len_ = seq_len;
  return ev;
}

Status AdapterEvaluator::SetTrainable(std::span<const float> trainable) {
  if (trainable.empty()) {
    const std::vector<float> zeros(static_cast<size_t>(adapter_->TrainableCount()), 0.0f);
    return adapter_->SetTrainable(zeros);
  }
  return adapter_->SetTrainable(trainable);
}

Result<model::EvalResult> AdapterEvaluator::Evaluate(const model::TokenDataset& data, int64_t max_windows) {
  if (data.size() < 2) return InvalidArgumentError("adapter evaluator: no tokens to score");
  return model::Evaluate(*engine_, data, seq_len_, max_windows);
}

}  // namespace flotilla::device
