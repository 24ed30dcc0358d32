// REST routes for rollouts, mounted on the coordinator's cpp-httplib server (docs/ota.md
// "Rollouts"). Authentication belongs to the server owner: every request goes through
// `auth` first.
//
//   GET  /api/v1/rollouts                      list (JSON array of summaries)
//   POST /api/v1/rollouts                      create; body = spec JSON (docs/ota.md)
//   GET  /api/v1/rollouts/{id}                 one summary
//   GET  /api/v1/rollouts/{id}/devices[?status=failed&limit=N]
//   POST /api/v1/rollouts/{id}/{pause|resume|abort|rollback}   optional body {"reason": "..."}
//
// Errors are {"error": "..."} with 400 (invalid), 401/403 (auth), 404, 409 (state), 500.
#pragma once

#include <functional>

#include "flotilla/coordinator/rollout.h"
#include "flotilla/core/status.h"

namespace httplib {
class Server;
struct Request;
}  // namespace httplib

namespace flotilla::coordinator {

// OK to serve the request; Unauthenticated → 401, PermissionDenied (or other) → 403.
using RolloutAuthCheck = std::function<Status(const httplib::Request& request)>;

// Registers the routes. `manager` is borrowed and must outlive the server. Handlers run
// on the server's threads (RolloutManager is thread-safe); mutating requests also run
// one Tick() so the effect is visible in the response.
void RegisterRolloutRoutes(httplib::Server& server, RolloutManager& manager, RolloutAuthCheck auth);

// HTTP status for a Status code (shared by the routes and their tests).
int HttpStatusFor(const Status& status);

}  // namespace flotilla::coordinator
