#include "flotilla/coordinator/lora_targets.h"

namespace flotilla::coordinator {

Result<v1::LoraTarget> LoraTargetOf(model::Projection p) {
  switch (p) {
    case model::Projection::kQ: return v1::LORA_TARGET_Q;
    case model::Projection::kK: return v1::LORA_TARGET_K;
    case model::Projection::kV: return v1::LORA_TARGET_V;
    case model::Projection::kO: return v1::LORA_TARGET_O;
    case model::Projection::kGate: return v1::LORA_TARGET_GATE;
    case model::Projection::kUp: return v1::LORA_TARGET_UP;
    case model::Projection::kDown: return v1::LORA_TARGET_DOWN;
  }
  return InvalidArgumentError("unknown projection");
}

}  // namespace flotilla::coordinator
