#include "rollout_json.h"

#include <charconv>

namespace flotilla::coordinator::internal {
namespace {

using nlohmann::json;

template <typename T>
Status Field(const json& j, const char* key, T* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return Status::Ok();  // optional: keep the default
  try {
    *out = it->get<T>();
  } catch (const json::exception& e) {
    return InvalidArgumentError(std::string("rollout spec: field '") + key + "': " + e.what());
  }
  return Status::Ok();
}

}  // namespace

json SpecToJson(const RolloutSpec& spec) {
  json phases = json::array();
  for (const auto& p : spec.phases) {
    phases.push_back({{"name", p.name},
                      {"canary", p.canary},
                      {"percent", p.percent},
                      {"success_percent", p.success_percent},
                      {"max_failures", p.max_failures},
                      {"max_failure_percent", p.max_failure_percent},
                      {"min_finished", p.min_finished},
                      {"pause_after", p.pause_after}});
  }
  return {{"name", spec.name},
          {"targets", spec.targets},
          {"canary_devices", spec.canary_devices},
          {"phases", phases},
          {"max_assignments_per_minute", spec.max_assignments_per_minute},
          {"repository_url", spec.repository_url}};
}

Result<RolloutSpec> SpecFromJson(const json& j) {
  if (!j.is_object()) return InvalidArgumentError("rollout spec: expected a JSON object");
  RolloutSpec spec;
  FLT_RETURN_IF_ERROR(Field(j, "name", &spec.name));
  FLT_RETURN_IF_ERROR(Field(j, "targets", &spec.targets));
  FLT_RETURN_IF_ERROR(Field(j, "canary_devices", &spec.canary_devices));
  FLT_RETURN_IF_ERROR(Field(j, "max_assignments_per_minute", &spec.max_assignments_per_minute));
  FLT_RETURN_IF_ERROR(Field(j, "repository_url", &spec.repository_url));
  auto it = j.find("phases");
  if (it != j.end()) {
    if (!it->is_array() || it->size() > 64)
      return InvalidArgumentError("rollout spec: 'phases' must be an array of <= 64");
    for (const auto& pj : *it) {
      if (!pj.is_object()) return InvalidArgumentError("rollout spec: every phase must be an object");
      PhaseSpec p;
      FLT_RETURN_IF_ERROR(Field(pj, "name", &p.name));
      FLT_RETURN_IF_ERROR(Field(pj, "canary", &p.canary));
      FLT_RETURN_IF_ERROR(Field(pj, "percent", &p.percent));
      FLT_RETURN_IF_ERROR(Field(pj, "success_percent", &p.success_percent));
      FLT_RETURN_IF_ERROR(Field(pj, "max_failures", &p.max_failures));
      FLT_RETURN_IF_ERROR(Field(pj, "max_failure_percent", &p.max_failure_percent));
      FLT_RETURN_IF_ERROR(Field(pj, "min_finished", &p.min_finished));
      FLT_RETURN_IF_ERROR(Field(pj, "pause_after", &p.pause_after));
      spec.phases.push_back(std::move(p));
    }
  }
  return spec;
}

Result<RolloutSpec> SpecFromJsonText(std::string_view text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return InvalidArgumentError("rollout spec: not valid JSON");
  return SpecFromJson(j);
}

json SummaryToJson(const RolloutSummary& s) {
  const RolloutCounts& c = s.counts;
  return {{"id", s.id},
          {"name", s.name},
          {"deployment_id", s.deployment_id},
          {"state", std::string(ToString(s.state))},
          {"phase", s.phase},
          {"phase_name", s.phase < s.spec.phases.size() ? s.spec.phases[s.phase].name : ""},
          {"phase_quota", s.phase_quota},
          {"reason", s.reason},
          {"spec", SpecToJson(s.spec)},
          {"counts",
           {{"eligible", c.eligible},
            {"assigned", c.assigned},
            {"succeeded", c.succeeded},
            {"failed", c.failed},
            {"in_progress", c.in_progress},
            {"retracted", c.retracted},
            {"reverting", c.reverting},
            {"reverted", c.reverted}}},
          {"created_ms", s.created_ms},
          {"updated_ms", s.updated_ms}};
}

json DeviceRowToJson(const DeviceStatusRow& r) {
  return {{"device_id", r.device_id},
          {"status", std::string(ToString(r.status))},
          {"canary", r.canary},
          {"phase", r.phase},
          {"assigned_ms", r.assigned_ms},
          {"reported_ms", r.reported_ms},
          {"error", r.error}};
}

Result<int64_t> ParseRolloutId(std::string_view text) {
  int64_t id = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
  if (ec != std::errc() || p != text.data() + text.size() || id <= 0) {
    return InvalidArgumentError("bad rollout id '" + std::string(text.substr(0, 32)) + "'");
  }
  return id;
}

std::string ReasonFromBody(std::string_view body, std::string fallback) {
  if (body.empty()) return fallback;
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_object()) {
    auto it = j.find("reason");
    if (it != j.end() && it->is_string()) return it->get<std::string>().substr(0, 512);
  }
  return fallback;
}

}  // namespace flotilla::coordinator::internal

namespace flotilla::coordinator {

Result<RolloutSpec> RolloutSpecFromJson(std::string_view json) { return internal::SpecFromJsonText(json); }
std::string RolloutSpecToJson(const RolloutSpec& spec) { return internal::SpecToJson(spec).dump(); }
std::string RolloutSummaryToJson(const RolloutSummary& summary, int indent) {
  return internal::SummaryToJson(summary).dump(indent);
}

}  // namespace flotilla::coordinator
