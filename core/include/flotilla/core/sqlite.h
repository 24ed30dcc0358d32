// Thin SQLite adapter shared by every module that keeps state in SQLite (the device's
// sample store and agent state, the coordinator's store): RAII handles, Status errors,
// transactions and versioned migrations. Target flotilla_core_sqlite (the only code that
// includes <sqlite3.h> outside the OTA journal).
//
// Thread safety: a Database is one connection, used by one thread at a time (the
// connection is opened NOMUTEX); open one per thread, WAL lets readers and one writer
// proceed together.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flotilla/core/bytes.h"
#include "flotilla/core/status.h"

struct sqlite3;
struct sqlite3_stmt;

namespace flotilla::sqlite {

class Database;

// A prepared statement. Bind* take 1-based indexes; text and blobs are copied.
class Statement {
 public:
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&& other) noexcept;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement();

  Statement& Bind(int index, int64_t value);
  Statement& Bind(int index, double value);
  Statement& Bind(int index, std::string_view text);
  Statement& Bind(int index, const char* text) { return Bind(index, std::string_view(text)); }
  Statement& BindBlob(int index, ByteSpan blob);
  Statement& BindNull(int index);

  // Advances: true with a row available, false when done; errors as Status.
  Result<bool> Step();
  // Steps to completion (INSERT/UPDATE/DELETE; any result rows are skipped).
  Status Run();
  // Resets for re-execution with new bindings (bindings cleared).
  void Reset();

  int64_t ColumnInt(int col) const;
  double ColumnDouble(int col) const;
  std::string ColumnText(int col) const;
  Bytes ColumnBlob(int col) const;
  bool ColumnIsNull(int col) const;

 private:
  friend class Database;
  Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  sqlite3* db_ = nullptr;
  sqlite3_stmt* stmt_ = nullptr;
  Status bind_error_;  // first Bind failure, reported by Step/Run
};

struct OpenOptions {
  bool create = true;
  bool wal = true;                // journal_mode=WAL
  bool synchronous_full = true;   // synchronous=FULL (else NORMAL)
  int busy_timeout_ms = 5000;
  bool foreign_keys = true;
  // Page cache limit in KiB (PRAGMA cache_size=-N); 0 keeps SQLite's default (2,000 KiB).
  // The cache fills up to this limit as the file grows, so it is part of a long-running
  // process's steady memory.
  int cache_kib = 0;
};

// One migration: applied in order when the recorded version (PRAGMA user_version, or the
// component's row in schema_migrations) is below `version`, each in its own transaction
// that also records the version, so a crash never leaves half a migration.
struct Migration {
  int version;
  std::string_view sql;
};

class Database {
 public:
  // Unavailable (with SQLite's message and the path) when the file cannot be opened.
  static Result<std::unique_ptr<Database>> Open(const std::filesystem::path& path, const OpenOptions& options = {});
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  // Runs one or more statements without results.
  Status Exec(std::string_view sql);
  Result<Statement> Prepare(std::string_view sql);
  int64_t LastInsertRowId() const;
  int64_t Changes() const;  // rows changed by the last statement

  // Applies pending migrations (versions must be increasing from 1). FailedPrecondition
  // if the file's user_version is newer than the newest migration (a newer program made it).
  Status Migrate(std::span<const Migration> migrations);
  Result<int> UserVersion();

  // Per-component migrations, so several components keep their tables in one file and
  // version them independently (the coordinator's Store uses user_version, the rollouts
  // component "rollouts"). Versions live in schema_migrations(component, version), never
  // in user_version. Same guarantees as Migrate: versions must increase from 1; each
  // migration runs in its own BEGIN IMMEDIATE transaction together with its version
  // record, so a crash never leaves half of one; the version is re-read inside that
  // transaction, so two connections migrating at once apply each migration once.
  // FailedPrecondition if the file records a newer version of `component` than the
  // newest migration (a newer program wrote it); InvalidArgument for a bad list or name.
  Status Migrate(std::string_view component, std::span<const Migration> migrations);
  // The version `component` has reached in this file (0: never migrated).
  Result<int> ComponentVersion(std::string_view component);

  // BEGIN IMMEDIATE … COMMIT around fn; ROLLBACK when fn fails (its Status is returned).
  template <typename Fn>
  Status Transaction(Fn&& fn) {
    FLT_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
    Status s = fn();
    if (!s.ok()) {
      (void)Exec("ROLLBACK");
      return s;
    }
    Status c = Exec("COMMIT");
    if (!c.ok()) (void)Exec("ROLLBACK");
    return c;
  }

  // "ok" from PRAGMA integrity_check, else DataLoss with its first lines.
  Status IntegrityCheck();

  sqlite3* handle() const { return db_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  Database() = default;
  sqlite3* db_ = nullptr;
  std::filesystem::path path_;
};

}  // namespace flotilla::sqlite
