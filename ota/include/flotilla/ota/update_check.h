// The CHECK step of an update cycle: root chain -> timestamp -> snapshot -> targets ->
// director, each fetched with its byte cap from a MetadataSource and verified by an
// UpdateVerifier (TUF 1.0 client workflow, section 5, plus the Uptane director).
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include "flotilla/core/bytes.h"
#include "flotilla/core/status.h"
#include "flotilla/ota/verifier.h"

namespace flotilla::ota {

// Where metadata comes from (HTTP, a local directory, a USB stick). Implementations
// return NotFound for a missing file, ResourceExhausted past `max_bytes`.
class MetadataSource {
 public:
  virtual ~MetadataSource() = default;
  virtual Result<Bytes> FetchMetadata(const std::string& path, size_t max_bytes) = 0;
};

// Reads metadata from a repository directory (offline/air-gapped updates, tests).
class DirectoryMetadataSource final : public MetadataSource {
 public:
  explicit DirectoryMetadataSource(std::filesystem::path dir) : dir_(std::move(dir)) {}
  Result<Bytes> FetchMetadata(const std::string& path, size_t max_bytes) override;

 private:
  std::filesystem::path dir_;
};

// Runs the whole check at cycle time `now_ms`. On success the verifier's state holds the
// new trusted metadata; the result is the verified assignment, or nullopt when no director
// assignment exists for this device (nothing to do). Any failure aborts the cycle; the
// state then keeps whatever was verified before the failing step (always consistent).
Result<std::optional<VerifiedAssignment>> RunUpdateCheck(UpdateVerifier& verifier, MetadataSource& source,
                                                         const DeviceIdentity& device, int64_t now_ms);

}  // namespace flotilla::ota
