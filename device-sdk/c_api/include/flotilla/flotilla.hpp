// C++ conveniences over the C API (flotilla.h): handles owned by std::unique_ptr, as
// ggml-cpp.h does for ggml. Header-only; the C API stays the stable boundary.
#pragma once

#include <memory>

#include "flotilla/flotilla.h"

namespace flt {

struct ModelDeleter {
  void operator()(flt_model* m) const noexcept { flt_model_free(m); }
};
using ModelPtr = std::unique_ptr<flt_model, ModelDeleter>;

// Loads a model; on failure returns null and sets *status (if given).
inline ModelPtr LoadModel(const char* path, const flt_model_params* params = nullptr, flt_status* status = nullptr) {
  flt_model* m = nullptr;
  const flt_status s = flt_model_load(path, params, &m);
  if (status != nullptr) *status = s;
  return ModelPtr(s == FLT_OK ? m : nullptr);
}

struct AdapterDeleter {
  void operator()(flt_adapter* a) const noexcept { flt_adapter_free(a); }
};
using AdapterPtr = std::unique_ptr<flt_adapter, AdapterDeleter>;

// Loads a LoRA adapter for `model`; on failure returns null and sets *status (if given).
inline AdapterPtr LoadAdapter(const flt_model* model, const char* path, flt_status* status = nullptr) {
  flt_adapter* a = nullptr;
  const flt_status s = flt_adapter_load(model, path, &a);
  if (status != nullptr) *status = s;
  return AdapterPtr(s == FLT_OK ? a : nullptr);
}

}  // namespace flt
