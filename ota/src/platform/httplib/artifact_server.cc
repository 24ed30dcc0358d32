#include "flotilla/ota/artifact_server.h"

#include <httplib.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <chrono>
#include <mutex>
#include <optional>
#include <thread>

#include "flotilla/core/log.h"

namespace flotilla::ota {
namespace {

namespace fs = std::filesystem;

struct ByteRange {
  uint64_t first = 0;
  std::optional<uint64_t> last;
};

// Single "bytes=a-" or "bytes=a-b"; anything else (suffix, multi-range) is ignored and
// served as a full 200, which RFC 9110 allows.
std::optional<ByteRange> ParseRange(const std::string& v) {
  if (v.rfind("bytes=", 0) != 0 || v.find(',') != std::string::npos) return std::nullopt;
  ByteRange r;
  size_t i = 6;
  if (i >= v.size() || v[i] < '0' || v[i] > '9') return std::nullopt;
  for (; i < v.size() && v[i] >= '0' && v[i] <= '9'; ++i) r.first = r.first * 10 + static_cast<uint64_t>(v[i] - '0');
  if (i >= v.size() || v[i] != '-') return std::nullopt;
  ++i;
  if (i < v.size()) {
    uint64_t last = 0;
    for (; i < v.size() && v[i] >= '0' && v[i] <= '9'; ++i) last = last * 10 + static_cast<uint64_t>(v[i] - '0');
    if (i != v.size() || last < r.first) return std::nullopt;
    r.last = last;
  }
  return r;
}

std::string HexU64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

struct ArtifactServer::Impl {
  fs::path root;
  httplib::Server server;
  std::thread thread;
  int port = 0;
  mutable std::mutex mu;
  ArtifactServerFaults faults;  // GUARDED_BY(mu)
  ArtifactServerStats stats;    // GUARDED_BY(mu)

  void Handle(const httplib::Request& req, httplib::Response& res);
};

void ArtifactServer::Impl::Handle(const httplib::Request& req, httplib::Response& res) {
  // httplib would apply Range itself; this server implements Range/If-Range (and the
  // faults) explicitly, so clear its parse. The Request object is non-const in httplib.
  const_cast<httplib::Request&>(req).ranges.clear();
  std::string rel = req.path;
  while (!rel.empty() && rel.front() == '/') rel.erase(rel.begin());
  bool drop = false, ignore_range = false;
  uint64_t drop_after = 0, extra = 0, rate = 0;
  std::string etag_override;
  int error_status = 0;
  {
    std::lock_guard<std::mutex> lock(mu);
    ++stats.requests;
    if (rel.rfind(faults.path_prefix, 0) == 0) {
      if (faults.error_count != 0 && faults.error_status != 0) {
        error_status = faults.error_status;
        if (faults.error_count > 0) --faults.error_count;
      }
      if (faults.drop_count != 0) {
        drop = true;
        drop_after = faults.drop_after_bytes;
        if (faults.drop_count > 0) --faults.drop_count;
      }
      ignore_range = faults.ignore_range;
      etag_override = faults.etag_override;
      extra = faults.extra_bytes;
      rate = faults.bytes_per_second;
    }
    if (error_status != 0) ++stats.error_responses;
  }
  if (error_status != 0) {
    res.status = error_status;
    res.set_content("injected error\n", "text/plain");
    return;
  }
  if (rel.empty() || rel.find("..") != std::string::npos || rel.find('\\') != std::string::npos) {
    res.status = 400;
    return;
  }
  const fs::path file = root / rel;
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    res.status = 404;
    res.set_content("not found\n", "text/plain");
    return;
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  const std::string etag = etag_override.empty()
                               ? "\"" + HexU64(size) + "-" + HexU64(static_cast<uint64_t>(st.st_mtim.tv_sec) * 1000000000ULL +
                                                               static_cast<uint64_t>(st.st_mtim.tv_nsec)) +
                                     "-" + HexU64(st.st_ino) + "\""
                               : etag_override;
  res.set_header("ETag", etag);
  res.set_header("Accept-Ranges", "bytes");
  std::optional<ByteRange> range;
  if (req.has_header("Range") && !ignore_range) {
    range = ParseRange(req.get_header_value("Range"));
    if (range && req.has_header("If-Range") && req.get_header_value("If-Range") != etag) range.reset();
  }
  uint64_t start = 0, length = size + extra;
  if (range) {
    if (range->first >= size) {
      res.status = 416;
      res.set_header("Content-Range", "bytes */" + std::to_string(size));
      return;
    }
    const uint64_t last = std::min(range->last.value_or(size - 1), size - 1);
    start = range->first;
    length = last - start + 1;
    res.status = 206;
    res.set_header("Content-Range",
                   "bytes " + std::to_string(start) + "-" + std::to_string(last) + "/" + std::to_string(size));
  } else {
    res.status = 200;
  }
  const bool artifact = rel.rfind("artifacts/", 0) == 0;
  if (artifact) {
    std::lock_guard<std::mutex> lock(mu);
    ++(range ? stats.partial_responses : stats.full_responses);
  }
  std::shared_ptr<std::FILE> fp(std::fopen(file.c_str(), "rb"), [](std::FILE* f) {
    if (f) std::fclose(f);
  });
  if (!fp) {
    res.status = 500;
    return;
  }
  res.set_content_provider(
      static_cast<size_t>(length), "application/octet-stream",
      [this, fp, start, size, drop, drop_after, artifact, rate](size_t offset, size_t want, httplib::DataSink& sink) {
        if (drop && offset >= drop_after) return false;  // connection closes mid-body
        size_t n = std::min<size_t>(want, 64 * 1024);
        if (rate > 0) {
          // ~20 writes a second at the configured rate.
          n = std::min<size_t>(n, std::max<size_t>(1, static_cast<size_t>(rate / 20)));
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        if (drop) n = std::min<size_t>(n, static_cast<size_t>(drop_after - offset));
        char buf[64 * 1024];
        const uint64_t pos = start + offset;
        size_t got = 0;
        if (pos < size) {
          n = std::min<size_t>(n, static_cast<size_t>(size - pos));
          if (::fseeko(fp.get(), static_cast<off_t>(pos), SEEK_SET) != 0) return false;
          got = std::fread(buf, 1, n, fp.get());
          if (got == 0) return false;
        } else {
          std::memset(buf, 0x5a, n);  // injected over-length tail
          got = n;
        }
        if (artifact) {
          std::lock_guard<std::mutex> lock(mu);
          stats.body_bytes += got;
        }
        return sink.write(buf, got);
      });
}

ArtifactServer::ArtifactServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ArtifactServer::~ArtifactServer() { Stop(); }

Result<std::unique_ptr<ArtifactServer>> ArtifactServer::Start(const fs::path& root, int port) {
  auto impl = std::make_unique<Impl>();
  impl->root = root;
  Impl* raw = impl.get();
  impl->server.Get(".*", [raw](const httplib::Request& req, httplib::Response& res) { raw->Handle(req, res); });
  impl->server.set_keep_alive_max_count(1000);
  // Headers and body go out in separate writes: without TCP_NODELAY, Nagle + delayed
  // ACK stall every small response by ~40 ms.
  impl->server.set_tcp_nodelay(true);
  if (port == 0) {
    impl->port = impl->server.bind_to_any_port("127.0.0.1");
  } else {
    impl->port = impl->server.bind_to_port("127.0.0.1", port) ? port : -1;
  }
  if (impl->port <= 0) return UnavailableError("ArtifactServer: cannot bind 127.0.0.1");
  impl->thread = std::thread([raw] { raw->server.listen_after_bind(); });
  // The socket already listens; wait for the accept loop so Stop() cannot race it.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!impl->server.is_running() && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  return std::unique_ptr<ArtifactServer>(new ArtifactServer(std::move(impl)));
}

std::string ArtifactServer::base_url() const { return "http://127.0.0.1:" + std::to_string(impl_->port); }
int ArtifactServer::port() const { return impl_->port; }

void ArtifactServer::SetFaults(const ArtifactServerFaults& faults) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->faults = faults;
}

ArtifactServerStats ArtifactServer::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->stats;
}

void ArtifactServer::ResetStats() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->stats = {};
}

void ArtifactServer::Stop() {
  if (!impl_ || !impl_->thread.joinable()) return;
  impl_->server.stop();
  impl_->thread.join();
}

}  // namespace flotilla::ota
