// The C API in an engine-only build (FLOTILLA_ENGINE_ONLY: no SQLite, MQTT or mbedTLS):
// samples, fine-tuning and the agent exist so programs link, and say why they cannot run.
#include <cstring>

#include "c_api_internal.h"
#include "flotilla/flotilla.h"

struct flt_samples {};
struct flt_agent {};

namespace {
flt_status Unsupported(const char* what) {
  return flotilla::capi::Fail(FLT_ERR_UNSUPPORTED,
                              std::string(what) + " is not in this build (FLOTILLA_ENGINE_ONLY: no sample store, "
                                                  "MQTT or mbedTLS)");
}
}  // namespace

extern "C" {

flt_samples_params flt_samples_default_params(void) {
  flt_samples_params p;
  p.max_total_bytes = 64ll << 20;
  p.max_age_ms = 0;
  p.max_text_bytes = 16 << 10;
  p.max_label_bytes = 128;
  p.held_out_fraction = 0.1;
  p.durable_appends = 0;
  return p;
}
flt_status flt_samples_open(const char*, const flt_samples_params*, flt_samples** out) {
  if (out != nullptr) *out = nullptr;
  return Unsupported("flt_samples_open");
}
void flt_samples_close(flt_samples*) {}
flt_status flt_samples_add(flt_samples*, const char*, size_t, const char*, int64_t, int64_t*) {
  return Unsupported("flt_samples_add");
}
flt_status flt_samples_count(flt_samples*, int64_t*, int64_t*) { return Unsupported("flt_samples_count"); }
flt_status flt_samples_get_stats(flt_samples*, flt_samples_stats*) { return Unsupported("flt_samples_get_stats"); }
flt_status flt_samples_clear(flt_samples*, int64_t*) { return Unsupported("flt_samples_clear"); }

flt_finetune_params flt_finetune_default_params(void) {
  flt_finetune_params p;
  std::memset(&p, 0, sizeof p);
  return p;
}
flt_status flt_finetune(const flt_model*, flt_samples*, const flt_finetune_params*, flt_progress_callback, void*,
                        flt_adapter** out, flt_finetune_stats*) {
  if (out != nullptr) *out = nullptr;
  return Unsupported("flt_finetune");
}

flt_agent_params flt_agent_default_params(void) {
  flt_agent_params p;
  std::memset(&p, 0, sizeof p);
  return p;
}
flt_status flt_agent_create(const flt_agent_params*, flt_agent** out) {
  if (out != nullptr) *out = nullptr;
  return Unsupported("flt_agent_create");
}
void flt_agent_free(flt_agent*) {}
flt_status flt_agent_add_sample(flt_agent*, const char*, size_t, const char*, int64_t) {
  return Unsupported("flt_agent_add_sample");
}
flt_status flt_agent_start(flt_agent*) { return Unsupported("flt_agent_start"); }
flt_status flt_agent_stop(flt_agent*) { return Unsupported("flt_agent_stop"); }
flt_status flt_agent_poll(flt_agent*, int32_t, int32_t*) { return Unsupported("flt_agent_poll"); }
flt_status flt_agent_status_get(const flt_agent*, flt_agent_status*) { return Unsupported("flt_agent_status_get"); }
flt_status flt_agent_last_round(const flt_agent*, flt_round_info*) { return Unsupported("flt_agent_last_round"); }

}  // extern "C"
