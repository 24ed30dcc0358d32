// RoundSpec <-> JSON for the journal. Protobuf parts are stored as hex of their binary
// encoding (exact, and the field numbers are frozen).
#include <nlohmann/json.hpp>

#include "flotilla/coordinator/round_driver.h"

namespace flotilla::rounds {
namespace {

template <typename Msg>
std::string ProtoHex(const Msg& msg) {
  return ToHex(AsBytes(msg.SerializeAsString()));
}

template <typename Msg>
Status ProtoFromHex(const nlohmann::json& j, const char* key, Msg* out) {
  if (!j.contains(key) || !j[key].is_string()) return InvalidArgumentError(std::string("round spec: missing ") + key);
  FLT_ASSIGN_OR_RETURN(Bytes raw, FromHex(j[key].get<std::string>()));
  if (!out->ParseFromArray(raw.data(), static_cast<int>(raw.size())))
    return InvalidArgumentError(std::string("round spec: ") + key + " does not parse");
  return Status::Ok();
}

}  // namespace

std::string RoundSpecToJson(const RoundSpec& s) {
  nlohmann::json j;
  j["round_id"] = s.round_id;
  j["group"] = s.group;
  j["base_model"] = ProtoHex(s.base_model);
  j["training"] = ProtoHex(s.training);
  j["min_eligibility"] = ProtoHex(s.min_eligibility);
  j["dp"] = ProtoHex(s.dp);
  j["min_cohort"] = s.min_cohort;
  j["target_cohort"] = s.target_cohort;
  j["check_in_timeout_ms"] = s.check_in_timeout.count();
  j["training_timeout_ms"] = s.training_timeout.count();
  j["stage_timeout_ms"] = s.stage_timeout.count();
  j["profile"] = static_cast<int>(s.profile);
  j["max_colluding_fraction"] = s.max_colluding_fraction;
  j["max_dropout_rate"] = s.max_dropout_rate;
  j["bit_width"] = s.bit_width;
  j["clip_bound"] = s.clip_bound;
  j["min_survivors"] = s.min_survivors;
  return j.dump();
}

Result<RoundSpec> RoundSpecFromJson(std::string_view text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgumentError("round spec: not a JSON object");
  RoundSpec s;
  try {
    s.round_id = j.at("round_id").get<std::string>();
    s.group = j.at("group").get<std::string>();
    s.min_cohort = j.at("min_cohort").get<uint32_t>();
    s.target_cohort = j.at("target_cohort").get<uint32_t>();
    s.check_in_timeout = std::chrono::milliseconds(j.at("check_in_timeout_ms").get<int64_t>());
    s.training_timeout = std::chrono::milliseconds(j.at("training_timeout_ms").get<int64_t>());
    s.stage_timeout = std::chrono::milliseconds(j.at("stage_timeout_ms").get<int64_t>());
    const int profile = j.at("profile").get<int>();
    if (!v1::SecAggProfile_IsValid(profile)) return InvalidArgumentError("round spec: bad profile");
    s.profile = static_cast<v1::SecAggProfile>(profile);
    s.max_colluding_fraction = j.at("max_colluding_fraction").get<double>();
    s.max_dropout_rate = j.at("max_dropout_rate").get<double>();
    s.bit_width = j.at("bit_width").get<uint32_t>();
    s.clip_bound = j.at("clip_bound").get<double>();
    s.min_survivors = j.at("min_survivors").get<uint32_t>();
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgumentError(std::string("round spec: ") + e.what());
  }
  FLT_RETURN_IF_ERROR(ProtoFromHex(j, "base_model", &s.base_model));
  FLT_RETURN_IF_ERROR(ProtoFromHex(j, "training", &s.training));
  FLT_RETURN_IF_ERROR(ProtoFromHex(j, "min_eligibility", &s.min_eligibility));
  FLT_RETURN_IF_ERROR(ProtoFromHex(j, "dp", &s.dp));
  return s;
}

}  // namespace flotilla::rounds
