// Spool: an append-only scratch file for bulk bytes a process must hold for a while but
// not in memory — SecAgg shares in flight, the sealed stage messages a coordinator keeps
// for re-sends. Its cost in memory is O(1): callers keep offsets (or record numbers of a
// fixed record size) instead of the bytes.
//
// The file is anonymous (O_TMPFILE, or created and unlinked at once where that is not
// supported): nothing is left behind when the Spool is destroyed or the process dies. Not
// durable and not meant to be: what it holds is only valid for the life of the process.
// Thread-safe.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>

#include "flotilla/core/bytes.h"
#include "flotilla/core/status.h"

namespace flotilla {

class Spool {
 public:
  // A new, empty spool in `dir` (empty: the system's temporary directory).
  static Result<std::unique_ptr<Spool>> Create(const std::filesystem::path& dir = {});
  ~Spool();
  Spool(const Spool&) = delete;
  Spool& operator=(const Spool&) = delete;

  // Appends `bytes`; returns the offset of their first byte.
  Result<uint64_t> Append(ByteSpan bytes);
  // Reads out.size() bytes at `offset` into `out`. OutOfRange past the end.
  Status ReadInto(uint64_t offset, std::span<uint8_t> out) const;
  Result<Bytes> Read(uint64_t offset, size_t size) const;
  // Bytes appended so far.
  uint64_t size() const;
  // Empties the file and gives its blocks back: every offset handed out so far becomes
  // invalid. For a caller that knows nothing it spooled is still needed.
  Status Clear();

 private:
  explicit Spool(int fd) : fd_(fd) {}
  const int fd_;
  mutable std::mutex mu_;
  uint64_t size_ = 0;  // GUARDED_BY(mu_)
};

}  // namespace flotilla
