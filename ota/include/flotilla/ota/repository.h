// Repository side (image repository + director signing): registers targets, signs
// targets / snapshot / timestamp / director metadata and writes them, with the
// content-addressed artifacts, into a directory that any static HTTP server can serve
// (paths in repository_layout.h). The directory is the repository's whole state: Open()
// re-reads the newest metadata from it.
// Not thread-safe: one writer per directory.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "flotilla/core/bytes.h"
#include "flotilla/core/clock.h"
#include "flotilla/core/status.h"
#include "flotilla/ota/keys.h"
#include "flotilla/v1/ota.pb.h"

namespace flotilla::ota {

struct RoleExpiry {
  std::chrono::milliseconds root{std::chrono::hours(24 * 365)};
  std::chrono::milliseconds targets{std::chrono::hours(24 * 90)};
  std::chrono::milliseconds snapshot{std::chrono::hours(24 * 7)};
  std::chrono::milliseconds timestamp{std::chrono::hours(24)};
  std::chrono::milliseconds director{std::chrono::hours(24 * 7)};
  std::chrono::milliseconds For(v1::RoleType role) const;
};

// One artifact to register. Boundaries are the caller's (e.g. tensor data offsets of a
// GGUF file); each piece is sub-split to <= max_chunk_bytes. Empty: fixed-size chunks.
struct TargetSpec {
  std::filesystem::path file;
  std::string name;  // e.g. "models/tiny/base"; the same name across versions
  v1::TargetKind kind = v1::TARGET_KIND_BASE_MODEL;
  uint64_t release_counter = 0;
  std::vector<std::string> hardware_compat;
  Bytes base_model_sha256;  // adapters: required
  std::vector<uint64_t> chunk_boundaries;
  uint64_t max_chunk_bytes = uint64_t{4} << 20;
  std::string custom;  // e.g. golden prompts for the health check
};

// Chunk list of `size` bytes cut at `boundaries` (sorted, deduplicated, 0 and size
// implied) and sub-split to <= max_chunk. Pure.
std::vector<std::pair<uint64_t, uint64_t>> ComputeChunks(uint64_t size, std::vector<uint64_t> boundaries,
                                                          uint64_t max_chunk);

class Repository {
 public:
  // Opens `dir` (created if missing) and loads the newest metadata found there.
  static Result<std::unique_ptr<Repository>> Open(const std::filesystem::path& dir, RepositoryKeys keys,
                                                  const Clock& clock, RoleExpiry expiry = {});

  // Root v1 from the keys' public halves and thresholds. AlreadyExists if a root exists.
  Status InitRoot();
  // Root N+1 listing `new_keys`, signed by the threshold of the current root keys and of
  // the new ones; the repository then signs with `new_keys`.
  Status RotateRoot(RepositoryKeys new_keys);

  // Hashes and chunks the file, copies it to artifacts/<sha256> and stages the target
  // (replacing one with the same name) for the next Publish(). InvalidArgument for a bad
  // spec (release counter lower than the published one, adapter without base hash, ...).
  Result<v1::TargetInfo> AddTarget(const TargetSpec& spec);
  Status RemoveTarget(const std::string& name);
  // Signs targets, snapshot and timestamp (each version + 1) and writes them.
  Status Publish();
  // Re-signs the timestamp (version + 1) if it expires within `margin`, or always with
  // `force`. Returns whether it signed.
  Result<bool> RefreshTimestamp(std::chrono::milliseconds margin, bool force = false);
  // Signs a director assignment for one device or cohort (version = previous + 1) and
  // writes it to the director path; returns the signed bytes. The device, not this
  // function, enforces agreement with targets (Uptane: the director may be compromised).
  Result<Bytes> Assign(const v1::DirectorAssignment& assignment);

  const std::filesystem::path& dir() const { return dir_; }
  // Signed bytes of the current root (what a device is provisioned with).
  Result<Bytes> CurrentRoot() const;
  uint64_t root_version() const { return root_version_; }
  uint64_t targets_version() const { return targets_version_; }
  uint64_t snapshot_version() const { return snapshot_version_; }
  uint64_t timestamp_version() const { return timestamp_version_; }
  const std::map<std::string, v1::TargetInfo>& targets() const { return targets_; }

 private:
  Repository(std::filesystem::path dir, RepositoryKeys keys, const Clock& clock, RoleExpiry expiry)
      : dir_(std::move(dir)), keys_(std::move(keys)), clock_(clock), expiry_(expiry) {}
  Status Load();
  v1::Metadata NewMetadata(v1::RoleType role, uint64_t version) const;
  v1::RootMetadata RootBody(const RepositoryKeys& keys) const;
  Status WriteSigned(const std::string& rel, v1::Metadata m, const std::vector<const security::EcdsaPrivateKey*>& keys,
                     Bytes* out);
  Status SignTimestamp();

  std::filesystem::path dir_;
  RepositoryKeys keys_;
  const Clock& clock_;
  RoleExpiry expiry_;
  uint64_t root_version_ = 0, targets_version_ = 0, snapshot_version_ = 0, timestamp_version_ = 0;
  int64_t timestamp_expires_ms_ = 0;
  Bytes snapshot_wire_;
  std::map<std::string, v1::TargetInfo> targets_;     // staged (what Publish signs)
  std::map<std::string, uint64_t> published_counters_;
};

}  // namespace flotilla::ota
