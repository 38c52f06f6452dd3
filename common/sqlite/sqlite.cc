#include "common/sqlite/sqlite.h"

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status/status.h"

namespace fedge::sqlite {
namespace {

constexpr int kBusyTimeoutMs = 10000;

// Runs the missing forward migrations, each in its own transaction.
absl::Status Migrate(const Db& db, const std::vector<const char*>& migrations,
                     absl::string_view label) {
  while (true) {
    bool done = false;
    absl::Status status = InTransaction(db, [&]() -> absl::Status {
      // Re-read under the write lock: another process may have migrated meanwhile.
      FEDGE_ASSIGN_OR_RETURN(int64_t current, QueryInt(db, "PRAGMA user_version"));
      if (current > static_cast<int64_t>(migrations.size())) {
        return absl::FailedPreconditionError(
            absl::StrFormat("%s has schema version %d, this fedge-cloud understands up to %d; "
                            "upgrade fedge-cloud",
                            label, current, migrations.size()));
      }
      if (current == static_cast<int64_t>(migrations.size())) {
        done = true;
        return absl::OkStatus();
      }
      absl::Status s = Exec(db, migrations[static_cast<size_t>(current)]);
      if (!s.ok()) {
        return Annotate(s, absl::StrCat("migrating ", label, " from schema version ", current,
                                        " to ", current + 1));
      }
      return Exec(db, absl::StrCat("PRAGMA user_version = ", current + 1).c_str());
    });
    FEDGE_RETURN_IF_ERROR(status);
    if (done) return absl::OkStatus();
  }
}

}  // namespace

absl::Status ErrnoStatus(int err, absl::string_view what) {
  std::string msg = absl::StrCat(what, ": ", std::strerror(err));
  switch (err) {
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(absl::StrCat(msg, " (disk full)"));
    case ENOENT:
      return absl::NotFoundError(msg);
    case EACCES:
    case EPERM:
    case EROFS:
      return absl::PermissionDeniedError(msg);
    case EIO:
    case EAGAIN:
    case EINTR:
      return absl::UnavailableError(msg);
    default:
      return absl::InternalError(msg);
  }
}

// --- Db --------------------------------------------------------------------------------------

absl::StatusOr<Db> Db::Open(const std::string& path, const std::vector<const char*>& migrations,
                            Options options) {
  Db db;
  db.options_ = std::move(options);
  const std::string& label = db.options_.label;
  int rc =
      sqlite3_open_v2(path.c_str(), &db.db_,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) return db.Error(rc, absl::StrCat("opening ", path));  // ~Db closes it
  sqlite3_extended_result_codes(db.db_, 1);
  sqlite3_busy_timeout(db.db_, kBusyTimeoutMs);

  // Refuse a newer schema before changing anything (journal mode included).
  FEDGE_ASSIGN_OR_RETURN(int64_t on_disk, QueryInt(db, "PRAGMA user_version"));
  if (on_disk > static_cast<int64_t>(migrations.size())) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s has schema version %d, this fedge-cloud understands up to %d; upgrade fedge-cloud",
        label, on_disk, migrations.size()));
  }
  {
    FEDGE_ASSIGN_OR_RETURN(Stmt stmt, Stmt::Prepare(db, "PRAGMA journal_mode = WAL"));
    FEDGE_ASSIGN_OR_RETURN(bool row, stmt.Step());
    std::string mode = row ? stmt.Text(0) : "";
    if (mode != "wal") {
      return absl::FailedPreconditionError(
          absl::StrCat(path, ": cannot switch to WAL journal mode (got \"", mode,
                       "\"); is data_dir on a filesystem without shared-memory support?"));
    }
  }
  // FULL: a committed row (a version number, an event id) is announced at once, so it must
  // survive a power loss; NORMAL in WAL mode could roll back the last commits.
  FEDGE_RETURN_IF_ERROR(Exec(db, "PRAGMA synchronous = FULL"));
  if (db.options_.foreign_keys) FEDGE_RETURN_IF_ERROR(Exec(db, "PRAGMA foreign_keys = ON"));
  FEDGE_RETURN_IF_ERROR(Migrate(db, migrations, label));
  return db;
}

Db::Db(Db&& other) noexcept
    : db_(std::exchange(other.db_, nullptr)), options_(std::move(other.options_)) {}

Db& Db::operator=(Db&& other) noexcept {
  if (this != &other) {
    Close();
    db_ = std::exchange(other.db_, nullptr);
    options_ = std::move(other.options_);
  }
  return *this;
}

void Db::Close() {
  if (db_ != nullptr) sqlite3_close_v2(db_);
  db_ = nullptr;
}

absl::Status Db::Error(int rc, absl::string_view what) const {
  std::string msg = absl::StrCat(options_.label, ": ", what, ": ",
                                 db_ != nullptr ? sqlite3_errmsg(db_) : sqlite3_errstr(rc));
  if (options_.append_system_error && db_ != nullptr) {
    int sys = sqlite3_system_errno(db_);
    if (sys != 0 && (rc & 0xff) != SQLITE_CONSTRAINT) {
      absl::StrAppend(&msg, " (", std::strerror(sys), ")");
    }
  }
  switch (rc & 0xff) {
    case SQLITE_FULL:
      return absl::ResourceExhaustedError(absl::StrCat(msg, " (disk full)"));
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
      return absl::UnavailableError(msg);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::DataLossError(msg);
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_AUTH:
      return absl::PermissionDeniedError(msg);
    default:
      return absl::InternalError(msg);
  }
}

// --- Stmt ------------------------------------------------------------------------------------

absl::StatusOr<Stmt> Stmt::Prepare(const Db& db, absl::string_view sql) {
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v2(db.get(), sql.data(), static_cast<int>(sql.size()), &stmt, nullptr);
  if (rc != SQLITE_OK) {
    sqlite3_finalize(stmt);
    return db.Error(rc, absl::StrCat("preparing \"", sql, "\""));
  }
  return Stmt(&db, stmt);
}

Stmt::Stmt(Stmt&& other) noexcept : db_(other.db_), stmt_(std::exchange(other.stmt_, nullptr)) {}

Stmt::~Stmt() { sqlite3_finalize(stmt_); }

Stmt& Stmt::Bind(int i, absl::string_view text) {
  sqlite3_bind_text64(stmt_, i, text.data(), text.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
  return *this;
}

Stmt& Stmt::Bind(int i, int64_t v) {
  sqlite3_bind_int64(stmt_, i, v);
  return *this;
}

Stmt& Stmt::BindBlob(int i, const std::string& bytes) {
  sqlite3_bind_blob64(stmt_, i, bytes.data(), bytes.size(), SQLITE_TRANSIENT);
  return *this;
}

Stmt& Stmt::BindDouble(int i, double v) {
  sqlite3_bind_double(stmt_, i, v);
  return *this;
}

Stmt& Stmt::BindNull(int i) {
  sqlite3_bind_null(stmt_, i);
  return *this;
}

absl::StatusOr<bool> Stmt::Step() {
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return db_->Error(rc, absl::StrCat("executing \"", sqlite3_sql(stmt_), "\""));
}

absl::Status Stmt::Run() {
  absl::StatusOr<bool> row = Step();
  return row.ok() ? absl::OkStatus() : row.status();
}

int64_t Stmt::Int(int col) const { return sqlite3_column_int64(stmt_, col); }

double Stmt::Double(int col) const { return sqlite3_column_double(stmt_, col); }

bool Stmt::IsNull(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }

std::string Stmt::Text(int col) const {
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
  int n = sqlite3_column_bytes(stmt_, col);
  return p == nullptr ? std::string() : std::string(p, static_cast<size_t>(n));
}

absl::string_view Stmt::Blob(int col) const {
  const void* p = sqlite3_column_blob(stmt_, col);
  int n = sqlite3_column_bytes(stmt_, col);
  return p == nullptr ? absl::string_view()
                      : absl::string_view(static_cast<const char*>(p), static_cast<size_t>(n));
}

// --- Free helpers ----------------------------------------------------------------------------

absl::Status Exec(const Db& db, const char* sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(db.get(), sql, nullptr, nullptr, &err);
  sqlite3_free(err);
  if (rc != SQLITE_OK) return db.Error(rc, absl::StrCat("executing \"", sql, "\""));
  return absl::OkStatus();
}

absl::StatusOr<int64_t> QueryInt(const Db& db, const char* sql) {
  FEDGE_ASSIGN_OR_RETURN(Stmt stmt, Stmt::Prepare(db, sql));
  FEDGE_ASSIGN_OR_RETURN(bool row, stmt.Step());
  if (!row) return absl::InternalError(absl::StrCat(db.label(), ": no result for ", sql));
  return stmt.Int(0);
}

absl::Status InTransaction(const Db& db, const std::function<absl::Status()>& fn) {
  FEDGE_RETURN_IF_ERROR(Exec(db, "BEGIN IMMEDIATE"));
  absl::Status status = fn();
  if (status.ok()) status = Exec(db, "COMMIT");
  if (!status.ok() && !sqlite3_get_autocommit(db.get())) {
    // A failed COMMIT can leave the transaction open; nothing useful to do if this fails too.
    sqlite3_exec(db.get(), "ROLLBACK", nullptr, nullptr, nullptr);
  }
  return status;
}

}  // namespace fedge::sqlite
