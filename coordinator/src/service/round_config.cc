#include "round_config.h"

#include "flotilla/coordinator/lora_targets.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "flotilla/coordinator/lora_targets.h"
#include "flotilla/core/random.h"
#include "flotilla/model/adapter_file.h"
#include "flotilla/model/llama_model.h"
#include "flotilla/model/lora.h"

namespace flotilla::coordinator::internal {
namespace {

using json = nlohmann::json;

Status Bad(std::string_view key, std::string_view what) {
  return InvalidArgumentError("round config: '" + std::string(key) + "' " + std::string(what));
}

constexpr std::string_view kKnownKeys[] = {
    "group",          "min_cohort",       "target_cohort",   "check_in_timeout_seconds", "training_timeout_seconds",
    "stage_timeout_seconds", "profile",   "max_colluding_fraction", "max_dropout_rate",  "bit_width",
    "clip_bound",     "min_survivors",    "lora_rank",       "lora_alpha",               "lora_targets",
    "frozen_a_seed",  "local_steps",      "learning_rate",   "gradient_clip",            "batch_size",
    "max_examples",   "base_model",       "base_model_path", "initial_adapter_length",   "lora_mode",
};

Status CheckKeys(const json& j) {
  for (const auto& [k, v] : j.items()) {
    bool known = false;
    for (std::string_view name : kKnownKeys) known = known || k == name;
    if (!known) return Bad(k, "is not a known round setting (typo?)");
  }
  return Status::Ok();
}

Result<json> ParseObject(std::string_view text, std::string_view what) {
  if (text.empty()) return json::object();
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgumentError("round config: " + std::string(what) + " must be a JSON object");
  return j;
}

Result<int64_t> Int(const json& j, const char* key, int64_t fallback, int64_t min, int64_t max) {
  auto it = j.find(key);
  if (it == j.end()) return fallback;
  if (!it->is_number_integer()) return Bad(key, "must be an integer");
  const int64_t v = it->get<int64_t>();
  if (v < min || v > max) return Bad(key, "must be in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
  return v;
}

Result<double> Num(const json& j, const char* key, double fallback, double min, double max) {
  auto it = j.find(key);
  if (it == j.end()) return fallback;
  if (!it->is_number()) return Bad(key, "must be a number");
  const double v = it->get<double>();
  if (!std::isfinite(v) || v < min || v > max) {
    return Bad(key, "must be in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
  }
  return v;
}

Result<std::string> Str(const json& j, const char* key, std::string fallback) {
  auto it = j.find(key);
  if (it == j.end()) return fallback;
  if (!it->is_string()) return Bad(key, "must be a string");
  return it->get<std::string>();
}

constexpr char kDefaultTargets[] = "q,v";
constexpr int64_t kDefaultRank = 4;
constexpr uint64_t kDefaultFrozenASeed = 1;

// The LoRA part both the spec and the initial-length computation read.
struct LoraSettings {
  int64_t rank = kDefaultRank;
  double alpha = 2.0 * kDefaultRank;
  std::vector<model::Projection> targets;
  uint64_t seed = kDefaultFrozenASeed;
  bool fedit = false;  // lora_mode "fedit": A trained and averaged too
};

Result<LoraSettings> ReadLora(const json& j) {
  LoraSettings s;
  FLT_ASSIGN_OR_RETURN(s.rank, Int(j, "lora_rank", kDefaultRank, 1, 1024));
  FLT_ASSIGN_OR_RETURN(s.alpha, Num(j, "lora_alpha", 2.0 * static_cast<double>(s.rank), 1e-6, 1e6));
  FLT_ASSIGN_OR_RETURN(std::string targets, Str(j, "lora_targets", kDefaultTargets));
  auto parsed = model::ParseProjections(targets);
  if (!parsed.ok()) return Bad("lora_targets", parsed.status().message());
  s.targets = std::move(*parsed);
  FLT_ASSIGN_OR_RETURN(int64_t seed, Int(j, "frozen_a_seed", static_cast<int64_t>(kDefaultFrozenASeed), 0, INT64_MAX));
  s.seed = static_cast<uint64_t>(seed);
  FLT_ASSIGN_OR_RETURN(std::string mode, Str(j, "lora_mode", "frozen_a"));
  if (mode != "frozen_a" && mode != "fedit") return Bad("lora_mode", "must be \"frozen_a\" or \"fedit\"");
  s.fedit = mode == "fedit";
  return s;
}

}  // namespace

Result<RoundDefaults> ResolveRoundDefaults(std::string_view defaults_json) {
  FLT_ASSIGN_OR_RETURN(json j, ParseObject(defaults_json, "round_defaults"));
  FLT_RETURN_IF_ERROR(CheckKeys(j));
  FLT_ASSIGN_OR_RETURN(LoraSettings lora, ReadLora(j));
  RoundDefaults out;
  FLT_ASSIGN_OR_RETURN(int64_t initial, Int(j, "initial_adapter_length", 0, 0, int64_t{1} << 31));
  FLT_ASSIGN_OR_RETURN(std::string path, Str(j, "base_model_path", ""));
  if (!path.empty()) {
    auto sha = model::ModelFileSha256(path);
    if (!sha.ok()) return Bad("base_model_path", sha.status().message());
    if (!j.contains("base_model")) {
      j["base_model"] = json{{"version", std::filesystem::path(path).stem().string()}, {"sha256", *sha}};
    }
    if (initial == 0) {
      // The adapter's trainable values for this model: B of every target (frozen A), or
      // A and B (FedIT). Only the count matters here.
      auto m = model::LlamaModel::Open(path);
      if (!m.ok()) return Bad("base_model_path", m.status().message());
      model::LoraConfig lc;
      lc.rank = lora.rank;
      lc.alpha = static_cast<float>(lora.alpha);
      lc.targets = lora.targets;
      lc.frozen_a = !lora.fedit;
      lc.a_seed = lora.seed;
      auto adapter = model::LoraAdapter::Create((*m)->config(), lc, &OsRandom());
      if (!adapter.ok()) return Bad("lora_targets", adapter.status().message());
      initial = adapter->TrainableCount();
    }
    j.erase("base_model_path");
  }
  j.erase("initial_adapter_length");
  out.initial_adapter_length = static_cast<size_t>(initial);
  out.json = j.dump();
  return out;
}

Result<rounds::RoundSpec> RoundSpecFromConfig(std::string_view config_json, std::string_view defaults_json,
                                              std::string_view round_id) {
  FLT_ASSIGN_OR_RETURN(json j, ParseObject(defaults_json, "round_defaults"));
  FLT_ASSIGN_OR_RETURN(json c, ParseObject(config_json, "config"));
  j.merge_patch(c);
  FLT_RETURN_IF_ERROR(CheckKeys(j));
  if (j.contains("base_model_path") || j.contains("initial_adapter_length")) {
    return Bad(j.contains("base_model_path") ? "base_model_path" : "initial_adapter_length",
               "is read from round_defaults at start only");
  }
  rounds::RoundSpec s;
  s.round_id = std::string(round_id);
  FLT_ASSIGN_OR_RETURN(s.group, Str(j, "group", "default"));
  FLT_ASSIGN_OR_RETURN(int64_t min_cohort, Int(j, "min_cohort", 3, 2, 100000));
  FLT_ASSIGN_OR_RETURN(int64_t target, Int(j, "target_cohort", std::max<int64_t>(10, min_cohort), 2, 100000));
  if (min_cohort > target) return Bad("min_cohort", "must not exceed target_cohort");
  s.min_cohort = static_cast<uint32_t>(min_cohort);
  s.target_cohort = static_cast<uint32_t>(target);
  auto ms = [](double seconds) { return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000.0)); };
  FLT_ASSIGN_OR_RETURN(double check_in, Num(j, "check_in_timeout_seconds", 30, 0.1, 86400));
  FLT_ASSIGN_OR_RETURN(double training, Num(j, "training_timeout_seconds", 120, 0.1, 86400));
  FLT_ASSIGN_OR_RETURN(double stage, Num(j, "stage_timeout_seconds", 30, 0.1, 86400));
  s.check_in_timeout = ms(check_in);
  s.training_timeout = ms(training);
  s.stage_timeout = ms(stage);
  FLT_ASSIGN_OR_RETURN(std::string profile, Str(j, "profile", "hardened"));
  if (profile == "hardened") {
    s.profile = v1::SEC_AGG_PROFILE_HARDENED;
  } else if (profile == "curious") {
    s.profile = v1::SEC_AGG_PROFILE_CURIOUS;
  } else {
    return Bad("profile", "must be \"hardened\" or \"curious\"");
  }
  FLT_ASSIGN_OR_RETURN(s.max_colluding_fraction, Num(j, "max_colluding_fraction", s.max_colluding_fraction, 0, 0.5));
  FLT_ASSIGN_OR_RETURN(s.max_dropout_rate, Num(j, "max_dropout_rate", s.max_dropout_rate, 0, 0.9));
  FLT_ASSIGN_OR_RETURN(int64_t bits, Int(j, "bit_width", s.bit_width, 8, 32));
  s.bit_width = static_cast<uint32_t>(bits);
  FLT_ASSIGN_OR_RETURN(s.clip_bound, Num(j, "clip_bound", s.clip_bound, 1e-9, 1e9));
  FLT_ASSIGN_OR_RETURN(int64_t survivors, Int(j, "min_survivors", 0, 0, 100000));
  s.min_survivors = static_cast<uint32_t>(survivors);

  FLT_ASSIGN_OR_RETURN(LoraSettings lora, ReadLora(j));
  v1::TrainingConfig& t = s.training;
  t.set_mode(lora.fedit ? v1::LORA_MODE_FEDIT : v1::LORA_MODE_FROZEN_A);
  t.set_rank(static_cast<uint32_t>(lora.rank));
  t.set_alpha(static_cast<float>(lora.alpha));
  for (model::Projection p : lora.targets) {
    FLT_ASSIGN_OR_RETURN(v1::LoraTarget lora_target, LoraTargetOf(p));
    t.add_lora_targets(lora_target);
  }
  t.set_frozen_a_seed(lora.seed);
  FLT_ASSIGN_OR_RETURN(int64_t steps, Int(j, "local_steps", 10, 1, 1000000));
  t.set_local_steps(static_cast<uint32_t>(steps));
  FLT_ASSIGN_OR_RETURN(double lr, Num(j, "learning_rate", 1e-3, 1e-12, 10));
  t.set_learning_rate(static_cast<float>(lr));
  FLT_ASSIGN_OR_RETURN(double clip, Num(j, "gradient_clip", 1.0, 0, 1e9));
  t.set_gradient_clip_norm(static_cast<float>(clip));
  FLT_ASSIGN_OR_RETURN(int64_t batch, Int(j, "batch_size", 1, 1, 65536));
  t.set_batch_size(static_cast<uint32_t>(batch));
  FLT_ASSIGN_OR_RETURN(int64_t examples, Int(j, "max_examples", 0, 0, int64_t{1} << 31));
  t.set_max_examples(static_cast<uint32_t>(examples));

  auto base = j.find("base_model");
  if (base == j.end() || !base->is_object()) {
    return Bad("base_model", "is required: {\"version\": ..., \"sha256\": \"<64 hex>\"} (or base_model_path in round_defaults)");
  }
  FLT_ASSIGN_OR_RETURN(std::string version, Str(*base, "version", ""));
  FLT_ASSIGN_OR_RETURN(std::string sha_hex, Str(*base, "sha256", ""));
  auto sha = FromHex(sha_hex);
  if (!sha.ok() || sha->size() != 32) return Bad("base_model.sha256", "must be 64 hex characters");
  s.base_model.set_version(version);
  s.base_model.set_sha256(sha->data(), sha->size());
  return s;
}

}  // namespace flotilla::coordinator::internal
