#include "flotilla/ota/update_check.h"

#include "flotilla/core/file.h"
#include "flotilla/ota/metadata.h"
#include "flotilla/ota/repository_layout.h"

namespace flotilla::ota {
namespace {
// A repository cannot make a device walk an endless root chain in one cycle.
constexpr int kMaxRootSteps = 64;
}  // namespace

Result<Bytes> DirectoryMetadataSource::FetchMetadata(const std::string& path, size_t max_bytes) {
  if (path.find("..") != std::string::npos) return InvalidArgumentError("metadata path escapes the repository");
  std::error_code ec;
  if (!std::filesystem::exists(dir_ / path, ec)) return NotFoundError("metadata " + path + " not found");
  return ReadFileBytes(dir_ / path, max_bytes);
}

Result<std::optional<VerifiedAssignment>> RunUpdateCheck(UpdateVerifier& verifier, MetadataSource& source,
                                                         const DeviceIdentity& device, int64_t now_ms) {
  FLT_RETURN_IF_ERROR(verifier.BeginCycle(now_ms));
  for (int step = 0;; ++step) {
    if (step == kMaxRootSteps) return ResourceExhaustedError("root chain longer than 64 versions in one cycle");
    const std::string path = RootMetadataPath(verifier.RootVersion() + 1);
    auto next = source.FetchMetadata(path, MaxMetadataBytes(v1::ROLE_TYPE_ROOT));
    if (!next.ok() && next.status().code() == StatusCode::kNotFound) break;
    FLT_RETURN_IF_ERROR(next.status().WithContext("fetching " + path));
    FLT_RETURN_IF_ERROR(verifier.UpdateRoot(*next).WithContext(path));
  }
  FLT_RETURN_IF_ERROR(verifier.CheckRootNotExpired());

  FLT_ASSIGN_OR_RETURN(Bytes ts, source.FetchMetadata(TimestampMetadataPath(), MaxMetadataBytes(v1::ROLE_TYPE_TIMESTAMP)));
  FLT_RETURN_IF_ERROR(verifier.UpdateTimestamp(ts));
  const std::string snapshot_path = verifier.SnapshotPath();
  FLT_ASSIGN_OR_RETURN(Bytes snap, source.FetchMetadata(snapshot_path, MaxMetadataBytes(v1::ROLE_TYPE_SNAPSHOT)));
  FLT_RETURN_IF_ERROR(verifier.UpdateSnapshot(snap).WithContext(snapshot_path));
  const std::string targets_path = verifier.TargetsPath();
  FLT_ASSIGN_OR_RETURN(Bytes targets, source.FetchMetadata(targets_path, MaxMetadataBytes(v1::ROLE_TYPE_TARGETS)));
  FLT_RETURN_IF_ERROR(verifier.UpdateTargets(targets).WithContext(targets_path));

  std::vector<std::string> director_paths = {DeviceDirectorPath(device.device_id)};
  for (const auto& c : device.cohorts) director_paths.push_back(CohortDirectorPath(c));
  for (const auto& path : director_paths) {
    auto wire = source.FetchMetadata(path, MaxMetadataBytes(v1::ROLE_TYPE_DIRECTOR));
    if (!wire.ok() && wire.status().code() == StatusCode::kNotFound) continue;
    FLT_RETURN_IF_ERROR(wire.status().WithContext("fetching " + path));
    FLT_ASSIGN_OR_RETURN(VerifiedAssignment a, verifier.VerifyDirector(*wire, device));
    return std::optional<VerifiedAssignment>(std::move(a));
  }
  return std::optional<VerifiedAssignment>();
}

}  // namespace flotilla::ota
