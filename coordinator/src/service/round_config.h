// The round configuration of the coordinator service (docs/coordinator.md "Rounds"): the
// JSON object in `round_defaults` (config file) and in the `config` of
// POST /api/v1/rounds, turned into the round engine's RoundSpec.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "flotilla/coordinator/round_driver.h"
#include "flotilla/core/status.h"

namespace flotilla::coordinator::internal {

// `round_defaults` after the start-time work: a `base_model_path` (GGUF) is hashed into
// `base_model` {version, sha256}, and the initial adapter length comes from
// `initial_adapter_length` or, without it, from the LoRA B size of that model for the
// configured rank and targets (0 if neither is known: rounds then need a current adapter).
struct RoundDefaults {
  std::string json = "{}";
  size_t initial_adapter_length = 0;
};
// InvalidArgument naming the key (also for unknown keys and unreadable models).
Result<RoundDefaults> ResolveRoundDefaults(std::string_view defaults_json);

// `config` merged over `defaults` (JSON merge patch) -> RoundSpec with `round_id`.
// InvalidArgument naming the offending key; the base model's sha256 is required.
Result<rounds::RoundSpec> RoundSpecFromConfig(std::string_view config_json, std::string_view defaults_json,
                                              std::string_view round_id);

}  // namespace flotilla::coordinator::internal
