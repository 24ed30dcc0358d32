#include "flotilla/coordinator/store_adapter_registry.h"

#include <nlohmann/json.hpp>

#include "flotilla/protocol/adapter_vector.h"
#include "flotilla/protocol/topics.h"

namespace flotilla::coordinator {
namespace {

constexpr std::string_view kArtifactPathPrefix = "/api/v1/artifacts/sha256/";
constexpr std::string_view kActor = "engine";

}  // namespace

std::string ArtifactUrlPath(std::string_view sha256_hex) { return std::string(kArtifactPathPrefix) + std::string(sha256_hex); }

Result<std::unique_ptr<StoreAdapterRegistry>> StoreAdapterRegistry::Open(Store& store,
                                                                         StoreAdapterRegistryOptions options) {
  while (!options.base_url.empty() && options.base_url.back() == '/') options.base_url.pop_back();
  if (options.kind.empty()) return InvalidArgumentError("adapter registry: empty version kind");
  return std::unique_ptr<StoreAdapterRegistry>(new StoreAdapterRegistry(store, std::move(options)));
}

Result<rounds::GlobalAdapter> StoreAdapterRegistry::Load(std::string_view version) {
  if (cached_ && cached_->version == version) return *cached_;
  FLT_ASSIGN_OR_RETURN(VersionRecord v, store_.GetVersion(VersionKind::kAdapter, version));
  FLT_ASSIGN_OR_RETURN(Bytes bytes, store_.artifacts().Read(v.sha256, options_.max_adapter_bytes));
  rounds::GlobalAdapter a;
  a.version = v.id;
  FLT_ASSIGN_OR_RETURN(a.sha256, FromHex(v.sha256));
  FLT_ASSIGN_OR_RETURN(a.values, protocol::DecodeAdapterVector(bytes));
  a.url = options_.base_url + ArtifactUrlPath(v.sha256);
  cached_ = a;
  return a;
}

Result<rounds::GlobalAdapter> StoreAdapterRegistry::Current() {
  FLT_ASSIGN_OR_RETURN(std::string current, store_.CurrentVersion(VersionKind::kAdapter));
  std::lock_guard<std::mutex> lock(mu_);
  if (current.empty()) {
    if (options_.initial_length == 0) return NotFoundError("adapter registry has no current adapter");
    rounds::GlobalAdapter initial;
    initial.values.assign(options_.initial_length, 0.0f);
    return initial;
  }
  return Load(current);
}

Result<rounds::GlobalAdapter> StoreAdapterRegistry::Get(std::string_view version) {
  std::lock_guard<std::mutex> lock(mu_);
  return Load(version);
}

Result<rounds::GlobalAdapter> StoreAdapterRegistry::Put(std::string_view round_id, std::string_view parent_version,
                                                        std::span<const float> values,
                                                        const rounds::AdapterMetrics& metrics) {
  const std::string version = "adapter-" + std::string(round_id);
  FLT_RETURN_IF_ERROR(protocol::ValidateName("adapter version", version));
  std::lock_guard<std::mutex> lock(mu_);
  if (store_.GetVersion(VersionKind::kAdapter, version).ok()) return Load(version);  // a retry after a crash
  FLT_ASSIGN_OR_RETURN(ArtifactInfo art, store_.PutArtifact(protocol::EncodeAdapterVector(values),
                                                            "application/x-flotilla-adapter-f32"));
  VersionRecord v;
  v.id = version;
  v.kind = options_.kind;
  v.parent_id = std::string(parent_version);
  v.round_id = std::string(round_id);
  v.sha256 = art.sha256;
  v.size = art.size;
  v.metrics_json = nlohmann::json{{"length", values.size()},
                                  {"cohort", metrics.cohort},
                                  {"survivors", metrics.survivors},
                                  {"examples", metrics.examples},
                                  {"duration_ms", metrics.duration_ms},
                                  {"l2_norm_delta", metrics.l2_norm_delta}}
                       .dump();
  FLT_RETURN_IF_ERROR(store_.AddVersion(VersionKind::kAdapter, v, kActor));
  return Load(version);
}

Status StoreAdapterRegistry::SetCurrent(std::string_view version) {
  return store_.SetCurrentVersion(VersionKind::kAdapter, version, kActor);
}

Result<Bytes> StoreAdapterRegistry::ReadUrl(std::string_view url) {
  const std::string prefix = options_.base_url + std::string(kArtifactPathPrefix);
  if (url.substr(0, prefix.size()) != prefix) {
    return NotFoundError("not an artifact url of this registry: " + std::string(url));
  }
  const std::string_view sha = url.substr(prefix.size());
  FLT_RETURN_IF_ERROR(ValidateSha256Hex(sha));
  FLT_ASSIGN_OR_RETURN(bool published, store_.IsVersionArtifact(sha));
  if (!published) return NotFoundError("no version names artifact " + std::string(sha));
  return store_.artifacts().Read(sha, options_.max_adapter_bytes);
}

}  // namespace flotilla::coordinator
