#include "flotilla/core/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace flotilla {
namespace {

Status ErrnoError(const std::string& what, const std::filesystem::path& path) {
  int e = errno;
  std::string msg = what + " " + path.string() + ": " + std::strerror(e);
  if (e == ENOENT) return NotFoundError(msg);
  if (e == EACCES || e == EPERM) return PermissionDeniedError(msg);
  return UnavailableError(msg);
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }

 private:
  int fd_;
};

}  // namespace

Result<Bytes> ReadFileBytes(const std::filesystem::path& path, size_t max_bytes) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoError("cannot open", path);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return ErrnoError("cannot stat", path);
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    return ResourceExhaustedError(path.string() + " is " + std::to_string(st.st_size) + " bytes, limit " +
                                  std::to_string(max_bytes));
  }
  Bytes out(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = ::read(fd.get(), out.data() + done, out.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError("cannot read", path);
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  out.resize(done);
  return out;
}

Result<std::string> ReadFileString(const std::filesystem::path& path, size_t max_bytes) {
  FLT_ASSIGN_OR_RETURN(Bytes b, ReadFileBytes(path, max_bytes));
  return std::string(b.begin(), b.end());
}

Status WriteFileAtomic(const std::filesystem::path& path, ByteSpan data, unsigned mode) {
  std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  std::string tmpl = (dir / ("." + path.filename().string() + ".tmpXXXXXX")).string();
  Fd fd(::mkstemp(tmpl.data()));
  if (fd.get() < 0) return ErrnoError("cannot create temp file for", path);
  std::string tmp_path = tmpl;
  auto fail = [&](const std::string& what) {
    Status s = ErrnoError(what, path);
    ::unlink(tmp_path.c_str());
    return s;
  };
  if (::fchmod(fd.get(), static_cast<mode_t>(mode)) != 0) return fail("cannot chmod");
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd.get(), data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail("cannot write");
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) != 0) return fail("cannot fsync");
  if (::close(fd.release()) != 0) return fail("cannot close");
  if (::rename(tmp_path.c_str(), path.c_str()) != 0) return fail("cannot rename into");
  Fd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd.get() >= 0) ::fsync(dfd.get());
  return Status::Ok();
}

Result<TempDir> TempDir::Create(std::string_view prefix) {
  const char* base = std::getenv("TMPDIR");
  std::filesystem::path root = base && *base ? base : "/tmp";
  std::string tmpl = (root / (std::string(prefix) + ".XXXXXX")).string();
  if (::mkdtemp(tmpl.data()) == nullptr) return ErrnoError("cannot create temp dir", tmpl);
  return TempDir(std::filesystem::path(tmpl));
}

TempDir::~TempDir() {
  if (!path_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
}

}  // namespace flotilla
