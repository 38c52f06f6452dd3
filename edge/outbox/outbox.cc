#include "edge/outbox/outbox.h"

#include <random>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/metrics/metrics.h"
#include "common/status/status.h"

namespace fedge::edge::outbox {
namespace {

using sqlite::Stmt;

// Forward migrations. Entry i takes the schema from user_version i to i + 1. Never edit an
// entry once released: append a new one.
const std::vector<const char*>& Migrations() {
  static const auto* const kMigrations = new std::vector<const char*>{
      // 1: the initial schema.
      R"sql(
CREATE TABLE meta (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
CREATE TABLE messages (
  id             INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: the message id
  queued_unix_ms INTEGER NOT NULL,
  size           INTEGER NOT NULL,
  proto          BLOB NOT NULL  -- the fedge.v1.EdgeMessage without message_id and queue time
);
)sql",
  };
  return *kMigrations;
}

prometheus::Gauge& MessagesGauge() {
  static auto& g = metrics::GaugeFamily("fedge_edge_outbox_messages",
                                        "Messages queued for the cloud, not yet acknowledged.")
                       .Add({});
  return g;
}

prometheus::Gauge& BytesGauge() {
  static auto& g =
      metrics::GaugeFamily("fedge_edge_outbox_bytes", "Bytes queued for the cloud.").Add({});
  return g;
}

prometheus::Gauge& LastIdGauge() {
  static auto& g =
      metrics::GaugeFamily("fedge_edge_outbox_last_id", "The newest outbox message id assigned.")
          .Add({});
  return g;
}

prometheus::Counter& DroppedCounter(const std::string& reason) {
  return metrics::CounterFamily(
             "fedge_edge_outbox_dropped_total",
             "Outbox messages dropped unsent to stay within a bound: count, bytes or age.")
      .Add({{"reason", reason}});
}

std::string NewEpoch() {
  std::random_device rd;
  return absl::StrFormat("%08x%08x", rd(), rd());
}

absl::StatusOr<std::string> ReadMeta(const sqlite::Db& db, const char* key) {
  FEDGE_ASSIGN_OR_RETURN(Stmt q, Stmt::Prepare(db, "SELECT value FROM meta WHERE key = ?"));
  q.Bind(1, key);
  FEDGE_ASSIGN_OR_RETURN(bool row, q.Step());
  return row ? q.Text(0) : std::string();
}

absl::Status WriteMeta(const sqlite::Db& db, const char* key, const std::string& value) {
  FEDGE_ASSIGN_OR_RETURN(
      Stmt q, Stmt::Prepare(db, "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"));
  q.Bind(1, key).Bind(2, value);
  return q.Run();
}

int64_t ToInt(const std::string& s) {
  int64_t v = 0;
  return absl::SimpleAtoi(s, &v) ? v : 0;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Outbox>> Outbox::Open(Options options) {
  if (options.max_messages < 1 || options.max_bytes < 1 ||
      options.max_age <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "outbox bounds must be positive: max_messages=", options.max_messages,
        " max_bytes=", options.max_bytes, " max_age=", absl::FormatDuration(options.max_age)));
  }
  sqlite::Db::Options db_opts;
  db_opts.label = "outbox.db";
  db_opts.append_system_error = true;
  FEDGE_ASSIGN_OR_RETURN(sqlite::Db db, sqlite::Db::Open(options.path, Migrations(), db_opts));
  for (const char* r : {"count", "bytes", "age"}) DroppedCounter(r);
  std::unique_ptr<Outbox> box(new Outbox(std::move(options), std::move(db)));
  MutexLock lock(&box->mu_);
  FEDGE_RETURN_IF_ERROR(box->Load());
  // Bounds may have shrunk since the last run.
  FEDGE_RETURN_IF_ERROR(sqlite::InTransaction(
      box->db_,
      [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status { return box->EnforceBoundsLocked(); }));
  box->PublishLocked();
  return box;
}

absl::Status Outbox::Load() {
  FEDGE_RETURN_IF_ERROR(
      sqlite::InTransaction(db_, [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status {
        FEDGE_ASSIGN_OR_RETURN(std::string epoch, ReadMeta(db_, "epoch"));
        if (epoch.empty()) {
          epoch = NewEpoch();
          FEDGE_RETURN_IF_ERROR(WriteMeta(db_, "epoch", epoch));
        }
        epoch_ = epoch;
        return absl::OkStatus();
      }));
  Stats s;
  FEDGE_ASSIGN_OR_RETURN(s.messages, sqlite::QueryInt(db_, "SELECT COUNT(*) FROM messages"));
  FEDGE_ASSIGN_OR_RETURN(s.bytes,
                         sqlite::QueryInt(db_, "SELECT COALESCE(SUM(size), 0) FROM messages"));
  FEDGE_ASSIGN_OR_RETURN(int64_t last,
                         sqlite::QueryInt(db_,
                                          "SELECT COALESCE((SELECT seq FROM sqlite_sequence "
                                          "WHERE name = 'messages'), 0)"));
  s.last_id = static_cast<uint64_t>(last);
  FEDGE_ASSIGN_OR_RETURN(std::string v, ReadMeta(db_, "dropped_count"));
  s.dropped_count = ToInt(v);
  FEDGE_ASSIGN_OR_RETURN(v, ReadMeta(db_, "dropped_bytes"));
  s.dropped_bytes = ToInt(v);
  FEDGE_ASSIGN_OR_RETURN(v, ReadMeta(db_, "dropped_age"));
  s.dropped_age = ToInt(v);
  stats_ = s;
  return absl::OkStatus();
}

absl::StatusOr<int64_t> Outbox::DeleteLocked(const char* where, int64_t arg) {
  FEDGE_ASSIGN_OR_RETURN(
      Stmt q, Stmt::Prepare(db_, absl::StrCat("DELETE FROM messages WHERE ", where, " RETURNING size")));
  q.Bind(1, arg);
  int64_t n = 0;
  while (true) {
    FEDGE_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    ++n;
    stats_.bytes -= q.Int(0);
  }
  stats_.messages -= n;
  return n;
}

absl::Status Outbox::EnforceBoundsLocked() {
  const Stats before = stats_;
  auto drop = [this](const char* where, int64_t arg, const char* reason,
                     int64_t* counter) ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status {
    FEDGE_ASSIGN_OR_RETURN(int64_t n, DeleteLocked(where, arg));
    *counter += n;
    if (n > 0) DroppedCounter(reason).Increment(static_cast<double>(n));
    return absl::OkStatus();
  };
  constexpr char kOldest[] = "id IN (SELECT id FROM messages ORDER BY id LIMIT ?)";
  if (options_.max_age != absl::InfiniteDuration()) {
    const int64_t cutoff = absl::ToUnixMillis(options_.clock->Now() - options_.max_age);
    FEDGE_RETURN_IF_ERROR(drop("queued_unix_ms < ?", cutoff, "age", &stats_.dropped_age));
  }
  if (stats_.messages > options_.max_messages) {
    FEDGE_RETURN_IF_ERROR(
        drop(kOldest, stats_.messages - options_.max_messages, "count", &stats_.dropped_count));
  }
  while (stats_.bytes > options_.max_bytes && stats_.messages > 0) {
    FEDGE_RETURN_IF_ERROR(drop(kOldest, 1, "bytes", &stats_.dropped_bytes));
  }
  if (stats_.dropped() != before.dropped()) FEDGE_RETURN_IF_ERROR(SaveCountersLocked());
  return absl::OkStatus();
}

absl::Status Outbox::SaveCountersLocked() {
  FEDGE_RETURN_IF_ERROR(WriteMeta(db_, "dropped_count", absl::StrCat(stats_.dropped_count)));
  FEDGE_RETURN_IF_ERROR(WriteMeta(db_, "dropped_bytes", absl::StrCat(stats_.dropped_bytes)));
  return WriteMeta(db_, "dropped_age", absl::StrCat(stats_.dropped_age));
}

void Outbox::PublishLocked() const {
  MessagesGauge().Set(static_cast<double>(stats_.messages));
  BytesGauge().Set(static_cast<double>(stats_.bytes));
  LastIdGauge().Set(static_cast<double>(stats_.last_id));
}

absl::StatusOr<uint64_t> Outbox::Push(v1::EdgeMessage message) {
  message.clear_message_id();
  message.clear_queued_unix_ms();
  std::string proto;
  if (!message.SerializeToString(&proto)) {
    return absl::InternalError("cannot serialize an outbox message");
  }
  const int64_t size = static_cast<int64_t>(proto.size());
  if (size > options_.max_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "a ", size, "-byte message exceeds the outbox's bound of ", options_.max_bytes, " bytes"));
  }
  MutexLock lock(&mu_);
  const Stats before = stats_;
  uint64_t id = 0;
  absl::Status st =
      sqlite::InTransaction(db_, [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status {
        FEDGE_ASSIGN_OR_RETURN(Stmt q,
                               Stmt::Prepare(db_,
                                             "INSERT INTO messages (queued_unix_ms, size, proto) "
                                             "VALUES (?, ?, ?)"));
        q.Bind(1, absl::ToUnixMillis(options_.clock->Now())).Bind(2, size).BindBlob(3, proto);
        FEDGE_RETURN_IF_ERROR(q.Run());
        id = static_cast<uint64_t>(sqlite3_last_insert_rowid(db_.get()));
        stats_.messages += 1;
        stats_.bytes += size;
        stats_.last_id = id;
        return EnforceBoundsLocked();
      });
  if (!st.ok()) {
    stats_ = before;
    return st;
  }
  PublishLocked();
  return id;
}

absl::StatusOr<std::vector<v1::EdgeMessage>> Outbox::After(uint64_t after_id, int limit) {
  MutexLock lock(&mu_);
  const Stats before = stats_;
  absl::Status st = sqlite::InTransaction(
      db_, [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status { return EnforceBoundsLocked(); });
  if (!st.ok()) {
    stats_ = before;
    return st;
  }
  PublishLocked();
  FEDGE_ASSIGN_OR_RETURN(
      Stmt q, Stmt::Prepare(db_,
                            "SELECT id, queued_unix_ms, proto FROM messages WHERE id > ? "
                            "ORDER BY id LIMIT ?"));
  q.Bind(1, static_cast<int64_t>(after_id)).Bind(2, static_cast<int64_t>(std::max(limit, 0)));
  std::vector<v1::EdgeMessage> out;
  while (true) {
    FEDGE_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    v1::EdgeMessage m;
    absl::string_view blob = q.Blob(2);
    if (!m.ParseFromArray(blob.data(), static_cast<int>(blob.size()))) {
      return absl::DataLossError(absl::StrCat("outbox.db: message ", q.Int(0), " is corrupted"));
    }
    m.set_message_id(static_cast<uint64_t>(q.Int(0)));
    m.set_queued_unix_ms(q.Int(1));
    out.push_back(std::move(m));
  }
  return out;
}

absl::Status Outbox::Ack(uint64_t applied_id) {
  MutexLock lock(&mu_);
  const Stats before = stats_;
  absl::StatusOr<int64_t> n = DeleteLocked("id <= ?", static_cast<int64_t>(applied_id));
  if (!n.ok()) {
    stats_ = before;
    return n.status();
  }
  PublishLocked();
  return absl::OkStatus();
}

Outbox::Stats Outbox::stats() const {
  MutexLock lock(&mu_);
  return stats_;
}

}  // namespace fedge::edge::outbox
