#include "flotilla/coordinator/artifact_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

#include "flotilla/core/random.h"
#include "flotilla/security/hash.h"

namespace flotilla::coordinator {
namespace {

namespace fs = std::filesystem;

Status Errno(std::string_view what, const fs::path& path) {
  return UnavailableError("artifacts: " + std::string(what) + " " + path.string() + ": " + std::strerror(errno));
}

// Owns a file descriptor.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { Close(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  void Reset(int fd) {
    Close();
    fd_ = fd;
  }
  int Close() {
    int rc = 0;
    if (fd_ >= 0) rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

void FsyncDir(const fs::path& dir) {
  Fd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd.get() >= 0) (void)::fsync(dfd.get());
}

Status WriteAll(int fd, ByteSpan data, const fs::path& path) {
  size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("cannot write", path);
    }
    off += static_cast<size_t>(n);
  }
  return Status::Ok();
}

// Opens an artifact file and stats it; NotFound when absent.
Status OpenForRead(const fs::path& path, std::string_view hex, Fd& fd, struct stat& st) {
  fd.Reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno == ENOENT) return NotFoundError("artifacts: no artifact " + std::string(hex));
    return Errno("cannot open", path);
  }
  if (::fstat(fd.get(), &st) != 0) return Errno("cannot stat", path);
  return Status::Ok();
}

std::string RandomName() {
  uint8_t b[12];
  OsRandom().Fill(b);
  return ToHex(b);
}

}  // namespace

Status ValidateSha256Hex(std::string_view hex) {
  if (hex.size() != 64) {
    return InvalidArgumentError("artifact id must be 64 hex characters, got " + std::to_string(hex.size()));
  }
  for (char c : hex) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return InvalidArgumentError("artifact id must be lower-case hex");
    }
  }
  return Status::Ok();
}

struct ArtifactWriter::Impl {
  ArtifactStore* store = nullptr;
  fs::path temp_path;
  Fd fd{-1};
  security::Sha256Hasher hasher;
  uint64_t max_bytes = 0;
  bool failed = false;
  bool committed = false;
};

ArtifactWriter::ArtifactWriter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ArtifactWriter::~ArtifactWriter() {
  if (impl_ && !impl_->committed) {
    impl_->fd.Close();
    std::error_code ec;
    fs::remove(impl_->temp_path, ec);
  }
}

Status ArtifactWriter::Append(ByteSpan data) {
  if (impl_->failed || impl_->committed) return FailedPreconditionError("artifacts: writer is no longer usable");
  if (data.size() > impl_->max_bytes - size_) {
    impl_->failed = true;
    return ResourceExhaustedError("artifacts: content exceeds the limit of " + std::to_string(impl_->max_bytes) +
                                  " bytes");
  }
  Status s = WriteAll(impl_->fd.get(), data, impl_->temp_path);
  if (!s.ok()) {
    impl_->failed = true;
    return s;
  }
  impl_->hasher.Update(data);
  size_ += data.size();
  return Status::Ok();
}

Result<ArtifactInfo> ArtifactWriter::Commit(std::string_view expected_sha256_hex) {
  if (impl_->failed || impl_->committed) return FailedPreconditionError("artifacts: writer is no longer usable");
  impl_->failed = true;  // whatever happens below, no second Commit
  const std::string hex = ToHex(impl_->hasher.Finish());
  if (!expected_sha256_hex.empty() && expected_sha256_hex != hex) {
    return DataLossError("artifacts: content hash " + hex + " differs from the expected " +
                         std::string(expected_sha256_hex));
  }
  if (::fsync(impl_->fd.get()) != 0) return Errno("cannot fsync", impl_->temp_path);
  if (impl_->fd.Close() != 0) return Errno("cannot close", impl_->temp_path);
  const fs::path dest = impl_->store->PathFor(hex);
  std::error_code ec;
  fs::create_directories(dest.parent_path(), ec);
  if (ec) return UnavailableError("artifacts: cannot create " + dest.parent_path().string() + ": " + ec.message());
  // rename() over an existing artifact is harmless: same name, same content.
  if (::rename(impl_->temp_path.c_str(), dest.c_str()) != 0) return Errno("cannot rename into", dest);
  FsyncDir(dest.parent_path());
  impl_->committed = true;
  ArtifactInfo info;
  info.sha256 = hex;
  info.size = size_;
  info.relative_path = fs::relative(dest, impl_->store->root()).string();
  return info;
}

Result<std::unique_ptr<ArtifactStore>> ArtifactStore::Open(const fs::path& root) {
  std::error_code ec;
  fs::create_directories(root / "sha256", ec);
  if (!ec) fs::create_directories(root / "tmp", ec);
  if (ec) return UnavailableError("artifacts: cannot create " + root.string() + ": " + ec.message());
  // Temp files only exist while a writer lives; any left over are from a crash.
  for (const auto& entry : fs::directory_iterator(root / "tmp", ec)) fs::remove(entry.path(), ec);
  return std::unique_ptr<ArtifactStore>(new ArtifactStore(root));
}

Result<std::unique_ptr<ArtifactWriter>> ArtifactStore::NewWriter(uint64_t max_bytes) {
  auto impl = std::make_unique<ArtifactWriter::Impl>();
  impl->store = this;
  impl->max_bytes = max_bytes;
  impl->temp_path = root_ / "tmp" / (RandomName() + ".part");
  impl->fd.Reset(::open(impl->temp_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (impl->fd.get() < 0) return Errno("cannot create", impl->temp_path);
  return std::unique_ptr<ArtifactWriter>(new ArtifactWriter(std::move(impl)));
}

Result<ArtifactInfo> ArtifactStore::Put(ByteSpan data) {
  FLT_ASSIGN_OR_RETURN(auto writer, NewWriter(data.size()));
  FLT_RETURN_IF_ERROR(writer->Append(data));
  return writer->Commit();
}

fs::path ArtifactStore::PathFor(std::string_view hex) const {
  return root_ / "sha256" / std::string(hex.substr(0, 2)) / std::string(hex.substr(2));
}

bool ArtifactStore::Contains(std::string_view hex) const {
  if (!ValidateSha256Hex(hex).ok()) return false;
  struct stat st {};
  return ::stat(PathFor(hex).c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

Result<Bytes> ArtifactStore::Read(std::string_view hex, uint64_t max_bytes) const {
  FLT_RETURN_IF_ERROR(ValidateSha256Hex(hex));
  const fs::path path = PathFor(hex);
  Fd fd(-1);
  struct stat st {};
  FLT_RETURN_IF_ERROR(OpenForRead(path, hex, fd, st));
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    return ResourceExhaustedError("artifacts: " + std::string(hex) + " is larger than " + std::to_string(max_bytes));
  }
  Bytes data(static_cast<size_t>(st.st_size));
  size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = ::read(fd.get(), data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Errno("cannot read", path);
    off += static_cast<size_t>(n);
  }
  if (ToHex(security::Sha256(data)) != hex) {
    return DataLossError("artifacts: content of " + path.string() + " does not match its SHA-256 name");
  }
  return data;
}

Status ArtifactStore::Verify(std::string_view hex) const {
  FLT_RETURN_IF_ERROR(ValidateSha256Hex(hex));
  const fs::path path = PathFor(hex);
  Fd fd(-1);
  struct stat st {};
  FLT_RETURN_IF_ERROR(OpenForRead(path, hex, fd, st));
  const std::string key = std::string(hex) + ":" + std::to_string(st.st_size) + ":" +
                          std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec) + ":" +
                          std::to_string(st.st_ino);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (verified_.count(key) != 0) return Status::Ok();
  }
  security::Sha256Hasher hasher;
  std::vector<uint8_t> buf(256 * 1024);
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Errno("cannot read", path);
    if (n == 0) break;
    hasher.Update(ByteSpan(buf.data(), static_cast<size_t>(n)));
  }
  if (ToHex(hasher.Finish()) != hex) {
    return DataLossError("artifacts: content of " + path.string() + " does not match its SHA-256 name");
  }
  std::lock_guard<std::mutex> lock(mu_);
  verified_.insert(key);
  return Status::Ok();
}

}  // namespace flotilla::coordinator
