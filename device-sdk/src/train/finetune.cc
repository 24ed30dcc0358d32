#include "flotilla/model/finetune.h"

#include <utility>

#include "flotilla/core/random.h"

namespace flotilla::model {

TrainerOptions DefaultFinetuneTrainerOptions() {
  TrainerOptions t;
  t.adamw.learning_rate = 2e-3f;
  t.adamw.weight_decay = 0.0f;
  t.adamw.beta2 = 0.99f;
  t.steps = 100;
  t.warmup_steps = t.steps / 20;
  t.min_lr_ratio = 0.1f;
  t.grad_clip = 1.0f;
  t.seq_len = 128;
  t.micro_batch = 4;
  t.accumulation = 1;
  t.seed = 1;
  return t;
}

LoraFinetuneJob::~LoraFinetuneJob() = default;

Result<std::unique_ptr<LoraFinetuneJob>> LoraFinetuneJob::Create(const LlamaModel& base,
                                                                 const LoraFinetuneOptions& o) {
  LoraConfig lc;
  lc.rank = o.rank;
  lc.alpha = o.alpha;
  FLT_ASSIGN_OR_RETURN(lc.targets, ParseProjections(o.targets));
  lc.frozen_a = !o.train_a;
  lc.a_seed = o.frozen_a_seed ? *o.frozen_a_seed : OsRandom().NextU64();
  std::unique_ptr<LoraFinetuneJob> job(new LoraFinetuneJob());
  FLT_ASSIGN_OR_RETURN(LoraAdapter adapter, LoraAdapter::Create(base.config(), lc, o.train_a ? &OsRandom() : nullptr));
  job->adapter_ = std::make_unique<LoraAdapter>(std::move(adapter));
  job->adapter_->base_hash = o.base_sha256;
  job->adapter_->version = o.adapter_version;
  job->adapter_->name = o.name.empty() ? std::string(base.name()) + "-lora" : o.name;

  TrainEngineOptions eo;
  eo.n_threads = o.n_threads;
  eo.max_seq_len = o.trainer.seq_len;
  eo.memory_budget_bytes = o.memory_budget_bytes;
  eo.cpu_path = o.cpu_path;
  FLT_ASSIGN_OR_RETURN(job->engine_, TrainEngine::CreateLora(base, *job->adapter_, eo));
  FLT_ASSIGN_OR_RETURN(job->trainer_, Trainer::Create(*job->engine_, o.trainer));
  job->trainer_options_ = o.trainer;
  return job;
}

Result<EvalResult> LoraFinetuneJob::Evaluate(const TokenDataset& data, int64_t max_windows) {
  if (data.size() < 2) return InvalidArgumentError("evaluation needs at least 2 tokens of text");
  return model::Evaluate(*engine_, data, trainer_options_.seq_len, max_windows);
}

std::unique_ptr<LoraAdapter> LoraFinetuneJob::TakeAdapter() {
  trainer_.reset();
  engine_.reset();
  return std::move(adapter_);
}

}  // namespace flotilla::model
