#include "cloud/registry/registry.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/metrics/metrics.h"
#include "common/sqlite/sqlite.h"
#include "common/status/quote.h"
#include "common/status/status.h"
#include "common/sync/mutex.h"
#include "common/tensor/sha256.h"

namespace fedge::cloud::registry {
namespace {

using sqlite::ErrnoStatus;
using sqlite::InTransaction;
using sqlite::QueryInt;
using sqlite::Stmt;

constexpr char kDbFile[] = "registry.db";
constexpr char kBlobTmpPrefix[] = "blob-";
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
      // 2: governance. Tags and the latest validation live in the version proto; aliases and
      // the archived flag are columns/tables because reads compute them and retention queries
      // them. The audit log is append-only, enforced by triggers.
      R"sql(
ALTER TABLE models ADD COLUMN gate_policy BLOB;  -- fedge.v1.GatePolicy; NULL when never set
ALTER TABLE models ADD COLUMN keep_versions INTEGER NOT NULL DEFAULT 0
  CHECK (keep_versions >= 0);
ALTER TABLE versions ADD COLUMN archived INTEGER NOT NULL DEFAULT 0 CHECK (archived IN (0, 1));
CREATE INDEX versions_by_model_archived ON versions(model, archived, number);
CREATE TABLE aliases (
  model           TEXT NOT NULL REFERENCES models(name),
  alias           TEXT NOT NULL,
  version         INTEGER NOT NULL,
  updated_unix_ms INTEGER NOT NULL,
  PRIMARY KEY (model, alias),
  FOREIGN KEY (model, version) REFERENCES versions(model, number)
);
CREATE INDEX aliases_by_version ON aliases(model, version);
CREATE TABLE audit (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,
  time_unix_ms  INTEGER NOT NULL,
  principal     TEXT NOT NULL,
  action        TEXT NOT NULL,
  model         TEXT NOT NULL DEFAULT '',
  version       INTEGER NOT NULL DEFAULT 0,
  reason        TEXT NOT NULL DEFAULT '',
  detail        TEXT NOT NULL DEFAULT '',
  job_id        TEXT NOT NULL DEFAULT '',
  deployment_id TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_by_model ON audit(model, id);
CREATE INDEX audit_by_deployment ON audit(deployment_id, id);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE deployments (
  id              TEXT PRIMARY KEY NOT NULL,
  state           INTEGER NOT NULL,
  created_unix_ms INTEGER NOT NULL,
  updated_unix_ms INTEGER NOT NULL,
  proto           BLOB NOT NULL  -- the full fedge.v1.Deployment
);
CREATE INDEX deployments_by_created ON deployments(created_unix_ms DESC, id);
)sql",
      // 3: retraining policies.
      R"sql(
CREATE TABLE retrain_policies (
  model TEXT PRIMARY KEY NOT NULL REFERENCES models(name),
  proto BLOB NOT NULL  -- the full fedge.v1.RetrainPolicy
);
)sql",
  };
  return *kMigrations;
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

// `[A-Za-z0-9][A-Za-z0-9._-]{0,127}`. `what` is "model" or "alias".
absl::Status ValidateName(absl::string_view name, absl::string_view what) {
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
        "invalid ", what, " name ", Quote(name),
        ": it must be 1 to 128 characters of letters, digits, '.', '_' or '-', starting with a "
        "letter or digit ([A-Za-z0-9][A-Za-z0-9._-]{0,127})"));
  }
  return absl::OkStatus();
}

absl::Status ValidateModelName(absl::string_view name) { return ValidateName(name, "model"); }

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
  // Tags stored before their bounds existed are cut to them on the way out.
  auto* tags = v.mutable_tags();
  bool over = tags->size() > static_cast<int>(Registry::kMaxTags);
  for (const auto& [k, val] : *tags) {
    over = over || k.size() > Registry::kMaxTagKey || val.size() > Registry::kMaxTagValue;
  }
  if (over) {
    std::map<std::string, std::string> kept;
    for (const auto& [k, val] : *tags) {
      if (kept.size() >= Registry::kMaxTags) break;
      kept[k.substr(0, Registry::kMaxTagKey)] = val.substr(0, Registry::kMaxTagValue);
    }
    tags->clear();
    for (auto& [k, val] : kept) (*tags)[k] = std::move(val);
  }
  return v;
}

absl::Status CheckTag(const std::string& key, const std::string& value) {
  if (key.size() > Registry::kMaxTagKey || value.size() > Registry::kMaxTagValue) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tag ", Quote(key), " is too long: keys hold at most ", Registry::kMaxTagKey,
        " bytes and values ", Registry::kMaxTagValue, " (this one: ", key.size(), " and ",
        value.size(), ")"));
  }
  return absl::OkStatus();
}

absl::Status CheckDescription(const std::string& description) {
  if (description.size() > Registry::kMaxDescription) {
    return absl::InvalidArgumentError(absl::StrCat("the description is ", description.size(),
                                                   " bytes; at most ",
                                                   Registry::kMaxDescription));
  }
  return absl::OkStatus();
}

absl::Status CheckReason(const std::string& reason) {
  if (reason.size() > Registry::kMaxReason) {
    return absl::InvalidArgumentError(absl::StrCat("the reason is ", reason.size(),
                                                   " bytes; at most ", Registry::kMaxReason));
  }
  return absl::OkStatus();
}

std::string PrincipalOrAnonymous(const std::string& principal) {
  return principal.empty() ? "anonymous" : principal;
}

// Thresholds are probabilities (accuracy, regression in accuracy) or a non-negative loss.
// Written so that NaN fails every check.
absl::Status CheckGatePolicy(const v1::GatePolicy& policy) {
  auto unit = [](double x) { return x >= 0.0 && x <= 1.0; };
  if (policy.has_min_accuracy() && !unit(policy.min_accuracy())) {
    return absl::InvalidArgumentError(
        absl::StrCat("gate_policy.min_accuracy must be in [0, 1], got ", policy.min_accuracy()));
  }
  if (policy.has_max_loss() && !(policy.max_loss() >= 0.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("gate_policy.max_loss must be >= 0, got ", policy.max_loss()));
  }
  if (policy.has_max_regression() && !unit(policy.max_regression())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "gate_policy.max_regression must be in [0, 1], got ", policy.max_regression()));
  }
  return absl::OkStatus();
}

}  // namespace

// ---------------------------------------------------------------------------------------------

// fedge_cloud_registry_versions{model}: versions each model holds.
void PublishVersionCount(const v1::Model& model) {
  metrics::GaugeFamily("fedge_cloud_registry_versions",
                       "Versions held in the registry, by model (archived ones excluded).")
      .Add({{"model", model.name()}})
      .Set(static_cast<double>(model.num_versions()));
}

// fedge_cloud_deployment_state{model, state}: 1 for the state of the model's latest
// deployment, 0 for the other states.
void PublishDeploymentState(const v1::Deployment& d) {
  auto& family = metrics::GaugeFamily(
      "fedge_cloud_deployment_state",
      "State of each model's latest deployment: 1 for its state, 0 for the others.");
  const std::pair<v1::DeploymentState, const char*> states[] = {
      {v1::DEPLOYMENT_RUNNING, "running"},
      {v1::DEPLOYMENT_PAUSED, "paused"},
      {v1::DEPLOYMENT_SUCCEEDED, "succeeded"},
      {v1::DEPLOYMENT_ROLLED_BACK, "rolled_back"},
      {v1::DEPLOYMENT_FAILED, "failed"}};
  for (const auto& [state, name] : states) {
    family.Add({{"model", d.model()}, {"state", name}}).Set(d.state() == state ? 1 : 0);
  }
}

struct Registry::Impl {
  std::string data_dir;
  Clock* clock = nullptr;
  int schema_version = 0;

  mutable Mutex mu;
  sqlite::Db db ABSL_GUARDED_BY(mu);

  ~Impl() {
    MutexLock lock(&mu);
    db.Close();
  }

  std::string BlobDir() const { return data_dir + "/blobs"; }
  // `sha256` must be a well-formed digest.
  std::string BlobPathOf(const std::string& sha256) const {
    return absl::StrCat(BlobDir(), "/", sha256.substr(0, 2), "/", sha256);
  }
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
        Stmt stmt, Stmt::Prepare(db, number == 0 ? "SELECT number, proto, archived FROM versions "
                                                   "WHERE model = ? ORDER BY number DESC LIMIT 1"
                                                 : "SELECT number, proto, archived FROM versions "
                                                   "WHERE model = ? AND number = ?"));
    stmt.Bind(1, model);
    if (number != 0) stmt.Bind(2, number);
    FEDGE_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (row) {
      FEDGE_ASSIGN_OR_RETURN(v1::Version v, ParseVersion(stmt.Blob(1), model, stmt.Int(0)));
      v.set_archived(stmt.Int(2) != 0);
      FEDGE_ASSIGN_OR_RETURN(std::vector<std::string> aliases, AliasesOfLocked(model, v.version()));
      for (std::string& a : aliases) v.add_aliases(std::move(a));
      return v;
    }
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
    FEDGE_RETURN_IF_ERROR(CheckReason(version.reason()));
    if (version.tags_size() > static_cast<int>(kMaxTags)) {
      return absl::InvalidArgumentError(
          absl::StrCat("a version holds at most ", kMaxTags, " tags, not ", version.tags_size()));
    }
    for (const auto& [key, value] : version.tags()) FEDGE_RETURN_IF_ERROR(CheckTag(key, value));
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
    // Computed on every read, never stored.
    version.clear_aliases();
    version.clear_archived();
    // Checked again under the write lock: retention removes unreferenced blobs inside a write
    // transaction, so a blob seen here stays until this version commits and references it.
    {
      struct stat st;
      std::string path = BlobPathOf(version.sha256());
      if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
        return absl::FailedPreconditionError(
            absl::StrCat("blob ", version.sha256(), " of model \"", model,
                         "\" is not in the store; upload it before registering the version"));
      }
    }
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

  // --- Governance helpers -------------------------------------------------------------------

  // Aliases pointing at one version, sorted.
  absl::StatusOr<std::vector<std::string>> AliasesOfLocked(const std::string& model,
                                                           int64_t number) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    FEDGE_ASSIGN_OR_RETURN(Stmt stmt, Stmt::Prepare(db,
                                                    "SELECT alias FROM aliases WHERE model = ? "
                                                    "AND version = ? ORDER BY alias"));
    stmt.Bind(1, model).Bind(2, number);
    std::vector<std::string> out;
    while (true) {
      FEDGE_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      out.push_back(stmt.Text(0));
    }
    return out;
  }

  // alias -> version for one model.
  absl::StatusOr<std::map<std::string, int64_t>> ModelAliasesLocked(const std::string& model) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    FEDGE_ASSIGN_OR_RETURN(Stmt stmt,
                           Stmt::Prepare(db, "SELECT alias, version FROM aliases WHERE model = ?"));
    stmt.Bind(1, model);
    std::map<std::string, int64_t> out;
    while (true) {
      FEDGE_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      out[stmt.Text(0)] = stmt.Int(1);
    }
    return out;
  }

  // The columns of Model read by every model query, in this order.
  static constexpr const char* kModelColumns =
      "m.name, m.description, m.created_unix_ms, m.gate_policy, m.keep_versions, "
      "(SELECT COALESCE(MAX(number), 0) FROM versions WHERE model = m.name), "
      "(SELECT COUNT(*) FROM versions WHERE model = m.name)";

  absl::StatusOr<v1::Model> ModelFromRowLocked(const Stmt& stmt) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    v1::Model m;
    m.set_name(stmt.Text(0));
    m.set_description(stmt.Text(1));
    m.set_created_unix_ms(stmt.Int(2));
    if (!stmt.IsNull(3)) {
      absl::string_view bytes = stmt.Blob(3);
      if (!m.mutable_gate_policy()->ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
        return absl::DataLossError(
            absl::StrCat("registry.db: stored gate policy of model \"", m.name(), "\" is corrupt"));
      }
    }
    m.set_keep_versions(static_cast<int32_t>(stmt.Int(4)));
    m.set_latest_version(stmt.Int(5));
    m.set_num_versions(stmt.Int(6));
    FEDGE_ASSIGN_OR_RETURN(auto aliases, ModelAliasesLocked(m.name()));
    for (const auto& [alias, version] : aliases) (*m.mutable_aliases())[alias] = version;
    return m;
  }

  absl::StatusOr<v1::Model> GetModelLocked(const std::string& name) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    FEDGE_ASSIGN_OR_RETURN(
        Stmt stmt,
        Stmt::Prepare(db, absl::StrCat("SELECT ", kModelColumns, " FROM models m WHERE name = ?")));
    stmt.Bind(1, name);
    FEDGE_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("model \"", name, "\" not found"));
    return ModelFromRowLocked(stmt);
  }

  // Rewrites the stored proto of an existing version (tags, validation).
  absl::Status WriteVersionProtoLocked(v1::Version version) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    version.clear_aliases();
    version.clear_archived();
    std::string proto;
    if (!version.SerializeToString(&proto)) {
      return absl::InternalError(
          absl::StrCat("serializing ", version.model(), " version ", version.version()));
    }
    FEDGE_ASSIGN_OR_RETURN(
        Stmt stmt,
        Stmt::Prepare(db, "UPDATE versions SET proto = ? WHERE model = ? AND number = ?"));
    stmt.BindBlob(1, proto).Bind(2, version.model()).Bind(3, version.version());
    return stmt.Run();
  }

  // Appends one audit entry; must run inside the transaction of the change it records.
  absl::Status AppendAuditLocked(v1::AuditEntry entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (entry.time_unix_ms() == 0) entry.set_time_unix_ms(NowMs());
    entry.set_principal(PrincipalOrAnonymous(entry.principal()));
    FEDGE_ASSIGN_OR_RETURN(
        Stmt stmt,
        Stmt::Prepare(db,
                      "INSERT INTO audit (time_unix_ms, principal, action, model, version, "
                      "reason, detail, job_id, deployment_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"));
    stmt.Bind(1, entry.time_unix_ms())
        .Bind(2, entry.principal())
        .Bind(3, entry.action())
        .Bind(4, entry.model())
        .Bind(5, entry.version())
        .Bind(6, entry.reason())
        .Bind(7, entry.detail())
        .Bind(8, entry.job_id())
        .Bind(9, entry.deployment_id());
    return stmt.Run();
  }

  absl::Status AuditLocked(const Audit& audit, const std::string& action, const std::string& model,
                           int64_t version, const std::string& detail)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    FEDGE_RETURN_IF_ERROR(CheckReason(audit.reason));
    v1::AuditEntry entry;
    entry.set_principal(audit.principal);
    entry.set_reason(audit.reason);
    entry.set_action(action);
    entry.set_model(model);
    entry.set_version(version);
    entry.set_detail(detail);
    return AppendAuditLocked(std::move(entry));
  }

  absl::StatusOr<int64_t> ResolveAliasLocked(const std::string& model,
                                             const std::string& alias) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    FEDGE_ASSIGN_OR_RETURN(
        Stmt stmt, Stmt::Prepare(db, "SELECT version FROM aliases WHERE model = ? AND alias = ?"));
    stmt.Bind(1, model).Bind(2, alias);
    FEDGE_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (row) return stmt.Int(0);
    FEDGE_ASSIGN_OR_RETURN(bool exists, ModelExists(model));
    if (!exists) return absl::NotFoundError(absl::StrCat("model \"", model, "\" not found"));
    return absl::NotFoundError(absl::StrCat("model \"", model, "\" has no alias \"", alias, "\""));
  }

  // True when a live (non-archived) version of any model or a job's global model uses `sha256`.
  absl::StatusOr<bool> DigestInUseLocked(const std::string& sha256) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    FEDGE_ASSIGN_OR_RETURN(
        Stmt stmt,
        Stmt::Prepare(db,
                      "SELECT EXISTS (SELECT 1 FROM versions WHERE sha256 = ?1 AND archived = 0) "
                      "OR EXISTS (SELECT 1 FROM jobs WHERE global_sha256 = ?1)"));
    stmt.Bind(1, sha256);
    FEDGE_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) return absl::InternalError("registry.db: no result for a digest reference check");
    return stmt.Int(0) != 0;
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

  {
    MutexLock lock(&impl->mu);
    std::string db_path = absl::StrCat(impl->data_dir, "/", kDbFile);
    // Db::Open sets synchronous = FULL: versions and jobs are written rarely (per round, per
    // registration), and a committed version number is announced to edges at once, so it must
    // survive a power loss; NORMAL in WAL mode could roll back the last commits and reuse a number
    // for different content.
    sqlite::Db::Options db_options;
    db_options.label = kDbFile;
    db_options.foreign_keys = true;
    db_options.append_system_error = true;
    FEDGE_ASSIGN_OR_RETURN(impl->db, sqlite::Db::Open(db_path, Migrations(), std::move(db_options)));
    FEDGE_ASSIGN_OR_RETURN(int64_t migrated, QueryInt(impl->db, "PRAGMA user_version"));
    impl->schema_version = static_cast<int>(migrated);
  }
  std::unique_ptr<Registry> registry(new Registry(std::move(impl)));
  registry->PublishGauges();
  return registry;
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
  FEDGE_RETURN_IF_ERROR(CheckDescription(model_description));
  FEDGE_RETURN_IF_ERROR(impl_->CheckVersion(version, *this));
  {
    MutexLock lock(&impl_->mu);
    FEDGE_RETURN_IF_ERROR(InTransaction(impl_->db, [&]() -> absl::Status {
      impl_->mu.AssertHeld();
      return impl_->InsertVersionLocked(version, model_description);
    }));
  }
  PublishGauges();
  return version;
}

absl::StatusOr<v1::Version> Registry::GetVersion(const std::string& model, int64_t version) const {
  MutexLock lock(&impl_->mu);
  return impl_->GetVersionLocked(model, version);
}

absl::StatusOr<std::vector<v1::Model>> Registry::ListModels() const {
  MutexLock lock(&impl_->mu);
  FEDGE_ASSIGN_OR_RETURN(Stmt stmt,
                         Stmt::Prepare(impl_->db, absl::StrCat("SELECT ", Impl::kModelColumns,
                                                               " FROM models m ORDER BY m.name")));
  std::vector<v1::Model> out;
  while (true) {
    FEDGE_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    FEDGE_ASSIGN_OR_RETURN(v1::Model m, impl_->ModelFromRowLocked(stmt));
    out.push_back(std::move(m));
  }
  return out;
}

absl::StatusOr<std::vector<v1::Version>> Registry::ListVersions(const std::string& model) const {
  MutexLock lock(&impl_->mu);
  FEDGE_ASSIGN_OR_RETURN(bool exists, impl_->ModelExists(model));
  if (!exists) return absl::NotFoundError(absl::StrCat("model \"", model, "\" not found"));
  FEDGE_ASSIGN_OR_RETURN(auto aliases, impl_->ModelAliasesLocked(model));
  // version -> its aliases; iterating the sorted alias map keeps each list sorted.
  std::map<int64_t, std::vector<std::string>> by_version;
  for (const auto& [alias, version] : aliases) by_version[version].push_back(alias);
  FEDGE_ASSIGN_OR_RETURN(Stmt stmt, Stmt::Prepare(impl_->db,
                                                  "SELECT number, proto, archived FROM versions "
                                                  "WHERE model = ? ORDER BY number"));
  stmt.Bind(1, model);
  std::vector<v1::Version> out;
  while (true) {
    FEDGE_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    FEDGE_ASSIGN_OR_RETURN(v1::Version v, ParseVersion(stmt.Blob(1), model, stmt.Int(0)));
    v.set_archived(stmt.Int(2) != 0);
    auto it = by_version.find(v.version());
    if (it != by_version.end()) {
      for (const std::string& a : it->second) v.add_aliases(a);
    }
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
  {
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
  }
  PublishGauges();
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

absl::Status Registry::ClearDesiredVersion(const std::string& node_id, const std::string& model) {
  MutexLock lock(&impl_->mu);
  FEDGE_ASSIGN_OR_RETURN(
      Stmt stmt,
      Stmt::Prepare(impl_->db, "DELETE FROM desired_versions WHERE node_id = ? AND model = ?"));
  stmt.Bind(1, node_id).Bind(2, model);
  return stmt.Run();
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

// --- Governance --------------------------------------------------------------------------------

namespace {

absl::Status CheckVersionNumber(const std::string& model, int64_t version) {
  if (version < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("version of model \"", model, "\" must be a number >= 1, got ", version));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<v1::Model> Registry::GetModel(const std::string& name) const {
  MutexLock lock(&impl_->mu);
  return impl_->GetModelLocked(name);
}

absl::StatusOr<v1::Model> Registry::UpdateModel(const std::string& name,
                                                const std::optional<std::string>& description,
                                                const std::optional<v1::GatePolicy>& policy,
                                                const std::optional<int32_t>& keep_versions,
                                                const Audit& audit) {
  if (description.has_value()) FEDGE_RETURN_IF_ERROR(CheckDescription(*description));
  if (keep_versions.has_value() && *keep_versions < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("keep_versions must be >= 0 (0 keeps every version), got ", *keep_versions));
  }
  if (policy.has_value()) FEDGE_RETURN_IF_ERROR(CheckGatePolicy(*policy));
  std::string policy_bytes;
  if (policy.has_value() && !policy->SerializeToString(&policy_bytes)) {
    return absl::InternalError(absl::StrCat("serializing the gate policy of model \"", name, "\""));
  }
  MutexLock lock(&impl_->mu);
  v1::Model result;
  FEDGE_RETURN_IF_ERROR(InTransaction(impl_->db, [&]() -> absl::Status {
    impl_->mu.AssertHeld();
    FEDGE_ASSIGN_OR_RETURN(result, impl_->GetModelLocked(name));
    std::vector<std::string> changes;
    if (description.has_value()) {
      FEDGE_ASSIGN_OR_RETURN(
          Stmt stmt, Stmt::Prepare(impl_->db, "UPDATE models SET description = ? WHERE name = ?"));
      stmt.Bind(1, *description).Bind(2, name);
      FEDGE_RETURN_IF_ERROR(stmt.Run());
      changes.push_back(absl::StrCat("description=\"", absl::CHexEscape(*description), "\""));
    }
    if (policy.has_value()) {
      FEDGE_ASSIGN_OR_RETURN(
          Stmt stmt, Stmt::Prepare(impl_->db, "UPDATE models SET gate_policy = ? WHERE name = ?"));
      stmt.BindBlob(1, policy_bytes).Bind(2, name);
      FEDGE_RETURN_IF_ERROR(stmt.Run());
      changes.push_back(absl::StrCat("gate_policy={", policy->ShortDebugString(), "}"));
    }
    if (keep_versions.has_value()) {
      FEDGE_ASSIGN_OR_RETURN(
          Stmt stmt,
          Stmt::Prepare(impl_->db, "UPDATE models SET keep_versions = ? WHERE name = ?"));
      stmt.Bind(1, static_cast<int64_t>(*keep_versions)).Bind(2, name);
      FEDGE_RETURN_IF_ERROR(stmt.Run());
      changes.push_back(absl::StrCat("keep_versions=", *keep_versions));
    }
    // Nothing set, nothing changed: no audit entry.
    if (changes.empty()) return absl::OkStatus();
    FEDGE_RETURN_IF_ERROR(
        impl_->AuditLocked(audit, "update_model", name, 0, absl::StrJoin(changes, " ")));
    FEDGE_ASSIGN_OR_RETURN(result, impl_->GetModelLocked(name));
    return absl::OkStatus();
  }));
  return result;
}

absl::StatusOr<v1::Version> Registry::SetAlias(const std::string& model, const std::string& alias,
                                               int64_t version, const Audit& audit,
                                               const std::string& action) {
  FEDGE_RETURN_IF_ERROR(ValidateName(alias, "alias"));
  FEDGE_RETURN_IF_ERROR(CheckVersionNumber(model, version));
  const std::string& audit_action = action.empty() ? std::string("alias") : action;
  MutexLock lock(&impl_->mu);
  v1::Version result;
  FEDGE_RETURN_IF_ERROR(InTransaction(impl_->db, [&]() -> absl::Status {
    impl_->mu.AssertHeld();
    FEDGE_ASSIGN_OR_RETURN(v1::Version target, impl_->GetVersionLocked(model, version));
    if (target.archived()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "model \"", model, "\" version ", version,
          " is archived (retention removed its artifact); it cannot take alias \"", alias, "\""));
    }
    std::string from = "none";
    {
      FEDGE_ASSIGN_OR_RETURN(
          Stmt stmt,
          Stmt::Prepare(impl_->db, "SELECT version FROM aliases WHERE model = ? AND alias = ?"));
      stmt.Bind(1, model).Bind(2, alias);
      FEDGE_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (row) from = absl::StrCat(stmt.Int(0));
    }
    {
      FEDGE_ASSIGN_OR_RETURN(
          Stmt stmt,
          Stmt::Prepare(impl_->db,
                        "INSERT INTO aliases (model, alias, version, updated_unix_ms) "
                        "VALUES (?, ?, ?, ?) ON CONFLICT (model, alias) DO UPDATE SET "
                        "version = excluded.version, updated_unix_ms = excluded.updated_unix_ms"));
      stmt.Bind(1, model).Bind(2, alias).Bind(3, version).Bind(4, impl_->NowMs());
      FEDGE_RETURN_IF_ERROR(stmt.Run());
    }
    FEDGE_RETURN_IF_ERROR(impl_->AuditLocked(audit, audit_action, model, version,
                                             absl::StrCat("alias=", alias, " from=", from)));
    FEDGE_ASSIGN_OR_RETURN(result, impl_->GetVersionLocked(model, version));
    return absl::OkStatus();
  }));
  return result;
}

absl::StatusOr<v1::Model> Registry::DeleteAlias(const std::string& model, const std::string& alias,
                                                const Audit& audit) {
  MutexLock lock(&impl_->mu);
  v1::Model result;
  FEDGE_RETURN_IF_ERROR(InTransaction(impl_->db, [&]() -> absl::Status {
    impl_->mu.AssertHeld();
    FEDGE_ASSIGN_OR_RETURN(int64_t old, impl_->ResolveAliasLocked(model, alias));
    FEDGE_ASSIGN_OR_RETURN(
        Stmt stmt, Stmt::Prepare(impl_->db, "DELETE FROM aliases WHERE model = ? AND alias = ?"));
    stmt.Bind(1, model).Bind(2, alias);
    FEDGE_RETURN_IF_ERROR(stmt.Run());
    FEDGE_RETURN_IF_ERROR(
        impl_->AuditLocked(audit, "unalias", model, old, absl::StrCat("alias=", alias)));
    FEDGE_ASSIGN_OR_RETURN(result, impl_->GetModelLocked(model));
    return absl::OkStatus();
  }));
  return result;
}

absl::StatusOr<int64_t> Registry::ResolveAlias(const std::string& model,
                                               const std::string& alias) const {
  MutexLock lock(&impl_->mu);
  return impl_->ResolveAliasLocked(model, alias);
}

absl::StatusOr<v1::Version> Registry::SetTags(const std::string& model, int64_t version,
                                              const std::map<std::string, std::string>& tags,
                                              const Audit& audit) {
  FEDGE_RETURN_IF_ERROR(CheckVersionNumber(model, version));
  if (tags.count("") != 0) return absl::InvalidArgumentError("tag keys must not be empty");
  for (const auto& [key, value] : tags) FEDGE_RETURN_IF_ERROR(CheckTag(key, value));
  MutexLock lock(&impl_->mu);
  v1::Version result;
  FEDGE_RETURN_IF_ERROR(InTransaction(impl_->db, [&]() -> absl::Status {
    impl_->mu.AssertHeld();
    FEDGE_ASSIGN_OR_RETURN(v1::Version v, impl_->GetVersionLocked(model, version));
    std::vector<std::string> changes;
    for (const auto& [key, value] : tags) {  // std::map: the detail lists keys in order.
      if (value.empty()) {
        v.mutable_tags()->erase(key);
        changes.push_back(absl::StrCat("-", key));
      } else {
        (*v.mutable_tags())[key] = value;
        changes.push_back(absl::StrCat(key, "=", value));
      }
    }
    if (v.tags_size() > static_cast<int>(kMaxTags)) {
      return absl::InvalidArgumentError(absl::StrCat("version ", version, " of ", model,
                                                     " would hold ", v.tags_size(),
                                                     " tags; at most ", kMaxTags));
    }
    FEDGE_RETURN_IF_ERROR(impl_->WriteVersionProtoLocked(v));
    FEDGE_RETURN_IF_ERROR(
        impl_->AuditLocked(audit, "tags", model, version, absl::StrJoin(changes, " ")));
    FEDGE_ASSIGN_OR_RETURN(result, impl_->GetVersionLocked(model, version));
    return absl::OkStatus();
  }));
  return result;
}

absl::StatusOr<v1::Version> Registry::SetValidation(const std::string& model, int64_t version,
                                                    const v1::Validation& validation,
                                                    const Audit& audit) {
  FEDGE_RETURN_IF_ERROR(CheckVersionNumber(model, version));
  MutexLock lock(&impl_->mu);
  v1::Version result;
  FEDGE_RETURN_IF_ERROR(InTransaction(impl_->db, [&]() -> absl::Status {
    impl_->mu.AssertHeld();
    FEDGE_ASSIGN_OR_RETURN(v1::Version v, impl_->GetVersionLocked(model, version));
    v1::Validation* stored = v.mutable_validation();
    *stored = validation;
    if (stored->validated_unix_ms() == 0) stored->set_validated_unix_ms(impl_->NowMs());
    if (stored->principal().empty()) stored->set_principal(PrincipalOrAnonymous(audit.principal));
    FEDGE_RETURN_IF_ERROR(impl_->WriteVersionProtoLocked(v));
    FEDGE_RETURN_IF_ERROR(impl_->AuditLocked(audit, "validate", model, version,
                                             validation.passed()
                                                 ? std::string("passed")
                                                 : absl::StrCat("failed: ", validation.reason())));
    FEDGE_ASSIGN_OR_RETURN(result, impl_->GetVersionLocked(model, version));
    return absl::OkStatus();
  }));
  return result;
}

absl::StatusOr<v1::Lineage> Registry::GetLineage(const std::string& model, int64_t version) const {
  MutexLock lock(&impl_->mu);
  v1::Lineage lineage;
  FEDGE_ASSIGN_OR_RETURN(*lineage.mutable_version(), impl_->GetVersionLocked(model, version));
  // Parents are checked on insert, so the chain ends at a version without one; the visited set
  // only guards against a hand-edited database.
  std::set<int64_t> seen = {lineage.version().version()};
  int64_t parent = lineage.version().parent_version();
  while (parent > 0 && seen.insert(parent).second) {
    FEDGE_ASSIGN_OR_RETURN(v1::Version v, impl_->GetVersionLocked(model, parent));
    parent = v.parent_version();
    *lineage.add_ancestors() = std::move(v);
  }
  const std::string& job_id = lineage.version().job_id();
  if (!job_id.empty()) {
    FEDGE_ASSIGN_OR_RETURN(Stmt stmt,
                           Stmt::Prepare(impl_->db, "SELECT proto FROM jobs WHERE id = ?"));
    stmt.Bind(1, job_id);
    FEDGE_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (row) {
      absl::string_view bytes = stmt.Blob(0);
      if (!lineage.mutable_job()->ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
        return absl::DataLossError(
            absl::StrCat("registry.db: stored record of job ", job_id, " is corrupt"));
      }
    }
  }
  return lineage;
}

absl::StatusOr<std::vector<int64_t>> Registry::ApplyRetention(const std::string& model, int keep,
                                                              const std::set<int64_t>& protect,
                                                              const Audit& audit) {
  if (keep < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("retention must keep >= 0 versions (0 keeps every version), got ", keep));
  }
  // Declared before the lock, so it runs after the lock is released, on every return.
  struct PublishOnReturn {
    const Registry* registry;
    ~PublishOnReturn() { registry->PublishGauges(); }
  } publish{this};
  MutexLock lock(&impl_->mu);
  std::vector<int64_t> archived;
  FEDGE_RETURN_IF_ERROR(InTransaction(impl_->db, [&]() -> absl::Status {
    impl_->mu.AssertHeld();
    FEDGE_ASSIGN_OR_RETURN(bool exists, impl_->ModelExists(model));
    if (!exists) return absl::NotFoundError(absl::StrCat("model \"", model, "\" not found"));
    if (keep == 0) return absl::OkStatus();
    FEDGE_ASSIGN_OR_RETURN(auto aliases, impl_->ModelAliasesLocked(model));
    std::set<int64_t> aliased;
    for (const auto& [alias, version] : aliases) aliased.insert(version);
    std::vector<std::pair<int64_t, std::string>> doomed;  // number, sha256
    {
      FEDGE_ASSIGN_OR_RETURN(
          Stmt stmt, Stmt::Prepare(impl_->db,
                                   "SELECT number, sha256 FROM versions "
                                   "WHERE model = ? AND archived = 0 ORDER BY number DESC"));
      stmt.Bind(1, model);
      for (int newest = 0;; ++newest) {
        FEDGE_ASSIGN_OR_RETURN(bool row, stmt.Step());
        if (!row) break;
        int64_t number = stmt.Int(0);
        if (newest < keep || aliased.count(number) != 0 || protect.count(number) != 0) continue;
        doomed.emplace_back(number, stmt.Text(1));
      }
    }
    std::reverse(doomed.begin(), doomed.end());  // ascending
    for (const auto& [number, sha] : doomed) {
      FEDGE_ASSIGN_OR_RETURN(
          Stmt stmt,
          Stmt::Prepare(impl_->db,
                        "UPDATE versions SET archived = 1 WHERE model = ? AND number = ?"));
      stmt.Bind(1, model).Bind(2, number);
      FEDGE_RETURN_IF_ERROR(stmt.Run());
    }
    // Checked after every flag is set, so two archived versions sharing a digest free it.
    for (const auto& [number, sha] : doomed) {
      FEDGE_ASSIGN_OR_RETURN(bool in_use, impl_->DigestInUseLocked(sha));
      FEDGE_RETURN_IF_ERROR(impl_->AuditLocked(
          audit, "archive", model, number,
          absl::StrCat("sha256=", sha,
                       in_use ? " artifact=kept (still referenced)" : " artifact=removed")));
      archived.push_back(number);
    }
    return absl::OkStatus();
  }));
  if (keep == 0) return archived;

  // Blob files go only after the archive commits: a failed commit must not lose the artifact of
  // a version that stays live. Sweeping every archived digest of the model (not only the ones
  // archived now) also finishes a sweep that a crash or an I/O error interrupted earlier. The
  // write lock keeps AddVersion, which checks its blob under that lock, from racing a removal.
  std::vector<std::string> failures;
  FEDGE_RETURN_IF_ERROR(InTransaction(impl_->db, [&]() -> absl::Status {
    impl_->mu.AssertHeld();
    FEDGE_ASSIGN_OR_RETURN(Stmt stmt, Stmt::Prepare(impl_->db,
                                                    "SELECT DISTINCT sha256 FROM versions "
                                                    "WHERE model = ? AND archived = 1"));
    stmt.Bind(1, model);
    while (true) {
      FEDGE_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      std::string sha = stmt.Text(0);
      if (!IsSha256Hex(sha)) continue;
      FEDGE_ASSIGN_OR_RETURN(bool in_use, impl_->DigestInUseLocked(sha));
      if (in_use) continue;
      std::string path = impl_->BlobPathOf(sha);
      if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
        failures.push_back(ErrnoStatus(errno, absl::StrCat("removing ", path)).ToString());
      }
    }
    return absl::OkStatus();
  }));
  if (!failures.empty()) {
    return absl::UnavailableError(absl::StrCat(
        "model \"", model, "\": archived versions [", absl::StrJoin(archived, ", "),
        "] but could not remove every unreferenced artifact (applying retention again retries): ",
        absl::StrJoin(failures, "; ")));
  }
  return archived;
}

void Registry::PublishGauges() const {
  auto models = ListModels();
  if (models.ok()) {
    for (const v1::Model& m : *models) PublishVersionCount(m);
  }
  auto deployments = ListDeployments();
  if (!deployments.ok()) return;
  std::map<std::string, const v1::Deployment*> latest;
  for (const v1::Deployment& d : *deployments) {
    const v1::Deployment*& l = latest[d.model()];
    if (l == nullptr || d.created_unix_ms() >= l->created_unix_ms()) l = &d;
  }
  for (const auto& [model, d] : latest) PublishDeploymentState(*d);
}

absl::Status Registry::AppendAudit(v1::AuditEntry entry) {
  if (entry.action().empty()) return absl::InvalidArgumentError("audit entry needs an action");
  FEDGE_RETURN_IF_ERROR(CheckReason(entry.reason()));
  entry.clear_id();  // Assigned by the database.
  MutexLock lock(&impl_->mu);
  return InTransaction(impl_->db, [&]() -> absl::Status {
    impl_->mu.AssertHeld();
    return impl_->AppendAuditLocked(std::move(entry));
  });
}

absl::StatusOr<std::vector<v1::AuditEntry>> Registry::ListAudit(const std::string& model,
                                                                const std::string& deployment_id,
                                                                int limit) const {
  if (limit < 0) return absl::InvalidArgumentError(absl::StrCat("limit must be >= 0, got ", limit));
  if (limit == 0) limit = 100;
  std::string sql =
      "SELECT id, time_unix_ms, principal, action, model, version, reason, detail, job_id, "
      "deployment_id FROM audit WHERE 1";
  if (!model.empty()) absl::StrAppend(&sql, " AND model = ?1");
  if (!deployment_id.empty()) absl::StrAppend(&sql, " AND deployment_id = ?2");
  absl::StrAppend(&sql, " ORDER BY id DESC LIMIT ?3");
  MutexLock lock(&impl_->mu);
  FEDGE_ASSIGN_OR_RETURN(Stmt stmt, Stmt::Prepare(impl_->db, sql));
  if (!model.empty()) stmt.Bind(1, model);
  if (!deployment_id.empty()) stmt.Bind(2, deployment_id);
  stmt.Bind(3, static_cast<int64_t>(limit));
  std::vector<v1::AuditEntry> out;
  while (true) {
    FEDGE_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    v1::AuditEntry e;
    e.set_id(stmt.Int(0));
    e.set_time_unix_ms(stmt.Int(1));
    e.set_principal(stmt.Text(2));
    e.set_action(stmt.Text(3));
    e.set_model(stmt.Text(4));
    e.set_version(stmt.Int(5));
    e.set_reason(stmt.Text(6));
    e.set_detail(stmt.Text(7));
    e.set_job_id(stmt.Text(8));
    e.set_deployment_id(stmt.Text(9));
    out.push_back(std::move(e));
  }
  return out;
}

absl::Status Registry::PutDeployment(const v1::Deployment& deployment,
                                     const std::optional<v1::AuditEntry>& audit) {
  if (deployment.id().empty()) return absl::InvalidArgumentError("deployment id must be set");
  if (audit.has_value() && audit->action().empty()) {
    return absl::InvalidArgumentError("audit entry needs an action");
  }
  std::string proto;
  if (!deployment.SerializeToString(&proto)) {
    return absl::InternalError(absl::StrCat("serializing deployment ", deployment.id()));
  }
  MutexLock lock(&impl_->mu);
  absl::Status st = InTransaction(impl_->db, [&]() -> absl::Status {
    impl_->mu.AssertHeld();
    FEDGE_ASSIGN_OR_RETURN(Stmt stmt,
                           Stmt::Prepare(impl_->db,
                                         "INSERT INTO deployments (id, state, created_unix_ms, "
                                         "updated_unix_ms, proto) VALUES (?, ?, ?, ?, ?) "
                                         "ON CONFLICT (id) DO UPDATE SET state = excluded.state, "
                                         "created_unix_ms = excluded.created_unix_ms, "
                                         "updated_unix_ms = excluded.updated_unix_ms, "
                                         "proto = excluded.proto"));
    stmt.Bind(1, deployment.id())
        .Bind(2, static_cast<int64_t>(deployment.state()))
        .Bind(3, deployment.created_unix_ms())
        .Bind(4, deployment.updated_unix_ms())
        .BindBlob(5, proto);
    FEDGE_RETURN_IF_ERROR(stmt.Run());
    if (!audit.has_value()) return absl::OkStatus();
    v1::AuditEntry entry = *audit;
    entry.clear_id();
    if (entry.deployment_id().empty()) entry.set_deployment_id(deployment.id());
    if (entry.model().empty()) entry.set_model(deployment.model());
    if (entry.version() == 0) entry.set_version(deployment.version());
    return impl_->AppendAuditLocked(std::move(entry));
  });
  if (st.ok()) PublishDeploymentState(deployment);
  return st;
}

absl::Status Registry::PutRetrainPolicy(const std::string& model, const v1::RetrainPolicy& policy,
                                        const Audit& audit) {
  MutexLock lock(&impl_->mu);
  return InTransaction(impl_->db, [&]() -> absl::Status {
    impl_->mu.AssertHeld();
    FEDGE_ASSIGN_OR_RETURN(Stmt exists,
                           Stmt::Prepare(impl_->db, "SELECT 1 FROM models WHERE name = ?"));
    exists.Bind(1, model);
    FEDGE_ASSIGN_OR_RETURN(bool found, exists.Step());
    if (!found) return absl::NotFoundError(absl::StrCat("model \"", model, "\" not found"));
    FEDGE_ASSIGN_OR_RETURN(
        Stmt stmt, Stmt::Prepare(impl_->db,
                                 "INSERT INTO retrain_policies (model, proto) VALUES (?, ?) "
                                 "ON CONFLICT (model) DO UPDATE SET proto = excluded.proto"));
    const std::string bytes = policy.SerializeAsString();
    stmt.Bind(1, model).BindBlob(2, bytes);
    FEDGE_RETURN_IF_ERROR(stmt.Run());
    v1::AuditEntry entry;
    entry.set_action("retrain_policy");
    entry.set_principal(audit.principal.empty() ? "anonymous" : audit.principal);
    entry.set_model(model);
    entry.set_reason(audit.reason);
    entry.set_detail(policy.enabled() ? "enabled" : "disabled");
    entry.set_time_unix_ms(absl::ToUnixMillis(impl_->clock->Now()));
    FEDGE_ASSIGN_OR_RETURN(
        Stmt insert,
        Stmt::Prepare(impl_->db,
                      "INSERT INTO audit (time_unix_ms, principal, action, model, version, reason, "
                      "detail, job_id, deployment_id) VALUES (?, ?, ?, ?, 0, ?, ?, '', '')"));
    insert.Bind(1, entry.time_unix_ms())
        .Bind(2, entry.principal())
        .Bind(3, entry.action())
        .Bind(4, model)
        .Bind(5, entry.reason())
        .Bind(6, entry.detail());
    return insert.Run();
  });
}

absl::StatusOr<std::map<std::string, v1::RetrainPolicy>> Registry::RetrainPolicies() const {
  MutexLock lock(&impl_->mu);
  FEDGE_ASSIGN_OR_RETURN(Stmt stmt,
                         Stmt::Prepare(impl_->db, "SELECT model, proto FROM retrain_policies"));
  std::map<std::string, v1::RetrainPolicy> out;
  while (true) {
    FEDGE_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    v1::RetrainPolicy policy;
    absl::string_view bytes = stmt.Blob(1);
    if (!policy.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
      return absl::DataLossError("registry.db: a stored retraining policy is corrupt");
    }
    out[std::string(stmt.Text(0))] = std::move(policy);
  }
  return out;
}

absl::StatusOr<v1::Deployment> Registry::GetDeployment(const std::string& id) const {
  MutexLock lock(&impl_->mu);
  FEDGE_ASSIGN_OR_RETURN(Stmt stmt,
                         Stmt::Prepare(impl_->db, "SELECT proto FROM deployments WHERE id = ?"));
  stmt.Bind(1, id);
  FEDGE_ASSIGN_OR_RETURN(bool row, stmt.Step());
  if (!row) return absl::NotFoundError(absl::StrCat("deployment \"", id, "\" not found"));
  v1::Deployment d;
  absl::string_view bytes = stmt.Blob(0);
  if (!d.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::DataLossError(
        absl::StrCat("registry.db: stored record of deployment ", id, " is corrupt"));
  }
  return d;
}

absl::StatusOr<std::vector<v1::Deployment>> Registry::ListDeployments() const {
  MutexLock lock(&impl_->mu);
  FEDGE_ASSIGN_OR_RETURN(Stmt stmt, Stmt::Prepare(impl_->db,
                                                  "SELECT id, proto FROM deployments "
                                                  "ORDER BY created_unix_ms DESC, id"));
  std::vector<v1::Deployment> out;
  while (true) {
    FEDGE_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    v1::Deployment d;
    absl::string_view bytes = stmt.Blob(1);
    if (!d.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
      return absl::DataLossError(
          absl::StrCat("registry.db: stored record of deployment ", stmt.Text(0), " is corrupt"));
    }
    out.push_back(std::move(d));
  }
  return out;
}

}  // namespace fedge::cloud::registry
