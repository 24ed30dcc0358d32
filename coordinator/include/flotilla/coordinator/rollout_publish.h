// Publishing model and adapter versions into the OTA repository (`flotilla ota publish`,
// docs/ota.md "Publishing"), and the timestamp refresh the coordinator loop runs.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "flotilla/core/status.h"
#include "flotilla/ota/repository.h"
#include "flotilla/v1/ota.pb.h"

namespace flotilla::coordinator {

// Chunk boundaries of a GGUF file at its tensor data: the start of the data section and
// the start of every tensor (data_offset + tensor offset), sorted and unique. A changed
// tensor then changes only its own chunks, and the header/KV region is a chunk of its
// own. InvalidArgument (with the parser's message) if the file is not valid GGUF.
Result<std::vector<uint64_t>> GgufTensorBoundaries(const std::filesystem::path& gguf);

struct PublishRequest {
  std::filesystem::path file;  // a GGUF model or adapter
  std::string name;            // target name, stable across versions ("models/15m/base")
  v1::TargetKind kind = v1::TARGET_KIND_BASE_MODEL;
  uint64_t release_counter = 0;
  std::vector<std::string> hardware_compat;
  // Adapters: hex SHA-256 of the base. Empty: read flotilla.adapter.base_sha256 from the file.
  std::string base_sha256_hex;
  std::filesystem::path golden_prompts;  // optional; its bytes become TargetInfo.custom
  uint64_t max_chunk_bytes = uint64_t{4} << 20;
};

// Registers the file as a target, chunked at tensor boundaries (sub-split to
// max_chunk_bytes, SHA-256 each), stores the artifact content-addressed, then signs
// targets, snapshot and timestamp. Returns the published TargetInfo. Errors from the
// repository (lower release counter, ...) or InvalidArgument for a bad file/request;
// nothing is signed unless the target was added. Not thread-safe (one repository writer).
Result<v1::TargetInfo> PublishArtifact(ota::Repository& repo, const PublishRequest& request);

// Re-signs the timestamp when it expires within `margin` (or always with `force`).
// Returns whether it signed. The coordinator service calls this from its loop.
inline constexpr std::chrono::hours kDefaultTimestampMargin{6};
Result<bool> RefreshTimestamp(ota::Repository& repo, std::chrono::milliseconds margin = kDefaultTimestampMargin,
                              bool force = false);

}  // namespace flotilla::coordinator
