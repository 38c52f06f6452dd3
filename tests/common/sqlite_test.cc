#include "common/sqlite/sqlite.h"

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"

namespace fedge::sqlite {
namespace {

using ::testing::HasSubstr;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

Db::Options TestOptions() {
  Db::Options options;
  options.label = "test.db";
  return options;
}

class SqliteTest : public ::testing::Test {
 protected:
  std::string DbPath() const { return dir_.path() + "/test.db"; }

  fedge::testing::TempDir dir_;
};

const std::vector<const char*>& TwoMigrations() {
  static const auto* const kMigrations = new std::vector<const char*>{
      "CREATE TABLE log (step INTEGER NOT NULL); INSERT INTO log VALUES (1);",
      "INSERT INTO log VALUES (2); "
      "CREATE TABLE kv (k TEXT PRIMARY KEY NOT NULL, v INTEGER NOT NULL);",
  };
  return *kMigrations;
}

TEST_F(SqliteTest, MigrationsRunInOrderOnceAndSetUserVersion) {
  {
    absl::StatusOr<Db> db = Db::Open(DbPath(), TwoMigrations(), TestOptions());
    ASSERT_TRUE(db.ok()) << db.status();
    absl::StatusOr<int64_t> version = QueryInt(*db, "PRAGMA user_version");
    ASSERT_TRUE(version.ok()) << version.status();
    EXPECT_EQ(*version, 2);
    absl::StatusOr<Stmt> stmt = Stmt::Prepare(*db, "SELECT step FROM log ORDER BY rowid");
    ASSERT_TRUE(stmt.ok()) << stmt.status();
    std::vector<int64_t> steps;
    while (true) {
      absl::StatusOr<bool> row = stmt->Step();
      ASSERT_TRUE(row.ok()) << row.status();
      if (!*row) break;
      steps.push_back(stmt->Int(0));
    }
    EXPECT_EQ(steps, (std::vector<int64_t>{1, 2}));
    absl::StatusOr<Stmt> mode = Stmt::Prepare(*db, "PRAGMA journal_mode");
    ASSERT_TRUE(mode.ok()) << mode.status();
    ASSERT_TRUE(mode->Step().value_or(false));
    EXPECT_EQ(mode->Text(0), "wal");
  }
  // Reopening runs nothing again: a re-run would insert another log row.
  absl::StatusOr<Db> db = Db::Open(DbPath(), TwoMigrations(), TestOptions());
  ASSERT_TRUE(db.ok()) << db.status();
  EXPECT_EQ(QueryInt(*db, "PRAGMA user_version").value_or(-1), 2);
  EXPECT_EQ(QueryInt(*db, "SELECT COUNT(*) FROM log").value_or(-1), 2);
}

TEST_F(SqliteTest, RefusesANewerSchemaAndLeavesTheFileAlone) {
  {
    absl::StatusOr<Db> db = Db::Open(DbPath(), TwoMigrations(), TestOptions());
    ASSERT_TRUE(db.ok()) << db.status();
    ASSERT_TRUE(Exec(*db, "PRAGMA journal_mode = DELETE").ok());
    ASSERT_TRUE(Exec(*db, "PRAGMA user_version = 7").ok());
  }
  const std::string before = ReadFile(DbPath());
  ASSERT_FALSE(before.empty());

  absl::StatusOr<Db> db = Db::Open(DbPath(), TwoMigrations(), TestOptions());
  ASSERT_FALSE(db.ok());
  EXPECT_EQ(db.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(db.status().message(),
              HasSubstr("test.db has schema version 7, this fedge-cloud understands up to 2"));
  EXPECT_EQ(ReadFile(DbPath()), before);
  EXPECT_FALSE(std::ifstream(DbPath() + "-wal").good());
}

TEST_F(SqliteTest, InTransactionRollsBackWhenTheFunctionFails) {
  absl::StatusOr<Db> db = Db::Open(DbPath(), TwoMigrations(), TestOptions());
  ASSERT_TRUE(db.ok()) << db.status();
  absl::Status status = InTransaction(*db, [&]() -> absl::Status {
    absl::StatusOr<Stmt> insert = Stmt::Prepare(*db, "INSERT INTO kv (k, v) VALUES (?, ?)");
    if (!insert.ok()) return insert.status();
    absl::Status run = insert->Bind(1, "gone").Bind(2, int64_t{1}).Run();
    if (!run.ok()) return run;
    return absl::AbortedError("changed my mind");
  });
  EXPECT_EQ(status.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(QueryInt(*db, "SELECT COUNT(*) FROM kv WHERE k = 'gone'").value_or(-1), 0);

  // And commits when it succeeds.
  ASSERT_TRUE(InTransaction(*db, [&]() -> absl::Status {
                return Exec(*db, "INSERT INTO kv (k, v) VALUES ('kept', 1)");
              }).ok());
  EXPECT_EQ(QueryInt(*db, "SELECT COUNT(*) FROM kv WHERE k = 'kept'").value_or(-1), 1);
}

TEST_F(SqliteTest, ConstraintViolationNamesTheSqlError) {
  absl::StatusOr<Db> db = Db::Open(DbPath(), TwoMigrations(), TestOptions());
  ASSERT_TRUE(db.ok()) << db.status();
  ASSERT_TRUE(Exec(*db, "INSERT INTO kv (k, v) VALUES ('a', 1)").ok());
  absl::StatusOr<Stmt> insert = Stmt::Prepare(*db, "INSERT INTO kv (k, v) VALUES (?, ?)");
  ASSERT_TRUE(insert.ok()) << insert.status();
  absl::Status status = insert->Bind(1, "a").Bind(2, int64_t{2}).Run();
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(status.message(), HasSubstr("test.db: executing \"INSERT INTO kv"));
  EXPECT_THAT(status.message(), HasSubstr("UNIQUE constraint failed: kv.k"));
}

}  // namespace
}  // namespace fedge::sqlite
