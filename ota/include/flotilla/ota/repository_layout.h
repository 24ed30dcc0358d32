// Paths of metadata and artifacts inside an OTA repository directory. The same relative
// paths are used on disk (Repository), over HTTP (ArtifactServer or any static server /
// CDN) and by the device (OtaClient). Everything but timestamp.pb is immutable once
// written: metadata is versioned, artifacts are content-addressed.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "flotilla/core/bytes.h"

namespace flotilla::ota {

inline std::string RootMetadataPath(uint64_t version) { return "metadata/root/" + std::to_string(version) + ".root.pb"; }
inline std::string TimestampMetadataPath() { return "metadata/timestamp.pb"; }
inline std::string SnapshotMetadataPath(uint64_t version) {
  return "metadata/snapshot/" + std::to_string(version) + ".snapshot.pb";
}
inline std::string TargetsMetadataPath(uint64_t version) {
  return "metadata/targets/" + std::to_string(version) + ".targets.pb";
}
// Director assignments: one file per device or cohort (ids are safe names).
inline std::string DeviceDirectorPath(std::string_view device_id) {
  return "metadata/director/device/" + std::string(device_id) + ".pb";
}
inline std::string CohortDirectorPath(std::string_view cohort) {
  return "metadata/director/cohort/" + std::string(cohort) + ".pb";
}
// Artifacts by lower-case hex SHA-256 of their content.
inline std::string ArtifactPath(ByteSpan sha256) { return "artifacts/" + ToHex(sha256); }

}  // namespace flotilla::ota
