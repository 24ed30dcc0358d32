#include "flotilla/core/sqlite.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>

#include "flotilla/core/file.h"

namespace flotilla::sqlite {
namespace {

constexpr Migration kMigrations[] = {
    {1, "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT NOT NULL, data BLOB)"},
    {2, "ALTER TABLE t ADD COLUMN score REAL DEFAULT 0"},
};

TEST(SqliteTest, MigratesOnceAndRoundTripsValues) {
  auto dir = TempDir::Create();
  ASSERT_TRUE(dir.ok());
  const auto path = dir->path() / "db.sqlite";
  {
    auto db = Database::Open(path);
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    ASSERT_TRUE((*db)->Migrate(kMigrations).ok());
    EXPECT_EQ(*(*db)->UserVersion(), 2);
    auto ins = (*db)->Prepare("INSERT INTO t(name, data, score) VALUES(?, ?, ?)");
    ASSERT_TRUE(ins.ok());
    const Bytes blob = {0, 1, 2, 255};
    ins->Bind(1, "alpha").BindBlob(2, blob).Bind(3, 2.5);
    ASSERT_TRUE(ins->Run().ok());
    EXPECT_EQ((*db)->LastInsertRowId(), 1);
  }
  auto db = Database::Open(path);
  ASSERT_TRUE(db.ok());
  ASSERT_TRUE((*db)->Migrate(kMigrations).ok());  // idempotent
  auto q = (*db)->Prepare("SELECT name, data, score FROM t");
  ASSERT_TRUE(q.ok());
  auto row = q->Step();
  ASSERT_TRUE(row.ok() && *row);
  EXPECT_EQ(q->ColumnText(0), "alpha");
  EXPECT_EQ(q->ColumnBlob(1), (Bytes{0, 1, 2, 255}));
  EXPECT_DOUBLE_EQ(q->ColumnDouble(2), 2.5);
  EXPECT_TRUE((*db)->IntegrityCheck().ok());
}

TEST(SqliteTest, CacheLimitIsAppliedAndValidated) {
  auto dir = TempDir::Create();
  ASSERT_TRUE(dir.ok());
  auto cache_size = [](Database& db) {
    auto q = db.Prepare("PRAGMA cache_size");
    EXPECT_TRUE(q.ok());
    EXPECT_TRUE(*q->Step());
    return q->ColumnInt(0);
  };
  OpenOptions o;
  o.cache_kib = 768;
  auto db = Database::Open(dir->path() / "a.db", o);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  EXPECT_EQ(cache_size(**db), -768);  // negative: a limit in KiB, not pages
  auto plain = Database::Open(dir->path() / "b.db");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(cache_size(**plain), -2000);  // SQLite's default untouched
  o.cache_kib = -1;
  auto bad = Database::Open(dir->path() / "c.db", o);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(std::filesystem::exists(dir->path() / "c.db"));
}

TEST(SqliteTest, FailedTransactionRollsBackAndNewerSchemaIsRefused) {
  auto dir = TempDir::Create();
  ASSERT_TRUE(dir.ok());
  auto db = Database::Open(dir->path() / "db.sqlite");
  ASSERT_TRUE(db.ok());
  ASSERT_TRUE((*db)->Migrate(kMigrations).ok());
  Status s = (*db)->Transaction([&]() -> Status {
    FLT_RETURN_IF_ERROR((*db)->Exec("INSERT INTO t(name) VALUES('x')"));
    return AbortedError("stop");
  });
  EXPECT_EQ(s.code(), StatusCode::kAborted);
  auto count = (*db)->Prepare("SELECT COUNT(*) FROM t");
  ASSERT_TRUE(count.ok());
  ASSERT_TRUE(*count->Step());
  EXPECT_EQ(count->ColumnInt(0), 0);
  EXPECT_FALSE((*db)->Exec("INSERT INTO t(name) VALUES(NULL)").ok());  // NOT NULL
  ASSERT_TRUE((*db)->Exec("PRAGMA user_version = 9").ok());
  EXPECT_EQ((*db)->Migrate(kMigrations).code(), StatusCode::kFailedPrecondition);
  EXPECT_FALSE((*db)->Prepare("SELEC nonsense").ok());
}

// --- per-component migrations (several components in one file) ---------------------------

// Each migration depends on the previous one and fails if run twice (no IF NOT EXISTS,
// a row whose count proves a single application).
constexpr Migration kAlpha[] = {
    {1, "CREATE TABLE alpha_t(id INTEGER PRIMARY KEY); CREATE TABLE alpha_log(v INTEGER)"},
    {2, "ALTER TABLE alpha_t ADD COLUMN name TEXT; INSERT INTO alpha_log VALUES(2)"},
};
constexpr Migration kAlphaV3[] = {
    kAlpha[0],
    kAlpha[1],
    {3, "CREATE INDEX alpha_by_name ON alpha_t(name); INSERT INTO alpha_log VALUES(3)"},
};
constexpr Migration kBeta[] = {{1, "CREATE TABLE beta_t(x)"}};

int64_t Count(Database& db, const std::string& sql) {
  auto st = db.Prepare(sql);
  EXPECT_TRUE(st.ok()) << sql;
  if (!st.ok()) return -1;
  auto row = st->Step();
  EXPECT_TRUE(row.ok() && *row) << sql;
  return st->ColumnInt(0);
}

bool HasTable(Database& db, const std::string& name) {
  return Count(db, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '" + name + "'") == 1;
}

TEST(SqliteComponentMigrateTest, ComponentsVersionIndependentlyInOrderAndOnce) {
  auto dir = TempDir::Create();
  ASSERT_TRUE(dir.ok());
  const auto path = dir->path() / "shared.db";
  {
    auto db = Database::Open(path);
    ASSERT_TRUE(db.ok());
    EXPECT_EQ(*(*db)->ComponentVersion("alpha"), 0);  // no table yet
    ASSERT_TRUE((*db)->Migrate(kMigrations).ok());   // the user_version owner (like the Store)
    ASSERT_TRUE((*db)->Migrate("alpha", kAlpha).ok());
    ASSERT_TRUE((*db)->Migrate("beta", kBeta).ok());
    EXPECT_EQ(*(*db)->ComponentVersion("alpha"), 2);
    EXPECT_EQ(*(*db)->ComponentVersion("beta"), 1);
    EXPECT_EQ(*(*db)->ComponentVersion("gamma"), 0);
    EXPECT_EQ(*(*db)->UserVersion(), 2) << "component migrations never touch user_version";
    ASSERT_TRUE((*db)->Exec("INSERT INTO alpha_t(name) VALUES('a')").ok());
  }
  // Reopen: nothing re-applied (the migrations would fail or add rows), then only v3 runs.
  auto db = Database::Open(path);
  ASSERT_TRUE(db.ok());
  ASSERT_TRUE((*db)->Migrate(kMigrations).ok());
  ASSERT_TRUE((*db)->Migrate("alpha", kAlpha).ok());
  ASSERT_TRUE((*db)->Migrate("beta", kBeta).ok());
  EXPECT_EQ(Count(**db, "SELECT count(*) FROM alpha_log"), 1);
  ASSERT_TRUE((*db)->Migrate("alpha", kAlphaV3).ok());
  EXPECT_EQ(*(*db)->ComponentVersion("alpha"), 3);
  EXPECT_EQ(Count(**db, "SELECT count(*) FROM alpha_log"), 2);
  EXPECT_EQ(Count(**db, "SELECT count(*) FROM alpha_t"), 1);
  EXPECT_TRUE((*db)->IntegrityCheck().ok());
}

TEST(SqliteComponentMigrateTest, RefusesAFileANewerProgramMigrated) {
  auto dir = TempDir::Create();
  ASSERT_TRUE(dir.ok());
  auto db = Database::Open(dir->path() / "shared.db");
  ASSERT_TRUE(db.ok());
  ASSERT_TRUE((*db)->Migrate("alpha", kAlphaV3).ok());
  ASSERT_TRUE((*db)->Migrate("beta", kBeta).ok());
  const Status s = (*db)->Migrate("alpha", kAlpha);  // an older program: knows only v1..v2
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("component alpha"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("version 3"), std::string::npos) << s.ToString();
  EXPECT_TRUE((*db)->Migrate("beta", kBeta).ok()) << "other components are not affected";
}

TEST(SqliteComponentMigrateTest, RejectsBadMigrationListsAndNames) {
  auto dir = TempDir::Create();
  ASSERT_TRUE(dir.ok());
  auto db = Database::Open(dir->path() / "shared.db");
  ASSERT_TRUE(db.ok());
  constexpr Migration kUnordered[] = {{2, "CREATE TABLE a(x)"}, {1, "CREATE TABLE b(x)"}};
  constexpr Migration kZero[] = {{0, "CREATE TABLE a(x)"}};
  EXPECT_EQ((*db)->Migrate("alpha", kUnordered).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*db)->Migrate("alpha", kZero).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*db)->Migrate("", kBeta).code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(HasTable(**db, "a"));
}

TEST(SqliteComponentMigrateTest, AFailingMigrationLeavesNothingOfItselfAndKeepsTheEarlierOnes) {
  auto dir = TempDir::Create();
  ASSERT_TRUE(dir.ok());
  auto db = Database::Open(dir->path() / "shared.db");
  ASSERT_TRUE(db.ok());
  constexpr Migration kBroken[] = {
      {1, "CREATE TABLE one(x)"},
      {2, "CREATE TABLE two(x); INSERT INTO no_such_table VALUES(1)"},
  };
  const Status s = (*db)->Migrate("alpha", kBroken);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.ToString().find("migration 2"), std::string::npos) << s.ToString();
  EXPECT_EQ(*(*db)->ComponentVersion("alpha"), 1);
  EXPECT_TRUE(HasTable(**db, "one"));
  EXPECT_FALSE(HasTable(**db, "two")) << "half of migration 2 was kept";
}

// A process killed in the middle of a migration (between two of its statements): after
// restart the migration is absent as a whole and re-runs.
TEST(SqliteComponentMigrateTest, ACrashMidMigrationLeavesItUnapplied) {
  auto dir = TempDir::Create();
  ASSERT_TRUE(dir.ok());
  const auto path = dir->path() / "shared.db";
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto db = Database::Open(path);
    if (!db.ok()) ::_exit(2);
    sqlite3_create_function(
        (*db)->handle(), "crash_now", 0, SQLITE_UTF8, nullptr,
        [](sqlite3_context*, int, sqlite3_value**) { ::_exit(0); }, nullptr, nullptr);
    constexpr Migration kCrashing[] = {
        {1, "CREATE TABLE one(x)"},
        {2, "CREATE TABLE two(x); INSERT INTO one VALUES(1); SELECT crash_now(); CREATE TABLE three(x)"},
    };
    (void)(*db)->Migrate("alpha", kCrashing);
    ::_exit(3);  // did not reach the crash point
  }
  int wstatus = 0;
  ASSERT_EQ(::waitpid(pid, &wstatus, 0), pid);
  ASSERT_TRUE(WIFEXITED(wstatus));
  ASSERT_EQ(WEXITSTATUS(wstatus), 0) << "the child must die inside migration 2";

  auto db = Database::Open(path);
  ASSERT_TRUE(db.ok());
  EXPECT_EQ(*(*db)->ComponentVersion("alpha"), 1);
  EXPECT_TRUE(HasTable(**db, "one"));
  EXPECT_FALSE(HasTable(**db, "two"));
  EXPECT_EQ(Count(**db, "SELECT count(*) FROM one"), 0);
  constexpr Migration kFixed[] = {
      {1, "CREATE TABLE one(x)"},
      {2, "CREATE TABLE two(x); INSERT INTO one VALUES(1); CREATE TABLE three(x)"},
  };
  ASSERT_TRUE((*db)->Migrate("alpha", kFixed).ok());
  EXPECT_EQ(*(*db)->ComponentVersion("alpha"), 2);
  EXPECT_EQ(Count(**db, "SELECT count(*) FROM one"), 1);
  EXPECT_TRUE((*db)->IntegrityCheck().ok());
}

// Two connections (say, the Store's and the rollouts') migrating a fresh file at once:
// the version is re-read inside each migration's transaction, so neither re-runs one.
TEST(SqliteComponentMigrateTest, ConcurrentMigratorsApplyEachMigrationOnce) {
  auto dir = TempDir::Create();
  ASSERT_TRUE(dir.ok());
  for (int round = 0; round < 4; ++round) {
    const auto path = dir->path() / ("shared-" + std::to_string(round) + ".db");
    // Opened first: a fresh file's switch to WAL is Open's business, not Migrate's.
    auto a = Database::Open(path);
    auto b = Database::Open(path);
    ASSERT_TRUE(a.ok() && b.ok());
    Database* dbs[2] = {a->get(), b->get()};
    Status results[2];
    std::vector<std::thread> threads;
    for (int i = 0; i < 2; ++i) {
      threads.emplace_back([db = dbs[i], &result = results[i]] { result = db->Migrate("alpha", kAlpha); });
    }
    for (auto& t : threads) t.join();
    EXPECT_TRUE(results[0].ok()) << results[0].ToString();
    EXPECT_TRUE(results[1].ok()) << results[1].ToString();
    auto db = Database::Open(path);
    ASSERT_TRUE(db.ok());
    EXPECT_EQ(*(*db)->ComponentVersion("alpha"), 2);
    EXPECT_EQ(Count(**db, "SELECT count(*) FROM alpha_log"), 1);
  }
}

}  // namespace
}  // namespace flotilla::sqlite
