#include "flotilla/ota/journal.h"

#include <sqlite3.h>

#include <chrono>

namespace flotilla::ota {
namespace {

Status SqlError(sqlite3* db, std::string_view what) {
  return UnavailableError("ota journal: " + std::string(what) + ": " + (db ? sqlite3_errmsg(db) : "no database"));
}

class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) { rc_ = sqlite3_prepare_v2(db, sql, -1, &s_, nullptr); }
  ~Stmt() { sqlite3_finalize(s_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  bool ok() const { return rc_ == SQLITE_OK; }
  sqlite3_stmt* get() { return s_; }

 private:
  sqlite3_stmt* s_ = nullptr;
  int rc_ = SQLITE_ERROR;
};

}  // namespace

struct Journal::Impl {
  sqlite3* db = nullptr;
  CrashHook hook;
  ~Impl() {
    if (db) sqlite3_close(db);
  }
  void Point(std::string_view p) {
    if (hook) hook(p);
  }
  Status Exec(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      std::string m = err ? err : "?";
      sqlite3_free(err);
      return UnavailableError("ota journal: " + m);
    }
    return Status::Ok();
  }
  Result<std::string> GetBlob(const char* key) {
    Stmt st(db, "SELECT value FROM kv WHERE key = ?");
    if (!st.ok()) return SqlError(db, "prepare");
    sqlite3_bind_text(st.get(), 1, key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st.get());
    if (rc == SQLITE_DONE) return NotFoundError(std::string("ota journal: no ") + key);
    if (rc != SQLITE_ROW) return SqlError(db, "read");
    const void* p = sqlite3_column_blob(st.get(), 0);
    const int n = sqlite3_column_bytes(st.get(), 0);
    return std::string(static_cast<const char*>(p), static_cast<size_t>(n));
  }
  Status PutBlob(const char* key, const std::string& value) {
    Stmt st(db, "INSERT INTO kv(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value");
    if (!st.ok()) return SqlError(db, "prepare");
    sqlite3_bind_text(st.get(), 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st.get(), 2, value.data(), static_cast<int>(value.size()), SQLITE_STATIC);
    if (sqlite3_step(st.get()) != SQLITE_DONE) return SqlError(db, "write");
    return Status::Ok();
  }
};

Journal::Journal(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Journal::~Journal() = default;

Result<std::unique_ptr<Journal>> Journal::Open(const std::filesystem::path& path, CrashHook hook) {
  auto impl = std::make_unique<Impl>();
  impl->hook = std::move(hook);
  if (sqlite3_open_v2(path.c_str(), &impl->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                      nullptr) != SQLITE_OK) {
    return SqlError(impl->db, "open " + path.string());
  }
  sqlite3_busy_timeout(impl->db, 5000);
  FLT_RETURN_IF_ERROR(impl->Exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"));
  FLT_RETURN_IF_ERROR(impl->Exec(
      "CREATE TABLE IF NOT EXISTS kv(key TEXT PRIMARY KEY, value BLOB NOT NULL);"
      "CREATE TABLE IF NOT EXISTS history(id INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER NOT NULL, "
      "step TEXT NOT NULL);"));
  Stmt v(impl->db, "PRAGMA user_version");
  if (!v.ok() || sqlite3_step(v.get()) != SQLITE_ROW) return SqlError(impl->db, "schema version");
  const int version = sqlite3_column_int(v.get(), 0);
  if (version == 0) {
    FLT_RETURN_IF_ERROR(impl->Exec("PRAGMA user_version = 1"));
  } else if (version != kSchemaVersion) {
    return DataLossError("ota journal: schema version " + std::to_string(version) + ", expected " +
                         std::to_string(kSchemaVersion));
  }
  return std::unique_ptr<Journal>(new Journal(std::move(impl)));
}

Result<v1::OtaJournalRecord> Journal::Load() {
  v1::OtaJournalRecord rec;
  auto blob = impl_->GetBlob("record");
  if (!blob.ok()) {
    if (blob.status().code() != StatusCode::kNotFound) return blob.status();
    rec.set_state(v1::OTA_STATE_IDLE);
    return rec;
  }
  if (!rec.ParseFromString(*blob)) return DataLossError("ota journal: record does not parse");
  return rec;
}

Status Journal::Save(const v1::OtaJournalRecord& record, std::string_view step) {
  const std::string point = "journal:" + std::string(step);
  impl_->Point(point + ":before");
  std::string blob;
  if (!record.SerializeToString(&blob)) return InternalError("ota journal: serialize failed");
  FLT_RETURN_IF_ERROR(impl_->Exec("BEGIN IMMEDIATE"));
  Status s = impl_->PutBlob("record", blob);
  if (s.ok()) {
    Stmt st(impl_->db, "INSERT INTO history(at_ms, step) VALUES(?, ?)");
    const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
    sqlite3_bind_int64(st.get(), 1, now);
    sqlite3_bind_text(st.get(), 2, step.data(), static_cast<int>(step.size()), SQLITE_TRANSIENT);
    if (!st.ok() || sqlite3_step(st.get()) != SQLITE_DONE) s = SqlError(impl_->db, "history");
  }
  if (!s.ok()) {
    impl_->Exec("ROLLBACK").IgnoreError();
    return s;
  }
  FLT_RETURN_IF_ERROR(impl_->Exec("COMMIT"));
  impl_->Point(point + ":after");
  return Status::Ok();
}

Result<v1::OtaTrustedState> Journal::LoadTrusted() {
  FLT_ASSIGN_OR_RETURN(std::string blob, impl_->GetBlob("trusted"));
  v1::OtaTrustedState st;
  if (!st.ParseFromString(blob)) return DataLossError("ota journal: trusted state does not parse");
  return st;
}

Status Journal::SaveTrusted(const v1::OtaTrustedState& state) {
  impl_->Point("journal:trusted:before");
  std::string blob;
  if (!state.SerializeToString(&blob)) return InternalError("ota journal: serialize failed");
  FLT_RETURN_IF_ERROR(impl_->PutBlob("trusted", blob));
  impl_->Point("journal:trusted:after");
  return Status::Ok();
}

Result<std::vector<std::string>> Journal::History(int limit) {
  Stmt st(impl_->db, "SELECT step FROM (SELECT id, step FROM history ORDER BY id DESC LIMIT ?) ORDER BY id");
  if (!st.ok()) return SqlError(impl_->db, "prepare");
  sqlite3_bind_int(st.get(), 1, limit);
  std::vector<std::string> out;
  int rc;
  while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
    out.emplace_back(reinterpret_cast<const char*>(sqlite3_column_text(st.get(), 0)));
  }
  if (rc != SQLITE_DONE) return SqlError(impl_->db, "history");
  return out;
}

}  // namespace flotilla::ota
