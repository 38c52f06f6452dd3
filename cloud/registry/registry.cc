#include "cloud/registry/registry.h"

#include <dirent.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/status/status.h"
#include "common/sync/mutex.h"
#include "common/tensor/sha256.h"

namespace fedge::cloud::registry {
namespace {

constexpr char kDbFile[] = "registry.db";
constexpr char kBlobTmpPrefix[] = "blob-";
constexpr int kBusyTimeoutMs = 10000;
// Temporary blob files older than this are debris from a crash and are removed at Open.
constexpr int64_t kStaleTmpSeconds = 3600;

// Forward migrations. Entry i takes the schema from user_version i to i + 1. Never edit an
// entry once released: append a new one.
const std::vector<const char*>& Migrations() {
  static const auto* const kMigrations = new std::vector<const char*>{
      // 1: the initial schema.
      R"sql(
CREATE TABLE models (
  name            TEXT PRIMARY KEY NOT NULL,
  description     TEXT NOT NULL DEFAULT '',
  created_unix_ms INTEGER NOT NULL
);
CREATE TABLE versions (
  model           TEXT NOT NULL REFERENCES models(name),
  number          INTEGER NOT NULL CHECK (number > 0),
  parent          INTEGER CHECK (parent IS NULL OR parent > 0),  -- NULL when it has none
  sha256          TEXT NOT NULL,
  size_bytes      INTEGER NOT NULL,
  schema_hash     TEXT NOT NULL DEFAULT '',
  job_id          TEXT NOT NULL DEFAULT '',
  round           INTEGER NOT NULL DEFAULT 0,
  creator         TEXT NOT NULL DEFAULT '',
  reason          TEXT NOT NULL DEFAULT '',
  created_unix_ms INTEGER NOT NULL,
  proto           BLOB NOT NULL,  -- the full fedge.v1.Version
  UNIQUE (model, number),
  FOREIGN KEY (model, parent) REFERENCES versions(model, number)
);
CREATE INDEX versions_by_sha256 ON versions(sha256);
CREATE INDEX versions_by_job ON versions(job_id);
CREATE TABLE jobs (
  id              TEXT PRIMARY KEY NOT NULL,
  state           INTEGER NOT NULL,
  created_unix_ms INTEGER NOT NULL,
  updated_unix_ms INTEGER NOT NULL,
  global_sha256   TEXT NOT NULL DEFAULT '',
  proto           BLOB NOT NULL  -- the full fedge.v1.Job
);
CREATE INDEX jobs_by_state ON jobs(state);
CREATE INDEX jobs_by_created ON jobs(created_unix_ms DESC, id);
CREATE TABLE desired_versions (
  node_id TEXT NOT NULL,
  model   TEXT NOT NULL,
  version INTEGER NOT NULL,
  sha256  TEXT NOT NULL,
  PRIMARY KEY (node_id, model)
);
)sql",
  };
  return *kMigrations;
}

// ---------------------------------------------------------------------------------------------
// Errors.

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

absl::Status SqliteStatus(sqlite3* db, int rc, absl::string_view what) {
  std::string msg = absl::StrCat("registry.db: ", what, ": ",
                                 db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  if (db != nullptr) {
    int sys = sqlite3_system_errno(db);
    if (sys != 0 && (rc & 0xff) != SQLITE_CONSTRAINT) {
      absl::StrAppend(&msg, " (", std::strerror(sys), ")");
    }
  }
  switch (rc & 0xff) {
    case SQLITE_FULL:
      return absl::ResourceExhaustedError(absl::StrCat(msg, " (disk full)"));
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return absl::UnavailableError(msg);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::DataLossError(msg);
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_AUTH:
      return absl::PermissionDeniedError(msg);
    case SQLITE_IOERR:
      return absl::UnavailableError(msg);
    default:
      return absl::InternalError(msg);
  }
}

// ---------------------------------------------------------------------------------------------
// SQLite helpers. Every use happens with Impl::mu held.

class Stmt {
 public:
  static absl::StatusOr<Stmt> Prepare(sqlite3* db, absl::string_view sql) {
    sqlite3_stmt* stmt = nullptr;
    int rc = sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr);
    if (rc != SQLITE_OK) {
      sqlite3_finalize(stmt);
      return SqliteStatus(db, rc, absl::StrCat("preparing \"", sql, "\""));
    }
    return Stmt(db, stmt);
  }
  Stmt(Stmt&& other) noexcept : db_(other.db_), stmt_(std::exchange(other.stmt_, nullptr)) {}
  Stmt& operator=(Stmt&&) = delete;
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  ~Stmt() { sqlite3_finalize(stmt_); }

  // Bind indexes start at 1. Binding errors surface from Step().
  Stmt& Bind(int i, absl::string_view text) {
    sqlite3_bind_text64(stmt_, i, text.data(), text.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
    return *this;
  }
  Stmt& Bind(int i, const std::string& text) { return Bind(i, absl::string_view(text)); }
  Stmt& Bind(int i, const char* text) { return Bind(i, absl::string_view(text)); }
  Stmt& Bind(int i, int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  Stmt& BindBlob(int i, const std::string& bytes) {
    sqlite3_bind_blob64(stmt_, i, bytes.data(), bytes.size(), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& BindNull(int i) {
    sqlite3_bind_null(stmt_, i);
    return *this;
  }

  // True when a row is available, false when done.
  absl::StatusOr<bool> Step() {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return SqliteStatus(db_, rc, absl::StrCat("executing \"", sqlite3_sql(stmt_), "\""));
  }
  // For statements that return no rows.
  absl::Status Run() {
    absl::StatusOr<bool> row = Step();
    if (!row.ok()) return row.status();
    return absl::OkStatus();
  }

  int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }
  bool IsNull(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
  std::string Text(int col) const {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
    int n = sqlite3_column_bytes(stmt_, col);
    return p == nullptr ? std::string() : std::string(p, static_cast<size_t>(n));
  }
  absl::string_view Blob(int col) const {
    const void* p = sqlite3_column_blob(stmt_, col);
    int n = sqlite3_column_bytes(stmt_, col);
    return p == nullptr ? absl::string_view()
                        : absl::string_view(static_cast<const char*>(p), static_cast<size_t>(n));
  }

 private:
  Stmt(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  sqlite3* db_;
  sqlite3_stmt* stmt_;
};

absl::Status Exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql, nullptr, nullptr, &err);
  sqlite3_free(err);
  if (rc != SQLITE_OK) return SqliteStatus(db, rc, absl::StrCat("executing \"", sql, "\""));
  return absl::OkStatus();
}

absl::StatusOr<int64_t> QueryInt(sqlite3* db, const char* sql) {
  FEDGE_ASSIGN_OR_RETURN(Stmt stmt, Stmt::Prepare(db, sql));
  FEDGE_ASSIGN_OR_RETURN(bool row, stmt.Step());
  if (!row) return absl::InternalError(absl::StrCat("registry.db: no result for ", sql));
  return stmt.Int(0);
}

// Runs `fn` inside BEGIN IMMEDIATE ... COMMIT; rolls back if `fn` or the commit fails.
absl::Status InTransaction(sqlite3* db, const std::function<absl::Status()>& fn) {
  FEDGE_RETURN_IF_ERROR(Exec(db, "BEGIN IMMEDIATE"));
  absl::Status status = fn();
  if (status.ok()) status = Exec(db, "COMMIT");
  if (!status.ok() && !sqlite3_get_autocommit(db)) {
    // A failed COMMIT can leave the transaction open; nothing useful to do if this fails too.
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  return status;
}

// ---------------------------------------------------------------------------------------------
// File helpers.

absl::Status MakeDir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) == 0) return absl::OkStatus();
  if (errno == EEXIST) {
    struct stat st;
    if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat(path, " exists and is not a directory"));
  }
  return ErrnoStatus(errno, absl::StrCat("creating directory ", path));
}

// mkdir -p.
absl::Status MakeDirs(const std::string& path) {
  if (path.empty()) return absl::OkStatus();
  for (size_t pos = path.find('/', 1); pos != std::string::npos; pos = path.find('/', pos + 1)) {
    FEDGE_RETURN_IF_ERROR(MakeDir(path.substr(0, pos)));
  }
  return MakeDir(path);
}

absl::Status FsyncPath(const std::string& path, bool directory) {
  int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("opening ", path, " to sync it"));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return ErrnoStatus(err, absl::StrCat("syncing ", path));
  return absl::OkStatus();
}

absl::Status WriteAll(int fd, absl::string_view bytes, const std::string& path) {
  const char* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, absl::StrCat("writing ", path));
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("opening ", path));
  std::string out;
  struct stat st;
  if (::fstat(fd, &st) == 0 && st.st_size > 0) out.reserve(static_cast<size_t>(st.st_size));
  char buf[1 << 16];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      return ErrnoStatus(err, absl::StrCat("reading ", path));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

std::string Dirname(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// `[A-Za-z0-9][A-Za-z0-9._-]{0,127}`.
absl::Status ValidateModelName(absl::string_view name) {
  auto alnum = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  bool ok = !name.empty() && name.size() <= 128 && alnum(name[0]);
  for (size_t i = 1; ok && i < name.size(); ++i) {
    char c = name[i];
    ok = alnum(c) || c == '.' || c == '_' || c == '-';
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid model name \"", absl::CHexEscape(name),
        "\": it must be 1 to 128 characters of letters, digits, '.', '_' or '-', starting with a "
        "letter or digit ([A-Za-z0-9][A-Za-z0-9._-]{0,127})"));
  }
  return absl::OkStatus();
}

absl::Status ValidateDigest(absl::string_view sha256, absl::string_view what) {
  if (!IsSha256Hex(sha256)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " \"", absl::CHexEscape(sha256.substr(0, 80)),
                     "\" is not a sha256 digest (64 lowercase hex characters)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::Version> ParseVersion(absl::string_view bytes, absl::string_view model,
                                         int64_t number) {
  v1::Version v;
  if (!v.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::DataLossError(
        absl::StrCat("registry.db: stored record of ", model, " version ", number, " is corrupt"));
  }
  return v;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

struct Registry::Impl {
  std::string data_dir;
  Clock* clock = nullptr;
  int schema_version = 0;

  mutable Mutex mu;
  sqlite3* db ABSL_GUARDED_BY(mu) = nullptr;

  ~Impl() {
    MutexLock lock(&mu);
    if (db != nullptr) sqlite3_close_v2(db);
  }

  std::string BlobDir() const { return data_dir + "/blobs"; }
  std::string TmpDir() const { return data_dir + "/tmp"; }
  int64_t NowMs() const { return absl::ToUnixMillis(clock->Now()); }

  // Moves a complete, fsynced file at `tmp` (same filesystem) to the blob path of `sha256`.
  absl::Status InstallBlob(const std::string& tmp, const std::string& sha256) const {
    std::string dir = absl::StrCat(BlobDir(), "/", sha256.substr(0, 2));
    bool created = ::mkdir(dir.c_str(), 0755) == 0;
    if (!created && errno != EEXIST) {
      return ErrnoStatus(errno, absl::StrCat("creating directory ", dir));
    }
    if (created) FEDGE_RETURN_IF_ERROR(FsyncPath(BlobDir(), /*directory=*/true));
    std::string dest = absl::StrCat(dir, "/", sha256);
    if (::rename(tmp.c_str(), dest.c_str()) != 0) {
      return ErrnoStatus(errno, absl::StrCat("renaming ", tmp, " to ", dest));
    }
    return FsyncPath(dir, /*directory=*/true);
  }

  // Writes `bytes` (or, when `copy_from` is set, that file's content) to a fresh temporary
  // file under tmp/, fsynced. Returns its path.
  absl::StatusOr<std::string> WriteTemp(absl::string_view bytes,
                                        const std::string* copy_from) const {
    std::string path = absl::StrCat(TmpDir(), "/", kBlobTmpPrefix, "XXXXXX");
    int fd = ::mkstemp(path.data());
    if (fd < 0) return ErrnoStatus(errno, absl::StrCat("creating a temporary file in ", TmpDir()));
    absl::Status status;
    if (copy_from == nullptr) {
      status = WriteAll(fd, bytes, path);
    } else {
      int in = ::open(copy_from->c_str(), O_RDONLY | O_CLOEXEC);
      if (in < 0) {
        status = ErrnoStatus(errno, absl::StrCat("opening ", *copy_from));
      } else {
        char buf[1 << 16];
        while (status.ok()) {
          ssize_t n = ::read(in, buf, sizeof(buf));
          if (n < 0 && errno == EINTR) continue;
          if (n < 0) {
            status = ErrnoStatus(errno, absl::StrCat("reading ", *copy_from));
            break;
          }
          if (n == 0) break;
          status = WriteAll(fd, absl::string_view(buf, static_cast<size_t>(n)), path);
        }
        ::close(in);
      }
    }
    if (status.ok() && ::fsync(fd) != 0)
      status = ErrnoStatus(errno, absl::StrCat("syncing ", path));
    if (::close(fd) != 0 && status.ok())
      status = ErrnoStatus(errno, absl::StrCat("closing ", path));
    if (!status.ok()) {
      ::unlink(path.c_str());
      return status;
    }
    return path;
  }

  // Removes temporary blob files left behind by a crash.
  void RemoveStaleTemps() const {
    DIR* dir = ::opendir(TmpDir().c_str());
    if (dir == nullptr) return;
    int64_t now = static_cast<int64_t>(std::time(nullptr));
    while (struct dirent* e = ::readdir(dir)) {
      if (!absl::StartsWith(e->d_name, kBlobTmpPrefix)) continue;
      std::string path = absl::StrCat(TmpDir(), "/", e->d_name);
      struct stat st;
      if (::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
          now - static_cast<int64_t>(st.st_mtime) > kStaleTmpSeconds) {
        ::unlink(path.c_str());
      }
    }
    ::closedir(dir);
  }

  absl::Status Migrate() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    const auto& migrations = Migrations();
    while (true) {
      bool done = false;
      absl::Status status = InTransaction(db, [&]() -> absl::Status {
        mu.AssertHeld();
        // Re-read under the write lock: another process may have migrated meanwhile.
        FEDGE_ASSIGN_OR_RETURN(int64_t current, QueryInt(db, "PRAGMA user_version"));
        if (current > static_cast<int64_t>(migrations.size())) {
          return absl::FailedPreconditionError(absl::StrFormat(
              "registry.db has schema version %d, this fedge-cloud understands up to %d; "
              "upgrade fedge-cloud",
              current, migrations.size()));
        }
        if (current == static_cast<int64_t>(migrations.size())) {
          done = true;
          return absl::OkStatus();
        }
        absl::Status s = Exec(db, migrations[static_cast<size_t>(current)]);
        if (!s.ok()) {
          return Annotate(s, absl::StrCat("migrating registry.db from schema version ", current,
                                          " to ", current + 1));
        }
        return Exec(db, absl::StrCat("PRAGMA user_version = ", current + 1).c_str());
      });
      FEDGE_RETURN_IF_ERROR(status);
      if (done) return absl::OkStatus();
    }
  }

  absl::StatusOr<bool> ModelExists(const std::string& model) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    FEDGE_ASSIGN_OR_RETURN(Stmt stmt, Stmt::Prepare(db, "SELECT 1 FROM models WHERE name = ?"));
    stmt.Bind(1, model);
    return stmt.Step();
  }

  absl::StatusOr<v1::Version> GetVersionLocked(const std::string& model, int64_t number) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (number < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("version ", number, " of model \"", model, "\" is negative"));
    }
    FEDGE_ASSIGN_OR_RETURN(
        Stmt stmt,
        Stmt::Prepare(db, number == 0 ? "SELECT number, proto FROM versions WHERE model = ? "
                                        "ORDER BY number DESC LIMIT 1"
                                      : "SELECT number, proto FROM versions WHERE model = ? "
                                        "AND number = ?"));
    stmt.Bind(1, model);
    if (number != 0) stmt.Bind(2, number);
    FEDGE_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (row) return ParseVersion(stmt.Blob(1), model, stmt.Int(0));
    FEDGE_ASSIGN_OR_RETURN(bool model_exists, ModelExists(model));
    if (!model_exists) {
      return absl::NotFoundError(absl::StrCat("model \"", model, "\" not found"));
    }
    if (number == 0) {
      return absl::NotFoundError(absl::StrCat("model \"", model, "\" has no versions"));
    }
    return absl::NotFoundError(absl::StrCat("model \"", model, "\" has no version ", number));
  }

  // Validation that needs no database; done before taking the write lock.
  absl::Status CheckVersion(v1::Version& version, const Registry& registry) const {
    FEDGE_RETURN_IF_ERROR(ValidateModelName(version.model()));
    FEDGE_RETURN_IF_ERROR(ValidateDigest(version.sha256(), "version sha256"));
    if (version.parent_version() < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("parent_version ", version.parent_version(), " is negative"));
    }
    if (version.size_bytes() < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("size_bytes ", version.size_bytes(), " is negative"));
    }
    std::string path = registry.BlobPath(version.sha256());
    struct stat st;
    if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
      return absl::FailedPreconditionError(
          absl::StrCat("blob ", version.sha256(), " of model \"", version.model(),
                       "\" is not in the store; upload it before registering the version"));
    }
    if (version.size_bytes() == 0) {
      version.set_size_bytes(static_cast<int64_t>(st.st_size));
    } else if (version.size_bytes() != static_cast<int64_t>(st.st_size)) {
      return absl::InvalidArgumentError(
          absl::StrCat("size_bytes ", version.size_bytes(), " does not match blob ",
                       version.sha256(), " of ", static_cast<int64_t>(st.st_size), " bytes"));
    }
    return absl::OkStatus();
  }

  // Inserts a checked version; must run inside a transaction.
  absl::Status InsertVersionLocked(v1::Version& version, const std::string& description)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    const std::string& model = version.model();
    int64_t now = NowMs();
    if (version.parent_version() > 0) {
      FEDGE_ASSIGN_OR_RETURN(Stmt stmt, Stmt::Prepare(db,
                                                      "SELECT 1 FROM versions "
                                                      "WHERE model = ? AND number = ?"));
      stmt.Bind(1, model).Bind(2, version.parent_version());
      FEDGE_ASSIGN_OR_RETURN(bool found, stmt.Step());
      if (!found) {
        return absl::NotFoundError(absl::StrCat("parent version ", version.parent_version(),
                                                " of model \"", model, "\" not found"));
      }
    }
    {
      FEDGE_ASSIGN_OR_RETURN(
          Stmt stmt, Stmt::Prepare(db,
                                   "INSERT INTO models (name, description, created_unix_ms) "
                                   "VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING"));
      stmt.Bind(1, model).Bind(2, description).Bind(3, now);
      FEDGE_RETURN_IF_ERROR(stmt.Run());
    }
    int64_t number;
    {
      FEDGE_ASSIGN_OR_RETURN(
          Stmt stmt,
          Stmt::Prepare(db, "SELECT COALESCE(MAX(number), 0) + 1 FROM versions WHERE model = ?"));
      stmt.Bind(1, model);
      FEDGE_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) return absl::InternalError("registry.db: no result for the next version number");
      number = stmt.Int(0);
    }
    version.set_version(number);
    if (version.created_unix_ms() == 0) version.set_created_unix_ms(now);
    std::string proto;
    if (!version.SerializeToString(&proto)) {
      return absl::InternalError(absl::StrCat("serializing ", model, " version ", number));
    }
    FEDGE_ASSIGN_OR_RETURN(
        Stmt stmt,
        Stmt::Prepare(db,
                      "INSERT INTO versions (model, number, parent, sha256, size_bytes, "
                      "schema_hash, job_id, round, creator, reason, created_unix_ms, proto) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
    stmt.Bind(1, model).Bind(2, number);
    if (version.parent_version() > 0) {
      stmt.Bind(3, version.parent_version());
    } else {
      stmt.BindNull(3);
    }
    stmt.Bind(4, version.sha256())
        .Bind(5, version.size_bytes())
        .Bind(6, version.schema_hash())
        .Bind(7, version.job_id())
        .Bind(8, static_cast<int64_t>(version.round()))
        .Bind(9, version.creator())
        .Bind(10, version.reason())
        .Bind(11, version.created_unix_ms())
        .BindBlob(12, proto);
    return stmt.Run();
  }

  absl::Status PutJobLocked(const v1::Job& job, const std::string& global_sha256)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::string proto;
    if (!job.SerializeToString(&proto)) {
      return absl::InternalError(absl::StrCat("serializing job ", job.id()));
    }
    FEDGE_ASSIGN_OR_RETURN(
        Stmt stmt, Stmt::Prepare(db,
                                 "INSERT INTO jobs (id, state, created_unix_ms, updated_unix_ms, "
                                 "global_sha256, proto) VALUES (?, ?, ?, ?, ?, ?) "
                                 "ON CONFLICT (id) DO UPDATE SET state = excluded.state, "
                                 "created_unix_ms = excluded.created_unix_ms, "
                                 "updated_unix_ms = excluded.updated_unix_ms, "
                                 "global_sha256 = excluded.global_sha256, proto = excluded.proto"));
    stmt.Bind(1, job.id())
        .Bind(2, static_cast<int64_t>(job.state()))
        .Bind(3, job.created_unix_ms())
        .Bind(4, job.updated_unix_ms())
        .Bind(5, global_sha256)
        .BindBlob(6, proto);
    return stmt.Run();
  }

  absl::StatusOr<std::vector<JobRecord>> QueryJobs(const char* sql) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    FEDGE_ASSIGN_OR_RETURN(Stmt stmt, Stmt::Prepare(db, sql));
    std::vector<JobRecord> out;
    while (true) {
      FEDGE_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      JobRecord rec;
      absl::string_view bytes = stmt.Blob(1);
      if (!rec.job.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
        return absl::DataLossError(
            absl::StrCat("registry.db: stored record of job ", stmt.Text(0), " is corrupt"));
      }
      rec.global_sha256 = stmt.Text(2);
      out.push_back(std::move(rec));
    }
    return out;
  }
};

// ---------------------------------------------------------------------------------------------

Registry::Registry(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Registry::~Registry() = default;

int Registry::CurrentSchemaVersion() { return static_cast<int>(Migrations().size()); }

int Registry::SchemaVersion() const { return impl_->schema_version; }

absl::StatusOr<std::unique_ptr<Registry>> Registry::Open(Options options) {
  if (options.data_dir.empty()) {
    return absl::InvalidArgumentError("registry: data_dir must be set");
  }
  while (options.data_dir.size() > 1 && options.data_dir.back() == '/') {
    options.data_dir.pop_back();
  }
  auto impl = std::make_unique<Impl>();
  impl->data_dir = options.data_dir;
  impl->clock = options.clock != nullptr ? options.clock : Clock::Real();

  FEDGE_RETURN_IF_ERROR(MakeDirs(impl->data_dir));
  FEDGE_RETURN_IF_ERROR(MakeDir(impl->BlobDir()));
  FEDGE_RETURN_IF_ERROR(MakeDir(impl->TmpDir()));
  FEDGE_RETURN_IF_ERROR(MakeDir(impl->data_dir + "/staging"));
  impl->RemoveStaleTemps();

  MutexLock lock(&impl->mu);
  std::string db_path = absl::StrCat(impl->data_dir, "/", kDbFile);
  int rc =
      sqlite3_open_v2(db_path.c_str(), &impl->db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    absl::Status status = SqliteStatus(impl->db, rc, absl::StrCat("opening ", db_path));
    sqlite3_close_v2(impl->db);
    impl->db = nullptr;
    return status;
  }
  sqlite3* db = impl->db;
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, kBusyTimeoutMs);

  // Refuse a newer schema before changing anything (journal mode included).
  FEDGE_ASSIGN_OR_RETURN(int64_t on_disk, QueryInt(db, "PRAGMA user_version"));
  if (on_disk > CurrentSchemaVersion()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s has schema version %d, this fedge-cloud understands up to %d; upgrade fedge-cloud",
        kDbFile, on_disk, CurrentSchemaVersion()));
  }

  {
    FEDGE_ASSIGN_OR_RETURN(Stmt stmt, Stmt::Prepare(db, "PRAGMA journal_mode = WAL"));
    FEDGE_ASSIGN_OR_RETURN(bool row, stmt.Step());
    std::string mode = row ? stmt.Text(0) : "";
    if (mode != "wal") {
      return absl::FailedPreconditionError(
          absl::StrCat(db_path, ": cannot switch to WAL journal mode (got \"", mode,
                       "\"); is data_dir on a filesystem without shared-memory support?"));
    }
  }
  // FULL: versions and jobs are written rarely (per round, per registration), and a committed
  // version number is announced to edges at once, so it must survive a power loss; NORMAL in
  // WAL mode could roll back the last commits and reuse a number for different content.
  FEDGE_RETURN_IF_ERROR(Exec(db, "PRAGMA synchronous = FULL"));
  FEDGE_RETURN_IF_ERROR(Exec(db, "PRAGMA foreign_keys = ON"));
  FEDGE_RETURN_IF_ERROR(impl->Migrate());
  FEDGE_ASSIGN_OR_RETURN(int64_t migrated, QueryInt(db, "PRAGMA user_version"));
  impl->schema_version = static_cast<int>(migrated);
  return std::unique_ptr<Registry>(new Registry(std::move(impl)));
}

// --- Blobs -----------------------------------------------------------------------------------

std::string Registry::BlobPath(const std::string& sha256) const {
  // Never let a malformed digest (possibly from the network) address a file outside the store.
  if (!IsSha256Hex(sha256)) return absl::StrCat(impl_->BlobDir(), "/invalid-digest");
  return absl::StrCat(impl_->BlobDir(), "/", sha256.substr(0, 2), "/", sha256);
}

std::string Registry::StagingDir() const { return impl_->data_dir + "/staging"; }

bool Registry::HasBlob(const std::string& sha256) const {
  if (!IsSha256Hex(sha256)) return false;
  struct stat st;
  return ::stat(BlobPath(sha256).c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

absl::StatusOr<std::string> Registry::PutBlob(absl::string_view bytes) {
  std::string sha = Sha256Hex(bytes);
  struct stat st;
  if (::stat(BlobPath(sha).c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
      static_cast<uint64_t>(st.st_size) == bytes.size()) {
    return sha;  // Already stored.
  }
  FEDGE_ASSIGN_OR_RETURN(std::string tmp, impl_->WriteTemp(bytes, nullptr));
  absl::Status status = impl_->InstallBlob(tmp, sha);
  if (!status.ok()) {
    ::unlink(tmp.c_str());
    return Annotate(status, absl::StrCat("storing blob ", sha));
  }
  return sha;
}

absl::Status Registry::AdoptBlobFile(const std::string& path, const std::string& sha256) {
  FEDGE_RETURN_IF_ERROR(ValidateDigest(sha256, "blob digest"));
  FEDGE_ASSIGN_OR_RETURN(std::string actual, Sha256File(path));
  if (actual != sha256) {
    return absl::DataLossError(
        absl::StrCat("file ", path, " hashes to ", actual, ", not the expected ", sha256));
  }
  if (HasBlob(sha256)) {
    // The store already holds this content; the file has served its purpose.
    ::unlink(path.c_str());
    return absl::OkStatus();
  }
  struct stat src, store;
  if (::stat(path.c_str(), &src) != 0) return ErrnoStatus(errno, absl::StrCat("adopting ", path));
  if (::stat(impl_->TmpDir().c_str(), &store) != 0) {
    return ErrnoStatus(errno, absl::StrCat("adopting ", path));
  }
  if (src.st_dev == store.st_dev) {
    FEDGE_RETURN_IF_ERROR(FsyncPath(path, /*directory=*/false));
    absl::Status status = impl_->InstallBlob(path, sha256);
    if (!status.ok()) return Annotate(status, absl::StrCat("adopting ", path));
    // Best effort: the blob is durable already; this only makes the removal durable.
    (void)FsyncPath(Dirname(path), /*directory=*/true);
    return absl::OkStatus();
  }
  // A different filesystem: copy through tmp/, then drop the original.
  FEDGE_ASSIGN_OR_RETURN(std::string tmp, impl_->WriteTemp("", &path));
  FEDGE_ASSIGN_OR_RETURN(std::string copied, Sha256File(tmp));
  if (copied != sha256) {
    ::unlink(tmp.c_str());
    return absl::DataLossError(
        absl::StrCat("copy of ", path, " hashes to ", copied, ", not the expected ", sha256));
  }
  absl::Status status = impl_->InstallBlob(tmp, sha256);
  if (!status.ok()) {
    ::unlink(tmp.c_str());
    return Annotate(status, absl::StrCat("adopting ", path));
  }
  ::unlink(path.c_str());
  return absl::OkStatus();
}

absl::StatusOr<std::string> Registry::ReadBlob(const std::string& sha256) const {
  FEDGE_RETURN_IF_ERROR(ValidateDigest(sha256, "blob digest"));
  std::string path = BlobPath(sha256);
  absl::StatusOr<std::string> bytes = ReadFile(path);
  if (!bytes.ok()) {
    if (bytes.status().code() == absl::StatusCode::kNotFound) {
      return absl::NotFoundError(absl::StrCat("blob ", sha256, " not found"));
    }
    return bytes.status();
  }
  std::string actual = Sha256Hex(*bytes);
  if (actual != sha256) {
    return absl::DataLossError(absl::StrCat("blob ", sha256, " is corrupted on disk (", path,
                                            " now hashes to ", actual, ")"));
  }
  return bytes;
}

// --- Models and versions ---------------------------------------------------------------------

absl::StatusOr<v1::Version> Registry::AddVersion(v1::Version version,
                                                 const std::string& model_description) {
  FEDGE_RETURN_IF_ERROR(impl_->CheckVersion(version, *this));
  MutexLock lock(&impl_->mu);
  FEDGE_RETURN_IF_ERROR(InTransaction(impl_->db, [&]() -> absl::Status {
    impl_->mu.AssertHeld();
    return impl_->InsertVersionLocked(version, model_description);
  }));
  return version;
}

absl::StatusOr<v1::Version> Registry::GetVersion(const std::string& model, int64_t version) const {
  MutexLock lock(&impl_->mu);
  return impl_->GetVersionLocked(model, version);
}

absl::StatusOr<std::vector<v1::Model>> Registry::ListModels() const {
  MutexLock lock(&impl_->mu);
  FEDGE_ASSIGN_OR_RETURN(Stmt stmt,
                         Stmt::Prepare(impl_->db,
                                       "SELECT m.name, m.description, m.created_unix_ms, "
                                       "COALESCE(MAX(v.number), 0), COUNT(v.number) "
                                       "FROM models m LEFT JOIN versions v ON v.model = m.name "
                                       "GROUP BY m.name ORDER BY m.name"));
  std::vector<v1::Model> out;
  while (true) {
    FEDGE_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    v1::Model m;
    m.set_name(stmt.Text(0));
    m.set_description(stmt.Text(1));
    m.set_created_unix_ms(stmt.Int(2));
    m.set_latest_version(stmt.Int(3));
    m.set_num_versions(stmt.Int(4));
    out.push_back(std::move(m));
  }
  return out;
}

absl::StatusOr<std::vector<v1::Version>> Registry::ListVersions(const std::string& model) const {
  MutexLock lock(&impl_->mu);
  FEDGE_ASSIGN_OR_RETURN(bool exists, impl_->ModelExists(model));
  if (!exists) return absl::NotFoundError(absl::StrCat("model \"", model, "\" not found"));
  FEDGE_ASSIGN_OR_RETURN(Stmt stmt,
                         Stmt::Prepare(impl_->db,
                                       "SELECT number, proto FROM versions WHERE model = ? "
                                       "ORDER BY number"));
  stmt.Bind(1, model);
  std::vector<v1::Version> out;
  while (true) {
    FEDGE_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    FEDGE_ASSIGN_OR_RETURN(v1::Version v, ParseVersion(stmt.Blob(1), model, stmt.Int(0)));
    out.push_back(std::move(v));
  }
  return out;
}

// --- Jobs ------------------------------------------------------------------------------------

absl::Status Registry::PutJob(const v1::Job& job, const std::string& global_sha256) {
  if (job.id().empty()) return absl::InvalidArgumentError("job id must be set");
  if (!global_sha256.empty()) {
    FEDGE_RETURN_IF_ERROR(ValidateDigest(global_sha256, "global model sha256"));
  }
  MutexLock lock(&impl_->mu);
  return InTransaction(impl_->db, [&]() -> absl::Status {
    impl_->mu.AssertHeld();
    return impl_->PutJobLocked(job, global_sha256);
  });
}

absl::StatusOr<v1::Version> Registry::FinishJob(v1::Job job, v1::Version version) {
  if (job.id().empty()) return absl::InvalidArgumentError("job id must be set");
  if (version.job_id().empty()) version.set_job_id(job.id());
  FEDGE_RETURN_IF_ERROR(impl_->CheckVersion(version, *this));
  MutexLock lock(&impl_->mu);
  FEDGE_RETURN_IF_ERROR(InTransaction(impl_->db, [&]() -> absl::Status {
    impl_->mu.AssertHeld();
    FEDGE_RETURN_IF_ERROR(impl_->InsertVersionLocked(version, /*description=*/""));
    job.set_state(v1::JOB_SUCCEEDED);
    job.set_result_version(version.version());
    job.set_updated_unix_ms(impl_->NowMs());
    // The result version's blob is the job's final global model.
    return impl_->PutJobLocked(job, version.sha256());
  }));
  return version;
}

absl::StatusOr<Registry::JobRecord> Registry::GetJob(const std::string& id) const {
  MutexLock lock(&impl_->mu);
  FEDGE_ASSIGN_OR_RETURN(
      Stmt stmt,
      Stmt::Prepare(impl_->db, "SELECT id, proto, global_sha256 FROM jobs WHERE id = ?"));
  stmt.Bind(1, id);
  FEDGE_ASSIGN_OR_RETURN(bool row, stmt.Step());
  if (!row) return absl::NotFoundError(absl::StrCat("job \"", id, "\" not found"));
  JobRecord rec;
  absl::string_view bytes = stmt.Blob(1);
  if (!rec.job.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::DataLossError(
        absl::StrCat("registry.db: stored record of job ", id, " is corrupt"));
  }
  rec.global_sha256 = stmt.Text(2);
  return rec;
}

absl::StatusOr<std::vector<Registry::JobRecord>> Registry::ListJobs() const {
  MutexLock lock(&impl_->mu);
  return impl_->QueryJobs(
      "SELECT id, proto, global_sha256 FROM jobs ORDER BY created_unix_ms DESC, id");
}

absl::StatusOr<std::vector<Registry::JobRecord>> Registry::UnfinishedJobs() const {
  MutexLock lock(&impl_->mu);
  return impl_->QueryJobs(absl::StrFormat("SELECT id, proto, global_sha256 FROM jobs "
                                          "WHERE state IN (%d, %d) ORDER BY created_unix_ms, id",
                                          v1::JOB_PENDING, v1::JOB_RUNNING)
                              .c_str());
}

// --- Deployment --------------------------------------------------------------------------------

absl::Status Registry::SetDesiredVersion(const std::string& node_id,
                                         const v1::VersionRef& version) {
  if (node_id.empty()) return absl::InvalidArgumentError("node_id must be set");
  FEDGE_RETURN_IF_ERROR(ValidateModelName(version.model()));
  if (version.version() <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("desired version of model \"", version.model(),
                                                   "\" must be a version number >= 1, got ",
                                                   version.version()));
  }
  MutexLock lock(&impl_->mu);
  return InTransaction(impl_->db, [&]() -> absl::Status {
    impl_->mu.AssertHeld();
    FEDGE_ASSIGN_OR_RETURN(v1::Version v,
                           impl_->GetVersionLocked(version.model(), version.version()));
    if (!version.sha256().empty() && version.sha256() != v.sha256()) {
      return absl::InvalidArgumentError(absl::StrCat("model \"", version.model(), "\" version ",
                                                     version.version(), " has sha256 ", v.sha256(),
                                                     ", not ", version.sha256()));
    }
    FEDGE_ASSIGN_OR_RETURN(
        Stmt stmt, Stmt::Prepare(impl_->db,
                                 "INSERT INTO desired_versions (node_id, model, version, sha256) "
                                 "VALUES (?, ?, ?, ?) ON CONFLICT (node_id, model) DO UPDATE SET "
                                 "version = excluded.version, sha256 = excluded.sha256"));
    stmt.Bind(1, node_id).Bind(2, version.model()).Bind(3, v.version()).Bind(4, v.sha256());
    return stmt.Run();
  });
}

absl::StatusOr<std::vector<v1::VersionRef>> Registry::DesiredVersions(
    const std::string& node_id) const {
  MutexLock lock(&impl_->mu);
  FEDGE_ASSIGN_OR_RETURN(Stmt stmt,
                         Stmt::Prepare(impl_->db,
                                       "SELECT model, version, sha256 FROM desired_versions "
                                       "WHERE node_id = ? ORDER BY model"));
  stmt.Bind(1, node_id);
  std::vector<v1::VersionRef> out;
  while (true) {
    FEDGE_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    v1::VersionRef ref;
    ref.set_model(stmt.Text(0));
    ref.set_version(stmt.Int(1));
    ref.set_sha256(stmt.Text(2));
    out.push_back(std::move(ref));
  }
  return out;
}

}  // namespace fedge::cloud::registry
