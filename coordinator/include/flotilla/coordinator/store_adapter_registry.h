// StoreAdapterRegistry: the round engine's adapter registry (rounds::AdapterRegistry)
// over the coordinator's model registry. A round's adapter becomes a row of
// `adapter_versions` (id "adapter-<round id>", lineage = parent version, round id, sha256,
// size, metrics) whose bytes (raw little-endian float32, protocol/adapter_vector.h) are
// an artifact of the content-addressed ArtifactStore; `registry_current` names the
// version new rounds start from.
//
// URLs are content-addressed: <base_url>/api/v1/artifacts/sha256/<hex>, a route the
// ApiServer serves WITHOUT a token for artifacts that a version names (devices check the
// sha256 from the signed invitation/result anyway), with Range and ETag. Any static HTTP
// server or CDN holding the artifact tree could serve the same paths.
//
// Thread-safe.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "flotilla/coordinator/round_ports.h"
#include "flotilla/coordinator/store.h"

namespace flotilla::coordinator {

// "/api/v1/artifacts/sha256/<hex>": where the ApiServer serves a version's artifact.
std::string ArtifactUrlPath(std::string_view sha256_hex);

struct StoreAdapterRegistryOptions {
  std::string base_url;           // e.g. ApiServer::base_url(); no trailing slash needed
  size_t initial_length = 0;      // > 0: Current() is all zeros ("" version) until the first SetCurrent
  std::string kind = "lora-frozen-a";  // adapter_versions.kind of new versions
  size_t max_adapter_bytes = size_t{1} << 30;
};

class StoreAdapterRegistry final : public rounds::AdapterRegistry {
 public:
  // `store` must outlive the registry.
  static Result<std::unique_ptr<StoreAdapterRegistry>> Open(Store& store, StoreAdapterRegistryOptions options);

  // NotFound when nothing is current and there is no initial length.
  Result<rounds::GlobalAdapter> Current() override;
  // NotFound for unknown versions; DataLoss if the artifact no longer matches its hash.
  Result<rounds::GlobalAdapter> Get(std::string_view version) override;
  // Version "adapter-<round_id>" with `parent_version` as its parent ("" = none); storing
  // the same round again returns the stored version (idempotent, whatever `values`).
  // The version's metrics_json: {"length", "cohort", "survivors", "examples",
  // "duration_ms", "l2_norm_delta"}.
  Result<rounds::GlobalAdapter> Put(std::string_view round_id, std::string_view parent_version,
                                    std::span<const float> values, const rounds::AdapterMetrics& metrics) override;
  Status SetCurrent(std::string_view version) override;

  // The bytes a URL of this registry names (NotFound otherwise): an in-process "HTTP
  // GET" for the simulator's devices.
  Result<Bytes> ReadUrl(std::string_view url);

 private:
  StoreAdapterRegistry(Store& store, StoreAdapterRegistryOptions options) : store_(store), options_(std::move(options)) {}
  Result<rounds::GlobalAdapter> Load(std::string_view version);  // REQUIRES: mu_ held

  Store& store_;
  StoreAdapterRegistryOptions options_;
  std::mutex mu_;
  std::optional<rounds::GlobalAdapter> cached_;  // GUARDED_BY(mu_): the last version loaded
};

}  // namespace flotilla::coordinator
