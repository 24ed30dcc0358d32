// C API over flotilla_model. Every entry point catches all exceptions (std::bad_alloc
// from the standard library is the realistic one) and maps Status codes to flt_status.
#include "flotilla/flotilla.h"

#include <cmath>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "c_api_internal.h"
#include "flotilla/model/adapter_file.h"
#include "flotilla/model/cpu_features.h"
#include "flotilla/model/inference.h"
#include "flotilla/model/llama_model.h"
#include "flotilla/model/lora.h"
#include "flotilla/model/sampler.h"

namespace flotilla::capi {

std::string& LastError() {
  thread_local std::string last_error;
  return last_error;
}

flt_status Code(const Status& s) {
  switch (s.code()) {
    case StatusCode::kOk: return FLT_OK;
    case StatusCode::kInvalidArgument:
    case StatusCode::kDataLoss: return FLT_ERR_INVALID_ARGUMENT;
    case StatusCode::kNotFound: return FLT_ERR_NOT_FOUND;
    case StatusCode::kPermissionDenied:
    case StatusCode::kUnavailable: return FLT_ERR_IO;
    case StatusCode::kUnimplemented:
    case StatusCode::kFailedPrecondition: return FLT_ERR_UNSUPPORTED;
    case StatusCode::kOutOfRange: return FLT_ERR_CONTEXT_FULL;
    case StatusCode::kResourceExhausted: return FLT_ERR_RESOURCE_EXHAUSTED;
    case StatusCode::kCancelled: return FLT_ERR_CANCELLED;
    default: return FLT_ERR_INTERNAL;
  }
}

Result<std::string> ModelSha256(const flt_model& model) {
  const flt_model* m = &model;
  std::call_once(m->hash_once, [m] {
    auto h = flotilla::model::ModelFileSha256(m->path);
    if (h.ok()) {
      m->sha256 = std::move(*h);
    } else {
      m->hash_status = h.status();
    }
  });
  if (!m->hash_status.ok()) return m->hash_status;
  return m->sha256;
}

}  // namespace flotilla::capi

namespace {
using flotilla::capi::Fail;
using flotilla::capi::Guard;
}  // namespace

extern "C" {

const char* flt_status_string(flt_status status) {
  switch (status) {
    case FLT_OK: return "ok";
    case FLT_ERR_INVALID_ARGUMENT: return "invalid argument";
    case FLT_ERR_NOT_FOUND: return "not found";
    case FLT_ERR_IO: return "i/o error";
    case FLT_ERR_UNSUPPORTED: return "unsupported";
    case FLT_ERR_CONTEXT_FULL: return "context full";
    case FLT_ERR_BUFFER_TOO_SMALL: return "buffer too small";
    case FLT_ERR_RESOURCE_EXHAUSTED: return "resource exhausted";
    case FLT_ERR_INTERNAL: return "internal error";
    case FLT_ERR_CANCELLED: return "cancelled";
    case FLT_ERR_BAD_STATE: return "bad state";
  }
  return "unknown status";
}

const char* flt_last_error(void) { return flotilla::capi::LastError().c_str(); }

flt_model_params flt_model_default_params(void) {
  flt_model_params p;
  p.n_threads = 0;
  p.n_ctx = 0;
  p.cpu_path = nullptr;
  return p;
}

flt_generate_params flt_generate_default_params(void) {
  const flotilla::model::SamplerParams s;
  flt_generate_params p;
  p.max_tokens = 128;
  p.temperature = s.temperature;
  p.top_k = s.top_k;
  p.top_p = s.top_p;
  p.repeat_penalty = s.repeat_penalty;
  p.repeat_last_n = s.repeat_last_n;
  p.seed = 0;
  p.use_seed = 0;
  p.add_bos = 1;
  p.stop_at_eos = 1;
  p.stop_tokens = nullptr;
  p.n_stop_tokens = 0;
  return p;
}

flt_status flt_model_load(const char* path, const flt_model_params* params, flt_model** out_model) {
  return Guard([&]() -> flt_status {
    if (path == nullptr || out_model == nullptr) return Fail(FLT_ERR_INVALID_ARGUMENT, "path and out_model must be set");
    *out_model = nullptr;
    const flt_model_params p = params != nullptr ? *params : flt_model_default_params();
    if (p.n_threads < 0 || p.n_ctx < 0) return Fail(FLT_ERR_INVALID_ARGUMENT, "n_threads and n_ctx must be >= 0");
    flotilla::model::InferenceOptions o;
    o.n_threads = p.n_threads;
    o.n_ctx = p.n_ctx;
    if (p.cpu_path != nullptr) {
      flotilla::Result<flotilla::model::CpuPath> path_id = flotilla::model::ParseCpuPath(p.cpu_path);
      if (!path_id.ok()) return Fail(path_id.status());
      o.cpu_path = *path_id;
    }
    auto m = std::make_unique<flt_model>();
    flotilla::Result<std::unique_ptr<flotilla::model::LlamaModel>> model = flotilla::model::LlamaModel::Open(path);
    if (!model.ok()) return Fail(model.status());
    m->model = std::move(*model);
    m->path = path;
    flotilla::Result<std::unique_ptr<flotilla::model::InferenceSession>> session =
        flotilla::model::InferenceSession::Create(*m->model, o);
    if (!session.ok()) return Fail(session.status());
    m->session = std::move(*session);
    *out_model = m.release();
    return FLT_OK;
  });
}

void flt_model_free(flt_model* model) { delete model; }

int32_t flt_model_vocab_size(const flt_model* model) {
  return model == nullptr ? 0 : static_cast<int32_t>(model->model->config().vocab_size);
}

int32_t flt_model_n_ctx(const flt_model* model) {
  return model == nullptr ? 0 : static_cast<int32_t>(model->session->n_ctx());
}

int32_t flt_model_eos_token(const flt_model* model) {
  return model == nullptr ? -1 : model->model->tokenizer().eos_id();
}

flt_status flt_model_tokenize(const flt_model* model, const char* text, size_t text_len, int add_bos, int32_t* tokens,
                              size_t capacity, size_t* n_tokens) {
  return Guard([&]() -> flt_status {
    if (model == nullptr || (text == nullptr && text_len > 0) || (tokens == nullptr && capacity > 0) ||
        n_tokens == nullptr) {
      return Fail(FLT_ERR_INVALID_ARGUMENT, "model, text, tokens (when capacity > 0) and n_tokens must be set");
    }
    const std::vector<int32_t> ids =
        model->model->tokenizer().Encode(std::string_view(text == nullptr ? "" : text, text_len), add_bos != 0);
    *n_tokens = ids.size();
    const size_t n = ids.size() < capacity ? ids.size() : capacity;
    if (n > 0) std::memcpy(tokens, ids.data(), n * sizeof(int32_t));
    if (ids.size() > capacity) {
      return Fail(FLT_ERR_BUFFER_TOO_SMALL,
                  "text needs " + std::to_string(ids.size()) + " tokens, buffer holds " + std::to_string(capacity));
    }
    return FLT_OK;
  });
}

flt_status flt_model_generate(flt_model* model, const char* prompt, size_t prompt_len,
                              const flt_generate_params* params, char* text, size_t text_capacity, size_t* text_len,
                              flt_token_callback callback, void* user_data, flt_generate_stats* stats) {
  return Guard([&]() -> flt_status {
    if (text_len != nullptr) *text_len = 0;
    if (text != nullptr && text_capacity > 0) text[0] = '\0';
    if (model == nullptr || (prompt == nullptr && prompt_len > 0) || (text == nullptr && text_capacity > 0)) {
      return Fail(FLT_ERR_INVALID_ARGUMENT, "model and prompt must be set, and text when text_capacity > 0");
    }
    const flt_generate_params p = params != nullptr ? *params : flt_generate_default_params();
    if (p.max_tokens < 0 || (p.stop_tokens == nullptr && p.n_stop_tokens > 0)) {
      return Fail(FLT_ERR_INVALID_ARGUMENT, "max_tokens must be >= 0 and stop_tokens set when n_stop_tokens > 0");
    }
    flotilla::model::SamplerParams sp;
    sp.temperature = p.temperature;
    sp.top_k = p.top_k;
    sp.top_p = p.top_p;
    sp.repeat_penalty = p.repeat_penalty;
    sp.repeat_last_n = p.repeat_last_n;
    if (p.use_seed != 0) sp.seed = p.seed;
    auto sampler = flotilla::model::Sampler::Create(sp, model->model->config().vocab_size);
    if (!sampler.ok()) return Fail(sampler.status());
    flotilla::model::GenerateOptions go;
    go.max_tokens = p.max_tokens;
    go.stop_at_eos = p.stop_at_eos != 0;
    if (p.n_stop_tokens > 0) go.stop_tokens.assign(p.stop_tokens, p.stop_tokens + p.n_stop_tokens);
    const std::vector<int32_t> ids =
        model->model->tokenizer().Encode(std::string_view(prompt == nullptr ? "" : prompt, prompt_len), p.add_bos != 0);
    if (ids.empty()) return Fail(FLT_ERR_INVALID_ARGUMENT, "the prompt encodes to no tokens");

    size_t used = 0;
    bool buffer_full = false;
    std::lock_guard<std::mutex> lock(model->mu);
    model->session->Reset();
    auto r = flotilla::model::Generate(
        *model->session, **sampler, ids, go, [&](int32_t token, std::string_view piece) {
          if (text != nullptr) {
            // Keep room for the NUL.
            if (text_capacity == 0 || piece.size() > text_capacity - 1 - used) {
              buffer_full = true;
              return false;
            }
            std::memcpy(text + used, piece.data(), piece.size());
            used += piece.size();
            text[used] = '\0';
          }
          return callback == nullptr || callback(token, piece.data(), piece.size(), user_data) == 0;
        });
    if (text_len != nullptr) *text_len = used;
    if (!r.ok()) return Fail(r.status());
    if (stats != nullptr) {
      stats->prompt_tokens = static_cast<int32_t>(r->prompt_tokens);
      stats->generated_tokens = static_cast<int32_t>(r->tokens.size()) - (buffer_full ? 1 : 0);
      stats->prefill_seconds = r->prefill_seconds;
      stats->decode_seconds = r->decode_seconds;
      switch (r->stop_reason) {
        case flotilla::model::StopReason::kMaxTokens: stats->stop_reason = FLT_STOP_MAX_TOKENS; break;
        case flotilla::model::StopReason::kStopToken: stats->stop_reason = FLT_STOP_TOKEN; break;
        case flotilla::model::StopReason::kCallback: stats->stop_reason = FLT_STOP_CALLBACK; break;
        case flotilla::model::StopReason::kContextFull: stats->stop_reason = FLT_STOP_CONTEXT_FULL; break;
      }
      if (buffer_full) stats->stop_reason = FLT_STOP_BUFFER_FULL;
    }
    if (buffer_full) {
      return Fail(FLT_ERR_BUFFER_TOO_SMALL, "generated text exceeds the buffer of " + std::to_string(text_capacity) +
                                                " bytes; stopped after " + std::to_string(used) + " bytes");
    }
    return FLT_OK;
  });
}

flt_status flt_model_logits(flt_model* model, const int32_t* tokens, size_t n_tokens, float* logits,
                            size_t capacity) {
  return Guard([&]() -> flt_status {
    if (model == nullptr || tokens == nullptr || n_tokens == 0 || (logits == nullptr && capacity > 0)) {
      return Fail(FLT_ERR_INVALID_ARGUMENT, "model and at least one token must be given, and logits when capacity > 0");
    }
    const auto vocab = static_cast<size_t>(model->model->config().vocab_size);
    if (capacity < vocab) {
      return Fail(FLT_ERR_BUFFER_TOO_SMALL,
                  "logits need " + std::to_string(vocab) + " floats, buffer holds " + std::to_string(capacity));
    }
    std::lock_guard<std::mutex> lock(model->mu);
    if (n_tokens > static_cast<size_t>(model->session->n_ctx())) {
      return Fail(FLT_ERR_CONTEXT_FULL, std::to_string(n_tokens) + " tokens exceed the context of " +
                                            std::to_string(model->session->n_ctx()));
    }
    model->session->Reset();
    flotilla::Status s = model->session->Eval(std::span<const int32_t>(tokens, n_tokens));
    if (!s.ok()) return Fail(s);
    const std::span<const float> out = model->session->logits();
    std::memcpy(logits, out.data(), vocab * sizeof(float));
    return FLT_OK;
  });
}

flt_status flt_adapter_load(const flt_model* model, const char* path, flt_adapter** out_adapter) {
  return Guard([&]() -> flt_status {
    if (model == nullptr || path == nullptr || out_adapter == nullptr) {
      return Fail(FLT_ERR_INVALID_ARGUMENT, "model, path and out_adapter must be set");
    }
    *out_adapter = nullptr;
    auto file = flotilla::model::GgufFile::Open(path);
    if (!file.ok()) return Fail(file.status().WithContext(std::string("loading adapter ") + path));
    std::string base_hash;
    if ((*file)->Find("flotilla.adapter.base_sha256") != nullptr) {
      // Hash the model file once per model, on the first adapter that records a base.
      auto h = flotilla::capi::ModelSha256(*model);
      if (!h.ok()) return Fail(h.status());
      base_hash = std::move(*h);
    }
    auto adapter = flotilla::model::ReadAdapter(**file, *model->model, base_hash);
    if (!adapter.ok()) return Fail(adapter.status().WithContext(std::string("loading adapter ") + path));
    auto handle = std::make_unique<flt_adapter>();
    handle->model = model;
    handle->adapter = std::make_shared<const flotilla::model::LoraAdapter>(std::move(*adapter));
    *out_adapter = handle.release();
    return FLT_OK;
  });
}

void flt_adapter_free(flt_adapter* adapter) { delete adapter; }

flt_status flt_model_set_adapter(flt_model* model, const flt_adapter* adapter, float scale) {
  return Guard([&]() -> flt_status {
    if (model == nullptr) return Fail(FLT_ERR_INVALID_ARGUMENT, "model must be set");
    if (adapter != nullptr && adapter->model != model) {
      return Fail(FLT_ERR_INVALID_ARGUMENT, "the adapter was loaded for another model");
    }
    if (!std::isfinite(scale)) return Fail(FLT_ERR_INVALID_ARGUMENT, "adapter scale must be finite");
    std::lock_guard<std::mutex> lock(model->mu);
    model->applier.Clear();
    model->adapter.reset();
    model->session->set_adapter(nullptr);
    if (adapter != nullptr) {
      model->adapter = adapter->adapter;
      model->applier.Add(model->adapter.get(), scale);
      model->session->set_adapter(&model->applier);
    }
    return FLT_OK;
  });
}

flt_status flt_adapter_save(const flt_adapter* adapter, const char* path) {
  return Guard([&]() -> flt_status {
    if (adapter == nullptr || path == nullptr) return Fail(FLT_ERR_INVALID_ARGUMENT, "adapter and path must be set");
    flotilla::Status s = flotilla::model::SaveAdapter(*adapter->adapter, path);
    if (!s.ok()) return Fail(s.WithContext(std::string("saving adapter ") + path));
    return FLT_OK;
  });
}

}  // extern "C"
