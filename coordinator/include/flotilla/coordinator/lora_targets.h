// The wire name (v1::LoraTarget) of an engine projection, for everything that turns a
// configured target list ("q,v", "attn", ...) into a round's TrainingConfig: the
// coordinator service's round config and the simulator. (Devices map back with
// device/engine_trainer.h.)
#pragma once

#include "flotilla/core/status.h"
#include "flotilla/model/inference.h"
#include "flotilla/v1/round.pb.h"

namespace flotilla::coordinator {

// InvalidArgument for a value outside the enum.
Result<v1::LoraTarget> LoraTargetOf(model::Projection p);

}  // namespace flotilla::coordinator
