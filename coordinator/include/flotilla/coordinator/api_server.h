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
// Public (no token): /healthz, /metrics, uploads (upload token), and
// GET /api/v1/artifacts/sha256/{hex} for artifacts a model or adapter version names
// (content-addressed; what devices fetch global adapters from, with Range/ETag).
//
// The server is the round engine's rounds::UploadSource: TargetFor() hands out the
// upload URL + token, Fetch() reads what the device uploaded (hash-checked).
//
// Thread-safe: requests run on cpp-httplib's worker threads; Start/Stop from one thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "flotilla/coordinator/metrics.h"
#include "flotilla/coordinator/round_ports.h"
#include "flotilla/coordinator/store.h"
#include "flotilla/core/status.h"

namespace httplib {
class Server;
struct Request;
}  // namespace httplib

namespace flotilla::coordinator {

// Checks a request's bearer token against the scope its method and path need (GET:
// "read", rounds: "rounds", anything else: "admin"). Unauthenticated / PermissionDenied.
using ApiRouteAuth = std::function<Status(const httplib::Request& request)>;

struct ApiServerOptions {
  std::string host = "127.0.0.1";
  int port = 0;                                   // 0: any free port
  uint64_t max_upload_bytes = uint64_t{64} << 20;  // 413 above
  uint64_t max_json_bytes = uint64_t{1} << 20;     // request bodies of the admin API
  std::string public_url;                         // base for upload URLs; empty: http://host:port
  std::string round_defaults_json = "{}";         // merged under POST /rounds "config"
  int read_timeout_seconds = 30;
  // More routes (e.g. RegisterRolloutRoutes), registered before the server starts
  // listening. Routes under /api/v1 are authenticated before their handler runs; `auth`
  // lets a handler check again. Everything they capture must outlive the server.
  std::function<void(httplib::Server& server, const ApiRouteAuth& auth)> extra_routes;
};

class ApiServer final : public rounds::UploadSource {
 public:
  // Binds and starts serving on a background thread. Unavailable if it cannot bind.
  // `store` and `metrics` must outlive the server.
  static Result<std::unique_ptr<ApiServer>> Start(Store& store, Metrics& metrics, ApiServerOptions options);
  ~ApiServer() override;  // Stop()
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  int port() const;
  std::string base_url() const;  // public_url, or "http://host:port"
  // Where a device uploads its masked input for `round_id` (the UploadTarget url).
  std::string UploadUrl(const std::string& round_id, const std::string& device_id) const;

  // rounds::UploadSource. TargetFor: UploadUrl + the per-(round, device) HMAC token +
  // max_upload_bytes (NotFound for an unknown round). Fetch: the stored upload
  // (Store::ReadUpload; NotFound if none). Thread-safe.
  Result<v1::UploadTarget> TargetFor(std::string_view round_id, std::string_view device_id) override;
  Result<Bytes> Fetch(std::string_view round_id, std::string_view device_id, const v1::ClaimCheck& claim) override;
  // Stops accepting, finishes in-flight requests. Idempotent.
  void Stop();

 private:
  struct Impl;
  explicit ApiServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace flotilla::coordinator
