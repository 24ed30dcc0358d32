// JSON forms of rollout specs, summaries and device rows: the SQLite spec column, the
// REST API and `flotilla ota rollout show --json` use the same shapes (docs/ota.md).
#pragma once

#include <nlohmann/json.hpp>

#include "flotilla/coordinator/rollout.h"

namespace flotilla::coordinator::internal {

nlohmann::json SpecToJson(const RolloutSpec& spec);
// Untrusted input (REST bodies, the database): InvalidArgument naming the bad field.
Result<RolloutSpec> SpecFromJson(const nlohmann::json& j);
Result<RolloutSpec> SpecFromJsonText(std::string_view text);
nlohmann::json SummaryToJson(const RolloutSummary& s);
nlohmann::json DeviceRowToJson(const DeviceStatusRow& r);

}  // namespace flotilla::coordinator::internal
