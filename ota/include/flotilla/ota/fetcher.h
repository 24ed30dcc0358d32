// Fetching metadata and artifact ranges from a repository (HTTP in production, see
// HttpFetcher; any static server or CDN that honours Range/If-Range works).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "flotilla/core/bytes.h"
#include "flotilla/core/status.h"
#include "flotilla/ota/update_check.h"

namespace flotilla::ota {

struct RangeRequest {
  std::string path;     // relative to the repository root, e.g. artifacts/<sha>
  uint64_t offset = 0;  // first byte wanted
  uint64_t length = 0;  // 0: to the end
  std::string if_range; // ETag from an earlier response; empty: none
};

struct RangeResponse {
  int http_status = 0;        // 206 partial, 200 full body
  std::string etag;
  uint64_t body_offset = 0;   // file offset of the first body byte (0 for a 200)
};

// Status codes the fetcher returns, so callers can decide fatal vs retry:
//   NotFound / FailedPrecondition / PermissionDenied   4xx: fatal, never retried
//   Unavailable        connection refused or dropped, 5xx, 408, 429: retry with back-off
//   DeadlineExceeded   slower than the minimum speed or timed out: retry with back-off
//   (and whatever the callbacks returned, unchanged)
class ArtifactFetcher : public MetadataSource {
 public:
  // Streams a range. `on_headers` sees the status/ETag before any body byte and may
  // refuse (its error is returned). `on_data` receives the body in order; an error stops
  // the transfer and is returned. Nothing is buffered beyond one network read.
  virtual Result<RangeResponse> FetchRange(const RangeRequest& request,
                                           const std::function<Status(const RangeResponse&)>& on_headers,
                                           const std::function<Status(ByteSpan)>& on_data) = 0;
};

// True for errors worth retrying after a back-off (see the table above).
inline bool IsRetryable(const Status& s) {
  return s.code() == StatusCode::kUnavailable || s.code() == StatusCode::kDeadlineExceeded ||
         s.code() == StatusCode::kDataLoss;
}

struct HttpFetcherOptions {
  std::string base_url;  // "http://127.0.0.1:8080" (optionally with a path prefix)
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(10)};
  std::chrono::milliseconds read_timeout{std::chrono::seconds(30)};
  // Slow-retrieval defence (Uptane): abort a transfer whose average speed stays below
  // this after the grace period. 0 disables.
  uint64_t min_bytes_per_second = 1024;
  std::chrono::milliseconds min_speed_grace{std::chrono::seconds(10)};
};

// cpp-httplib client. Not thread-safe: one fetcher per client thread.
class HttpFetcher final : public ArtifactFetcher {
 public:
  static Result<std::unique_ptr<HttpFetcher>> Create(HttpFetcherOptions options);
  ~HttpFetcher() override;
  Result<Bytes> FetchMetadata(const std::string& path, size_t max_bytes) override;
  Result<RangeResponse> FetchRange(const RangeRequest& request,
                                   const std::function<Status(const RangeResponse&)>& on_headers,
                                   const std::function<Status(ByteSpan)>& on_data) override;

 private:
  struct Impl;
  explicit HttpFetcher(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace flotilla::ota
