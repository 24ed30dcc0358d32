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

// The REST routes' small parsers of untrusted text. A positive decimal id (path segment
// or ?limit=), else InvalidArgument quoting at most 32 bytes of it.
Result<int64_t> ParseRolloutId(std::string_view text);
// The optional {"reason": "..."} body of a command (cut to 512 bytes); `fallback` when
// the body is empty, not JSON, or has no string "reason".
std::string ReasonFromBody(std::string_view body, std::string fallback);

}  // namespace flotilla::coordinator::internal
