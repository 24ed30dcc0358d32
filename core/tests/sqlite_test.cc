#include "flotilla/core/sqlite.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace flotilla::sqlite
