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

struct AdapterDeleter {
  void operator()(flt_adapter* a) const noexcept { flt_adapter_free(a); }
};
using AdapterPtr = std::unique_ptr<flt_adapter, AdapterDeleter>;

struct SamplesDeleter {
  void operator()(flt_samples* s) const noexcept { flt_samples_close(s); }
};
using SamplesPtr = std::unique_ptr<flt_samples, SamplesDeleter>;

struct AgentDeleter {
  void operator()(flt_agent* a) const noexcept { flt_agent_free(a); }
};
using AgentPtr = std::unique_ptr<flt_agent, AgentDeleter>;

// Runs a C constructor `create(Handle**)`; returns the owned handle, or null with
// *status (if given) set to the failure.
template <typename Ptr, typename Create>
Ptr Own(Create&& create, flt_status* status) {
  typename Ptr::pointer h = nullptr;
  const flt_status s = create(&h);
  if (status != nullptr) *status = s;
  return Ptr(s == FLT_OK ? h : nullptr);
}

// Each returns null on failure and sets *status (if given); flt_last_error() has the detail.
inline ModelPtr LoadModel(const char* path, const flt_model_params* params = nullptr, flt_status* status = nullptr) {
  return Own<ModelPtr>([&](flt_model** out) { return flt_model_load(path, params, out); }, status);
}
inline AdapterPtr LoadAdapter(const flt_model* model, const char* path, flt_status* status = nullptr) {
  return Own<AdapterPtr>([&](flt_adapter** out) { return flt_adapter_load(model, path, out); }, status);
}
inline SamplesPtr OpenSamples(const char* path, const flt_samples_params* params = nullptr,
                              flt_status* status = nullptr) {
  return Own<SamplesPtr>([&](flt_samples** out) { return flt_samples_open(path, params, out); }, status);
}
inline AgentPtr CreateAgent(const flt_agent_params& params, flt_status* status = nullptr) {
  return Own<AgentPtr>([&](flt_agent** out) { return flt_agent_create(&params, out); }, status);
}

}  // namespace flt
