#include "flotilla/core/spool.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace flotilla {

namespace {

Status ErrnoError(const std::string& what) { return InternalError("spool: " + what + ": " + std::strerror(errno)); }

}  // namespace

Result<std::unique_ptr<Spool>> Spool::Create(const std::filesystem::path& dir) {
  std::error_code ec;
  const std::filesystem::path where = dir.empty() ? std::filesystem::temp_directory_path(ec) : dir;
  if (ec) return InternalError("spool: no temporary directory: " + ec.message());
  int fd = -1;
#ifdef O_TMPFILE
  fd = ::open(where.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
#endif
  if (fd < 0) {
    // No O_TMPFILE (old kernel, some file systems): create a unique file and unlink it.
    std::string name = (where / "flotilla-spool-XXXXXX").string();
    fd = ::mkostemp(name.data(), O_CLOEXEC);
    if (fd < 0) return ErrnoError("creating a file in " + where.string());
    ::unlink(name.c_str());
  }
  return std::unique_ptr<Spool>(new Spool(fd));
}

Spool::~Spool() { ::close(fd_); }

Result<uint64_t> Spool::Append(ByteSpan bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  const uint64_t at = size_;
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::pwrite(fd_, bytes.data() + done, bytes.size() - done, static_cast<off_t>(at + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      // Nothing past size_ is ever read, so a partial write is simply overwritten later.
      return ErrnoError("write");
    }
    done += static_cast<size_t>(n);
  }
  size_ += bytes.size();
  return at;
}

Status Spool::ReadInto(uint64_t offset, std::span<uint8_t> out) const {
  if (offset > size() || out.size() > size() - offset) {
    return OutOfRangeError("spool: read of " + std::to_string(out.size()) + " bytes at " + std::to_string(offset) +
                           " is past the end (" + std::to_string(size()) + ")");
  }
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::pread(fd_, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n < 0 ? ErrnoError("read") : DataLossError("spool: file shorter than written");
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Result<Bytes> Spool::Read(uint64_t offset, size_t size) const {
  Bytes out(size);
  FLT_RETURN_IF_ERROR(ReadInto(offset, out));
  return out;
}

uint64_t Spool::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return size_;
}

Status Spool::Clear() {
  std::lock_guard<std::mutex> lock(mu_);
  if (::ftruncate(fd_, 0) != 0) return ErrnoError("truncate");
  size_ = 0;
  return Status::Ok();
}

}  // namespace flotilla
