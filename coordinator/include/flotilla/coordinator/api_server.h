// The coordinator's HTTP server (cpp-httplib): the REST admin API under /api/v1 with
// bearer tokens, the device upload endpoint, artifact downloads with Range/ETag,
// Prometheus /metrics and /healthz. docs/coordinator.md is the reference.
//
// Auth: every /api/v1 route except uploads needs "Authorization: Bearer <API token>"
// (401 without or with an unknown token, 403 when the token lacks the scope: GET needs
// "read", starting/cancelling rounds "rounds", device changes "admin"). Uploads carry the
// per-(round, device) upload token instead (Store::UploadToken), so a device needs no
// admin credentials and one device's token is useless for another's slot.
// Errors are JSON: {"error": {"code": "NOT_FOUND", "message": "..."}}.
//
// Thread-safe: requests run on cpp-httplib's worker threads; Start/Stop from one thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "flotilla/coordinator/metrics.h"
#include "flotilla/coordinator/store.h"
#include "flotilla/core/status.h"

namespace flotilla::coordinator {

struct ApiServerOptions {
  std::string host = "127.0.0.1";
  int port = 0;                                   // 0: any free port
  uint64_t max_upload_bytes = uint64_t{64} << 20;  // 413 above
  uint64_t max_json_bytes = uint64_t{1} << 20;     // request bodies of the admin API
  std::string public_url;                         // base for upload URLs; empty: http://host:port
  std::string round_defaults_json = "{}";         // merged under POST /rounds "config"
  int read_timeout_seconds = 30;
};

class ApiServer {
 public:
  // Binds and starts serving on a background thread. Unavailable if it cannot bind.
  // `store` and `metrics` must outlive the server.
  static Result<std::unique_ptr<ApiServer>> Start(Store& store, Metrics& metrics, ApiServerOptions options);
  ~ApiServer();  // Stop()
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  int port() const;
  std::string base_url() const;  // public_url, or "http://host:port"
  // Where a device uploads its masked input for `round_id` (the UploadTarget url).
  std::string UploadUrl(const std::string& round_id, const std::string& device_id) const;
  // Stops accepting, finishes in-flight requests. Idempotent.
  void Stop();

 private:
  struct Impl;
  explicit ApiServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace flotilla::coordinator
