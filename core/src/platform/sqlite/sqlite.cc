#include "flotilla/core/sqlite.h"

#include <sqlite3.h>

#include <utility>

namespace flotilla::sqlite {
namespace {

Status Error(sqlite3* db, std::string_view what) {
  std::string m = "sqlite: " + std::string(what);
  if (db != nullptr) m += ": " + std::string(sqlite3_errmsg(db));
  return UnavailableError(m);
}

}  // namespace

Statement::Statement(Statement&& other) noexcept
    : db_(std::exchange(other.db_, nullptr)),
      stmt_(std::exchange(other.stmt_, nullptr)),
      bind_error_(std::move(other.bind_error_)) {}

Statement& Statement::operator=(Statement&& other) noexcept {
  if (this != &other) {
    sqlite3_finalize(stmt_);
    db_ = std::exchange(other.db_, nullptr);
    stmt_ = std::exchange(other.stmt_, nullptr);
    bind_error_ = std::move(other.bind_error_);
  }
  return *this;
}

Statement::~Statement() { sqlite3_finalize(stmt_); }

namespace {
void Note(Status& first, sqlite3* db, int rc, int index) {
  if (rc != SQLITE_OK && first.ok()) first = Error(db, "bind parameter " + std::to_string(index));
}
}  // namespace

Statement& Statement::Bind(int index, int64_t value) {
  Note(bind_error_, db_, sqlite3_bind_int64(stmt_, index, value), index);
  return *this;
}
Statement& Statement::Bind(int index, double value) {
  Note(bind_error_, db_, sqlite3_bind_double(stmt_, index, value), index);
  return *this;
}
Statement& Statement::Bind(int index, std::string_view text) {
  Note(bind_error_, db_,
       sqlite3_bind_text64(stmt_, index, text.data(), text.size(), SQLITE_TRANSIENT, SQLITE_UTF8), index);
  return *this;
}
Statement& Statement::BindBlob(int index, ByteSpan blob) {
  // A zero-length blob must still be a blob, not NULL: pass a non-null pointer.
  static const uint8_t kEmpty = 0;
  const void* p = blob.empty() ? &kEmpty : blob.data();
  Note(bind_error_, db_, sqlite3_bind_blob64(stmt_, index, p, blob.size(), SQLITE_TRANSIENT), index);
  return *this;
}
Statement& Statement::BindNull(int index) {
  Note(bind_error_, db_, sqlite3_bind_null(stmt_, index), index);
  return *this;
}

Result<bool> Statement::Step() {
  if (!bind_error_.ok()) return bind_error_;
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return Error(db_, "step");
}

Status Statement::Run() {
  for (;;) {
    FLT_ASSIGN_OR_RETURN(bool row, Step());
    if (!row) return Status::Ok();
  }
}

void Statement::Reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
  bind_error_ = Status::Ok();
}

int64_t Statement::ColumnInt(int col) const { return sqlite3_column_int64(stmt_, col); }
double Statement::ColumnDouble(int col) const { return sqlite3_column_double(stmt_, col); }
std::string Statement::ColumnText(int col) const {
  const unsigned char* p = sqlite3_column_text(stmt_, col);
  const int n = sqlite3_column_bytes(stmt_, col);
  return p == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
}
Bytes Statement::ColumnBlob(int col) const {
  const auto* p = static_cast<const uint8_t*>(sqlite3_column_blob(stmt_, col));
  const int n = sqlite3_column_bytes(stmt_, col);
  return p == nullptr ? Bytes() : Bytes(p, p + n);
}
bool Statement::ColumnIsNull(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }

Result<std::unique_ptr<Database>> Database::Open(const std::filesystem::path& path, const OpenOptions& options) {
  if (options.cache_kib < 0) return InvalidArgumentError("sqlite: negative cache_kib for " + path.string());
  std::unique_ptr<Database> db(new Database());
  db->path_ = path;
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;
  if (options.create) flags |= SQLITE_OPEN_CREATE;
  if (sqlite3_open_v2(path.c_str(), &db->db_, flags, nullptr) != SQLITE_OK) {
    return Error(db->db_, "open " + path.string());
  }
  sqlite3_busy_timeout(db->db_, options.busy_timeout_ms);
  if (options.wal) FLT_RETURN_IF_ERROR(db->Exec("PRAGMA journal_mode=WAL"));
  FLT_RETURN_IF_ERROR(db->Exec(options.synchronous_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL"));
  if (options.foreign_keys) FLT_RETURN_IF_ERROR(db->Exec("PRAGMA foreign_keys=ON"));
  if (options.cache_kib > 0) FLT_RETURN_IF_ERROR(db->Exec("PRAGMA cache_size=-" + std::to_string(options.cache_kib)));
  return db;
}

Database::~Database() {
  if (db_ != nullptr) sqlite3_close_v2(db_);
}

Status Database::Exec(std::string_view sql) {
  const std::string s(sql);
  char* err = nullptr;
  if (sqlite3_exec(db_, s.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string m = err != nullptr ? err : sqlite3_errmsg(db_);
    sqlite3_free(err);
    return UnavailableError("sqlite: " + m);
  }
  return Status::Ok();
}

Result<Statement> Database::Prepare(std::string_view sql) {
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr) != SQLITE_OK) {
    return Error(db_, "prepare");
  }
  return Statement(db_, stmt);
}

int64_t Database::LastInsertRowId() const { return sqlite3_last_insert_rowid(db_); }
int64_t Database::Changes() const { return sqlite3_changes64(db_); }

namespace {

constexpr std::string_view kComponentTable =
    "CREATE TABLE IF NOT EXISTS schema_migrations(component TEXT PRIMARY KEY, version INTEGER NOT NULL)";

Result<int> NewestOf(std::span<const Migration> migrations) {
  int newest = 0;
  for (const Migration& m : migrations) {
    if (m.version <= newest) return InvalidArgumentError("sqlite: migration versions must increase from 1");
    newest = m.version;
  }
  return newest;
}

}  // namespace

Result<int> Database::UserVersion() {
  FLT_ASSIGN_OR_RETURN(Statement st, Prepare("PRAGMA user_version"));
  FLT_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return UnavailableError("sqlite: PRAGMA user_version returned nothing");
  return static_cast<int>(st.ColumnInt(0));
}

Status Database::Migrate(std::span<const Migration> migrations) {
  FLT_ASSIGN_OR_RETURN(int current, UserVersion());
  FLT_ASSIGN_OR_RETURN(int newest, NewestOf(migrations));
  if (current > newest) {
    return FailedPreconditionError("sqlite: " + path_.string() + " has schema version " + std::to_string(current) +
                                   ", newer than this program's " + std::to_string(newest));
  }
  for (const Migration& m : migrations) {
    if (m.version <= current) continue;
    Status applied = Transaction([&]() -> Status {
      FLT_RETURN_IF_ERROR(Exec(m.sql));
      return Exec("PRAGMA user_version = " + std::to_string(m.version));
    });
    if (!applied.ok()) return applied;
  }
  return Status::Ok();
}

Result<int> Database::ComponentVersion(std::string_view component) {
  FLT_ASSIGN_OR_RETURN(Statement table,
                       Prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"));
  FLT_ASSIGN_OR_RETURN(bool exists, table.Step());
  if (!exists) return 0;
  FLT_ASSIGN_OR_RETURN(Statement st, Prepare("SELECT version FROM schema_migrations WHERE component = ?"));
  st.Bind(1, component);
  FLT_ASSIGN_OR_RETURN(bool row, st.Step());
  return row ? static_cast<int>(st.ColumnInt(0)) : 0;
}

Status Database::Migrate(std::string_view component, std::span<const Migration> migrations) {
  if (component.empty()) return InvalidArgumentError("sqlite: migration component name is empty");
  FLT_ASSIGN_OR_RETURN(int newest, NewestOf(migrations));
  const std::string where = path_.string() + " (component " + std::string(component) + ")";
  FLT_ASSIGN_OR_RETURN(int current, ComponentVersion(component));
  if (current > newest) {
    return FailedPreconditionError("sqlite: " + where + " has schema version " + std::to_string(current) +
                                   ", newer than this program's " + std::to_string(newest));
  }
  for (const Migration& m : migrations) {
    if (m.version <= current) continue;
    Status applied = Transaction([&]() -> Status {
      FLT_RETURN_IF_ERROR(Exec(kComponentTable));
      // Another connection may have migrated since `current` was read.
      FLT_ASSIGN_OR_RETURN(int now, ComponentVersion(component));
      if (now >= m.version) return Status::Ok();
      FLT_RETURN_IF_ERROR(Exec(m.sql).WithContext("migration " + std::to_string(m.version) + " of " + where));
      FLT_ASSIGN_OR_RETURN(Statement st, Prepare("INSERT INTO schema_migrations(component, version) VALUES(?, ?) "
                                                 "ON CONFLICT(component) DO UPDATE SET version = excluded.version"));
      return st.Bind(1, component).Bind(2, int64_t{m.version}).Run();
    });
    if (!applied.ok()) return applied;
  }
  return Status::Ok();
}

Status Database::IntegrityCheck() {
  FLT_ASSIGN_OR_RETURN(Statement st, Prepare("PRAGMA integrity_check"));
  std::string all;
  for (int i = 0; i < 5; ++i) {
    FLT_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    all += (all.empty() ? "" : "; ") + st.ColumnText(0);
  }
  if (all == "ok") return Status::Ok();
  return DataLossError("sqlite: integrity check of " + path_.string() + ": " + all);
}

}  // namespace flotilla::sqlite
