// C API: the local sample store (device::SampleStore) and on-device LoRA fine-tuning
// (model::LoraFinetuneJob, the setup `flotilla model finetune` uses).
#include <cmath>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "c_api_device.h"
#include "c_api_internal.h"
#include "flotilla/core/clock.h"
#include "flotilla/flotilla.h"
#include "flotilla/model/finetune.h"
#include "flotilla/model/trainer.h"

namespace flotilla::capi {

device::SampleStoreOptions ToSampleStoreOptions(const flt_samples_params* params) {
  const flt_samples_params p = params != nullptr ? *params : flt_samples_default_params();
  device::SampleStoreOptions o;
  o.max_total_bytes = p.max_total_bytes;
  o.max_age_ms = p.max_age_ms;
  o.max_text_bytes = p.max_text_bytes;
  o.max_label_bytes = p.max_label_bytes;
  o.held_out_fraction = p.held_out_fraction;
  o.durable_appends = p.durable_appends != 0;
  return o;
}

flt_status AddSample(device::SampleStore& store, const char* text, size_t text_len, const char* label,
                     int64_t timestamp_ms, int64_t* out_id) {
  if (text == nullptr && text_len > 0) return Fail(FLT_ERR_INVALID_ARGUMENT, "text is NULL but text_len > 0");
  if (timestamp_ms < 0) return Fail(FLT_ERR_INVALID_ARGUMENT, "timestamp_ms must be >= 0 (0 = now)");
  const int64_t ts = timestamp_ms == 0 ? RealClock().NowUnixMillis() : timestamp_ms;
  std::optional<std::string_view> l;
  if (label != nullptr) l = std::string_view(label);
  Result<int64_t> id = store.Append(std::string_view(text == nullptr ? "" : text, text_len), ts, l);
  if (!id.ok()) {
    // "Already beyond the age limit" is a bad argument here, not a full context.
    if (id.status().code() == StatusCode::kOutOfRange) return Fail(FLT_ERR_INVALID_ARGUMENT, id.status().ToString());
    return Fail(id.status());
  }
  if (out_id != nullptr) *out_id = *id;
  return FLT_OK;
}

}  // namespace flotilla::capi

namespace {

using flotilla::Result;
using flotilla::capi::Fail;
using flotilla::capi::Guard;

std::string Positive(const char* what) { return std::string(what) + " must be > 0"; }

}  // namespace

extern "C" {

flt_samples_params flt_samples_default_params(void) {
  const flotilla::device::SampleStoreOptions o;
  flt_samples_params p;
  p.max_total_bytes = o.max_total_bytes;
  p.max_age_ms = o.max_age_ms;
  p.max_text_bytes = o.max_text_bytes;
  p.max_label_bytes = o.max_label_bytes;
  p.held_out_fraction = o.held_out_fraction;
  p.durable_appends = o.durable_appends ? 1 : 0;
  return p;
}

flt_status flt_samples_open(const char* path, const flt_samples_params* params, flt_samples** out_samples) {
  return Guard([&]() -> flt_status {
    if (out_samples != nullptr) *out_samples = nullptr;
    if (path == nullptr || out_samples == nullptr) return Fail(FLT_ERR_INVALID_ARGUMENT, "path and out_samples must be set");
    auto store = flotilla::device::SampleStore::Open(path, flotilla::capi::ToSampleStoreOptions(params));
    if (!store.ok()) return Fail(store.status().WithContext(std::string("opening sample store ") + path));
    auto handle = std::make_unique<flt_samples>();
    handle->store = std::move(*store);
    *out_samples = handle.release();
    return FLT_OK;
  });
}

void flt_samples_close(flt_samples* samples) { delete samples; }

flt_status flt_samples_add(flt_samples* samples, const char* text, size_t text_len, const char* label,
                           int64_t timestamp_ms, int64_t* out_id) {
  return Guard([&]() -> flt_status {
    if (samples == nullptr) return Fail(FLT_ERR_INVALID_ARGUMENT, "samples must be set");
    return flotilla::capi::AddSample(*samples->store, text, text_len, label, timestamp_ms, out_id);
  });
}

flt_status flt_samples_get_stats(flt_samples* samples, flt_samples_stats* stats) {
  return Guard([&]() -> flt_status {
    if (samples == nullptr || stats == nullptr) return Fail(FLT_ERR_INVALID_ARGUMENT, "samples and stats must be set");
    auto s = samples->store->Stats();
    if (!s.ok()) return Fail(s.status());
    stats->count = s->count;
    stats->bytes = s->bytes;
    stats->train_count = s->train_count;
    stats->train_bytes = s->train_bytes;
    stats->held_out_count = s->held_out_count;
    stats->held_out_bytes = s->held_out_bytes;
    stats->oldest_ms = s->oldest_ms;
    stats->newest_ms = s->newest_ms;
    return FLT_OK;
  });
}

flt_status flt_samples_count(flt_samples* samples, int64_t* train_count, int64_t* held_out_count) {
  flt_samples_stats st;
  const flt_status s = flt_samples_get_stats(samples, &st);
  if (s != FLT_OK) return s;
  if (train_count != nullptr) *train_count = st.train_count;
  if (held_out_count != nullptr) *held_out_count = st.held_out_count;
  return FLT_OK;
}

flt_status flt_samples_clear(flt_samples* samples, int64_t* out_removed) {
  return Guard([&]() -> flt_status {
    if (samples == nullptr) return Fail(FLT_ERR_INVALID_ARGUMENT, "samples must be set");
    auto n = samples->store->Clear();
    if (!n.ok()) return Fail(n.status());
    if (out_removed != nullptr) *out_removed = *n;
    return FLT_OK;
  });
}

flt_finetune_params flt_finetune_default_params(void) {
  const flotilla::model::LoraFinetuneOptions o;
  flt_finetune_params p;
  p.rank = static_cast<int32_t>(o.rank);
  p.alpha = o.alpha;
  p.targets = nullptr;  // o.targets
  p.frozen_a_seed = 0;
  p.use_frozen_a_seed = 0;
  p.steps = static_cast<int32_t>(o.trainer.steps);
  p.learning_rate = o.trainer.adamw.learning_rate;
  p.batch = static_cast<int32_t>(o.trainer.micro_batch);
  p.seq_len = static_cast<int32_t>(o.trainer.seq_len);
  p.grad_clip = o.trainer.grad_clip;
  p.n_threads = 0;
  p.memory_budget_bytes = 0;
  p.data_seed = o.trainer.seed;
  p.eval_windows = 0;
  p.label = nullptr;
  return p;
}

flt_status flt_finetune(const flt_model* model, flt_samples* samples, const flt_finetune_params* params,
                        flt_progress_callback progress, void* user_data, flt_adapter** out_adapter,
                        flt_finetune_stats* stats) {
  return Guard([&]() -> flt_status {
    using namespace flotilla::model;
    if (out_adapter != nullptr) *out_adapter = nullptr;
    if (stats != nullptr) std::memset(stats, 0, sizeof *stats);
    if (model == nullptr || samples == nullptr || out_adapter == nullptr) {
      return Fail(FLT_ERR_INVALID_ARGUMENT, "model, samples and out_adapter must be set");
    }
    const flt_finetune_params p = params != nullptr ? *params : flt_finetune_default_params();
    if (p.rank <= 0) return Fail(FLT_ERR_INVALID_ARGUMENT, Positive("rank"));
    if (p.steps <= 0) return Fail(FLT_ERR_INVALID_ARGUMENT, Positive("steps"));
    if (p.batch <= 0) return Fail(FLT_ERR_INVALID_ARGUMENT, Positive("batch"));
    if (p.seq_len <= 0) return Fail(FLT_ERR_INVALID_ARGUMENT, Positive("seq_len"));
    if (!(p.learning_rate > 0.0f) || !std::isfinite(p.learning_rate)) {
      return Fail(FLT_ERR_INVALID_ARGUMENT, "learning_rate must be finite and > 0");
    }
    if (!std::isfinite(p.alpha) || !std::isfinite(p.grad_clip)) {
      return Fail(FLT_ERR_INVALID_ARGUMENT, "alpha and grad_clip must be finite");
    }
    if (p.n_threads < 0 || p.eval_windows < 0) {
      return Fail(FLT_ERR_INVALID_ARGUMENT, "n_threads and eval_windows must be >= 0");
    }

    std::optional<std::string_view> label;
    if (p.label != nullptr) label = std::string_view(p.label);
    flotilla::device::SampleStore& store = *samples->store;
    Result<std::vector<std::string>> train_texts = store.TrainTexts(label);
    if (!train_texts.ok()) return Fail(train_texts.status());
    Result<std::vector<std::string>> held_texts = store.HeldOutTexts(label);
    if (!held_texts.ok()) return Fail(held_texts.status());
    const Tokenizer& tokenizer = model->model->tokenizer();
    const TokenDataset train = TokenDataset::FromTexts(tokenizer, *train_texts);
    const TokenDataset held = TokenDataset::FromTexts(tokenizer, *held_texts);
    if (stats != nullptr) {
      stats->train_samples = static_cast<int64_t>(train_texts->size());
      stats->held_out_samples = static_cast<int64_t>(held_texts->size());
    }
    if (train.size() < int64_t{p.seq_len} + 1) {
      return Fail(FLT_ERR_INVALID_ARGUMENT, "the train part has " + std::to_string(train.size()) + " tokens (" +
                                                std::to_string(train_texts->size()) +
                                                " samples); one training window needs seq_len + 1 = " +
                                                std::to_string(p.seq_len + 1));
    }

    Result<std::string> base_hash = flotilla::capi::ModelSha256(*model);
    if (!base_hash.ok()) return Fail(base_hash.status());
    LoraFinetuneOptions fo;
    fo.rank = p.rank;
    fo.alpha = p.alpha;
    if (p.targets != nullptr) fo.targets = p.targets;
    if (p.use_frozen_a_seed != 0) fo.frozen_a_seed = p.frozen_a_seed;
    fo.base_sha256 = *base_hash;
    fo.trainer.steps = p.steps;
    fo.trainer.warmup_steps = p.steps / 20;
    fo.trainer.adamw.learning_rate = p.learning_rate;
    fo.trainer.micro_batch = p.batch;
    fo.trainer.seq_len = p.seq_len;
    fo.trainer.grad_clip = p.grad_clip;
    fo.trainer.seed = p.data_seed;
    fo.n_threads = p.n_threads;
    fo.memory_budget_bytes = p.memory_budget_bytes;
    Result<std::unique_ptr<LoraFinetuneJob>> job = LoraFinetuneJob::Create(*model->model, fo);
    if (!job.ok()) return Fail(job.status());

    if (held.size() >= 2) {
      Result<EvalResult> before = (*job)->Evaluate(held, p.eval_windows);
      if (!before.ok()) return Fail(before.status());
      if (stats != nullptr) stats->held_out_perplexity_before = before->perplexity;
    }
    Trainer& trainer = (*job)->trainer();
    Result<TrainReport> run = trainer.Run(train, [&](const TrainProgress& tp) {
      return progress == nullptr || progress(static_cast<int32_t>(tp.step), static_cast<int32_t>(tp.total_steps),
                                             static_cast<float>(tp.loss), static_cast<float>(tp.learning_rate),
                                             user_data) == 0;
    });
    if (stats != nullptr) {
      const std::vector<double>& curve = trainer.loss_curve();
      stats->steps = static_cast<int32_t>(trainer.step());
      stats->tokens = trainer.tokens();
      if (run.ok()) stats->seconds = run->seconds;
      if (!curve.empty()) {
        stats->first_loss = static_cast<float>(curve.front());
        stats->last_loss = static_cast<float>(curve.back());
      }
    }
    if (!run.ok()) {
      if (run.status().code() == flotilla::StatusCode::kCancelled) {
        return Fail(FLT_ERR_CANCELLED, "fine-tuning cancelled by the progress callback after step " +
                                           std::to_string(trainer.step()) + "; no adapter was produced");
      }
      return Fail(run.status());
    }
    if (held.size() >= 2) {
      Result<EvalResult> after = (*job)->Evaluate(held, p.eval_windows);
      if (!after.ok()) return Fail(after.status());
      if (stats != nullptr) stats->held_out_perplexity_after = after->perplexity;
    }
    auto handle = std::make_unique<flt_adapter>();
    handle->model = model;
    handle->adapter = std::shared_ptr<const LoraAdapter>((*job)->TakeAdapter());
    *out_adapter = handle.release();
    return FLT_OK;
  });
}

}  // extern "C"
