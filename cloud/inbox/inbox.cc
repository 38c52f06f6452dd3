#include "cloud/inbox/inbox.h"

#include "absl/strings/str_cat.h"
#include "common/metrics/metrics.h"
#include "common/sqlite/sqlite.h"
#include "common/status/status.h"
#include "common/sync/mutex.h"
#include "glog/logging.h"

namespace fedge::cloud::inbox {
namespace {

using sqlite::Stmt;

constexpr char kDbFile[] = "inbox.db";
// Pruning runs once per this many applied messages.
constexpr int kPruneEvery = 1000;

// Forward migrations. Entry i takes the schema from user_version i to i + 1. Never edit an
// entry once released: append a new one.
const std::vector<const char*>& Migrations() {
  static const auto* const kMigrations = new std::vector<const char*>{
      // 1: the initial schema.
      R"sql(
CREATE TABLE cursors (
  node_id         TEXT PRIMARY KEY,
  epoch           TEXT NOT NULL,
  applied_id      INTEGER NOT NULL,  -- the high-water mark of the epoch
  updated_unix_ms INTEGER NOT NULL
);
CREATE TABLE reports (
  seq              INTEGER PRIMARY KEY AUTOINCREMENT,
  node_id          TEXT NOT NULL,
  epoch            TEXT NOT NULL,
  message_id       INTEGER NOT NULL,
  kind             TEXT NOT NULL,
  queued_unix_ms   INTEGER NOT NULL,
  received_unix_ms INTEGER NOT NULL,
  proto            BLOB NOT NULL  -- the fedge.v1.EdgeMessage as received
);
CREATE INDEX reports_by_node ON reports(node_id, message_id);
CREATE TABLE node_metrics (
  node_id         TEXT NOT NULL,
  name            TEXT NOT NULL,
  value           REAL NOT NULL,
  updated_unix_ms INTEGER NOT NULL,
  PRIMARY KEY (node_id, name)
);
-- Per model, each node's samples_total when the model's latest version was made: the baseline
-- of the data-arrival retraining trigger. A row with node_id '' marks a model whose baseline
-- is set while no node had reported yet.
CREATE TABLE sample_marks (
  model   TEXT NOT NULL,
  node_id TEXT NOT NULL,
  samples REAL NOT NULL,
  PRIMARY KEY (model, node_id)
);
)sql",
  };
  return *kMigrations;
}

prometheus::Counter& MessagesCounter(const std::string& kind, const std::string& result) {
  return metrics::CounterFamily(
             "fedge_cloud_edge_messages_total",
             "Outbox messages from edges by kind and result: applied, or duplicate (already "
             "applied; acknowledged and ignored).")
      .Add({{"kind", kind}, {"result", result}});
}

prometheus::Counter& GapCounter() {
  static auto& c =
      metrics::CounterFamily("fedge_cloud_edge_message_gaps_total",
                             "Outbox message ids skipped: messages edges dropped to stay within "
                             "their outbox bounds.")
          .Add({});
  return c;
}

}  // namespace

std::string KindName(const v1::EdgeMessage& message) {
  switch (message.kind_case()) {
    case v1::EdgeMessage::kHello:
      return "hello";
    case v1::EdgeMessage::kHeartbeat:
      return "heartbeat";
    case v1::EdgeMessage::kTaskStatus:
      return "task_status";
    case v1::EdgeMessage::kMetrics:
      return "metrics";
    case v1::EdgeMessage::kDeployStatus:
      return "deploy_status";
    case v1::EdgeMessage::kHealth:
      return "health";
    case v1::EdgeMessage::kEvaluateResult:
      return "evaluate_result";
    case v1::EdgeMessage::kDrift:
      return "drift";
    case v1::EdgeMessage::KIND_NOT_SET:
      break;
  }
  return "none";
}

struct Inbox::Impl {
  Options options;
  Mutex mu;
  sqlite::Db db ABSL_GUARDED_BY(mu);
  int since_prune ABSL_GUARDED_BY(mu) = 0;

  absl::Status PruneLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    const int64_t cutoff = absl::ToUnixMillis(options.clock->Now() - options.retention);
    FEDGE_ASSIGN_OR_RETURN(Stmt old,
                           Stmt::Prepare(db, "DELETE FROM reports WHERE received_unix_ms < ?"));
    old.Bind(1, cutoff);
    FEDGE_RETURN_IF_ERROR(old.Run());
    FEDGE_ASSIGN_OR_RETURN(Stmt over, Stmt::Prepare(db,
                                                    "DELETE FROM reports WHERE seq <= "
                                                    "(SELECT MAX(seq) FROM reports) - ?"));
    over.Bind(1, options.max_reports);
    return over.Run();
  }
};

absl::StatusOr<std::unique_ptr<Inbox>> Inbox::Open(Options options) {
  auto impl = std::make_unique<Impl>();
  sqlite::Db::Options db_opts;
  db_opts.label = kDbFile;
  db_opts.append_system_error = true;
  FEDGE_ASSIGN_OR_RETURN(
      sqlite::Db db,
      sqlite::Db::Open(absl::StrCat(options.data_dir, "/", kDbFile), Migrations(), db_opts));
  impl->options = std::move(options);
  {
    MutexLock lock(&impl->mu);
    impl->db = std::move(db);
  }
  return std::unique_ptr<Inbox>(new Inbox(std::move(impl)));
}

Inbox::Inbox(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Inbox::~Inbox() = default;

absl::StatusOr<uint64_t> Inbox::Applied(const std::string& node_id, const std::string& epoch) {
  MutexLock lock(&impl_->mu);
  FEDGE_ASSIGN_OR_RETURN(
      Stmt q, Stmt::Prepare(impl_->db, "SELECT epoch, applied_id FROM cursors WHERE node_id = ?"));
  q.Bind(1, node_id);
  FEDGE_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row || q.Text(0) != epoch) return 0;
  return static_cast<uint64_t>(q.Int(1));
}

absl::StatusOr<Inbox::Result> Inbox::Apply(const std::string& node_id, const std::string& epoch,
                                           const v1::EdgeMessage& message) {
  if (message.message_id() == 0) {
    return absl::InvalidArgumentError("an outbox message needs a message_id above 0");
  }
  if (epoch.empty()) {
    return absl::InvalidArgumentError(
        "outbox messages need the outbox_epoch of the session's Hello");
  }
  const std::string kind = KindName(message);
  const int64_t id = static_cast<int64_t>(message.message_id());
  const int64_t now_ms = absl::ToUnixMillis(impl_->options.clock->Now());
  Result result = Result::kApplied;
  int64_t previous = 0;
  MutexLock lock(&impl_->mu);
  FEDGE_RETURN_IF_ERROR(
      sqlite::InTransaction(impl_->db, [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status {
        {
          FEDGE_ASSIGN_OR_RETURN(
              Stmt q,
              Stmt::Prepare(impl_->db, "SELECT epoch, applied_id FROM cursors WHERE node_id = ?"));
          q.Bind(1, node_id);
          FEDGE_ASSIGN_OR_RETURN(bool row, q.Step());
          previous = row && q.Text(0) == epoch ? q.Int(1) : 0;
        }
        if (id <= previous) {
          result = Result::kDuplicate;
          return absl::OkStatus();
        }
        std::string proto;
        message.SerializeToString(&proto);
        FEDGE_ASSIGN_OR_RETURN(
            Stmt ins, Stmt::Prepare(impl_->db,
                                    "INSERT INTO reports (node_id, epoch, message_id, kind, "
                                    "queued_unix_ms, received_unix_ms, proto) "
                                    "VALUES (?, ?, ?, ?, ?, ?, ?)"));
        ins.Bind(1, node_id).Bind(2, epoch).Bind(3, id).Bind(4, kind);
        ins.Bind(5, message.queued_unix_ms()).Bind(6, now_ms).BindBlob(7, proto);
        FEDGE_RETURN_IF_ERROR(ins.Run());
        if (message.has_metrics()) {
          for (const auto& [name, value] : message.metrics().values()) {
            FEDGE_ASSIGN_OR_RETURN(
                Stmt m,
                Stmt::Prepare(impl_->db,
                              "INSERT OR REPLACE INTO node_metrics "
                              "(node_id, name, value, updated_unix_ms) VALUES (?, ?, ?, ?)"));
            m.Bind(1, node_id).Bind(2, name).BindDouble(3, value).Bind(4, now_ms);
            FEDGE_RETURN_IF_ERROR(m.Run());
          }
        }
        FEDGE_ASSIGN_OR_RETURN(Stmt cur,
                               Stmt::Prepare(impl_->db,
                                             "INSERT OR REPLACE INTO cursors "
                                             "(node_id, epoch, applied_id, updated_unix_ms) "
                                             "VALUES (?, ?, ?, ?)"));
        cur.Bind(1, node_id).Bind(2, epoch).Bind(3, id).Bind(4, now_ms);
        return cur.Run();
      }));
  if (result == Result::kDuplicate) {
    MessagesCounter(kind, "duplicate").Increment();
    return result;
  }
  MessagesCounter(kind, "applied").Increment();
  if (id > previous + 1) {
    GapCounter().Increment(static_cast<double>(id - previous - 1));
    LOG(WARNING) << "node=" << node_id << " outbox messages " << previous + 1 << ".." << id - 1
                 << " never arrived: the edge dropped them to stay within its outbox bounds";
  }
  if (++impl_->since_prune >= kPruneEvery) {
    impl_->since_prune = 0;
    absl::Status st = impl_->PruneLocked();
    if (!st.ok()) LOG(WARNING) << "pruning the report log: " << st;
  }
  return result;
}

absl::StatusOr<std::optional<std::map<std::string, double>>> Inbox::SampleMarks(
    const std::string& model) {
  MutexLock lock(&impl_->mu);
  FEDGE_ASSIGN_OR_RETURN(
      Stmt q,
      Stmt::Prepare(impl_->db, "SELECT node_id, samples FROM sample_marks WHERE model = ?"));
  q.Bind(1, model);
  std::optional<std::map<std::string, double>> out;
  while (true) {
    FEDGE_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    if (!out) out.emplace();
    if (!q.Text(0).empty()) (*out)[q.Text(0)] = q.Double(1);
  }
  return out;
}

absl::Status Inbox::MarkSamples(const std::string& model) {
  MutexLock lock(&impl_->mu);
  return sqlite::InTransaction(impl_->db, [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status {
    FEDGE_ASSIGN_OR_RETURN(Stmt del,
                           Stmt::Prepare(impl_->db, "DELETE FROM sample_marks WHERE model = ?"));
    del.Bind(1, model);
    FEDGE_RETURN_IF_ERROR(del.Run());
    FEDGE_ASSIGN_OR_RETURN(
        Stmt ins, Stmt::Prepare(impl_->db,
                                "INSERT INTO sample_marks (model, node_id, samples) "
                                "SELECT ?, node_id, value FROM node_metrics WHERE name = ? "
                                "UNION ALL SELECT ?, '', 0"));
    ins.Bind(1, model).Bind(2, kSamplesTotal).Bind(3, model);
    return ins.Run();
  });
}

absl::StatusOr<std::map<std::string, double>> Inbox::LatestMetric(const std::string& metric) {
  MutexLock lock(&impl_->mu);
  FEDGE_ASSIGN_OR_RETURN(
      Stmt q, Stmt::Prepare(impl_->db, "SELECT node_id, value FROM node_metrics WHERE name = ?"));
  q.Bind(1, metric);
  std::map<std::string, double> out;
  while (true) {
    FEDGE_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    out[q.Text(0)] = q.Double(1);
  }
  return out;
}

}  // namespace fedge::cloud::inbox
