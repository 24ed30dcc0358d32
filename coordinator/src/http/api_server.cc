#include "flotilla/coordinator/api_server.h"

#include <google/protobuf/util/json_util.h>
#include <httplib.h>
#include <sys/stat.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "flotilla/coordinator/sealed_box_scanner.h"
#include "flotilla/core/log.h"
#include "flotilla/security/hash.h"
#include "flotilla/v1/device.pb.h"

namespace flotilla::coordinator {
namespace {

using json = nlohmann::json;
using httplib::Request;
using httplib::Response;

constexpr std::string_view kApiPrefix = "/api/v1/";
constexpr std::string_view kUploadPrefix = "/api/v1/uploads/";
constexpr std::string_view kArtifactPrefix = "/api/v1/artifacts/";
// A safe name (protocol/topics.h) as a regex group.
#define FLT_NAME "([A-Za-z0-9._-]{1,64})"

int HttpStatusFor(StatusCode code) {
  switch (code) {
    case StatusCode::kInvalidArgument:
    case StatusCode::kOutOfRange: return 400;
    case StatusCode::kUnauthenticated: return 401;
    case StatusCode::kPermissionDenied: return 403;
    case StatusCode::kNotFound: return 404;
    case StatusCode::kAlreadyExists:
    case StatusCode::kAborted:
    case StatusCode::kFailedPrecondition: return 409;
    case StatusCode::kResourceExhausted: return 413;
    case StatusCode::kUnavailable: return 503;
    default: return 500;
  }
}

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

void SendJson(Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(Dump(body) + "\n", "application/json");
}

void SendError(Response& res, int status, std::string_view code, std::string_view message) {
  SendJson(res, status, json{{"error", {{"code", code}, {"message", message}}}});
}

void SendStatus(Response& res, const Status& s) {
  SendError(res, HttpStatusFor(s.code()), ToString(s.code()), s.message());
}

std::string BearerToken(const Request& req) {
  const std::string h = req.get_header_value("Authorization");
  constexpr std::string_view kBearer = "Bearer ";
  if (h.size() <= kBearer.size() || h.compare(0, kBearer.size(), kBearer) != 0) return {};
  return h.substr(kBearer.size());
}

// "api:<token id>" for the audit log (the id is the public part of a validated token).
std::string Actor(const Request& req) {
  const std::string t = BearerToken(req);
  return t.size() > 20 ? "api:" + t.substr(4, 16) : "api";
}

Result<int64_t> ParseIntParam(const Request& req, const char* name, int64_t fallback, int64_t min, int64_t max) {
  if (!req.has_param(name)) return fallback;
  const std::string v = req.get_param_value(name);
  if (v.empty() || v.size() > 18) return InvalidArgumentError(std::string("query parameter '") + name + "' is not a number");
  int64_t out = 0;
  for (char c : v) {
    if (c < '0' || c > '9') return InvalidArgumentError(std::string("query parameter '") + name + "' is not a number");
    out = out * 10 + (c - '0');
  }
  if (out < min || out > max) {
    return InvalidArgumentError(std::string("query parameter '") + name + "' must be in [" + std::to_string(min) +
                                ", " + std::to_string(max) + "]");
  }
  return out;
}

// An absent or empty body is an empty object; anything else must be a JSON object.
Result<json> ParseBody(const Request& req) {
  if (req.body.empty()) return json::object();
  json j = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return InvalidArgumentError("request body is not valid JSON");
  if (!j.is_object()) return InvalidArgumentError("request body must be a JSON object");
  return j;
}

Result<std::string> OptionalString(const json& body, const char* key, size_t max_len) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::string();
  if (!it->is_string()) return InvalidArgumentError(std::string("'") + key + "' must be a string");
  std::string v = it->get<std::string>();
  if (v.size() > max_len) return InvalidArgumentError(std::string("'") + key + "' is too long");
  return v;
}

template <typename Msg>
json ProtoJson(const Bytes& blob) {
  if (blob.empty()) return nullptr;
  Msg msg;
  if (!msg.ParseFromArray(blob.data(), static_cast<int>(blob.size()))) return nullptr;
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  if (!google::protobuf::util::MessageToJsonString(msg, &out, o).ok()) return nullptr;
  json j = json::parse(out, nullptr, false);
  return j.is_discarded() ? json(nullptr) : j;
}

json DeviceJson(const DeviceRecord& d) {
  std::string key_id;
  if (!d.identity_public_key.empty()) key_id = ToHex(security::Sha256(d.identity_public_key));
  return json{{"id", d.id},
              {"status", ToString(d.status)},
              {"groups", d.groups},
              {"key_id", key_id},
              {"has_certificate", !d.certificate_pem.empty()},
              {"firmware_version", d.firmware_version},
              {"sdk_version", d.sdk_version},
              {"first_seen_ms", d.first_seen_ms},
              {"last_seen_ms", d.last_seen_ms},
              {"presence", ToString(d.presence)},
              {"presence_changed_ms", d.presence_changed_ms},
              {"reported_ms", d.reported_ms},
              {"reported", ProtoJson<v1::ReportedState>(d.reported_state)},
              {"hardware", ProtoJson<v1::HardwareInfo>(d.hardware)},
              {"revoked_ms", d.revoked_ms},
              {"revoked_reason", d.revoked_reason}};
}

json RoundJson(const RoundRecord& r) {
  json config = json::parse(r.config_json, nullptr, false);
  if (config.is_discarded()) config = r.config_json;  // keep what is there, as a string
  return json{{"id", r.id},
              {"group", r.group},
              {"state", ToString(r.state)},
              {"reason", r.reason},
              {"config", config},
              {"created_ms", r.created_ms},
              {"updated_ms", r.updated_ms},
              {"cancel_requested", r.cancel_requested},
              {"cancel_reason", r.cancel_reason},
              {"deadlines_ms", r.deadlines_ms},
              {"aggregate_sha256", r.aggregate_sha256},
              {"result_version", r.result_version}};
}

json VersionJson(const VersionRecord& v) {
  json metrics = json::parse(v.metrics_json, nullptr, false);
  if (metrics.is_discarded()) metrics = json::object();
  return json{{"id", v.id},
              {"kind", v.kind},
              {"parent_id", v.parent_id},
              {"base_model_id", v.base_model_id},
              {"round_id", v.round_id},
              {"sha256", v.sha256},
              {"size", v.size},
              {"metrics", metrics},
              {"created_ms", v.created_ms}};
}

json AuditJson(const AuditEntry& e) {
  json detail = json::parse(e.detail_json, nullptr, false);
  if (detail.is_discarded()) detail = e.detail_json;
  return json{{"id", e.id}, {"at_ms", e.at_ms}, {"actor", e.actor}, {"action", e.action},
              {"subject", e.subject}, {"detail", detail}};
}

struct ByteRange {
  uint64_t first = 0;
  std::optional<uint64_t> last;
  std::optional<uint64_t> suffix;  // "bytes=-N"
};

// One range of "bytes=a-", "bytes=a-b" or "bytes=-n"; multi-range and junk give nullopt
// (served as a full 200, which RFC 9110 allows).
std::optional<ByteRange> ParseRange(const std::string& v) {
  if (v.rfind("bytes=", 0) != 0 || v.find(',') != std::string::npos) return std::nullopt;
  const std::string spec = v.substr(6);
  const size_t dash = spec.find('-');
  if (dash == std::string::npos) return std::nullopt;
  auto number = [](const std::string& s) -> std::optional<uint64_t> {
    if (s.empty() || s.size() > 19) return std::nullopt;
    uint64_t n = 0;
    for (char c : s) {
      if (c < '0' || c > '9') return std::nullopt;
      n = n * 10 + static_cast<uint64_t>(c - '0');
    }
    return n;
  };
  ByteRange r;
  const std::string a = spec.substr(0, dash), b = spec.substr(dash + 1);
  if (a.empty()) {
    r.suffix = number(b);
    if (!r.suffix || *r.suffix == 0) return std::nullopt;
    return r;
  }
  auto first = number(a);
  if (!first) return std::nullopt;
  r.first = *first;
  if (!b.empty()) {
    r.last = number(b);
    if (!r.last || *r.last < r.first) return std::nullopt;
  }
  return r;
}

}  // namespace

struct ApiServer::Impl {
  Store* store = nullptr;
  Metrics* metrics = nullptr;
  ApiServerOptions options;
  json round_defaults = json::object();
  httplib::Server server;
  std::thread thread;
  int port = 0;

  // Scope a request needs; empty for routes without bearer auth.
  static std::string_view RequiredScope(const Request& req) {
    const std::string& p = req.path;
    if (p.rfind(kUploadPrefix, 0) == 0) return {};
    if (p.rfind(kArtifactPrefix, 0) == 0 && (req.method == "GET" || req.method == "HEAD")) return {};
    if (p.rfind(kApiPrefix, 0) != 0) return {};
    if (req.method == "GET" || req.method == "HEAD") return kScopeRead;
    if (p.rfind("/api/v1/rounds", 0) == 0) return kScopeRounds;
    return kScopeAdmin;
  }

  // Runs before the body is read: auth and size limits, so neither an anonymous client
  // nor an oversized body costs more than its headers.
  httplib::Server::HandlerResponse PreRoute(const Request& req, Response& res) {
    const bool upload = req.path.rfind(kUploadPrefix, 0) == 0;
    if (req.has_header("Content-Length")) {
      const std::string cl = req.get_header_value("Content-Length");
      uint64_t n = 0;
      bool ok = !cl.empty() && cl.size() <= 19;
      for (size_t i = 0; ok && i < cl.size(); ++i) {
        ok = cl[i] >= '0' && cl[i] <= '9';
        n = n * 10 + static_cast<uint64_t>(cl[i] - '0');
      }
      const uint64_t cap = upload ? options.max_upload_bytes : options.max_json_bytes;
      if (!ok) {
        SendError(res, 400, "INVALID_ARGUMENT", "bad Content-Length");
        return httplib::Server::HandlerResponse::Handled;
      }
      if (n > cap) {
        SendError(res, 413, "RESOURCE_EXHAUSTED",
                  "request body of " + std::to_string(n) + " bytes is over the limit of " + std::to_string(cap));
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    Status auth = Authorize(req);
    if (auth.ok()) return httplib::Server::HandlerResponse::Unhandled;
    if (auth.code() == StatusCode::kUnauthenticated) {
      res.set_header("WWW-Authenticate", BearerToken(req).empty() ? "Bearer" : "Bearer error=\"invalid_token\"");
    }
    SendStatus(res, auth);
    return httplib::Server::HandlerResponse::Handled;
  }

  // OK when the request needs no token or carries one with the scope it needs.
  Status Authorize(const Request& req) const {
    const std::string_view scope = RequiredScope(req);
    if (scope.empty()) return Status::Ok();
    const std::string token = BearerToken(req);
    if (token.empty()) return UnauthenticatedError("missing bearer token");
    FLT_ASSIGN_OR_RETURN(ApiTokenRecord record, store->AuthenticateApiToken(token));
    if (!record.HasScope(scope)) return PermissionDeniedError("token lacks the '" + std::string(scope) + "' scope");
    return Status::Ok();
  }

  void Routes();
  void Download(const Request& req, Response& res, VersionKind kind);
  void ServeArtifact(const Request& req, Response& res, const std::string& sha256, const std::string& what);
  void Upload(const Request& req, Response& res, const httplib::ContentReader& reader);
};

void ApiServer::Impl::Routes() {
  auto& s = server;
  s.Get("/healthz", [this](const Request&, Response& res) {
    Status st = store->SchemaVersion().status();
    if (!st.ok()) return SendStatus(res, st);
    SendJson(res, 200, json{{"status", "ok"}});
  });
  s.Get("/metrics", [this](const Request&, Response& res) {
    auto gauges = CollectGauges(*store);
    if (!gauges.ok()) return SendStatus(res, gauges.status());
    res.status = 200;
    res.set_content(metrics->Render(*gauges), "text/plain; version=0.0.4; charset=utf-8");
  });

  // ---- devices
  s.Get("/api/v1/devices", [this](const Request& req, Response& res) {
    DeviceFilter f;
    auto limit = ParseIntParam(req, "limit", 100, 1, 1000);
    if (!limit.ok()) return SendStatus(res, limit.status());
    f.limit = static_cast<int>(*limit);
    f.after_id = req.get_param_value("after");
    f.group = req.get_param_value("group");
    if (req.has_param("status")) {
      const std::string v = req.get_param_value("status");
      if (v != "active" && v != "revoked") return SendError(res, 400, "INVALID_ARGUMENT", "status must be active|revoked");
      f.status = v == "active" ? DeviceStatus::kActive : DeviceStatus::kRevoked;
    }
    if (req.has_param("presence")) {
      const std::string v = req.get_param_value("presence");
      if (v != "online" && v != "offline") return SendError(res, 400, "INVALID_ARGUMENT", "presence must be online|offline");
      f.presence = v == "online" ? PresenceState::kOnline : PresenceState::kOffline;
    }
    auto devices = store->ListDevices(f);
    if (!devices.ok()) return SendStatus(res, devices.status());
    json items = json::array();
    for (const auto& d : *devices) items.push_back(DeviceJson(d));
    json body{{"devices", items}};
    if (static_cast<int>(devices->size()) == f.limit) body["next_after"] = devices->back().id;
    SendJson(res, 200, body);
  });
  s.Get("/api/v1/devices/" FLT_NAME, [this](const Request& req, Response& res) {
    auto d = store->GetDevice(req.matches[1].str());
    if (!d.ok()) return SendStatus(res, d.status());
    SendJson(res, 200, DeviceJson(*d));
  });
  s.Post("/api/v1/devices/" FLT_NAME "/revoke", [this](const Request& req, Response& res) {
    auto body = ParseBody(req);
    if (!body.ok()) return SendStatus(res, body.status());
    auto reason = OptionalString(*body, "reason", 1024);
    if (!reason.ok()) return SendStatus(res, reason.status());
    const std::string id = req.matches[1].str();
    Status st = store->RevokeDevice(id, *reason, Actor(req));
    if (!st.ok()) return SendStatus(res, st);
    auto d = store->GetDevice(id);
    if (!d.ok()) return SendStatus(res, d.status());
    SendJson(res, 200, DeviceJson(*d));
  });
  s.Put("/api/v1/devices/" FLT_NAME "/groups", [this](const Request& req, Response& res) {
    auto body = ParseBody(req);
    if (!body.ok()) return SendStatus(res, body.status());
    auto it = body->find("groups");
    if (it == body->end() || !it->is_array()) {
      return SendError(res, 400, "INVALID_ARGUMENT", "'groups' must be an array of names");
    }
    std::vector<std::string> groups;
    for (const auto& g : *it) {
      if (!g.is_string()) return SendError(res, 400, "INVALID_ARGUMENT", "'groups' must be an array of names");
      groups.push_back(g.get<std::string>());
    }
    if (groups.size() > 64) return SendError(res, 400, "INVALID_ARGUMENT", "at most 64 groups");
    const std::string id = req.matches[1].str();
    Status st = store->SetDeviceGroups(id, groups, Actor(req));
    if (!st.ok()) return SendStatus(res, st);
    auto d = store->GetDevice(id);
    if (!d.ok()) return SendStatus(res, d.status());
    SendJson(res, 200, DeviceJson(*d));
  });

  // ---- rounds
  s.Get("/api/v1/rounds", [this](const Request& req, Response& res) {
    auto limit = ParseIntParam(req, "limit", 100, 1, 1000);
    if (!limit.ok()) return SendStatus(res, limit.status());
    std::optional<RoundState> state;
    if (req.has_param("state")) {
      auto st = ParseRoundState(req.get_param_value("state"));
      if (!st.ok()) return SendStatus(res, st.status());
      state = *st;
    }
    auto rounds = store->ListRounds(state, static_cast<int>(*limit));
    if (!rounds.ok()) return SendStatus(res, rounds.status());
    json items = json::array();
    for (const auto& r : *rounds) items.push_back(RoundJson(r));
    SendJson(res, 200, json{{"rounds", items}});
  });
  s.Get("/api/v1/rounds/" FLT_NAME, [this](const Request& req, Response& res) {
    const std::string id = req.matches[1].str();
    auto r = store->GetRound(id);
    if (!r.ok()) return SendStatus(res, r.status());
    auto counts = store->CountParticipantsByStage(id);
    if (!counts.ok()) return SendStatus(res, counts.status());
    auto participants = store->CountParticipants(id);  // a count: polling must not load 1,000s of rows
    if (!participants.ok()) return SendStatus(res, participants.status());
    json body = RoundJson(*r);
    body["participants"] = json{{"count", *participants}, {"stages", *counts}};
    SendJson(res, 200, body);
  });
  s.Post("/api/v1/rounds", [this](const Request& req, Response& res) {
    auto body = ParseBody(req);
    if (!body.ok()) return SendStatus(res, body.status());
    NewRound nr;
    auto id = OptionalString(*body, "id", 64);
    auto group = OptionalString(*body, "group", 64);
    if (!id.ok()) return SendStatus(res, id.status());
    if (!group.ok()) return SendStatus(res, group.status());
    nr.id = *id;
    nr.group = *group;
    json config = round_defaults;
    if (auto it = body->find("config"); it != body->end() && !it->is_null()) {
      if (!it->is_object()) return SendError(res, 400, "INVALID_ARGUMENT", "'config' must be a JSON object");
      config.merge_patch(*it);
    }
    if (nr.group.empty() && config.contains("group") && config["group"].is_string()) {
      nr.group = config["group"].get<std::string>();
    }
    nr.config_json = Dump(config);
    auto r = store->CreateRound(nr, Actor(req));
    if (!r.ok()) return SendStatus(res, r.status());
    res.set_header("Location", "/api/v1/rounds/" + r->id);
    SendJson(res, 201, RoundJson(*r));
  });
  s.Post("/api/v1/rounds/" FLT_NAME "/cancel", [this](const Request& req, Response& res) {
    auto body = ParseBody(req);
    if (!body.ok()) return SendStatus(res, body.status());
    auto reason = OptionalString(*body, "reason", 1024);
    if (!reason.ok()) return SendStatus(res, reason.status());
    const std::string id = req.matches[1].str();
    Status st = store->RequestCancelRound(id, reason->empty() ? "cancelled by operator" : *reason, Actor(req));
    if (!st.ok()) return SendStatus(res, st);
    auto r = store->GetRound(id);
    if (!r.ok()) return SendStatus(res, r.status());
    SendJson(res, 202, RoundJson(*r));
  });

  // ---- registry
  for (const auto kind : {VersionKind::kModel, VersionKind::kAdapter}) {
    const std::string base = kind == VersionKind::kModel ? "/api/v1/models" : "/api/v1/adapters";
    const std::string plural = kind == VersionKind::kModel ? "models" : "adapters";
    s.Get(base, [this, kind, plural](const Request& req, Response& res) {
      auto limit = ParseIntParam(req, "limit", 100, 1, 1000);
      if (!limit.ok()) return SendStatus(res, limit.status());
      auto versions = store->ListVersions(kind, static_cast<int>(*limit));
      if (!versions.ok()) return SendStatus(res, versions.status());
      json items = json::array();
      for (const auto& v : *versions) items.push_back(VersionJson(v));
      SendJson(res, 200, json{{plural, items}});
    });
    s.Get(base + "/" FLT_NAME, [this, kind](const Request& req, Response& res) {
      auto lineage = store->Lineage(kind, req.matches[1].str());
      if (!lineage.ok()) return SendStatus(res, lineage.status());
      json body = VersionJson(lineage->front());
      json chain = json::array();
      for (const auto& v : *lineage) chain.push_back(v.id);
      body["lineage"] = chain;
      SendJson(res, 200, body);
    });
    s.Get(base + "/" FLT_NAME "/download",
          [this, kind](const Request& req, Response& res) { Download(req, res, kind); });
  }

  // ---- content-addressed artifacts of model/adapter versions (public: devices fetch
  // global adapters here and check the sha256 from their signed messages)
  s.Get("/api/v1/artifacts/sha256/([0-9a-f]{64})", [this](const Request& req, Response& res) {
    const std::string sha = req.matches[1].str();
    auto published = store->IsVersionArtifact(sha);
    if (!published.ok()) return SendStatus(res, published.status());
    if (!*published) return SendError(res, 404, "NOT_FOUND", "no version names artifact " + sha);
    ServeArtifact(req, res, sha, sha);
  });

  // ---- audit
  s.Get("/api/v1/audit", [this](const Request& req, Response& res) {
    auto after = ParseIntParam(req, "after", 0, 0, INT64_MAX / 2);
    auto limit = ParseIntParam(req, "limit", 100, 1, 1000);
    if (!after.ok()) return SendStatus(res, after.status());
    if (!limit.ok()) return SendStatus(res, limit.status());
    auto entries = store->ListAudit(*after, static_cast<int>(*limit));
    if (!entries.ok()) return SendStatus(res, entries.status());
    json items = json::array();
    for (const auto& e : *entries) items.push_back(AuditJson(e));
    json body{{"entries", items}};
    if (!entries->empty()) body["next_after"] = entries->back().id;
    SendJson(res, 200, body);
  });

  // ---- uploads (streamed; PUT as in UploadTarget, POST accepted too)
  const std::string upload_route = "/api/v1/uploads/" FLT_NAME "/" FLT_NAME;
  auto upload = [this](const Request& req, Response& res, const httplib::ContentReader& reader) {
    Upload(req, res, reader);
  };
  s.Put(upload_route, upload);
  s.Post(upload_route, upload);
}

void ApiServer::Impl::Download(const Request& req, Response& res, VersionKind kind) {
  auto v = store->GetVersion(kind, req.matches[1].str());
  if (!v.ok()) return SendStatus(res, v.status());
  ServeArtifact(req, res, v->sha256, v->id);
}

void ApiServer::Impl::ServeArtifact(const Request& req, Response& res, const std::string& sha256,
                                    const std::string& what) {
  // This server applies Range itself (after the hash check); clear httplib's parse.
  const_cast<Request&>(req).ranges.clear();
  // Content-addressed: the hash is the strong validator, and the file must still match
  // it (checked once per file state, then cached by ArtifactStore::Verify).
  Status ok = store->artifacts().Verify(sha256);
  if (!ok.ok()) {
    FLT_LOG(kError, "http") << "refusing to serve " << what << ": " << ok.ToString();
    return SendStatus(res, ok);
  }
  const std::string etag = "\"" + sha256 + "\"";
  res.set_header("ETag", etag);
  res.set_header("Accept-Ranges", "bytes");
  if (req.get_header_value("If-None-Match") == etag) {
    res.status = 304;
    return;
  }
  const std::filesystem::path path = store->artifacts().PathFor(sha256);
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return SendError(res, 500, "INTERNAL", "artifact vanished");
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  std::optional<ByteRange> range;
  if (req.has_header("Range")) {
    range = ParseRange(req.get_header_value("Range"));
    if (range && req.has_header("If-Range") && req.get_header_value("If-Range") != etag) range.reset();
  }
  uint64_t start = 0, length = size;
  if (range) {
    if (range->suffix) {
      length = std::min(*range->suffix, size);
      start = size - length;
    } else {
      if (range->first >= size) {
        res.set_header("Content-Range", "bytes */" + std::to_string(size));
        return SendError(res, 416, "OUT_OF_RANGE", "range starts past the end");
      }
      start = range->first;
      length = std::min(range->last.value_or(size - 1), size - 1) - start + 1;
    }
    if (length == 0) {
      res.set_header("Content-Range", "bytes */" + std::to_string(size));
      return SendError(res, 416, "OUT_OF_RANGE", "empty range");
    }
    res.status = 206;
    res.set_header("Content-Range", "bytes " + std::to_string(start) + "-" + std::to_string(start + length - 1) + "/" +
                                        std::to_string(size));
  } else {
    res.status = 200;
  }
  std::shared_ptr<std::FILE> fp(std::fopen(path.c_str(), "rb"), [](std::FILE* f) {
    if (f) std::fclose(f);
  });
  if (!fp) return SendError(res, 500, "INTERNAL", "cannot open artifact");
  Metrics* m = metrics;
  res.set_content_provider(static_cast<size_t>(length), "application/octet-stream",
                           [fp, start, m](size_t offset, size_t want, httplib::DataSink& sink) {
                             char buf[64 * 1024];
                             const size_t n = std::min(want, sizeof buf);
                             if (::fseeko(fp.get(), static_cast<off_t>(start + offset), SEEK_SET) != 0) return false;
                             const size_t got = std::fread(buf, 1, n, fp.get());
                             if (got == 0) return false;
                             m->AddBytesOut(got);
                             return sink.write(buf, got);
                           });
}

void ApiServer::Impl::Upload(const Request& req, Response& res, const httplib::ContentReader& reader) {
  const std::string round_id = req.matches[1].str();
  const std::string device_id = req.matches[2].str();
  const std::string token = BearerToken(req);
  if (token.empty()) {
    res.set_header("WWW-Authenticate", "Bearer");
    return SendError(res, 401, "UNAUTHENTICATED", "missing upload token");
  }
  Status auth = store->VerifyUploadToken(round_id, device_id, token);
  if (!auth.ok()) {
    // An unknown round looks like a bad token: no probing for round ids.
    return SendStatus(res, auth.code() == StatusCode::kNotFound ? UnauthenticatedError("upload token does not verify")
                                                                 : auth);
  }
  auto round = store->GetRound(round_id);
  if (!round.ok()) return SendStatus(res, round.status());
  if (IsTerminal(round->state)) {
    return SendError(res, 409, "FAILED_PRECONDITION", "round is " + std::string(ToString(round->state)));
  }
  auto participant = store->IsParticipant(round_id, device_id);
  if (!participant.ok()) return SendStatus(res, participant.status());
  if (!*participant) return SendError(res, 403, "PERMISSION_DENIED", "device is not in the round's cohort");
  std::string expected;
  if (req.has_header("X-Flotilla-Sha256")) {
    expected = req.get_header_value("X-Flotilla-Sha256");
    if (!ValidateSha256Hex(expected).ok()) {
      return SendError(res, 400, "INVALID_ARGUMENT", "X-Flotilla-Sha256 must be 64 lower-case hex characters");
    }
  }
  auto writer = store->artifacts().NewWriter(options.max_upload_bytes);
  if (!writer.ok()) return SendStatus(res, writer.status());
  SealedBoxScanner scanner;
  Status body_status;
  const bool read = reader([&](const char* data, size_t n) {
    const ByteSpan chunk(reinterpret_cast<const uint8_t*>(data), n);
    metrics->AddBytesIn(n);
    body_status = (*writer)->Append(chunk);
    if (body_status.ok()) body_status = scanner.Feed(chunk);
    return body_status.ok();  // false stops reading: an oversized or malformed body ends here
  });
  if (!body_status.ok()) return SendStatus(res, body_status);
  if (!read) return SendError(res, 400, "INVALID_ARGUMENT", "upload body ended early");
  Status box = scanner.Finish();
  if (!box.ok()) return SendStatus(res, box);
  auto info = (*writer)->Commit(expected);
  if (!info.ok()) {
    return info.status().code() == StatusCode::kDataLoss
               ? SendError(res, 400, "INVALID_ARGUMENT", info.status().message())
               : SendStatus(res, info.status());
  }
  Status rec = store->RecordArtifact(*info, "application/x-flotilla-sealed-box");
  if (rec.ok()) rec = store->RecordUpload(UploadRecord{round_id, device_id, info->sha256, info->size, 0});
  if (!rec.ok()) return SendStatus(res, rec);
  SendJson(res, 201, json{{"round_id", round_id}, {"device_id", device_id}, {"sha256", info->sha256},
                          {"size", info->size}, {"upload_id", round_id + "/" + device_id}});
}

ApiServer::ApiServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ApiServer::~ApiServer() { Stop(); }

Result<std::unique_ptr<ApiServer>> ApiServer::Start(Store& store, Metrics& metrics, ApiServerOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->store = &store;
  impl->metrics = &metrics;
  impl->options = std::move(options);
  json defaults = json::parse(impl->options.round_defaults_json, nullptr, false);
  if (defaults.is_discarded() || !defaults.is_object()) {
    return InvalidArgumentError("http: round defaults must be a JSON object");
  }
  impl->round_defaults = std::move(defaults);
  Impl* raw = impl.get();
  auto& s = impl->server;
  // The largest body anyone may send; routes check their own caps before reading.
  s.set_payload_max_length(static_cast<size_t>(std::max(impl->options.max_upload_bytes, impl->options.max_json_bytes)));
  s.set_read_timeout(impl->options.read_timeout_seconds, 0);
  s.set_tcp_nodelay(true);
  s.set_pre_routing_handler([raw](const Request& req, Response& res) { return raw->PreRoute(req, res); });
  s.set_post_routing_handler([raw](const Request&, Response& res) { raw->metrics->CountHttpResponse(res.status); });
  s.set_exception_handler([](const Request& req, Response& res, std::exception_ptr) {
    FLT_LOG(kError, "http") << "handler threw on " << req.method << " " << req.path;
    SendError(res, 500, "INTERNAL", "internal error");
  });
  s.set_error_handler([](const Request&, Response& res) {
    if (!res.body.empty()) return;  // a handler already wrote a JSON error
    const char* code = res.status == 404   ? "NOT_FOUND"
                       : res.status == 413 ? "RESOURCE_EXHAUSTED"
                       : res.status < 500  ? "INVALID_ARGUMENT"
                                           : "INTERNAL";
    SendError(res, res.status, code, "HTTP " + std::to_string(res.status));
  });
  impl->Routes();
  if (impl->options.extra_routes) {
    impl->options.extra_routes(s, [raw](const Request& req) { return raw->Authorize(req); });
  }
  if (impl->options.port == 0) {
    impl->port = s.bind_to_any_port(impl->options.host);
  } else {
    impl->port = s.bind_to_port(impl->options.host, impl->options.port) ? impl->options.port : -1;
  }
  if (impl->port <= 0) {
    return UnavailableError("http: cannot bind " + impl->options.host + ":" + std::to_string(impl->options.port));
  }
  impl->thread = std::thread([raw] { raw->server.listen_after_bind(); });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!s.is_running() && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  FLT_LOG(kInfo, "http") << "listening on " << impl->options.host << ":" << impl->port;
  return std::unique_ptr<ApiServer>(new ApiServer(std::move(impl)));
}

int ApiServer::port() const { return impl_->port; }

std::string ApiServer::base_url() const {
  if (!impl_->options.public_url.empty()) return impl_->options.public_url;
  const std::string& h = impl_->options.host;
  const std::string host = h.find(':') != std::string::npos ? "[" + h + "]" : (h == "0.0.0.0" ? "127.0.0.1" : h);
  return "http://" + host + ":" + std::to_string(impl_->port);
}

std::string ApiServer::UploadUrl(const std::string& round_id, const std::string& device_id) const {
  return base_url() + std::string(kUploadPrefix) + round_id + "/" + device_id;
}

Result<v1::UploadTarget> ApiServer::TargetFor(std::string_view round_id, std::string_view device_id) {
  FLT_ASSIGN_OR_RETURN(std::string token, impl_->store->UploadToken(round_id, device_id));
  v1::UploadTarget t;
  t.set_url(UploadUrl(std::string(round_id), std::string(device_id)));
  t.set_token(std::move(token));
  t.set_max_bytes(impl_->options.max_upload_bytes);
  return t;
}

Result<Bytes> ApiServer::Fetch(std::string_view round_id, std::string_view device_id, const v1::ClaimCheck&) {
  // The driver checks size and sha256 against the claim; the read checks the file's name.
  return impl_->store->ReadUpload(round_id, device_id, impl_->options.max_upload_bytes);
}

void ApiServer::Stop() {
  if (!impl_ || !impl_->thread.joinable()) return;
  impl_->server.stop();
  impl_->thread.join();
}

}  // namespace flotilla::coordinator

#undef FLT_NAME
