// The round driver's seams to the rest of the coordinator: where large masked inputs
// were uploaded (UploadSource; the coordinator's HTTP upload endpoint implements it) and
// where global adapter versions live (AdapterRegistry; the model registry implements it).
// In-process implementations for tests, the simulator and the demo are below.
//
// Adapter vectors are the adapter's trainable values (frozen-A: B, flattened) as raw
// little-endian float32; the sha256 is over exactly those bytes.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flotilla/core/bytes.h"
#include "flotilla/core/status.h"
#include "flotilla/v1/round.pb.h"

namespace flotilla::rounds {

class UploadSource {
 public:
  virtual ~UploadSource() = default;
  // The UploadTarget (url, bearer token, size cap) to put in `device_id`'s invitation.
  virtual Result<v1::UploadTarget> TargetFor(std::string_view round_id, std::string_view device_id) = 0;
  // The bytes `device_id` uploaded for the round (a serialized SealedBox). NotFound if
  // nothing was uploaded. The driver checks size and sha256 against the claim itself.
  // Thread-safe.
  virtual Result<Bytes> Fetch(std::string_view round_id, std::string_view device_id, const v1::ClaimCheck& claim) = 0;
};

// Uploads kept in memory, keyed by (round, device). Put() is what an HTTP handler (or a
// test's fake uploader) calls. Thread-safe.
class InMemoryUploadSource final : public UploadSource {
 public:
  explicit InMemoryUploadSource(std::string base_url = "http://uploads.invalid/api/v1/uploads")
      : base_url_(std::move(base_url)) {}
  Result<v1::UploadTarget> TargetFor(std::string_view round_id, std::string_view device_id) override;
  Result<Bytes> Fetch(std::string_view round_id, std::string_view device_id, const v1::ClaimCheck& claim) override;
  // PermissionDenied for a wrong token, AlreadyExists for different bytes uploaded twice.
  Status Put(std::string_view round_id, std::string_view device_id, std::string_view token, ByteSpan bytes);
  size_t size() const;

 private:
  std::string base_url_;
  mutable std::mutex mu_;
  std::map<std::string, Bytes, std::less<>> uploads_;  // GUARDED_BY(mu_) "round/device" -> bytes
};

struct GlobalAdapter {
  std::string version;        // "" = the initial adapter (all zeros, nothing stored)
  std::vector<float> values;
  Bytes sha256;               // of the raw float32 bytes (empty for the initial adapter)
  std::string url;            // where devices fetch it ("" for the initial adapter)
};

// What a round records with the adapter version it produced (aggregates only: nothing
// about any single device).
struct AdapterMetrics {
  uint32_t cohort = 0;
  uint32_t survivors = 0;      // |U3|: their updates are in the sum
  double examples = 0;         // the sum of the survivors' FedAvg weights
  int64_t duration_ms = 0;     // round start to aggregation
  double l2_norm_delta = 0;    // of the mean update
};

class AdapterRegistry {
 public:
  virtual ~AdapterRegistry() = default;
  // The adapter new rounds start from. NotFound if none was ever set.
  virtual Result<GlobalAdapter> Current() = 0;
  virtual Result<GlobalAdapter> Get(std::string_view version) = 0;
  // Stores `values` as the version produced by `round_id` (child of `parent_version`).
  // Idempotent per round: storing again returns the same version. Not yet current.
  virtual Result<GlobalAdapter> Put(std::string_view round_id, std::string_view parent_version,
                                    std::span<const float> values, const AdapterMetrics& metrics) = 0;
  // Makes `version` the one new rounds start from (idempotent).
  virtual Status SetCurrent(std::string_view version) = 0;
};

// Adapters as files <dir>/<version>.f32 (written atomically) plus <dir>/CURRENT, with
// URLs <base_url>/<version>.f32 (serve <dir> over HTTP, or resolve them in-process with
// ReadUrl). Version of round R: "adapter-R". Thread-safe.
class DirectoryAdapterRegistry final : public AdapterRegistry {
 public:
  // Creates `dir` if needed. `initial_length` > 0 makes Current() return an all-zero
  // initial adapter ("" version) until the first SetCurrent.
  static Result<std::unique_ptr<DirectoryAdapterRegistry>> Open(std::filesystem::path dir, std::string base_url,
                                                                size_t initial_length);
  Result<GlobalAdapter> Current() override;
  Result<GlobalAdapter> Get(std::string_view version) override;
  Result<GlobalAdapter> Put(std::string_view round_id, std::string_view parent_version,
                            std::span<const float> values, const AdapterMetrics& metrics) override;
  Status SetCurrent(std::string_view version) override;
  // The bytes a URL of this registry names (NotFound otherwise): an in-process "HTTP GET".
  Result<Bytes> ReadUrl(std::string_view url);

 private:
  DirectoryAdapterRegistry(std::filesystem::path dir, std::string base_url, size_t initial_length)
      : dir_(std::move(dir)), base_url_(std::move(base_url)), initial_length_(initial_length) {}
  Result<GlobalAdapter> Load(std::string_view version);  // REQUIRES: mu_ held
  std::filesystem::path dir_;
  std::string base_url_;
  size_t initial_length_;
  std::mutex mu_;
};

}  // namespace flotilla::rounds
