#include <algorithm>

#include "flotilla/coordinator/rollout_publish.h"
#include "flotilla/core/bytes.h"
#include "flotilla/core/file.h"
#include "flotilla/model/gguf.h"
#include "flotilla/security/hash.h"

namespace flotilla::coordinator {
namespace {

// Golden prompts travel inside signed targets metadata (16 MiB cap for all targets).
constexpr size_t kMaxCustomBytes = 256 * 1024;
constexpr char kAdapterBaseKey[] = "flotilla.adapter.base_sha256";

}  // namespace

Result<std::vector<uint64_t>> GgufTensorBoundaries(const std::filesystem::path& gguf) {
  auto file = model::GgufFile::Open(gguf);
  if (!file.ok())
    return InvalidArgumentError("publish: " + gguf.string() + " is not a GGUF file: " + file.status().ToString());
  std::vector<uint64_t> b;
  b.reserve((*file)->tensors().size() + 1);
  b.push_back((*file)->data_offset());
  for (const auto& t : (*file)->tensors()) b.push_back((*file)->data_offset() + t.offset);
  std::sort(b.begin(), b.end());
  b.erase(std::unique(b.begin(), b.end()), b.end());
  return b;
}

Result<v1::TargetInfo> PublishArtifact(ota::Repository& repo, const PublishRequest& request) {
  ota::TargetSpec spec;
  spec.file = request.file;
  spec.name = request.name;
  spec.kind = request.kind;
  spec.release_counter = request.release_counter;
  spec.hardware_compat = request.hardware_compat;
  spec.max_chunk_bytes = request.max_chunk_bytes;
  FLT_ASSIGN_OR_RETURN(spec.chunk_boundaries, GgufTensorBoundaries(request.file));
  if (request.kind == v1::TARGET_KIND_ADAPTER) {
    std::string hex = request.base_sha256_hex;
    if (hex.empty()) {
      auto file = model::GgufFile::Open(request.file);
      if (!file.ok()) return file.status();
      auto v = (*file)->GetString(kAdapterBaseKey);
      if (!v.ok()) {
        return InvalidArgumentError("publish: adapter " + request.file.string() + " records no " + kAdapterBaseKey +
                                    "; pass --base-sha256");
      }
      hex = std::string(*v);
    }
    auto base = FromHex(hex);
    if (!base.ok() || base->size() != security::kSha256Size) {
      return InvalidArgumentError("publish: base SHA-256 '" + hex + "' is not 64 hex digits");
    }
    spec.base_model_sha256 = std::move(base).value();
  } else if (!request.base_sha256_hex.empty()) {
    return InvalidArgumentError("publish: --base-sha256 applies to adapters only");
  }
  if (!request.golden_prompts.empty()) {
    FLT_ASSIGN_OR_RETURN(spec.custom, ReadFileString(request.golden_prompts, kMaxCustomBytes));
  }
  FLT_ASSIGN_OR_RETURN(v1::TargetInfo target, repo.AddTarget(spec));
  FLT_RETURN_IF_ERROR(repo.Publish());
  return target;
}

Result<bool> RefreshTimestamp(ota::Repository& repo, std::chrono::milliseconds margin, bool force) {
  return repo.RefreshTimestamp(margin, force);
}

}  // namespace flotilla::coordinator
