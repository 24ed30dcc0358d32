// Internals of the C API parts built on flotilla_device (samples, fine-tuning, agent).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "flotilla/device/sample_store.h"
#include "flotilla/flotilla.h"

struct flt_samples {
  std::unique_ptr<flotilla::device::SampleStore> store;
};

namespace flotilla::capi {

// flt_samples_params -> SampleStoreOptions (NULL = defaults).
device::SampleStoreOptions ToSampleStoreOptions(const flt_samples_params* params);

// The body of flt_samples_add / flt_agent_add_sample: argument checks, 0 = now, and
// OutOfRange (already too old) reported as an invalid argument. REQUIRES: inside Guard.
flt_status AddSample(device::SampleStore& store, const char* text, size_t text_len, const char* label,
                     int64_t timestamp_ms, int64_t* out_id);

}  // namespace flotilla::capi
