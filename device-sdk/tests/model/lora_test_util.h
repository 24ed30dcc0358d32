// Test support shared by the LoRA, adapter-file and training tests.
#pragma once

#include <cstdint>

#include "flotilla/model/lora.h"
#include "flotilla/model/model_file.h"

namespace flotilla::model::testing {

// Fills every B of `adapter` with seeded values in [-amp, amp) (B = 0, the initial
// state, would hide mistakes in the B·A products).
inline void FillRandomB(LoraAdapter& adapter, uint64_t seed, float amp) {
  SplitMix64 rng(seed);
  for (LoraMatrix& m : adapter.matrices()) {
    for (float& v : m.b) v = amp * rng.NextSymmetric();
  }
}

}  // namespace flotilla::model::testing
