// `flotilla coordinator run --config FILE`: the JSON configuration (docs/coordinator.md).
//
//   {
//     "data_dir": "/var/lib/flotilla",            required; relative paths are relative
//     "pki_dir": "/etc/flotilla/pki",             to the config file's directory
//     "http": {"listen": "127.0.0.1", "port": 8080, "max_upload_bytes": 67108864,
//              "public_url": "https://coord.example:8080"},
//     "broker": {"uri": "ssl://127.0.0.1:8883",   omit "broker" to run without MQTT
//                "ca_file": "...", "cert_file": "...", "key_file": "..."},
//     "enrolment": {"require_token": false},
//     "round_defaults": {"group": "default", "min_cohort": 2, ...},   docs/coordinator.md "Rounds"
//     "rounds": {"schedule_seconds": 0},          0: rounds on demand only (REST)
//     "ota": {"repository_dir": "...", "keys_dir": "...", "passphrase_env": "...",
//             "repository_url": "...", "timestamp_margin_hours": 6},   omit: no rollouts
//     "metrics_flush_seconds": 10
//   }
//
// Broker TLS files default to <pki_dir>/ca.crt, coordinator.crt, coordinator.key.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "flotilla/coordinator/enrolment.h"
#include "flotilla/core/status.h"

namespace flotilla::coordinator {

struct BrokerConfig {
  std::string uri;  // tcp://host:port or ssl://host:port
  std::filesystem::path ca_file, cert_file, key_file;
};

// Rollouts in the service (docs/ota.md): the OTA repository the RolloutManager signs
// director assignments into, and its keys (`flotilla keys init`).
struct OtaServiceConfig {
  std::filesystem::path repository_dir;
  std::filesystem::path keys_dir;
  std::string passphrase_env;        // environment variable with the offline keys' passphrase
  std::string repository_url;        // default repository URL for rollouts' MQTT hints
  double timestamp_margin_hours = 6; // re-sign the timestamp when it expires this soon
};

struct CoordinatorConfig {
  std::filesystem::path data_dir;
  std::filesystem::path pki_dir;
  std::string http_listen = "127.0.0.1";
  int http_port = 8080;  // 0: any free port (tests)
  uint64_t max_upload_bytes = uint64_t{64} << 20;
  std::string public_url;
  std::optional<BrokerConfig> broker;
  EnrolmentPolicy enrolment;
  std::string round_defaults_json = "{}";  // base_model_path made absolute
  int round_schedule_seconds = 0;          // start a round this often when idle (0: on demand)
  std::optional<OtaServiceConfig> ota;
  int metrics_flush_seconds = 10;
  // SQLite page cache of coordinator.db, KiB. Bounded either way; 1 MiB keeps a busy
  // coordinator's memory flat across fleet sizes (design note 22).
  int store_cache_kib = 1024;
};

// Parses and validates; InvalidArgument naming the offending key. `base_dir` resolves
// relative paths.
Result<CoordinatorConfig> ParseCoordinatorConfig(std::string_view json_text, const std::filesystem::path& base_dir);
Result<CoordinatorConfig> LoadCoordinatorConfig(const std::filesystem::path& file);

}  // namespace flotilla::coordinator
