// Small file helpers with Status errors.
#pragma once

#include <filesystem>
#include <string>

#include "flotilla/core/bytes.h"
#include "flotilla/core/status.h"

namespace flotilla {

// Reads a whole file; refuses files larger than `max_bytes` (ResourceExhausted).
Result<Bytes> ReadFileBytes(const std::filesystem::path& path, size_t max_bytes = size_t{1} << 30);
Result<std::string> ReadFileString(const std::filesystem::path& path, size_t max_bytes = size_t{1} << 30);

// Writes to a temp file in the same directory, fsyncs it, renames over `path` and fsyncs
// the directory: after a crash the file holds either the old or the new content.
// `mode` is the permission of the new file (0600 for keys).
Status WriteFileAtomic(const std::filesystem::path& path, ByteSpan data, unsigned mode = 0644);
inline Status WriteFileAtomic(const std::filesystem::path& path, std::string_view data, unsigned mode = 0644) {
  return WriteFileAtomic(path, AsBytes(data), mode);
}

// A fresh directory under $TMPDIR (or /tmp) that is removed with its content on destruction.
class TempDir {
 public:
  static Result<TempDir> Create(std::string_view prefix = "flotilla");
  TempDir(TempDir&& other) noexcept : path_(std::move(other.path_)) { other.path_.clear(); }
  TempDir& operator=(TempDir&&) = delete;
  TempDir(const TempDir&) = delete;
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }

 private:
  explicit TempDir(std::filesystem::path p) : path_(std::move(p)) {}
  std::filesystem::path path_;
};

}  // namespace flotilla
