// Internals shared by the C API's translation units: the handle structs and the
// error plumbing (Status -> flt_status, per-thread last error, exception guard).
#pragma once

#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <string>

#include "flotilla/core/status.h"
#include "flotilla/flotilla.h"
#include "flotilla/model/inference.h"
#include "flotilla/model/llama_model.h"
#include "flotilla/model/lora.h"

struct flt_model {
  std::unique_ptr<flotilla::model::LlamaModel> model;
  std::mutex mu;
  std::unique_ptr<flotilla::model::InferenceSession> session;  // GUARDED_BY(mu)
  std::string path;  // the model file, for the base hash adapters are checked against
  // The adapter generation applies (shared with its flt_adapter handle, which may be
  // freed first) and the hook installed in `session` while one is set.
  std::shared_ptr<const flotilla::model::LoraAdapter> adapter;  // GUARDED_BY(mu)
  flotilla::model::LoraApplier applier;                         // GUARDED_BY(mu)
  // SHA-256 of the model file, computed on first need (flt_adapter_load takes a const
  // model: the cache does not change what the model is).
  mutable std::once_flag hash_once;
  mutable flotilla::Status hash_status;  // written once under hash_once
  mutable std::string sha256;            // written once under hash_once
};

struct flt_adapter {
  const flt_model* model;  // the model it was validated against
  std::shared_ptr<const flotilla::model::LoraAdapter> adapter;
};

namespace flotilla::capi {

// The detail behind the last failed call on this thread (flt_last_error).
std::string& LastError();

flt_status Code(const Status& s);

inline flt_status Fail(flt_status code, std::string message) {
  LastError() = std::move(message);
  return code;
}
inline flt_status Fail(const Status& s) { return Fail(Code(s), s.ToString()); }

// Runs `f` (returning flt_status) with exceptions turned into error codes: nothing
// throws across the C boundary.
template <typename F>
flt_status Guard(F&& f) noexcept {
  try {
    LastError().clear();
    return f();
  } catch (const std::bad_alloc&) {
    return Fail(FLT_ERR_RESOURCE_EXHAUSTED, "out of memory");
  } catch (const std::exception& e) {
    return Fail(FLT_ERR_INTERNAL, e.what());
  } catch (...) {
    return Fail(FLT_ERR_INTERNAL, "unknown exception");
  }
}

// Hex SHA-256 of the model file, computed once per model (thread-safe).
Result<std::string> ModelSha256(const flt_model& model);

// Copies `s` into a fixed-size C array, truncated, always NUL-terminated.
template <size_t N>
void CopyString(char (&dst)[N], std::string_view s) {
  const size_t n = s.size() < N - 1 ? s.size() : N - 1;
  s.copy(dst, n);
  dst[n] = '\0';
}

}  // namespace flotilla::capi
