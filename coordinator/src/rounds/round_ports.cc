#include "flotilla/coordinator/round_ports.h"

#include "flotilla/core/file.h"
#include "flotilla/protocol/adapter_vector.h"
#include "flotilla/protocol/topics.h"
#include "flotilla/security/hash.h"

namespace flotilla::rounds {
namespace {

std::string UploadKey(std::string_view round_id, std::string_view device_id) {
  return std::string(round_id) + "/" + std::string(device_id);
}

// Deterministic per (round, device) so a re-sent invitation carries the same token.
std::string UploadTokenFor(std::string_view round_id, std::string_view device_id) {
  const std::string key = UploadKey(round_id, device_id);
  const security::Sha256Digest d = security::Sha256(AsBytes(key));
  return ToHex(ByteSpan(d.data(), 16));
}

Bytes Sha256Bytes(ByteSpan data) {
  const security::Sha256Digest d = security::Sha256(data);
  return Bytes(d.begin(), d.end());
}

}  // namespace

// ---------------------------------------------------------------- InMemoryUploadSource

Result<v1::UploadTarget> InMemoryUploadSource::TargetFor(std::string_view round_id, std::string_view device_id) {
  v1::UploadTarget t;
  t.set_url(base_url_ + "/" + UploadKey(round_id, device_id));
  t.set_token(UploadTokenFor(round_id, device_id));
  t.set_max_bytes(uint64_t{64} << 20);
  return t;
}

Status InMemoryUploadSource::Put(std::string_view round_id, std::string_view device_id, std::string_view token,
                                 ByteSpan bytes) {
  if (token != UploadTokenFor(round_id, device_id)) return PermissionDeniedError("upload token refused");
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, inserted] = uploads_.try_emplace(UploadKey(round_id, device_id), bytes.begin(), bytes.end());
  if (!inserted && it->second != Bytes(bytes.begin(), bytes.end()))
    return AlreadyExistsError("a different upload exists for " + it->first);
  return Status::Ok();
}

Result<Bytes> InMemoryUploadSource::Fetch(std::string_view round_id, std::string_view device_id,
                                          const v1::ClaimCheck&) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = uploads_.find(UploadKey(round_id, device_id));
  if (it == uploads_.end()) return NotFoundError("no upload for " + UploadKey(round_id, device_id));
  return it->second;
}

size_t InMemoryUploadSource::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return uploads_.size();
}

// ---------------------------------------------------------------- DirectoryAdapterRegistry

Result<std::unique_ptr<DirectoryAdapterRegistry>> DirectoryAdapterRegistry::Open(std::filesystem::path dir,
                                                                                 std::string base_url,
                                                                                 size_t initial_length) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return UnavailableError("adapter registry: cannot create " + dir.string() + ": " + ec.message());
  while (!base_url.empty() && base_url.back() == '/') base_url.pop_back();
  return std::unique_ptr<DirectoryAdapterRegistry>(
      new DirectoryAdapterRegistry(std::move(dir), std::move(base_url), initial_length));
}

Result<GlobalAdapter> DirectoryAdapterRegistry::Load(std::string_view version) {
  FLT_RETURN_IF_ERROR(protocol::ValidateName("adapter version", version));
  const std::filesystem::path path = dir_ / (std::string(version) + ".f32");
  auto bytes = ReadFileBytes(path);
  if (!bytes.ok()) return NotFoundError("adapter " + std::string(version) + ": " + bytes.status().message());
  GlobalAdapter a;
  a.version = std::string(version);
  a.sha256 = Sha256Bytes(*bytes);
  FLT_ASSIGN_OR_RETURN(a.values, protocol::DecodeAdapterVector(*bytes));
  a.url = base_url_ + "/" + a.version + ".f32";
  return a;
}

Result<GlobalAdapter> DirectoryAdapterRegistry::Current() {
  std::lock_guard<std::mutex> lock(mu_);
  auto current = ReadFileString(dir_ / "CURRENT", 256);
  if (!current.ok()) {
    if (initial_length_ == 0) return NotFoundError("adapter registry has no current adapter");
    GlobalAdapter initial;
    initial.values.assign(initial_length_, 0.0f);
    return initial;
  }
  return Load(*current);
}

Result<GlobalAdapter> DirectoryAdapterRegistry::Get(std::string_view version) {
  std::lock_guard<std::mutex> lock(mu_);
  return Load(version);
}

Result<GlobalAdapter> DirectoryAdapterRegistry::Put(std::string_view round_id, std::string_view parent_version,
                                                    std::span<const float> values, const AdapterMetrics&) {
  (void)parent_version;  // lineage and metrics live in the Store's registry; files keep none
  const std::string version = "adapter-" + std::string(round_id);
  FLT_RETURN_IF_ERROR(protocol::ValidateName("adapter version", version));
  std::lock_guard<std::mutex> lock(mu_);
  FLT_RETURN_IF_ERROR(WriteFileAtomic(dir_ / (version + ".f32"), protocol::EncodeAdapterVector(values)));
  return Load(version);
}

Status DirectoryAdapterRegistry::SetCurrent(std::string_view version) {
  std::lock_guard<std::mutex> lock(mu_);
  FLT_RETURN_IF_ERROR(Load(version).status());
  return WriteFileAtomic(dir_ / "CURRENT", version);
}

Result<Bytes> DirectoryAdapterRegistry::ReadUrl(std::string_view url) {
  const std::string prefix = base_url_ + "/";
  if (url.substr(0, prefix.size()) != prefix || url.size() <= prefix.size() + 4 || url.substr(url.size() - 4) != ".f32")
    return NotFoundError("not an adapter url of this registry: " + std::string(url));
  const std::string_view version = url.substr(prefix.size(), url.size() - prefix.size() - 4);
  FLT_RETURN_IF_ERROR(protocol::ValidateName("adapter version", version));
  std::lock_guard<std::mutex> lock(mu_);
  return ReadFileBytes(dir_ / (std::string(version) + ".f32"));
}

}  // namespace flotilla::rounds
