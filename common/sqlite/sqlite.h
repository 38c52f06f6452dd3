#ifndef FEDGE_COMMON_SQLITE_SQLITE_H_
#define FEDGE_COMMON_SQLITE_SQLITE_H_

// SQLite plumbing shared by the cloud's stores (registry.db, events.db).
//
// - Db owns one connection. Db::Open opens (creating) the file, refuses a schema newer than
//   the caller's migration list before changing anything, switches to WAL with
//   synchronous=FULL (and foreign keys if asked), then runs each missing forward migration in
//   its own BEGIN IMMEDIATE transaction, so several processes may open the same file at once.
// - Stmt is an RAII prepared statement; Exec, QueryInt and InTransaction cover the rest.
// - Every SQLite failure becomes an absl::Status whose message starts with the Db's label
//   ("registry.db: ...") and whose code follows the SQLite result code (BUSY/LOCKED/IOERR ->
//   UNAVAILABLE, FULL -> RESOURCE_EXHAUSTED, CORRUPT/NOTADB -> DATA_LOSS, READONLY/PERM/AUTH ->
//   PERMISSION_DENIED, anything else -> INTERNAL).
//
// Thread safety: none. The connection is opened with SQLITE_OPEN_NOMUTEX; a Db and every Stmt
// prepared on it must be used by one thread at a time, so callers hold their own mutex around
// all use. A Stmt refers to its Db: finalize (destroy) it before the Db is moved, closed or
// destroyed.

#include <sqlite3.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fedge::sqlite {

// An errno value as a status: ENOSPC/EDQUOT -> RESOURCE_EXHAUSTED ("(disk full)" appended),
// ENOENT -> NOT_FOUND, EACCES/EPERM/EROFS -> PERMISSION_DENIED, EIO/EAGAIN/EINTR ->
// UNAVAILABLE, anything else -> INTERNAL. The message is "<what>: <strerror>".
absl::Status ErrnoStatus(int err, absl::string_view what);

class Db {
 public:
  struct Options {
    // Names the database in error messages, e.g. "registry.db".
    std::string label;
    // PRAGMA foreign_keys = ON after opening.
    bool foreign_keys = false;
    // Append the OS error behind a failure ("(No space left on device)") to status messages,
    // except for constraint violations.
    bool append_system_error = false;
  };

  // Opens `path` read-write (creating it), with extended result codes and a 10 s busy
  // timeout, and brings it to schema version migrations.size(). Entry i of `migrations` takes
  // the schema from PRAGMA user_version i to i + 1. A file whose user_version exceeds
  // migrations.size() is refused with FAILED_PRECONDITION and left untouched; a filesystem
  // where WAL cannot be used is refused with FAILED_PRECONDITION.
  static absl::StatusOr<Db> Open(const std::string& path,
                                 const std::vector<const char*>& migrations, Options options);

  Db() = default;  // closed
  Db(Db&& other) noexcept;
  Db& operator=(Db&& other) noexcept;
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;
  ~Db() { Close(); }

  bool is_open() const { return db_ != nullptr; }
  // The raw connection, for calls this header does not wrap.
  sqlite3* get() const { return db_; }
  const std::string& label() const { return options_.label; }
  void Close();

  // The status for SQLite result code `rc` from an operation described by `what`.
  absl::Status Error(int rc, absl::string_view what) const;

 private:
  sqlite3* db_ = nullptr;
  Options options_;
};

class Stmt {
 public:
  static absl::StatusOr<Stmt> Prepare(const Db& db, absl::string_view sql);
  Stmt(Stmt&& other) noexcept;
  Stmt& operator=(Stmt&&) = delete;
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  ~Stmt();

  // Bind indexes start at 1. Binding errors surface from Step().
  Stmt& Bind(int i, absl::string_view text);
  Stmt& Bind(int i, const std::string& text) { return Bind(i, absl::string_view(text)); }
  Stmt& Bind(int i, const char* text) { return Bind(i, absl::string_view(text)); }
  Stmt& Bind(int i, int64_t v);
  Stmt& BindBlob(int i, const std::string& bytes);
  Stmt& BindDouble(int i, double v);
  Stmt& BindNull(int i);

  // True when a row is available, false when done.
  absl::StatusOr<bool> Step();
  // For statements that return no rows.
  absl::Status Run();

  int64_t Int(int col) const;
  double Double(int col) const;
  bool IsNull(int col) const;
  std::string Text(int col) const;
  // Valid until the next Step() or the statement's destruction.
  absl::string_view Blob(int col) const;

 private:
  Stmt(const Db* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  const Db* db_;
  sqlite3_stmt* stmt_;
};

// Runs `sql` (one or more statements, no parameters).
absl::Status Exec(const Db& db, const char* sql);

// The first column of the first row of `sql`; INTERNAL when it returns no row.
absl::StatusOr<int64_t> QueryInt(const Db& db, const char* sql);

// Runs `fn` inside BEGIN IMMEDIATE ... COMMIT; rolls back if `fn` or the commit fails.
absl::Status InTransaction(const Db& db, const std::function<absl::Status()>& fn);

}  // namespace fedge::sqlite

#endif  // FEDGE_COMMON_SQLITE_SQLITE_H_
