#include "flotilla/coordinator/rollout_http.h"

#include <httplib.h>

#include "rollout_json.h"

namespace flotilla::coordinator {
namespace {

using nlohmann::json;

constexpr size_t kMaxBodyBytes = 256 * 1024;

void Reply(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

void ReplyError(httplib::Response& res, const Status& s) { Reply(res, HttpStatusFor(s), {{"error", s.ToString()}}); }

// Wraps a handler with the auth check and exception containment (nothing throws out).
httplib::Server::Handler Guard(RolloutAuthCheck auth,
                               std::function<void(const httplib::Request&, httplib::Response&)> fn) {
  return [auth = std::move(auth), fn = std::move(fn)](const httplib::Request& req, httplib::Response& res) {
    if (auth) {
      Status s = auth(req);
      if (!s.ok()) {
        Reply(res, s.code() == StatusCode::kUnauthenticated ? 401 : 403, {{"error", s.ToString()}});
        return;
      }
    }
    if (req.body.size() > kMaxBodyBytes) {
      Reply(res, 413, {{"error", "request body too large"}});
      return;
    }
    try {
      fn(req, res);
    } catch (const std::exception& e) {
      Reply(res, 500, {{"error", std::string("internal error: ") + e.what()}});
    }
  };
}

}  // namespace

int HttpStatusFor(const Status& s) {
  switch (s.code()) {
    case StatusCode::kOk:
      return 200;
    case StatusCode::kInvalidArgument:
    case StatusCode::kOutOfRange:
      return 400;
    case StatusCode::kUnauthenticated:
      return 401;
    case StatusCode::kPermissionDenied:
      return 403;
    case StatusCode::kNotFound:
      return 404;
    case StatusCode::kAlreadyExists:
    case StatusCode::kFailedPrecondition:
    case StatusCode::kAborted:
      return 409;
    case StatusCode::kUnavailable:
      return 503;
    default:
      return 500;
  }
}

void RegisterRolloutRoutes(httplib::Server& server, RolloutManager& manager, RolloutAuthCheck auth) {
  RolloutManager* m = &manager;
  server.Get("/api/v1/rollouts", Guard(auth, [m](const httplib::Request&, httplib::Response& res) {
               auto list = m->List();
               if (!list.ok()) return ReplyError(res, list.status());
               json out = json::array();
               for (const auto& s : *list) out.push_back(internal::SummaryToJson(s));
               Reply(res, 200, out);
             }));
  server.Post("/api/v1/rollouts", Guard(auth, [m](const httplib::Request& req, httplib::Response& res) {
                auto spec = internal::SpecFromJsonText(req.body);
                if (!spec.ok()) return ReplyError(res, spec.status());
                auto created = m->Create(*spec);
                if (!created.ok()) return ReplyError(res, created.status());
                (void)m->Tick();  // errors are the rollout's, visible in its state; logged
                auto now = m->Get(created->id);
                Reply(res, 201, internal::SummaryToJson(now.ok() ? *now : *created));
              }));
  server.Get(R"(/api/v1/rollouts/(\d+))", Guard(auth, [m](const httplib::Request& req, httplib::Response& res) {
               auto id = internal::ParseRolloutId(req.matches[1].str());
               if (!id.ok()) return ReplyError(res, id.status());
               auto s = m->Get(*id);
               if (!s.ok()) return ReplyError(res, s.status());
               Reply(res, 200, internal::SummaryToJson(*s));
             }));
  server.Get(R"(/api/v1/rollouts/(\d+)/devices)", Guard(auth, [m](const httplib::Request& req, httplib::Response& res) {
               auto id = internal::ParseRolloutId(req.matches[1].str());
               if (!id.ok()) return ReplyError(res, id.status());
               std::optional<DeviceRolloutStatus> filter;
               if (req.has_param("status")) {
                 auto st = ParseDeviceRolloutStatus(req.get_param_value("status"));
                 if (!st.ok()) return ReplyError(res, st.status());
                 filter = *st;
               }
               size_t limit = 0;
               if (req.has_param("limit")) {
                 auto l = internal::ParseRolloutId(req.get_param_value("limit"));
                 if (!l.ok()) return ReplyError(res, InvalidArgumentError("bad limit"));
                 limit = static_cast<size_t>(*l);
               }
               auto rows = m->Devices(*id, filter, limit);
               if (!rows.ok()) return ReplyError(res, rows.status());
               json out = json::array();
               for (const auto& r : *rows) out.push_back(internal::DeviceRowToJson(r));
               Reply(res, 200, out);
             }));
  server.Post(R"(/api/v1/rollouts/(\d+)/(pause|resume|abort|rollback))",
              Guard(auth, [m](const httplib::Request& req, httplib::Response& res) {
                auto id = internal::ParseRolloutId(req.matches[1].str());
                if (!id.ok()) return ReplyError(res, id.status());
                const std::string verb = req.matches[2];
                Status s;
                if (verb == "pause") s = m->Pause(*id, internal::ReasonFromBody(req.body, "paused by operator"));
                if (verb == "resume") s = m->Resume(*id);
                if (verb == "abort") s = m->Abort(*id, internal::ReasonFromBody(req.body, "aborted by operator"));
                if (verb == "rollback") s = m->Rollback(*id, internal::ReasonFromBody(req.body, "rollback by operator"));
                if (!s.ok()) return ReplyError(res, s);
                (void)m->Tick();
                auto now = m->Get(*id);
                if (!now.ok()) return ReplyError(res, now.status());
                Reply(res, 200, internal::SummaryToJson(*now));
              }));
}

}  // namespace flotilla::coordinator
