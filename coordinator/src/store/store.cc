#include "flotilla/coordinator/store.h"

#include <algorithm>
#include <set>

#include <nlohmann/json.hpp>

#include "flotilla/core/log.h"
#include "flotilla/core/sqlite.h"
#include "flotilla/protocol/topics.h"
#include "flotilla/security/hash.h"
#include "schema.h"

namespace flotilla::coordinator {
namespace {

using sqlite::Statement;

constexpr size_t kTokenIdBytes = 8;
constexpr size_t kTokenSecretBytes = 32;
constexpr std::string_view kApiTokenPrefix = "flt";
constexpr std::string_view kEnrolmentTokenPrefix = "fle";
constexpr int kMaxListLimit = 10000;

std::string Join(std::span<const std::string> items) {
  std::string out;
  for (const auto& s : items) {
    if (!out.empty()) out += ',';
    out += s;
  }
  return out;
}

std::vector<std::string> Split(std::string_view s) {
  std::vector<std::string> out;
  while (!s.empty()) {
    const size_t comma = s.find(',');
    out.emplace_back(s.substr(0, comma));
    if (comma == std::string_view::npos) break;
    s.remove_prefix(comma + 1);
  }
  return out;
}

// Audit details: never throws (invalid UTF-8 from a CLI argument is replaced).
std::string Detail(const nlohmann::json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }

int ClampLimit(int limit) { return std::clamp(limit, 1, kMaxListLimit); }

std::string HashHex(std::string_view token) { return ToHex(security::Sha256(AsBytes(token))); }

// "<prefix>_<16 hex id>_<64 hex secret>" -> id; InvalidArgument for anything else.
Result<std::string> TokenId(std::string_view token, std::string_view prefix) {
  const size_t want = prefix.size() + 1 + 2 * kTokenIdBytes + 1 + 2 * kTokenSecretBytes;
  if (token.size() != want || token.substr(0, prefix.size()) != prefix || token[prefix.size()] != '_' ||
      token[prefix.size() + 1 + 2 * kTokenIdBytes] != '_') {
    return InvalidArgumentError("malformed token");
  }
  std::string id(token.substr(prefix.size() + 1, 2 * kTokenIdBytes));
  for (char c : id) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return InvalidArgumentError("malformed token");
  }
  return id;
}

Result<DeviceStatus> ParseDeviceStatus(std::string_view s) {
  if (s == "active") return DeviceStatus::kActive;
  if (s == "revoked") return DeviceStatus::kRevoked;
  return DataLossError("store: unknown device status '" + std::string(s) + "'");
}

PresenceState ParsePresence(std::string_view s) {
  if (s == "online") return PresenceState::kOnline;
  if (s == "offline") return PresenceState::kOffline;
  return PresenceState::kUnknown;
}

Status ValidateGroups(std::span<const std::string> groups) {
  for (const auto& g : groups) FLT_RETURN_IF_ERROR(protocol::ValidateName("group", g));
  return Status::Ok();
}

constexpr std::string_view kDeviceColumns =
    "id, identity_public_key, certificate_pem, status, hardware, firmware_version, sdk_version, first_seen_ms, "
    "last_seen_ms, presence, session_id, presence_changed_ms, reported_state, reported_ms, revoked_ms, "
    "revoked_reason";

Result<DeviceRecord> ReadDevice(const Statement& st) {
  DeviceRecord d;
  d.id = st.ColumnText(0);
  d.identity_public_key = st.ColumnBlob(1);
  d.certificate_pem = st.ColumnText(2);
  FLT_ASSIGN_OR_RETURN(d.status, ParseDeviceStatus(st.ColumnText(3)));
  d.hardware = st.ColumnBlob(4);
  d.firmware_version = st.ColumnText(5);
  d.sdk_version = st.ColumnText(6);
  d.first_seen_ms = st.ColumnInt(7);
  d.last_seen_ms = st.ColumnInt(8);
  d.presence = ParsePresence(st.ColumnText(9));
  d.session_id = st.ColumnText(10);
  d.presence_changed_ms = st.ColumnInt(11);
  d.reported_state = st.ColumnBlob(12);
  d.reported_ms = st.ColumnInt(13);
  d.revoked_ms = st.ColumnInt(14);
  d.revoked_reason = st.ColumnText(15);
  return d;
}

constexpr std::string_view kRoundColumns =
    "id, group_name, state, reason, config_json, created_ms, updated_ms, cancel_requested, cancel_reason, "
    "aggregate_sha256, result_version, spec_json";

Result<RoundRecord> ReadRound(const Statement& st) {
  RoundRecord r;
  r.id = st.ColumnText(0);
  r.group = st.ColumnText(1);
  FLT_ASSIGN_OR_RETURN(r.state, ParseRoundState(st.ColumnText(2)));
  r.reason = st.ColumnText(3);
  r.config_json = st.ColumnText(4);
  r.created_ms = st.ColumnInt(5);
  r.updated_ms = st.ColumnInt(6);
  r.cancel_requested = st.ColumnInt(7) != 0;
  r.cancel_reason = st.ColumnText(8);
  r.aggregate_sha256 = st.ColumnIsNull(9) ? std::string() : st.ColumnText(9);
  r.result_version = st.ColumnText(10);
  r.spec_json = st.ColumnText(11);
  return r;
}

std::string_view VersionTable(VersionKind kind) {
  return kind == VersionKind::kModel ? "model_versions" : "adapter_versions";
}

std::string VersionColumns(VersionKind kind) {
  return kind == VersionKind::kModel
             ? "id, kind, parent_id, NULL, round_id, sha256, size, metrics_json, created_ms"
             : "id, kind, parent_id, base_model_id, round_id, sha256, size, metrics_json, created_ms";
}

VersionRecord ReadVersion(const Statement& st) {
  VersionRecord v;
  v.id = st.ColumnText(0);
  v.kind = st.ColumnText(1);
  v.parent_id = st.ColumnText(2);
  v.base_model_id = st.ColumnText(3);
  v.round_id = st.ColumnText(4);
  v.sha256 = st.ColumnText(5);
  v.size = static_cast<uint64_t>(st.ColumnInt(6));
  v.metrics_json = st.ColumnText(7);
  v.created_ms = st.ColumnInt(8);
  return v;
}

// Steps `st` to the end, calling `fn` (returning Status) on every row.
template <typename Fn>
Status ForEachRow(Statement& st, Fn&& fn) {
  for (;;) {
    FLT_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return Status::Ok();
    FLT_RETURN_IF_ERROR(fn());
  }
}

// A device's stage row; `seq` orders a device's rows by commit (one value per transaction).
constexpr std::string_view kUpsertStageSql =
    "INSERT INTO participant_stages (round_id, device_id, stage, status, updated_ms, seq) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (round_id, device_id, stage) DO UPDATE SET status = excluded.status, updated_ms = "
    "excluded.updated_ms, seq = excluded.seq";

// Runs a prepared statement that must change exactly one row; NotFound naming `what`.
Status RunOne(sqlite::Database& db, Statement& st, std::string_view what) {
  FLT_RETURN_IF_ERROR(st.Run());
  if (db.Changes() == 0) return NotFoundError("store: no " + std::string(what));
  return Status::Ok();
}

}  // namespace

// ---------------------------------------------------------------- enums

std::string_view ToString(DeviceStatus status) { return status == DeviceStatus::kActive ? "active" : "revoked"; }

std::string_view ToString(PresenceState state) {
  switch (state) {
    case PresenceState::kOnline: return "online";
    case PresenceState::kOffline: return "offline";
    case PresenceState::kUnknown: break;
  }
  return "unknown";
}


std::string_view ToString(VersionKind kind) { return kind == VersionKind::kModel ? "model" : "adapter"; }

bool IsKnownScope(std::string_view scope) {
  return scope == kScopeRead || scope == kScopeRounds || scope == kScopeAdmin;
}

bool ApiTokenRecord::HasScope(std::string_view scope) const {
  for (const auto& s : scopes) {
    if (s == scope || s == kScopeAdmin) return true;
  }
  return false;
}

// ---------------------------------------------------------------- open

Store::Store(std::filesystem::path data_dir, std::unique_ptr<sqlite::Database> db,
             std::unique_ptr<ArtifactStore> artifacts, Clock* clock, Random* random)
    : data_dir_(std::move(data_dir)),
      db_(std::move(db)),
      artifacts_(std::move(artifacts)),
      clock_(clock),
      random_(random) {}

Store::~Store() = default;

Result<std::unique_ptr<Store>> Store::Open(const std::filesystem::path& data_dir, StoreOptions options) {
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  if (ec) return UnavailableError("store: cannot create " + data_dir.string() + ": " + ec.message());
  sqlite::OpenOptions oo;
  oo.synchronous_full = options.synchronous_full;
  oo.cache_kib = options.cache_kib;
  FLT_ASSIGN_OR_RETURN(auto db, sqlite::Database::Open(data_dir / "coordinator.db", oo));
  FLT_RETURN_IF_ERROR(db->Migrate(internal::kMigrations).WithContext("migrating " + (data_dir / "coordinator.db").string()));
  FLT_ASSIGN_OR_RETURN(auto artifacts, ArtifactStore::Open(data_dir / "artifacts"));
  Clock* clock = options.clock != nullptr ? options.clock : &RealClock();
  Random* random = options.random != nullptr ? options.random : &OsRandom();
  return std::unique_ptr<Store>(new Store(data_dir, std::move(db), std::move(artifacts), clock, random));
}

Result<int> Store::SchemaVersion() {
  std::lock_guard<std::mutex> lock(mu_);
  return db_->UserVersion();
}

Status Store::IntegrityCheck() {
  std::lock_guard<std::mutex> lock(mu_);
  FLT_RETURN_IF_ERROR(db_->IntegrityCheck());
  FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("PRAGMA foreign_key_check"));
  FLT_ASSIGN_OR_RETURN(bool row, st.Step());
  if (row) return DataLossError("store: foreign key violation in table " + st.ColumnText(0));
  return Status::Ok();
}

std::string Store::RandomHex(size_t bytes) {
  Bytes b(bytes);
  random_->Fill(b);
  return ToHex(b);
}

Status Store::AuditLocked(std::string_view actor, std::string_view action, std::string_view subject,
                          std::string_view detail_json) {
  FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("INSERT INTO audit_log (at_ms, actor, action, subject, detail_json) "
                                                  "VALUES (?, ?, ?, ?, ?)"));
  st.Bind(1, clock_->NowUnixMillis()).Bind(2, actor).Bind(3, action).Bind(4, subject).Bind(5, detail_json);
  return st.Run();
}

// ---------------------------------------------------------------- devices

Result<DeviceRecord> Store::GetDeviceLocked(std::string_view id) {
  FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT " + std::string(kDeviceColumns) + " FROM devices WHERE id = ?"));
  st.Bind(1, id);
  FLT_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return NotFoundError("store: no device '" + std::string(id) + "'");
  FLT_ASSIGN_OR_RETURN(DeviceRecord d, ReadDevice(st));
  FLT_ASSIGN_OR_RETURN(Statement g, db_->Prepare("SELECT group_name FROM device_groups WHERE device_id = ? ORDER BY 1"));
  g.Bind(1, id);
  FLT_RETURN_IF_ERROR(ForEachRow(g, [&]() -> Status {
    d.groups.push_back(g.ColumnText(0));
    return Status::Ok();
  }));
  return d;
}

Result<DeviceRecord> Store::GetDevice(std::string_view id) {
  std::lock_guard<std::mutex> lock(mu_);
  return GetDeviceLocked(id);
}

Result<DeviceRecord> Store::EnrolDevice(const EnrolDeviceRequest& req, std::string_view actor) {
  FLT_RETURN_IF_ERROR(protocol::ValidateName("device id", req.device_id));
  if (req.identity_public_key.empty()) return InvalidArgumentError("enrolment: identity public key is empty");
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = clock_->NowUnixMillis();
  bool changed = false;
  Status s = db_->Transaction([&]() -> Status {
    Result<DeviceRecord> existing = GetDeviceLocked(req.device_id);
    if (!existing.ok() && existing.status().code() != StatusCode::kNotFound) return existing.status();
    if (existing.ok() && existing->status == DeviceStatus::kRevoked) {
      return PermissionDeniedError("enrolment: device '" + req.device_id + "' is revoked");
    }
    const bool same_key = existing.ok() && existing->identity_public_key == req.identity_public_key;
    if (same_key) return Status::Ok();  // redelivered enrolment: nothing to do
    if (req.enrolment_token.empty() && (req.require_token || existing.ok())) {
      return existing.ok() ? AlreadyExistsError("enrolment: device '" + req.device_id +
                                                "' is enrolled with another key (re-keying needs an enrolment "
                                                "token bound to it)")
                           : PermissionDeniedError("enrolment: an enrolment token is required");
    }
    std::vector<std::string> token_groups;
    if (!req.enrolment_token.empty()) {
      Result<std::string> id = TokenId(req.enrolment_token, kEnrolmentTokenPrefix);
      if (!id.ok()) return PermissionDeniedError("enrolment: malformed enrolment token");
      FLT_ASSIGN_OR_RETURN(Statement t, db_->Prepare("SELECT sha256, device_id, groups, expires_ms, used_ms FROM "
                                                     "enrolment_tokens WHERE id = ?"));
      t.Bind(1, *id);
      FLT_ASSIGN_OR_RETURN(bool row, t.Step());
      if (!row) return PermissionDeniedError("enrolment: unknown enrolment token");
      const std::string want = t.ColumnText(0);
      const std::string got = HashHex(req.enrolment_token);
      if (!ConstantTimeEqual(AsBytes(want), AsBytes(got))) {
        return PermissionDeniedError("enrolment: unknown enrolment token");
      }
      const std::string bound = t.ColumnText(1);
      if (t.ColumnInt(4) != 0) return PermissionDeniedError("enrolment: enrolment token already used");
      if (t.ColumnInt(3) <= now) return PermissionDeniedError("enrolment: enrolment token expired");
      if (!bound.empty() && bound != req.device_id) {
        return PermissionDeniedError("enrolment: enrolment token is bound to another device id");
      }
      if (existing.ok() && bound != req.device_id) {
        return AlreadyExistsError("enrolment: re-keying device '" + req.device_id +
                                  "' needs a token bound to its id");
      }
      const std::string groups = t.ColumnText(2);
      if (!groups.empty()) token_groups = Split(groups);
      FLT_ASSIGN_OR_RETURN(Statement u, db_->Prepare("UPDATE enrolment_tokens SET used_ms = ?, used_by = ? "
                                                     "WHERE id = ? AND used_ms = 0"));
      u.Bind(1, now).Bind(2, req.device_id).Bind(3, *id);
      FLT_RETURN_IF_ERROR(RunOne(*db_, u, "unused enrolment token"));
    }
    FLT_ASSIGN_OR_RETURN(
        Statement ins,
        db_->Prepare("INSERT INTO devices (id, identity_public_key, certificate_pem, status, hardware, "
                     "firmware_version, sdk_version, first_seen_ms, last_seen_ms) VALUES (?, ?, ?, 'active', ?, ?, ?, "
                     "?, ?) ON CONFLICT (id) DO UPDATE SET identity_public_key = excluded.identity_public_key, "
                     "certificate_pem = excluded.certificate_pem, hardware = excluded.hardware, firmware_version = "
                     "excluded.firmware_version, sdk_version = excluded.sdk_version, last_seen_ms = "
                     "excluded.last_seen_ms"));
    ins.Bind(1, req.device_id)
        .BindBlob(2, req.identity_public_key)
        .Bind(3, req.certificate_pem)
        .BindBlob(4, req.hardware)
        .Bind(5, req.firmware_version)
        .Bind(6, req.sdk_version)
        .Bind(7, now)
        .Bind(8, now);
    FLT_RETURN_IF_ERROR(ins.Run());
    for (const auto& g : token_groups) {
      FLT_ASSIGN_OR_RETURN(Statement cg, db_->Prepare("INSERT OR IGNORE INTO groups (name, created_ms) VALUES (?, ?)"));
      cg.Bind(1, g).Bind(2, now);
      FLT_RETURN_IF_ERROR(cg.Run());
      FLT_ASSIGN_OR_RETURN(Statement dg, db_->Prepare("INSERT OR IGNORE INTO device_groups (device_id, group_name) "
                                                      "VALUES (?, ?)"));
      dg.Bind(1, req.device_id).Bind(2, g);
      FLT_RETURN_IF_ERROR(dg.Run());
    }
    changed = true;
    const nlohmann::json detail = {{"by", req.enrolment_token.empty() ? "certificate" : "token"},
                                   {"rekey", existing.ok()}};
    return AuditLocked(actor, "device.enrol", req.device_id, Detail(detail));
  });
  FLT_RETURN_IF_ERROR(s);
  if (changed) {
    FLT_LOG(kInfo, "store") << "device " << req.device_id << " enrolled";
  }
  return GetDeviceLocked(req.device_id);
}

Result<std::vector<DeviceRecord>> Store::ListDevices(const DeviceFilter& f) {
  std::lock_guard<std::mutex> lock(mu_);
  std::string sql = "SELECT id FROM devices d WHERE id > ?";
  if (f.status) sql += " AND status = ?";
  if (f.presence) sql += " AND presence = ?";
  if (!f.group.empty()) sql += " AND EXISTS (SELECT 1 FROM device_groups g WHERE g.device_id = d.id AND g.group_name = ?)";
  sql += " ORDER BY id LIMIT ?";
  FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare(sql));
  int i = 1;
  st.Bind(i++, f.after_id);
  if (f.status) st.Bind(i++, ToString(*f.status));
  if (f.presence) st.Bind(i++, ToString(*f.presence));
  if (!f.group.empty()) st.Bind(i++, f.group);
  st.Bind(i, static_cast<int64_t>(ClampLimit(f.limit)));
  std::vector<std::string> ids;
  FLT_RETURN_IF_ERROR(ForEachRow(st, [&]() -> Status {
    ids.push_back(st.ColumnText(0));
    return Status::Ok();
  }));
  std::vector<DeviceRecord> out;
  out.reserve(ids.size());
  for (const auto& id : ids) {
    FLT_ASSIGN_OR_RETURN(DeviceRecord d, GetDeviceLocked(id));
    out.push_back(std::move(d));
  }
  return out;
}

Status Store::RevokeDevice(std::string_view id, std::string_view reason, std::string_view actor) {
  std::lock_guard<std::mutex> lock(mu_);
  return db_->Transaction([&]() -> Status {
    FLT_ASSIGN_OR_RETURN(DeviceRecord d, GetDeviceLocked(id));
    if (d.status == DeviceStatus::kRevoked) return Status::Ok();
    FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("UPDATE devices SET status = 'revoked', revoked_ms = ?, "
                                                    "revoked_reason = ? WHERE id = ?"));
    st.Bind(1, clock_->NowUnixMillis()).Bind(2, reason).Bind(3, id);
    FLT_RETURN_IF_ERROR(RunOne(*db_, st, "device"));
    return AuditLocked(actor, "device.revoke", id, Detail(nlohmann::json{{"reason", reason}}));
  });
}

Status Store::SetDeviceGroups(std::string_view id, std::span<const std::string> groups, std::string_view actor) {
  FLT_RETURN_IF_ERROR(ValidateGroups(groups));
  std::set<std::string> unique(groups.begin(), groups.end());
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = clock_->NowUnixMillis();
  return db_->Transaction([&]() -> Status {
    FLT_RETURN_IF_ERROR(GetDeviceLocked(id).status());
    FLT_ASSIGN_OR_RETURN(Statement del, db_->Prepare("DELETE FROM device_groups WHERE device_id = ?"));
    del.Bind(1, id);
    FLT_RETURN_IF_ERROR(del.Run());
    FLT_ASSIGN_OR_RETURN(Statement cg, db_->Prepare("INSERT OR IGNORE INTO groups (name, created_ms) VALUES (?, ?)"));
    FLT_ASSIGN_OR_RETURN(Statement dg, db_->Prepare("INSERT INTO device_groups (device_id, group_name) VALUES (?, ?)"));
    for (const auto& g : unique) {
      cg.Reset();
      cg.Bind(1, g).Bind(2, now);
      FLT_RETURN_IF_ERROR(cg.Run());
      dg.Reset();
      dg.Bind(1, id).Bind(2, g);
      FLT_RETURN_IF_ERROR(dg.Run());
    }
    std::vector<std::string> sorted(unique.begin(), unique.end());
    return AuditLocked(actor, "device.groups", id, Detail(nlohmann::json{{"groups", sorted}}));
  });
}

Result<bool> Store::SetPresence(std::string_view id, PresenceState state, std::string_view session_id,
                                int64_t timestamp_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  bool changed = false;
  Status tx = db_->Transaction([&]() -> Status {
    FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT presence, session_id, presence_changed_ms FROM devices "
                                                    "WHERE id = ?"));
    st.Bind(1, id);
    FLT_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return NotFoundError("store: no device '" + std::string(id) + "'");
    const PresenceState current = ParsePresence(st.ColumnText(0));
    const std::string current_session = st.ColumnText(1);
    const int64_t current_ms = st.ColumnInt(2);
    const int64_t now = clock_->NowUnixMillis();
    // A Will (OFFLINE) of an older session arrives after the new session said ONLINE.
    if (state == PresenceState::kOffline && !current_session.empty() && session_id != current_session) return Status::Ok();
    if (timestamp_ms < current_ms && session_id == current_session) return Status::Ok();
    FLT_ASSIGN_OR_RETURN(Statement up, db_->Prepare("UPDATE devices SET presence = ?, session_id = ?, "
                                                    "presence_changed_ms = ?, last_seen_ms = max(last_seen_ms, ?) "
                                                    "WHERE id = ?"));
    up.Bind(1, ToString(state)).Bind(2, session_id).Bind(3, timestamp_ms).Bind(4, now).Bind(5, id);
    FLT_RETURN_IF_ERROR(up.Run());
    changed = current != state;
    return Status::Ok();
  });
  FLT_RETURN_IF_ERROR(tx);
  return changed;
}

Status Store::SetReportedState(std::string_view id, ByteSpan reported, int64_t timestamp_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("UPDATE devices SET reported_state = ?, reported_ms = ?, "
                                                  "last_seen_ms = max(last_seen_ms, ?) WHERE id = ? AND "
                                                  "reported_ms <= ?"));
  st.BindBlob(1, reported).Bind(2, timestamp_ms).Bind(3, clock_->NowUnixMillis()).Bind(4, id).Bind(5, timestamp_ms);
  FLT_RETURN_IF_ERROR(st.Run());
  if (db_->Changes() == 0) return GetDeviceLocked(id).status();  // NotFound, or an older report: OK
  return Status::Ok();
}

Status Store::TouchDevice(std::string_view id) {
  std::lock_guard<std::mutex> lock(mu_);
  FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("UPDATE devices SET last_seen_ms = max(last_seen_ms, ?) WHERE id = ?"));
  st.Bind(1, clock_->NowUnixMillis()).Bind(2, id);
  return RunOne(*db_, st, "device '" + std::string(id) + "'");
}

Result<int64_t> Store::CountDevices(std::optional<PresenceState> presence, std::optional<DeviceStatus> status) {
  std::lock_guard<std::mutex> lock(mu_);
  std::string sql = "SELECT count(*) FROM devices WHERE 1";
  if (presence) sql += " AND presence = ?";
  if (status) sql += " AND status = ?";
  FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare(sql));
  int i = 1;
  if (presence) st.Bind(i++, ToString(*presence));
  if (status) st.Bind(i++, ToString(*status));
  FLT_ASSIGN_OR_RETURN(bool row, st.Step());
  return row ? st.ColumnInt(0) : 0;
}

Result<std::vector<std::string>> Store::ListGroups() {
  std::lock_guard<std::mutex> lock(mu_);
  FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT name FROM groups ORDER BY name"));
  std::vector<std::string> out;
  FLT_RETURN_IF_ERROR(ForEachRow(st, [&]() -> Status {
    out.push_back(st.ColumnText(0));
    return Status::Ok();
  }));
  return out;
}

// ---------------------------------------------------------------- API tokens

Result<IssuedToken<ApiTokenRecord>> Store::CreateApiToken(std::string_view name, std::span<const std::string> scopes,
                                                          std::string_view actor) {
  if (name.empty() || name.size() > 128) return InvalidArgumentError("token name must be 1-128 characters");
  if (scopes.empty()) return InvalidArgumentError("a token needs at least one scope");
  for (const auto& s : scopes) {
    if (!IsKnownScope(s)) return InvalidArgumentError("unknown scope '" + s + "' (read, rounds, admin)");
  }
  IssuedToken<ApiTokenRecord> out;
  std::lock_guard<std::mutex> lock(mu_);
  out.record.id = RandomHex(kTokenIdBytes);
  out.record.name = std::string(name);
  out.record.scopes.assign(scopes.begin(), scopes.end());
  out.record.created_ms = clock_->NowUnixMillis();
  out.token = std::string(kApiTokenPrefix) + "_" + out.record.id + "_" + RandomHex(kTokenSecretBytes);
  Status tx = db_->Transaction([&]() -> Status {
    FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("INSERT INTO api_tokens (id, sha256, name, scopes, created_ms) "
                                                    "VALUES (?, ?, ?, ?, ?)"));
    st.Bind(1, out.record.id).Bind(2, HashHex(out.token)).Bind(3, name).Bind(4, Join(scopes)).Bind(5, out.record.created_ms);
    FLT_RETURN_IF_ERROR(st.Run());
    return AuditLocked(actor, "token.create", out.record.id,
                       Detail(nlohmann::json{{"name", name}, {"scopes", out.record.scopes}}));
  });
  FLT_RETURN_IF_ERROR(tx);
  return out;
}

Result<ApiTokenRecord> Store::AuthenticateApiToken(std::string_view token) {
  Result<std::string> id = TokenId(token, kApiTokenPrefix);
  if (!id.ok()) return UnauthenticatedError("malformed API token");
  std::lock_guard<std::mutex> lock(mu_);
  FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT sha256, name, scopes, created_ms, revoked_ms FROM api_tokens "
                                                  "WHERE id = ?"));
  st.Bind(1, *id);
  FLT_ASSIGN_OR_RETURN(bool row, st.Step());
  // Hash the presented token even for unknown ids so timing does not tell ids apart.
  const std::string got = HashHex(token);
  const std::string want = row ? st.ColumnText(0) : std::string(got.size(), '0');
  if (!ConstantTimeEqual(AsBytes(want), AsBytes(got)) || !row) return UnauthenticatedError("unknown API token");
  if (st.ColumnInt(4) != 0) return UnauthenticatedError("API token revoked");
  ApiTokenRecord r;
  r.id = *id;
  r.name = st.ColumnText(1);
  r.scopes = Split(st.ColumnText(2));
  r.created_ms = st.ColumnInt(3);
  return r;
}

Status Store::RevokeApiToken(std::string_view id, std::string_view actor) {
  std::lock_guard<std::mutex> lock(mu_);
  return db_->Transaction([&]() -> Status {
    FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("UPDATE api_tokens SET revoked_ms = ? WHERE id = ? AND revoked_ms = 0"));
    st.Bind(1, clock_->NowUnixMillis()).Bind(2, id);
    FLT_RETURN_IF_ERROR(RunOne(*db_, st, "active API token '" + std::string(id) + "'"));
    return AuditLocked(actor, "token.revoke", id, "{}");
  });
}

Result<std::vector<ApiTokenRecord>> Store::ListApiTokens() {
  std::lock_guard<std::mutex> lock(mu_);
  FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT id, name, scopes, created_ms, revoked_ms FROM api_tokens "
                                                  "ORDER BY created_ms, id"));
  std::vector<ApiTokenRecord> out;
  FLT_RETURN_IF_ERROR(ForEachRow(st, [&]() -> Status {
    ApiTokenRecord r;
    r.id = st.ColumnText(0);
    r.name = st.ColumnText(1);
    r.scopes = Split(st.ColumnText(2));
    r.created_ms = st.ColumnInt(3);
    r.revoked = st.ColumnInt(4) != 0;
    out.push_back(std::move(r));
    return Status::Ok();
  }));
  return out;
}

// ---------------------------------------------------------------- enrolment tokens

Result<IssuedToken<EnrolmentTokenRecord>> Store::CreateEnrolmentToken(std::string_view device_id,
                                                                      std::span<const std::string> groups,
                                                                      std::chrono::seconds ttl,
                                                                      std::string_view actor) {
  if (!device_id.empty()) FLT_RETURN_IF_ERROR(protocol::ValidateName("device id", device_id));
  FLT_RETURN_IF_ERROR(ValidateGroups(groups));
  if (ttl.count() <= 0) return InvalidArgumentError("enrolment token lifetime must be positive");
  IssuedToken<EnrolmentTokenRecord> out;
  std::lock_guard<std::mutex> lock(mu_);
  auto& r = out.record;
  r.id = RandomHex(kTokenIdBytes);
  r.device_id = std::string(device_id);
  r.groups.assign(groups.begin(), groups.end());
  r.created_ms = clock_->NowUnixMillis();
  r.expires_ms = r.created_ms + std::chrono::duration_cast<std::chrono::milliseconds>(ttl).count();
  out.token = std::string(kEnrolmentTokenPrefix) + "_" + r.id + "_" + RandomHex(kTokenSecretBytes);
  Status tx = db_->Transaction([&]() -> Status {
    FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("INSERT INTO enrolment_tokens (id, sha256, device_id, groups, "
                                                    "created_ms, expires_ms) VALUES (?, ?, ?, ?, ?, ?)"));
    st.Bind(1, r.id).Bind(2, HashHex(out.token)).Bind(3, device_id).Bind(4, Join(groups)).Bind(5, r.created_ms).Bind(6, r.expires_ms);
    FLT_RETURN_IF_ERROR(st.Run());
    return AuditLocked(actor, "enrolment_token.create", r.id,
                       Detail(nlohmann::json{{"device_id", device_id}, {"groups", r.groups}}));
  });
  FLT_RETURN_IF_ERROR(tx);
  return out;
}

Result<std::vector<EnrolmentTokenRecord>> Store::ListEnrolmentTokens() {
  std::lock_guard<std::mutex> lock(mu_);
  FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT id, device_id, groups, created_ms, expires_ms, used_ms, used_by "
                                                  "FROM enrolment_tokens ORDER BY created_ms, id"));
  std::vector<EnrolmentTokenRecord> out;
  FLT_RETURN_IF_ERROR(ForEachRow(st, [&]() -> Status {
    EnrolmentTokenRecord r;
    r.id = st.ColumnText(0);
    r.device_id = st.ColumnText(1);
    const std::string groups = st.ColumnText(2);
    if (!groups.empty()) r.groups = Split(groups);
    r.created_ms = st.ColumnInt(3);
    r.expires_ms = st.ColumnInt(4);
    r.used_ms = st.ColumnInt(5);
    r.used_by = st.ColumnText(6);
    out.push_back(std::move(r));
    return Status::Ok();
  }));
  return out;
}

// ---------------------------------------------------------------- rounds

Result<RoundRecord> Store::GetRoundLocked(std::string_view id) {
  FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT " + std::string(kRoundColumns) + " FROM rounds WHERE id = ?"));
  st.Bind(1, id);
  FLT_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return NotFoundError("store: no round '" + std::string(id) + "'");
  FLT_ASSIGN_OR_RETURN(RoundRecord r, ReadRound(st));
  FLT_ASSIGN_OR_RETURN(Statement d, db_->Prepare("SELECT stage, deadline_ms FROM round_deadlines WHERE round_id = ?"));
  d.Bind(1, id);
  FLT_RETURN_IF_ERROR(ForEachRow(d, [&]() -> Status {
    r.deadlines_ms[d.ColumnText(0)] = d.ColumnInt(1);
    return Status::Ok();
  }));
  return r;
}

Result<RoundRecord> Store::GetRound(std::string_view id) {
  std::lock_guard<std::mutex> lock(mu_);
  return GetRoundLocked(id);
}

Result<RoundRecord> Store::CreateRound(const NewRound& round, std::string_view actor) {
  if (!round.group.empty()) FLT_RETURN_IF_ERROR(protocol::ValidateName("group", round.group));
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = clock_->NowUnixMillis();
  std::string id = round.id.empty() ? "r-" + std::to_string(now) + "-" + RandomHex(4) : round.id;
  FLT_RETURN_IF_ERROR(protocol::ValidateName("round id", id));
  Bytes secret(32);
  random_->Fill(secret);
  Status tx = db_->Transaction([&]() -> Status {
    FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("INSERT INTO rounds (id, group_name, state, config_json, created_ms, "
                                                    "updated_ms, upload_secret) VALUES (?, ?, 'created', ?, ?, ?, ?) "
                                                    "ON CONFLICT (id) DO NOTHING"));
    st.Bind(1, id).Bind(2, round.group).Bind(3, round.config_json).Bind(4, now).Bind(5, now).BindBlob(6, secret);
    FLT_RETURN_IF_ERROR(st.Run());
    if (db_->Changes() == 0) return AlreadyExistsError("store: round '" + id + "' exists");
    return AuditLocked(actor, "round.create", id, Detail(nlohmann::json{{"group", round.group}}));
  });
  FLT_RETURN_IF_ERROR(tx);
  return GetRoundLocked(id);
}

Result<std::vector<RoundRecord>> Store::ListRounds(std::optional<RoundState> state, int limit) {
  std::lock_guard<std::mutex> lock(mu_);
  std::string sql = "SELECT id FROM rounds";
  if (state) sql += " WHERE state = ?";
  sql += " ORDER BY created_ms DESC, id DESC LIMIT ?";
  FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare(sql));
  int i = 1;
  if (state) st.Bind(i++, ToString(*state));
  st.Bind(i, static_cast<int64_t>(ClampLimit(limit)));
  std::vector<std::string> ids;
  FLT_RETURN_IF_ERROR(ForEachRow(st, [&]() -> Status {
    ids.push_back(st.ColumnText(0));
    return Status::Ok();
  }));
  std::vector<RoundRecord> out;
  for (const auto& id : ids) {
    FLT_ASSIGN_OR_RETURN(RoundRecord r, GetRoundLocked(id));
    out.push_back(std::move(r));
  }
  return out;
}

Status Store::TransitionRound(std::string_view id, RoundState from, RoundState to, std::string_view reason,
                              std::string_view actor) {
  std::lock_guard<std::mutex> lock(mu_);
  return db_->Transaction([&]() -> Status {
    FLT_ASSIGN_OR_RETURN(RoundRecord r, GetRoundLocked(id));
    if (IsTerminal(r.state)) {
      return FailedPreconditionError("store: round '" + std::string(id) + "' is already " +
                                     std::string(ToString(r.state)));
    }
    if (r.state != from) {
      return AbortedError("store: round '" + std::string(id) + "' is " + std::string(ToString(r.state)) + ", not " +
                          std::string(ToString(from)));
    }
    FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("UPDATE rounds SET state = ?, reason = ?, updated_ms = ? "
                                                    "WHERE id = ? AND state = ?"));
    st.Bind(1, ToString(to)).Bind(2, reason).Bind(3, clock_->NowUnixMillis()).Bind(4, id).Bind(5, ToString(from));
    FLT_RETURN_IF_ERROR(RunOne(*db_, st, "round"));
    return AuditLocked(actor, "round.state", id,
                       Detail(nlohmann::json{{"from", ToString(from)}, {"to", ToString(to)}, {"reason", reason}}));
  });
}

Status Store::SetRoundDeadline(std::string_view id, std::string_view stage, int64_t deadline_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("INSERT INTO round_deadlines (round_id, stage, deadline_ms) "
                                                  "VALUES (?, ?, ?) ON CONFLICT (round_id, stage) DO UPDATE SET "
                                                  "deadline_ms = excluded.deadline_ms"));
  st.Bind(1, id).Bind(2, stage).Bind(3, deadline_ms);
  Status s = st.Run();
  if (!s.ok()) return GetRoundLocked(id).ok() ? s : NotFoundError("store: no round '" + std::string(id) + "'");
  return Status::Ok();
}

Status Store::SetRoundResult(std::string_view id, std::string_view aggregate_sha256, std::string_view result_version) {
  FLT_RETURN_IF_ERROR(ValidateSha256Hex(aggregate_sha256));
  std::lock_guard<std::mutex> lock(mu_);
  FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("UPDATE rounds SET aggregate_sha256 = ?, result_version = ?, "
                                                  "updated_ms = ? WHERE id = ?"));
  st.Bind(1, aggregate_sha256).Bind(2, result_version).Bind(3, clock_->NowUnixMillis()).Bind(4, id);
  return RunOne(*db_, st, "round '" + std::string(id) + "'");
}

Status Store::RequestCancelRound(std::string_view id, std::string_view reason, std::string_view actor) {
  std::lock_guard<std::mutex> lock(mu_);
  return db_->Transaction([&]() -> Status {
    FLT_ASSIGN_OR_RETURN(RoundRecord r, GetRoundLocked(id));
    if (IsTerminal(r.state)) {
      return FailedPreconditionError("store: round '" + std::string(id) + "' is already " +
                                     std::string(ToString(r.state)));
    }
    if (r.cancel_requested) return Status::Ok();
    FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("UPDATE rounds SET cancel_requested = 1, cancel_reason = ?, "
                                                    "updated_ms = ? WHERE id = ?"));
    st.Bind(1, reason).Bind(2, clock_->NowUnixMillis()).Bind(3, id);
    FLT_RETURN_IF_ERROR(st.Run());
    return AuditLocked(actor, "round.cancel", id, Detail(nlohmann::json{{"reason", reason}}));
  });
}

Result<std::map<RoundState, int64_t>> Store::CountRoundsByState() {
  std::lock_guard<std::mutex> lock(mu_);
  FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT state, count(*) FROM rounds GROUP BY state"));
  std::map<RoundState, int64_t> out;
  for (RoundState s : AllRoundStates()) out[s] = 0;
  FLT_RETURN_IF_ERROR(ForEachRow(st, [&]() -> Status {
    FLT_ASSIGN_OR_RETURN(RoundState s, ParseRoundState(st.ColumnText(0)));
    out[s] = st.ColumnInt(1);
    return Status::Ok();
  }));
  return out;
}

// ---------------------------------------------------------------- participants

Status Store::AddParticipants(std::string_view round_id, std::span<const std::pair<std::string, uint32_t>> cohort) {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = clock_->NowUnixMillis();
  return db_->Transaction([&]() -> Status {
    FLT_RETURN_IF_ERROR(GetRoundLocked(round_id).status());
    FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("INSERT INTO round_participants (round_id, device_id, cohort_index, "
                                                    "updated_ms) VALUES (?, ?, ?, ?)"));
    for (const auto& [device, index] : cohort) {
      st.Reset();
      st.Bind(1, round_id).Bind(2, device).Bind(3, static_cast<int64_t>(index)).Bind(4, now);
      Status s = st.Run();
      if (!s.ok()) {
        return AlreadyExistsError("store: cannot add '" + device + "' to round '" + std::string(round_id) +
                                  "' (already in it, or not an enrolled device): " + s.message());
      }
    }
    return Status::Ok();
  });
}

Status Store::SetParticipantStages(std::string_view round_id, std::span<const StageUpdate> updates) {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = clock_->NowUnixMillis();
  return db_->Transaction([&]() -> Status {
    FLT_ASSIGN_OR_RETURN(int64_t seq, NextStageSeqLocked(round_id));
    FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare(std::string(kUpsertStageSql)));
    FLT_ASSIGN_OR_RETURN(Statement touch, db_->Prepare("UPDATE round_participants SET updated_ms = ?, last_stage = ?, "
                                                       "last_status = ? WHERE round_id = ? AND device_id = ?"));
    for (const auto& u : updates) {
      touch.Reset();
      touch.Bind(1, now).Bind(2, u.stage).Bind(3, u.status).Bind(4, round_id).Bind(5, u.device_id);
      FLT_RETURN_IF_ERROR(RunOne(*db_, touch, "participant '" + u.device_id + "' in round '" + std::string(round_id) + "'"));
      st.Reset();
      st.Bind(1, round_id).Bind(2, u.device_id).Bind(3, u.stage).Bind(4, u.status).Bind(5, now).Bind(6, seq);
      FLT_RETURN_IF_ERROR(st.Run());
    }
    return Status::Ok();
  });
}

Result<std::vector<ParticipantRecord>> Store::ListParticipants(std::string_view round_id) {
  std::lock_guard<std::mutex> lock(mu_);
  FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT device_id, cohort_index, updated_ms, last_stage, last_status "
                                                  "FROM round_participants WHERE round_id = ? ORDER BY cohort_index, "
                                                  "device_id"));
  st.Bind(1, round_id);
  std::vector<ParticipantRecord> out;
  std::map<std::string, size_t> index;
  FLT_RETURN_IF_ERROR(ForEachRow(st, [&]() -> Status {
    ParticipantRecord p;
    p.round_id = std::string(round_id);
    p.device_id = st.ColumnText(0);
    p.cohort_index = static_cast<uint32_t>(st.ColumnInt(1));
    p.updated_ms = st.ColumnInt(2);
    p.last_stage = st.ColumnText(3);
    p.last_status = st.ColumnText(4);
    index[p.device_id] = out.size();
    out.push_back(std::move(p));
    return Status::Ok();
  }));
  FLT_ASSIGN_OR_RETURN(Statement s, db_->Prepare("SELECT device_id, stage, status FROM participant_stages WHERE round_id = ?"));
  s.Bind(1, round_id);
  FLT_RETURN_IF_ERROR(ForEachRow(s, [&]() -> Status {
    auto it = index.find(s.ColumnText(0));
    if (it != index.end()) out[it->second].stages[s.ColumnText(1)] = s.ColumnText(2);
    return Status::Ok();
  }));
  return out;
}

Result<bool> Store::IsParticipant(std::string_view round_id, std::string_view device_id) {
  std::lock_guard<std::mutex> lock(mu_);
  FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT 1 FROM round_participants WHERE round_id = ? AND device_id = ?"));
  st.Bind(1, round_id).Bind(2, device_id);
  return st.Step();
}

Result<int64_t> Store::CountParticipants(std::string_view round_id) {
  std::lock_guard<std::mutex> lock(mu_);
  FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT count(*) FROM round_participants WHERE round_id = ?"));
  st.Bind(1, round_id);
  FLT_ASSIGN_OR_RETURN(bool row, st.Step());
  return row ? st.ColumnInt(0) : 0;
}

Result<StageCounts> Store::CountParticipantsByStage(std::string_view round_id) {
  std::lock_guard<std::mutex> lock(mu_);
  FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT stage, status, count(*) FROM participant_stages WHERE "
                                                  "round_id = ? GROUP BY stage, status"));
  st.Bind(1, round_id);
  StageCounts out;
  FLT_RETURN_IF_ERROR(ForEachRow(st, [&]() -> Status {
    out[st.ColumnText(0)][st.ColumnText(1)] = st.ColumnInt(2);
    return Status::Ok();
  }));
  return out;
}

// ---------------------------------------------------------------- uploads

Result<Bytes> Store::UploadSecretLocked(std::string_view round_id) {
  FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT upload_secret FROM rounds WHERE id = ?"));
  st.Bind(1, round_id);
  FLT_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return NotFoundError("store: no round '" + std::string(round_id) + "'");
  return st.ColumnBlob(0);
}

namespace {
std::string UploadMac(ByteSpan secret, std::string_view round_id, std::string_view device_id) {
  std::string msg = "flotilla/v1/upload";
  msg.push_back('\0');
  msg += round_id;
  msg.push_back('\0');
  msg += device_id;
  return ToHex(security::HmacSha256(secret, AsBytes(msg)));
}
}  // namespace

Result<std::string> Store::UploadToken(std::string_view round_id, std::string_view device_id) {
  std::lock_guard<std::mutex> lock(mu_);
  FLT_ASSIGN_OR_RETURN(Bytes secret, UploadSecretLocked(round_id));
  return UploadMac(secret, round_id, device_id);
}

Status Store::VerifyUploadToken(std::string_view round_id, std::string_view device_id, std::string_view token) {
  std::lock_guard<std::mutex> lock(mu_);
  FLT_ASSIGN_OR_RETURN(Bytes secret, UploadSecretLocked(round_id));
  const std::string want = UploadMac(secret, round_id, device_id);
  if (!ConstantTimeEqual(AsBytes(want), AsBytes(token))) return UnauthenticatedError("upload token does not verify");
  return Status::Ok();
}

Status Store::RecordUpload(const UploadRecord& u) {
  FLT_RETURN_IF_ERROR(ValidateSha256Hex(u.sha256));
  std::lock_guard<std::mutex> lock(mu_);
  return db_->Transaction([&]() -> Status {
    FLT_ASSIGN_OR_RETURN(Statement q, db_->Prepare("SELECT sha256 FROM uploads WHERE round_id = ? AND device_id = ?"));
    q.Bind(1, u.round_id).Bind(2, u.device_id);
    FLT_ASSIGN_OR_RETURN(bool row, q.Step());
    if (row) {
      if (q.ColumnText(0) == u.sha256) return Status::Ok();
      return AlreadyExistsError("store: device '" + u.device_id + "' already uploaded other content for round '" +
                                u.round_id + "'");
    }
    FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("INSERT INTO uploads (round_id, device_id, sha256, size, created_ms) "
                                                    "VALUES (?, ?, ?, ?, ?)"));
    st.Bind(1, u.round_id).Bind(2, u.device_id).Bind(3, u.sha256).Bind(4, static_cast<int64_t>(u.size)).Bind(5, clock_->NowUnixMillis());
    return st.Run();
  });
}

Result<UploadRecord> Store::GetUpload(std::string_view round_id, std::string_view device_id) {
  std::lock_guard<std::mutex> lock(mu_);
  FLT_ASSIGN_OR_RETURN(Statement q, db_->Prepare("SELECT sha256, size, created_ms FROM uploads WHERE round_id = ? AND "
                                                 "device_id = ?"));
  q.Bind(1, round_id).Bind(2, device_id);
  FLT_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return NotFoundError("store: no upload from '" + std::string(device_id) + "' in round '" + std::string(round_id) + "'");
  UploadRecord u;
  u.round_id = std::string(round_id);
  u.device_id = std::string(device_id);
  u.sha256 = q.ColumnText(0);
  u.size = static_cast<uint64_t>(q.ColumnInt(1));
  u.created_ms = q.ColumnInt(2);
  return u;
}

Result<Bytes> Store::ReadUpload(std::string_view round_id, std::string_view device_id, uint64_t max_bytes) {
  FLT_ASSIGN_OR_RETURN(UploadRecord u, GetUpload(round_id, device_id));
  return artifacts_->Read(u.sha256, max_bytes);
}

// ---------------------------------------------------------------- registry

Status Store::AddVersion(VersionKind kind, const VersionRecord& v, std::string_view actor) {
  FLT_RETURN_IF_ERROR(protocol::ValidateName("version id", v.id));
  FLT_RETURN_IF_ERROR(ValidateSha256Hex(v.sha256));
  std::lock_guard<std::mutex> lock(mu_);
  return db_->Transaction([&]() -> Status {
    FLT_ASSIGN_OR_RETURN(Statement a, db_->Prepare("SELECT size FROM artifacts WHERE sha256 = ?"));
    a.Bind(1, v.sha256);
    FLT_ASSIGN_OR_RETURN(bool have, a.Step());
    if (!have) return FailedPreconditionError("store: version '" + v.id + "' names unknown artifact " + v.sha256);
    const uint64_t size = static_cast<uint64_t>(a.ColumnInt(0));
    if (v.size != 0 && v.size != size) return InvalidArgumentError("store: version size differs from its artifact's");
    const std::string table(VersionTable(kind));
    if (!v.parent_id.empty()) {
      FLT_ASSIGN_OR_RETURN(Statement p, db_->Prepare("SELECT 1 FROM " + table + " WHERE id = ?"));
      p.Bind(1, v.parent_id);
      FLT_ASSIGN_OR_RETURN(bool found, p.Step());
      if (!found) return NotFoundError("store: parent version '" + v.parent_id + "' does not exist");
    }
    if (kind == VersionKind::kAdapter && !v.base_model_id.empty()) {
      FLT_ASSIGN_OR_RETURN(Statement p, db_->Prepare("SELECT 1 FROM model_versions WHERE id = ?"));
      p.Bind(1, v.base_model_id);
      FLT_ASSIGN_OR_RETURN(bool found, p.Step());
      if (!found) return NotFoundError("store: base model '" + v.base_model_id + "' does not exist");
    }
    const std::string cols = kind == VersionKind::kModel
                                 ? "(id, kind, parent_id, round_id, sha256, size, metrics_json, created_ms)"
                                 : "(id, kind, parent_id, round_id, sha256, size, metrics_json, created_ms, base_model_id)";
    const std::string vals = kind == VersionKind::kModel ? "(?, ?, ?, ?, ?, ?, ?, ?)" : "(?, ?, ?, ?, ?, ?, ?, ?, ?)";
    FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("INSERT INTO " + table + " " + cols + " VALUES " + vals +
                                                    " ON CONFLICT (id) DO NOTHING"));
    st.Bind(1, v.id).Bind(2, v.kind);
    if (v.parent_id.empty()) st.BindNull(3); else st.Bind(3, v.parent_id);
    st.Bind(4, v.round_id).Bind(5, v.sha256).Bind(6, static_cast<int64_t>(size)).Bind(7, v.metrics_json);
    st.Bind(8, v.created_ms != 0 ? v.created_ms : clock_->NowUnixMillis());
    if (kind == VersionKind::kAdapter) {
      if (v.base_model_id.empty()) st.BindNull(9); else st.Bind(9, v.base_model_id);
    }
    FLT_RETURN_IF_ERROR(st.Run());
    if (db_->Changes() == 0) return AlreadyExistsError("store: " + std::string(ToString(kind)) + " version '" + v.id + "' exists");
    return AuditLocked(actor, std::string(ToString(kind)) + ".add", v.id, Detail(nlohmann::json{{"sha256", v.sha256}}));
  });
}

Result<VersionRecord> Store::GetVersion(VersionKind kind, std::string_view id) {
  std::lock_guard<std::mutex> lock(mu_);
  FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT " + VersionColumns(kind) + " FROM " +
                                                  std::string(VersionTable(kind)) + " WHERE id = ?"));
  st.Bind(1, id);
  FLT_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return NotFoundError("store: no " + std::string(ToString(kind)) + " version '" + std::string(id) + "'");
  return ReadVersion(st);
}

Result<std::vector<VersionRecord>> Store::ListVersions(VersionKind kind, int limit) {
  std::lock_guard<std::mutex> lock(mu_);
  FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT " + VersionColumns(kind) + " FROM " +
                                                  std::string(VersionTable(kind)) +
                                                  " ORDER BY created_ms DESC, id DESC LIMIT ?"));
  st.Bind(1, static_cast<int64_t>(ClampLimit(limit)));
  std::vector<VersionRecord> out;
  FLT_RETURN_IF_ERROR(ForEachRow(st, [&]() -> Status {
    out.push_back(ReadVersion(st));
    return Status::Ok();
  }));
  return out;
}

Result<std::vector<VersionRecord>> Store::Lineage(VersionKind kind, std::string_view id) {
  std::vector<VersionRecord> out;
  std::set<std::string> seen;
  std::string next(id);
  while (!next.empty() && out.size() < 10000 && seen.insert(next).second) {
    FLT_ASSIGN_OR_RETURN(VersionRecord v, GetVersion(kind, next));
    next = v.parent_id;
    out.push_back(std::move(v));
  }
  return out;
}

// ---------------------------------------------------------------- artifacts

Result<ArtifactInfo> Store::PutArtifact(ByteSpan data, std::string_view media_type) {
  FLT_ASSIGN_OR_RETURN(ArtifactInfo info, artifacts_->Put(data));
  FLT_RETURN_IF_ERROR(RecordArtifact(info, media_type));
  return info;
}

Status Store::RecordArtifact(const ArtifactInfo& info, std::string_view media_type) {
  FLT_RETURN_IF_ERROR(ValidateSha256Hex(info.sha256));
  std::lock_guard<std::mutex> lock(mu_);
  FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("INSERT INTO artifacts (sha256, size, path, media_type, created_ms) "
                                                  "VALUES (?, ?, ?, ?, ?) ON CONFLICT (sha256) DO NOTHING"));
  st.Bind(1, info.sha256)
      .Bind(2, static_cast<int64_t>(info.size))
      .Bind(3, info.relative_path)
      .Bind(4, media_type.empty() ? std::string_view("application/octet-stream") : media_type)
      .Bind(5, clock_->NowUnixMillis());
  return st.Run();
}

Result<ArtifactInfo> Store::GetArtifact(std::string_view sha256_hex) {
  FLT_RETURN_IF_ERROR(ValidateSha256Hex(sha256_hex));
  std::lock_guard<std::mutex> lock(mu_);
  FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT size, path FROM artifacts WHERE sha256 = ?"));
  st.Bind(1, sha256_hex);
  FLT_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return NotFoundError("store: no artifact " + std::string(sha256_hex));
  ArtifactInfo info;
  info.sha256 = std::string(sha256_hex);
  info.size = static_cast<uint64_t>(st.ColumnInt(0));
  info.relative_path = st.ColumnText(1);
  return info;
}

// ---------------------------------------------------------------- audit, counters

Status Store::AppendAudit(std::string_view actor, std::string_view action, std::string_view subject,
                          std::string_view detail_json) {
  std::lock_guard<std::mutex> lock(mu_);
  return AuditLocked(actor, action, subject, detail_json);
}

Result<std::vector<AuditEntry>> Store::ListAudit(int64_t after_id, int limit) {
  std::lock_guard<std::mutex> lock(mu_);
  FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT id, at_ms, actor, action, subject, detail_json FROM audit_log "
                                                  "WHERE id > ? ORDER BY id LIMIT ?"));
  st.Bind(1, after_id).Bind(2, static_cast<int64_t>(ClampLimit(limit)));
  std::vector<AuditEntry> out;
  FLT_RETURN_IF_ERROR(ForEachRow(st, [&]() -> Status {
    AuditEntry e;
    e.id = st.ColumnInt(0);
    e.at_ms = st.ColumnInt(1);
    e.actor = st.ColumnText(2);
    e.action = st.ColumnText(3);
    e.subject = st.ColumnText(4);
    e.detail_json = st.ColumnText(5);
    out.push_back(std::move(e));
    return Status::Ok();
  }));
  return out;
}

Status Store::AddCounters(const std::map<std::string, int64_t>& deltas) {
  std::lock_guard<std::mutex> lock(mu_);
  return db_->Transaction([&]() -> Status {
    FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("INSERT INTO metrics_counters (name, value) VALUES (?, ?) ON "
                                                    "CONFLICT (name) DO UPDATE SET value = value + excluded.value"));
    for (const auto& [name, delta] : deltas) {
      st.Reset();
      st.Bind(1, name).Bind(2, delta);
      FLT_RETURN_IF_ERROR(st.Run());
    }
    return Status::Ok();
  });
}

Result<std::map<std::string, int64_t>> Store::Counters() {
  std::lock_guard<std::mutex> lock(mu_);
  FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT name, value FROM metrics_counters"));
  std::map<std::string, int64_t> out;
  FLT_RETURN_IF_ERROR(ForEachRow(st, [&]() -> Status {
    out[st.ColumnText(0)] = st.ColumnInt(1);
    return Status::Ok();
  }));
  return out;
}

}  // namespace flotilla::coordinator

// ---------------------------------------------------------------- round engine journal

namespace flotilla::coordinator {

Result<DeviceIdentity> Store::GetDeviceIdentity(std::string_view id) {
  std::lock_guard<std::mutex> lock(mu_);
  FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT status, identity_public_key FROM devices WHERE id = ?"));
  st.Bind(1, id);
  FLT_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return NotFoundError("store: no device '" + std::string(id) + "'");
  DeviceIdentity d;
  FLT_ASSIGN_OR_RETURN(d.status, ParseDeviceStatus(st.ColumnText(0)));
  d.identity_public_key = st.ColumnBlob(1);
  return d;
}

Result<int64_t> Store::NextStageSeqLocked(std::string_view round_id) {
  FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT COALESCE(MAX(seq), 0) + 1 FROM participant_stages WHERE "
                                                  "round_id = ?"));
  st.Bind(1, round_id);
  FLT_ASSIGN_OR_RETURN(bool row, st.Step());
  return row ? st.ColumnInt(0) : int64_t{1};
}

Status Store::CreateEngineRound(std::string_view id, std::string_view group, std::string_view spec_json,
                                std::string_view actor) {
  FLT_RETURN_IF_ERROR(protocol::ValidateName("round id", id));
  if (!group.empty()) FLT_RETURN_IF_ERROR(protocol::ValidateName("group", group));
  if (spec_json.empty()) return InvalidArgumentError("store: an engine round needs its spec");
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = clock_->NowUnixMillis();
  Bytes secret(32);
  random_->Fill(secret);
  return db_->Transaction([&]() -> Status {
    FLT_ASSIGN_OR_RETURN(Statement q, db_->Prepare("SELECT state, spec_json FROM rounds WHERE id = ?"));
    q.Bind(1, id);
    FLT_ASSIGN_OR_RETURN(bool exists, q.Step());
    if (exists) {
      if (q.ColumnText(0) != ToString(RoundState::kCreated) || !q.ColumnText(1).empty()) {
        return AlreadyExistsError("store: round '" + std::string(id) + "' exists");
      }
      FLT_ASSIGN_OR_RETURN(Statement up, db_->Prepare("UPDATE rounds SET spec_json = ?, group_name = ?, updated_ms = ? "
                                                      "WHERE id = ? AND state = 'created' AND spec_json = ''"));
      up.Bind(1, spec_json).Bind(2, group).Bind(3, now).Bind(4, id);
      FLT_RETURN_IF_ERROR(RunOne(*db_, up, "queued round '" + std::string(id) + "'"));
      return AuditLocked(actor, "round.adopt", id, Detail(nlohmann::json{{"group", group}}));
    }
    FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("INSERT INTO rounds (id, group_name, state, config_json, created_ms, "
                                                    "updated_ms, upload_secret, spec_json) VALUES (?, ?, 'created', "
                                                    "'{}', ?, ?, ?, ?)"));
    st.Bind(1, id).Bind(2, group).Bind(3, now).Bind(4, now).BindBlob(5, secret).Bind(6, spec_json);
    FLT_RETURN_IF_ERROR(st.Run());
    return AuditLocked(actor, "round.create", id, Detail(nlohmann::json{{"group", group}}));
  });
}

Status Store::JournalTransition(std::string_view id, RoundState from, RoundState to, std::string_view reason,
                                std::span<const rounds::ParticipantStage> participants,
                                const std::string* result_version, std::string_view result_sha256_hex,
                                std::string_view actor) {
  if (result_version != nullptr) FLT_RETURN_IF_ERROR(ValidateSha256Hex(result_sha256_hex));
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = clock_->NowUnixMillis();
  return db_->Transaction([&]() -> Status {
    FLT_ASSIGN_OR_RETURN(Statement cas, db_->Prepare("UPDATE rounds SET state = ?, reason = ?, updated_ms = ? WHERE "
                                                     "id = ? AND state = ?"));
    cas.Bind(1, ToString(to)).Bind(2, reason).Bind(3, now).Bind(4, id).Bind(5, ToString(from));
    FLT_RETURN_IF_ERROR(cas.Run());
    if (db_->Changes() != 1) {
      FLT_ASSIGN_OR_RETURN(RoundRecord r, GetRoundLocked(id));  // NotFound for unknown ids
      return AbortedError("store: round '" + std::string(id) + "' is " + std::string(ToString(r.state)) + ", not " +
                          std::string(ToString(from)));
    }
    nlohmann::json detail{{"from", ToString(from)}, {"to", ToString(to)}, {"reason", reason}};
    if (result_version != nullptr) {
      FLT_ASSIGN_OR_RETURN(Statement res, db_->Prepare("UPDATE rounds SET result_version = ?, aggregate_sha256 = ? "
                                                       "WHERE id = ?"));
      res.Bind(1, *result_version).Bind(2, result_sha256_hex).Bind(3, id);
      FLT_RETURN_IF_ERROR(res.Run());
      detail["result_version"] = *result_version;
    }
    if (!participants.empty()) {
      FLT_ASSIGN_OR_RETURN(int64_t seq, NextStageSeqLocked(id));
      FLT_ASSIGN_OR_RETURN(Statement part, db_->Prepare("INSERT INTO round_participants (round_id, device_id, "
                                                        "cohort_index, updated_ms, last_stage, last_status) VALUES "
                                                        "(?, ?, ?, ?, ?, ?) ON CONFLICT (round_id, device_id) DO UPDATE "
                                                        "SET updated_ms = excluded.updated_ms, last_stage = "
                                                        "excluded.last_stage, last_status = excluded.last_status"));
      FLT_ASSIGN_OR_RETURN(Statement stage, db_->Prepare(std::string(kUpsertStageSql)));
      for (const rounds::ParticipantStage& p : participants) {
        part.Reset();
        part.Bind(1, id).Bind(2, p.device_id).Bind(3, static_cast<int64_t>(p.cohort_index)).Bind(4, now);
        part.Bind(5, p.stage).Bind(6, p.status);
        FLT_RETURN_IF_ERROR(part.Run().WithContext("participant '" + p.device_id + "'"));
        stage.Reset();
        stage.Bind(1, id).Bind(2, p.device_id).Bind(3, p.stage).Bind(4, p.status).Bind(5, now).Bind(6, seq);
        FLT_RETURN_IF_ERROR(stage.Run());
      }
      detail["participants"] = participants.size();
    }
    return AuditLocked(actor, "round.state", id, Detail(detail));
  });
}

Result<std::vector<RoundRecord>> Store::ListRoundsWhereLocked(std::string_view where, int limit) {
  FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT id FROM rounds WHERE " + std::string(where) +
                                                  " ORDER BY created_ms, id LIMIT ?"));
  st.Bind(1, static_cast<int64_t>(ClampLimit(limit)));
  std::vector<std::string> ids;
  FLT_RETURN_IF_ERROR(ForEachRow(st, [&]() -> Status {
    ids.push_back(st.ColumnText(0));
    return Status::Ok();
  }));
  std::vector<RoundRecord> out;
  for (const auto& rid : ids) {
    FLT_ASSIGN_OR_RETURN(RoundRecord r, GetRoundLocked(rid));
    out.push_back(std::move(r));
  }
  return out;
}

Result<std::vector<RoundRecord>> Store::ListUnfinishedEngineRounds() {
  std::lock_guard<std::mutex> lock(mu_);
  return ListRoundsWhereLocked("spec_json != '' AND state NOT IN ('published', 'failed', 'cancelled')", kMaxListLimit);
}

Result<std::vector<RoundRecord>> Store::ListQueuedRounds(int limit) {
  std::lock_guard<std::mutex> lock(mu_);
  return ListRoundsWhereLocked("state = 'created' AND spec_json = ''", limit);
}

Result<std::vector<rounds::ParticipantStage>> Store::ParticipantStageHistory(std::string_view round_id,
                                                                             std::string_view device_id) {
  std::lock_guard<std::mutex> lock(mu_);
  FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT s.stage, s.status, p.cohort_index FROM participant_stages s "
                                                  "JOIN round_participants p USING (round_id, device_id) WHERE "
                                                  "s.round_id = ? AND s.device_id = ? ORDER BY s.seq, s.updated_ms"));
  st.Bind(1, round_id).Bind(2, device_id);
  std::vector<rounds::ParticipantStage> out;
  FLT_RETURN_IF_ERROR(ForEachRow(st, [&]() -> Status {
    out.push_back({std::string(device_id), static_cast<uint32_t>(st.ColumnInt(2)), st.ColumnText(0), st.ColumnText(1)});
    return Status::Ok();
  }));
  return out;
}

Status Store::CheckRoundInvariants() {
  FLT_RETURN_IF_ERROR(IntegrityCheck());
  struct Rule {
    std::string_view what;
    std::string_view sql;  // counts violations
  };
  static constexpr Rule kRules[] = {
      {"participant rows of an unknown round",
       "SELECT COUNT(*) FROM round_participants WHERE round_id NOT IN (SELECT id FROM rounds)"},
      {"stage rows without a participant",
       "SELECT COUNT(*) FROM participant_stages s WHERE NOT EXISTS (SELECT 1 FROM round_participants p WHERE "
       "p.round_id = s.round_id AND p.device_id = s.device_id)"},
      {"failed or cancelled rounds without a reason",
       "SELECT COUNT(*) FROM rounds WHERE state IN ('failed', 'cancelled') AND reason = ''"},
      {"aggregated or published rounds without an adapter version",
       "SELECT COUNT(*) FROM rounds WHERE state IN ('aggregated', 'published') AND result_version = ''"},
      {"rounds whose adapter version is not in the adapter registry",
       "SELECT COUNT(*) FROM rounds WHERE result_version != '' AND result_version NOT IN (SELECT id FROM "
       "adapter_versions)"},
      {"groups with more than one running engine round",
       "SELECT COUNT(*) FROM (SELECT group_name FROM rounds WHERE spec_json != '' AND state NOT IN ('published', "
       "'failed', 'cancelled') GROUP BY group_name HAVING COUNT(*) > 1)"},
      {"rounds in an unknown state",
       "SELECT COUNT(*) FROM rounds WHERE state NOT IN ('created', 'selecting', 'training', 'share_keys', "
       "'masked_input', 'consistency_check', 'unmask', 'aggregated', 'published', 'failed', 'cancelled')"},
      {"duplicate cohort indexes in a round",
       "SELECT COUNT(*) FROM (SELECT round_id, cohort_index FROM round_participants GROUP BY round_id, cohort_index "
       "HAVING COUNT(*) > 1)"},
      {"current versions that do not exist",
       "SELECT COUNT(*) FROM registry_current c WHERE (c.kind = 'adapter' AND c.version_id NOT IN (SELECT id FROM "
       "adapter_versions)) OR (c.kind = 'model' AND c.version_id NOT IN (SELECT id FROM model_versions))"},
  };
  std::lock_guard<std::mutex> lock(mu_);
  for (const Rule& rule : kRules) {
    FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare(rule.sql));
    FLT_ASSIGN_OR_RETURN(bool row, st.Step());
    if (row && st.ColumnInt(0) != 0) {
      return DataLossError("store: " + std::to_string(st.ColumnInt(0)) + " " + std::string(rule.what));
    }
  }
  return Status::Ok();
}

Result<int64_t> Store::PurgeFinishedRoundUploads() {
  std::vector<std::string> orphaned;  // artifact files to remove once the rows are gone
  int64_t deleted = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    constexpr std::string_view kFinished =
        "round_id IN (SELECT id FROM rounds WHERE state IN ('published', 'failed', 'cancelled'))";
    Status tx = db_->Transaction([&]() -> Status {
      orphaned.clear();
      FLT_ASSIGN_OR_RETURN(Statement shas, db_->Prepare("SELECT DISTINCT sha256 FROM uploads WHERE " +
                                                        std::string(kFinished)));
      std::vector<std::string> candidates;
      FLT_RETURN_IF_ERROR(ForEachRow(shas, [&]() -> Status {
        candidates.push_back(shas.ColumnText(0));
        return Status::Ok();
      }));
      FLT_ASSIGN_OR_RETURN(Statement del, db_->Prepare("DELETE FROM uploads WHERE " + std::string(kFinished)));
      FLT_RETURN_IF_ERROR(del.Run());
      deleted = db_->Changes();
      FLT_ASSIGN_OR_RETURN(Statement drop, db_->Prepare(
                                               "DELETE FROM artifacts WHERE sha256 = ?1 AND NOT EXISTS (SELECT 1 FROM "
                                               "uploads WHERE sha256 = ?1) AND NOT EXISTS (SELECT 1 FROM "
                                               "model_versions WHERE sha256 = ?1) AND NOT EXISTS (SELECT 1 FROM "
                                               "adapter_versions WHERE sha256 = ?1) AND NOT EXISTS (SELECT 1 FROM "
                                               "rounds WHERE aggregate_sha256 = ?1)"));
      for (const std::string& sha : candidates) {
        drop.Reset();
        drop.Bind(1, sha);
        FLT_RETURN_IF_ERROR(drop.Run());
        if (db_->Changes() == 1) orphaned.push_back(sha);
      }
      return Status::Ok();
    });
    FLT_RETURN_IF_ERROR(tx);
  }
  // After the commit: a crash before this line leaves only unreferenced files behind.
  for (const std::string& sha : orphaned) {
    std::error_code ec;
    std::filesystem::remove(artifacts_->PathFor(sha), ec);
    if (ec) {
      FLT_LOG(kWarn, "store") << "cannot remove upload artifact " << sha << ": " << ec.message();
    }
  }
  return deleted;
}

Status Store::SetVersionMetrics(VersionKind kind, std::string_view id, std::string_view metrics_json) {
  const nlohmann::json m = nlohmann::json::parse(metrics_json, nullptr, false);
  if (m.is_discarded() || !m.is_object()) return InvalidArgumentError("store: version metrics must be a JSON object");
  std::lock_guard<std::mutex> lock(mu_);
  FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("UPDATE " + std::string(VersionTable(kind)) +
                                                  " SET metrics_json = ? WHERE id = ?"));
  st.Bind(1, metrics_json).Bind(2, id);
  return RunOne(*db_, st, std::string(ToString(kind)) + " version '" + std::string(id) + "'");
}

Result<std::string> Store::CurrentVersion(VersionKind kind) {
  std::lock_guard<std::mutex> lock(mu_);
  FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT version_id FROM registry_current WHERE kind = ?"));
  st.Bind(1, ToString(kind));
  FLT_ASSIGN_OR_RETURN(bool row, st.Step());
  return row ? st.ColumnText(0) : std::string();
}

Status Store::SetCurrentVersion(VersionKind kind, std::string_view id, std::string_view actor) {
  std::lock_guard<std::mutex> lock(mu_);
  return db_->Transaction([&]() -> Status {
    FLT_ASSIGN_OR_RETURN(Statement q, db_->Prepare("SELECT 1 FROM " + std::string(VersionTable(kind)) + " WHERE id = ?"));
    q.Bind(1, id);
    FLT_ASSIGN_OR_RETURN(bool found, q.Step());
    if (!found) return NotFoundError("store: no " + std::string(ToString(kind)) + " version '" + std::string(id) + "'");
    FLT_ASSIGN_OR_RETURN(Statement cur, db_->Prepare("SELECT version_id FROM registry_current WHERE kind = ?"));
    cur.Bind(1, ToString(kind));
    FLT_ASSIGN_OR_RETURN(bool have, cur.Step());
    if (have && cur.ColumnText(0) == id) return Status::Ok();  // idempotent, no audit noise
    FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("INSERT INTO registry_current (kind, version_id, updated_ms) VALUES "
                                                    "(?, ?, ?) ON CONFLICT (kind) DO UPDATE SET version_id = "
                                                    "excluded.version_id, updated_ms = excluded.updated_ms"));
    st.Bind(1, ToString(kind)).Bind(2, id).Bind(3, clock_->NowUnixMillis());
    FLT_RETURN_IF_ERROR(st.Run());
    return AuditLocked(actor, std::string(ToString(kind)) + ".current", id, "{}");
  });
}

Result<bool> Store::IsVersionArtifact(std::string_view sha256_hex) {
  FLT_RETURN_IF_ERROR(ValidateSha256Hex(sha256_hex));
  std::lock_guard<std::mutex> lock(mu_);
  FLT_ASSIGN_OR_RETURN(Statement st, db_->Prepare("SELECT 1 FROM adapter_versions WHERE sha256 = ?1 UNION ALL SELECT 1 "
                                                  "FROM model_versions WHERE sha256 = ?1 LIMIT 1"));
  st.Bind(1, sha256_hex);
  return st.Step();
}

}  // namespace flotilla::coordinator
