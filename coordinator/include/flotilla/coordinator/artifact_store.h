// Content-addressed artifact files: <root>/sha256/ab/cdef... (the hex SHA-256 of the
// content, split after two characters so no directory grows past 256 entries per level).
// A blob is written to <root>/tmp/, fsynced, then renamed into place and the directory
// fsynced, so a path that exists always holds complete content. Reads check the hash.
//
// Thread safety: every method is safe from any thread (files are immutable once named;
// writers use unique temp names). An ArtifactWriter is used by one thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>

#include "flotilla/core/bytes.h"
#include "flotilla/core/status.h"

namespace flotilla::coordinator {

struct ArtifactInfo {
  std::string sha256;  // lower-case hex, 64 chars
  uint64_t size = 0;
  std::string relative_path;  // "sha256/ab/cdef..." relative to the artifact root
};

// OK if `hex` is 64 lower-case hex characters (what artifact names are made of);
// InvalidArgument otherwise. Use before building any path from untrusted input.
Status ValidateSha256Hex(std::string_view hex);

class ArtifactStore;

// Streams one artifact into the store. Destroying it without Commit() removes the temp
// file. Not thread-safe.
class ArtifactWriter {
 public:
  ~ArtifactWriter();
  ArtifactWriter(const ArtifactWriter&) = delete;
  ArtifactWriter& operator=(const ArtifactWriter&) = delete;

  // ResourceExhausted (and the writer becomes unusable) once more than max_bytes arrive.
  Status Append(ByteSpan data);
  uint64_t size() const { return size_; }
  // fsync, hash, rename into place. If `expected_sha256_hex` is non-empty and differs,
  // DataLoss and nothing is stored. Committing content that already exists is OK.
  Result<ArtifactInfo> Commit(std::string_view expected_sha256_hex = {});

 private:
  friend class ArtifactStore;
  struct Impl;
  explicit ArtifactWriter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  uint64_t size_ = 0;
};

class ArtifactStore {
 public:
  // Creates <root>/sha256 and <root>/tmp and removes stale temp files of crashed writers.
  static Result<std::unique_ptr<ArtifactStore>> Open(const std::filesystem::path& root);

  Result<std::unique_ptr<ArtifactWriter>> NewWriter(uint64_t max_bytes);
  Result<ArtifactInfo> Put(ByteSpan data);

  // Whole content, checked against its name: DataLoss if the file was altered,
  // NotFound if absent, InvalidArgument for a malformed name.
  Result<Bytes> Read(std::string_view sha256_hex, uint64_t max_bytes = uint64_t{1} << 30) const;
  // Hashes the file (streaming) and compares with its name; DataLoss on mismatch. Once
  // a file passed, later calls for the same (name, size, mtime, inode) are free, so a
  // download server can check before every response without rehashing gigabytes.
  Status Verify(std::string_view sha256_hex) const;
  bool Contains(std::string_view sha256_hex) const;
  // Absolute path of an artifact (no existence check). REQUIRES: valid name.
  std::filesystem::path PathFor(std::string_view sha256_hex) const;
  const std::filesystem::path& root() const { return root_; }

 private:
  explicit ArtifactStore(std::filesystem::path root) : root_(std::move(root)) {}
  std::filesystem::path root_;
  mutable std::mutex mu_;
  mutable std::set<std::string> verified_;  // GUARDED_BY(mu_): "sha:size:mtime:ino"
};

}  // namespace flotilla::coordinator
