// ArtifactServer: serves a repository directory over HTTP/1.1 (cpp-httplib) with single
// byte ranges (206 + Content-Range), strong ETags and If-Range, as any static server or
// CDN would. Faults can be injected for tests: dropped connections, ignored Range,
// changed ETags, error statuses.
// Thread-safe: Start/Stop from one thread; SetFaults and counters from any thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "flotilla/core/status.h"

namespace flotilla::ota {

struct ArtifactServerFaults {
  std::string path_prefix;         // faults apply to request paths starting with this ("" = all)
  uint64_t drop_after_bytes = 0;   // close the connection after this many body bytes...
  int drop_count = 0;              // ...for this many responses (-1: all)
  bool ignore_range = false;       // answer every Range request with a 200 full body
  std::string etag_override;       // serve this ETag instead of the real one
  int error_status = 0;            // answer with this status (404, 500, 503, ...)...
  int error_count = 0;             // ...for this many requests (-1: all)
  uint64_t extra_bytes = 0;        // append this many junk bytes to full bodies (over-length)
  uint64_t bytes_per_second = 0;   // throttle bodies to about this rate (slow retrieval); 0: off
};

// Byte and response counters cover artifacts/ only (metadata is small and uncounted).
struct ArtifactServerStats {
  uint64_t requests = 0;           // every request, metadata included
  uint64_t body_bytes = 0;         // bytes handed to the socket (including dropped tails)
  uint64_t full_responses = 0;     // 200s for artifacts
  uint64_t partial_responses = 0;  // 206s
  uint64_t error_responses = 0;
};

class ArtifactServer {
 public:
  // Serves `root` on 127.0.0.1 (port 0 = any free port).
  static Result<std::unique_ptr<ArtifactServer>> Start(const std::filesystem::path& root, int port = 0);
  ~ArtifactServer();  // stops

  std::string base_url() const;  // "http://127.0.0.1:<port>"
  int port() const;
  void SetFaults(const ArtifactServerFaults& faults);
  ArtifactServerStats stats() const;
  void ResetStats();
  void Stop();

 private:
  struct Impl;
  explicit ArtifactServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace flotilla::ota
