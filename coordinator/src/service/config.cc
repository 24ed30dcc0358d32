#include "flotilla/coordinator/config.h"

#include <nlohmann/json.hpp>

#include "flotilla/core/file.h"

namespace flotilla::coordinator {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

Status Bad(std::string_view key, std::string_view what) {
  return InvalidArgumentError("config: '" + std::string(key) + "' " + std::string(what));
}

Result<std::string> GetString(const json& obj, const char* key, std::string_view path, std::string fallback) {
  auto it = obj.find(key);
  if (it == obj.end()) return fallback;
  if (!it->is_string()) return Bad(std::string(path) + key, "must be a string");
  return it->get<std::string>();
}

Result<int64_t> GetInt(const json& obj, const char* key, std::string_view path, int64_t fallback, int64_t min,
                       int64_t max) {
  auto it = obj.find(key);
  if (it == obj.end()) return fallback;
  if (!it->is_number_integer()) return Bad(std::string(path) + key, "must be an integer");
  const int64_t v = it->get<int64_t>();
  if (v < min || v > max) {
    return Bad(std::string(path) + key, "must be in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
  }
  return v;
}

fs::path Resolve(const fs::path& base, const std::string& p) {
  if (p.empty()) return {};
  fs::path path(p);
  return path.is_absolute() ? path : base / path;
}

Result<const json*> GetObject(const json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end()) return static_cast<const json*>(nullptr);
  if (!it->is_object()) return Bad(key, "must be an object");
  return &*it;
}

}  // namespace

Result<CoordinatorConfig> ParseCoordinatorConfig(std::string_view text, const fs::path& base_dir) {
  json root = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return InvalidArgumentError("config: not valid JSON");
  if (!root.is_object()) return InvalidArgumentError("config: must be a JSON object");
  static const char* kKnown[] = {"data_dir", "pki_dir", "http",   "broker", "enrolment", "round_defaults",
                                 "rounds",   "ota",     "metrics_flush_seconds", "store_cache_kib"};
  for (const auto& [k, v] : root.items()) {
    bool known = false;
    for (const char* name : kKnown) known = known || k == name;
    if (!known) return Bad(k, "is not a known key (typo?)");
  }
  CoordinatorConfig c;
  FLT_ASSIGN_OR_RETURN(std::string data_dir, GetString(root, "data_dir", "", ""));
  if (data_dir.empty()) return Bad("data_dir", "is required");
  c.data_dir = Resolve(base_dir, data_dir);
  FLT_ASSIGN_OR_RETURN(int64_t cache_kib, GetInt(root, "store_cache_kib", "", c.store_cache_kib, 64, 1 << 20));
  c.store_cache_kib = static_cast<int>(cache_kib);
  FLT_ASSIGN_OR_RETURN(std::string pki_dir, GetString(root, "pki_dir", "", ""));
  c.pki_dir = Resolve(base_dir, pki_dir);

  FLT_ASSIGN_OR_RETURN(const json* http, GetObject(root, "http"));
  if (http != nullptr) {
    FLT_ASSIGN_OR_RETURN(c.http_listen, GetString(*http, "listen", "http.", c.http_listen));
    FLT_ASSIGN_OR_RETURN(int64_t port, GetInt(*http, "port", "http.", c.http_port, 0, 65535));
    c.http_port = static_cast<int>(port);
    FLT_ASSIGN_OR_RETURN(int64_t max_upload, GetInt(*http, "max_upload_bytes", "http.",
                                                     static_cast<int64_t>(c.max_upload_bytes), 1024, int64_t{1} << 34));
    c.max_upload_bytes = static_cast<uint64_t>(max_upload);
    FLT_ASSIGN_OR_RETURN(c.public_url, GetString(*http, "public_url", "http.", ""));
  }

  FLT_ASSIGN_OR_RETURN(const json* broker, GetObject(root, "broker"));
  if (broker != nullptr) {
    BrokerConfig b;
    FLT_ASSIGN_OR_RETURN(b.uri, GetString(*broker, "uri", "broker.", ""));
    if (b.uri.rfind("tcp://", 0) != 0 && b.uri.rfind("ssl://", 0) != 0) {
      return Bad("broker.uri", "must start with tcp:// or ssl://");
    }
    FLT_ASSIGN_OR_RETURN(std::string ca, GetString(*broker, "ca_file", "broker.", ""));
    FLT_ASSIGN_OR_RETURN(std::string cert, GetString(*broker, "cert_file", "broker.", ""));
    FLT_ASSIGN_OR_RETURN(std::string key, GetString(*broker, "key_file", "broker.", ""));
    b.ca_file = ca.empty() && !c.pki_dir.empty() ? c.pki_dir / "ca.crt" : Resolve(base_dir, ca);
    b.cert_file = cert.empty() && !c.pki_dir.empty() ? c.pki_dir / "coordinator.crt" : Resolve(base_dir, cert);
    b.key_file = key.empty() && !c.pki_dir.empty() ? c.pki_dir / "coordinator.key" : Resolve(base_dir, key);
    if (b.uri.rfind("ssl://", 0) == 0 && (b.ca_file.empty() || b.cert_file.empty() || b.key_file.empty())) {
      return Bad("broker", "needs ca_file, cert_file and key_file (or pki_dir) for ssl://");
    }
    c.broker = std::move(b);
  }

  FLT_ASSIGN_OR_RETURN(const json* enrolment, GetObject(root, "enrolment"));
  if (enrolment != nullptr) {
    auto it = enrolment->find("require_token");
    if (it != enrolment->end()) {
      if (!it->is_boolean()) return Bad("enrolment.require_token", "must be true or false");
      c.enrolment.require_token = it->get<bool>();
    }
  }
  FLT_ASSIGN_OR_RETURN(const json* defaults, GetObject(root, "round_defaults"));
  if (defaults != nullptr) {
    json d = *defaults;
    if (auto it = d.find("base_model_path"); it != d.end()) {
      if (!it->is_string()) return Bad("round_defaults.base_model_path", "must be a string");
      *it = Resolve(base_dir, it->get<std::string>()).string();
    }
    c.round_defaults_json = d.dump();
  }
  FLT_ASSIGN_OR_RETURN(const json* rounds, GetObject(root, "rounds"));
  if (rounds != nullptr) {
    for (const auto& [k, v] : rounds->items()) {
      if (k != "schedule_seconds") return Bad("rounds." + k, "is not a known key (typo?)");
    }
    FLT_ASSIGN_OR_RETURN(int64_t every, GetInt(*rounds, "schedule_seconds", "rounds.", 0, 0, 86400 * 365));
    c.round_schedule_seconds = static_cast<int>(every);
  }
  FLT_ASSIGN_OR_RETURN(const json* ota, GetObject(root, "ota"));
  if (ota != nullptr) {
    for (const auto& [k, v] : ota->items()) {
      if (k != "repository_dir" && k != "keys_dir" && k != "passphrase_env" && k != "repository_url" &&
          k != "timestamp_margin_hours") {
        return Bad("ota." + k, "is not a known key (typo?)");
      }
    }
    OtaServiceConfig o;
    FLT_ASSIGN_OR_RETURN(std::string repo, GetString(*ota, "repository_dir", "ota.", ""));
    FLT_ASSIGN_OR_RETURN(std::string keys, GetString(*ota, "keys_dir", "ota.", ""));
    if (repo.empty() || keys.empty()) return Bad("ota", "needs repository_dir and keys_dir");
    o.repository_dir = Resolve(base_dir, repo);
    o.keys_dir = Resolve(base_dir, keys);
    FLT_ASSIGN_OR_RETURN(o.passphrase_env, GetString(*ota, "passphrase_env", "ota.", ""));
    FLT_ASSIGN_OR_RETURN(o.repository_url, GetString(*ota, "repository_url", "ota.", ""));
    if (auto it = ota->find("timestamp_margin_hours"); it != ota->end()) {
      if (!it->is_number() || it->get<double>() <= 0 || it->get<double>() > 24 * 365) {
        return Bad("ota.timestamp_margin_hours", "must be a number of hours in (0, 8760]");
      }
      o.timestamp_margin_hours = it->get<double>();
    }
    c.ota = std::move(o);
  }
  FLT_ASSIGN_OR_RETURN(int64_t flush, GetInt(root, "metrics_flush_seconds", "", c.metrics_flush_seconds, 1, 3600));
  c.metrics_flush_seconds = static_cast<int>(flush);
  return c;
}

Result<CoordinatorConfig> LoadCoordinatorConfig(const fs::path& file) {
  FLT_ASSIGN_OR_RETURN(std::string text, ReadFileString(file, 1 << 20));
  auto c = ParseCoordinatorConfig(text, file.parent_path().empty() ? fs::path(".") : file.parent_path());
  if (!c.ok()) return c.status().WithContext("reading " + file.string());
  return c;
}

}  // namespace flotilla::coordinator
