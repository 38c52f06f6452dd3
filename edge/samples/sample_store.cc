#include "edge/samples/sample_store.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/metrics/metrics.h"
#include "common/status/status.h"

namespace fedge::edge::samples {
namespace {

using sqlite::Stmt;

// Forward migrations. Entry i takes the schema from user_version i to i + 1. Never edit an
// entry once released: append a new one.
const std::vector<const char*>& Migrations() {
  static const auto* const kMigrations = new std::vector<const char*>{
      // 1: the initial schema.
      R"sql(
CREATE TABLE samples (
  id               INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: oldest first is id order
  features         BLOB NOT NULL,     -- little-endian float32, num_features values
  label            INTEGER NOT NULL,  -- class index
  source           TEXT NOT NULL,     -- ingest or feedback
  received_unix_ms INTEGER NOT NULL
);
CREATE INDEX samples_by_time ON samples(received_unix_ms);
-- num_features (fixed at creation), total_added and dropped.
CREATE TABLE meta (
  key   TEXT PRIMARY KEY,
  value INTEGER NOT NULL
);
)sql",
  };
  return *kMigrations;
}

prometheus::Gauge& StoredGauge() {
  static auto& g = metrics::GaugeFamily("fedge_edge_samples_stored",
                                        "Labelled samples held in the edge's sample store.")
                       .Add({});
  return g;
}

prometheus::Counter& AddedCounter(Source source) {
  return metrics::CounterFamily("fedge_edge_samples_added_total",
                                "Labelled samples accepted into the sample store, by source "
                                "(ingest, feedback).")
      .Add({{"source", std::string(SourceName(source))}});
}

prometheus::Counter& DroppedCounter() {
  static auto& c =
      metrics::CounterFamily("fedge_edge_samples_dropped_total",
                             "Samples evicted from the sample store by its count or age bound.")
          .Add({});
  return c;
}

absl::StatusOr<int64_t> ReadMeta(const sqlite::Db& db, const char* key) {
  FEDGE_ASSIGN_OR_RETURN(Stmt stmt, Stmt::Prepare(db, "SELECT value FROM meta WHERE key = ?"));
  stmt.Bind(1, key);
  FEDGE_ASSIGN_OR_RETURN(bool row, stmt.Step());
  return row ? stmt.Int(0) : -1;
}

absl::Status WriteMeta(const sqlite::Db& db, const char* key, int64_t value) {
  FEDGE_ASSIGN_OR_RETURN(Stmt stmt,
                         Stmt::Prepare(db,
                                       "INSERT INTO meta (key, value) VALUES (?, ?) "
                                       "ON CONFLICT (key) DO UPDATE SET value = excluded.value"));
  stmt.Bind(1, key).Bind(2, value);
  return stmt.Run();
}

std::string EncodeRow(const std::vector<float>& row) {
  // x86-64 and aarch64 are little-endian, the stored order.
  return std::string(reinterpret_cast<const char*>(row.data()), row.size() * sizeof(float));
}

}  // namespace

absl::string_view SourceName(Source source) {
  switch (source) {
    case Source::kIngest:
      return "ingest";
    case Source::kFeedback:
      return "feedback";
  }
  return "ingest";
}

absl::StatusOr<std::unique_ptr<SampleStore>> SampleStore::Open(Options options) {
  if (options.path.empty()) return absl::InvalidArgumentError("the sample store needs a path");
  if (options.feature_names.empty()) {
    return absl::InvalidArgumentError("the sample store needs the samples' feature names");
  }
  if (options.max_samples < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_samples must be at least 1, got ", options.max_samples));
  }
  if (options.max_age < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("max_age must not be negative");
  }
  if (options.num_classes < 0) {
    return absl::InvalidArgumentError("num_classes must not be negative");
  }
  if (options.clock == nullptr) options.clock = Clock::Real();
  std::error_code ec;
  const std::filesystem::path dir = std::filesystem::path(options.path).parent_path();
  if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("cannot create ", dir.string(), ": ", ec.message()));
  }
  sqlite::Db::Options db_options;
  db_options.label = "samples.db";
  db_options.append_system_error = true;
  FEDGE_ASSIGN_OR_RETURN(sqlite::Db db, sqlite::Db::Open(options.path, Migrations(), db_options));

  const int64_t want = static_cast<int64_t>(options.feature_names.size());
  int64_t count = 0, total_added = 0, dropped = 0;
  FEDGE_RETURN_IF_ERROR(sqlite::InTransaction(db, [&]() -> absl::Status {
    FEDGE_ASSIGN_OR_RETURN(int64_t have, ReadMeta(db, "num_features"));
    if (have < 0) {
      FEDGE_RETURN_IF_ERROR(WriteMeta(db, "num_features", want));
    } else if (have != want) {
      return absl::InvalidArgumentError(
          absl::StrCat(options.path, " holds samples of ", have, " features; this edge's data has ",
                       want, " features. Move the file away to start a new store"));
    }
    FEDGE_ASSIGN_OR_RETURN(total_added, ReadMeta(db, "total_added"));
    FEDGE_ASSIGN_OR_RETURN(dropped, ReadMeta(db, "dropped"));
    FEDGE_ASSIGN_OR_RETURN(count, sqlite::QueryInt(db, "SELECT COUNT(*) FROM samples"));
    return absl::OkStatus();
  }));
  // Every series exists from the start, so rates and alerts see zeros rather than gaps.
  AddedCounter(Source::kIngest);
  AddedCounter(Source::kFeedback);
  DroppedCounter();
  std::unique_ptr<SampleStore> store(new SampleStore(std::move(options), std::move(db)));
  {
    MutexLock lock(&store->mu_);
    store->count_ = count;
    store->total_added_ = std::max<int64_t>(0, total_added);
    store->dropped_ = std::max<int64_t>(0, dropped);
    // A smaller max_samples or max_age than last time takes effect at once.
    FEDGE_RETURN_IF_ERROR(store->TrimLocked());
    store->PublishLocked();
  }
  return store;
}

SampleStore::SampleStore(Options options, sqlite::Db db)
    : options_(std::move(options)), db_(std::move(db)) {}

absl::Status SampleStore::Validate(const std::vector<Sample>& samples) const {
  const size_t width = options_.feature_names.size();
  for (size_t i = 0; i < samples.size(); ++i) {
    const Sample& s = samples[i];
    if (s.features.size() != width) {
      return absl::InvalidArgumentError(absl::StrCat("sample ", i, " has ", s.features.size(),
                                                     " features; the store takes ", width));
    }
    if (s.label < 0 || (options_.num_classes > 0 && s.label >= options_.num_classes)) {
      return absl::InvalidArgumentError(
          absl::StrCat("sample ", i, " has label ", s.label, "; labels lie in [0, ",
                       options_.num_classes > 0 ? absl::StrCat(options_.num_classes) : "inf", ")"));
    }
    for (size_t f = 0; f < width; ++f) {
      if (!std::isfinite(s.features[f])) {
        return absl::InvalidArgumentError(absl::StrCat(
            "sample ", i, ": feature ", f, " (", options_.feature_names[f], ") is not finite"));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> SampleStore::EvictLocked(int64_t count) {
  int64_t evicted = 0;
  if (options_.max_age > absl::ZeroDuration()) {
    const int64_t cutoff = absl::ToUnixMillis(options_.clock->Now() - options_.max_age);
    FEDGE_ASSIGN_OR_RETURN(Stmt stmt,
                           Stmt::Prepare(db_, "DELETE FROM samples WHERE received_unix_ms < ?"));
    stmt.Bind(1, cutoff);
    FEDGE_RETURN_IF_ERROR(stmt.Run());
    evicted += sqlite3_changes(db_.get());
  }
  const int64_t excess = count - evicted - options_.max_samples;
  if (excess > 0) {
    FEDGE_ASSIGN_OR_RETURN(Stmt stmt,
                           Stmt::Prepare(db_,
                                         "DELETE FROM samples WHERE id IN "
                                         "(SELECT id FROM samples ORDER BY id LIMIT ?)"));
    stmt.Bind(1, excess);
    FEDGE_RETURN_IF_ERROR(stmt.Run());
    evicted += sqlite3_changes(db_.get());
  }
  return evicted;
}

absl::Status SampleStore::Add(const std::vector<Sample>& samples) {
  FEDGE_RETURN_IF_ERROR(Validate(samples));
  if (samples.empty()) return absl::OkStatus();
  MutexLock lock(&mu_);
  const int64_t now_ms = absl::ToUnixMillis(options_.clock->Now());
  const int64_t n = static_cast<int64_t>(samples.size());
  int64_t evicted = 0;
  FEDGE_RETURN_IF_ERROR(sqlite::InTransaction(db_, [&]() -> absl::Status {
    mu_.AssertHeld();
    for (const Sample& s : samples) {
      FEDGE_ASSIGN_OR_RETURN(Stmt stmt,
                             Stmt::Prepare(db_,
                                           "INSERT INTO samples (features, label, source, "
                                           "received_unix_ms) VALUES (?, ?, ?, ?)"));
      stmt.BindBlob(1, EncodeRow(s.features))
          .Bind(2, s.label)
          .Bind(3, SourceName(s.source))
          .Bind(4, now_ms);
      FEDGE_RETURN_IF_ERROR(stmt.Run());
    }
    FEDGE_ASSIGN_OR_RETURN(evicted, EvictLocked(count_ + n));
    FEDGE_RETURN_IF_ERROR(WriteMeta(db_, "total_added", total_added_ + n));
    return WriteMeta(db_, "dropped", dropped_ + evicted);
  }));
  count_ += n - evicted;
  total_added_ += n;
  dropped_ += evicted;
  for (const Sample& s : samples) AddedCounter(s.source).Increment();
  if (evicted > 0) DroppedCounter().Increment(static_cast<double>(evicted));
  PublishLocked();
  return absl::OkStatus();
}

absl::Status SampleStore::TrimLocked() {
  if (count_ == 0) return absl::OkStatus();
  if (options_.max_age <= absl::ZeroDuration() && count_ <= options_.max_samples) {
    return absl::OkStatus();
  }
  int64_t evicted = 0;
  FEDGE_RETURN_IF_ERROR(sqlite::InTransaction(db_, [&]() -> absl::Status {
    mu_.AssertHeld();
    FEDGE_ASSIGN_OR_RETURN(evicted, EvictLocked(count_));
    return evicted > 0 ? WriteMeta(db_, "dropped", dropped_ + evicted) : absl::OkStatus();
  }));
  if (evicted > 0) {
    count_ -= evicted;
    dropped_ += evicted;
    DroppedCounter().Increment(static_cast<double>(evicted));
    PublishLocked();
  }
  return absl::OkStatus();
}

absl::StatusOr<data::Dataset> SampleStore::ReadLocked(int64_t limit) {
  FEDGE_RETURN_IF_ERROR(TrimLocked());
  data::Dataset out;
  out.feature_names = options_.feature_names;
  const size_t width = options_.feature_names.size();
  // The newest `limit` rows, read newest first and then put in arrival order.
  FEDGE_ASSIGN_OR_RETURN(
      Stmt stmt,
      Stmt::Prepare(db_, "SELECT features, label FROM samples ORDER BY id DESC LIMIT ?"));
  stmt.Bind(1, limit);
  std::vector<std::vector<float>> rows;
  while (true) {
    FEDGE_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    absl::string_view blob = stmt.Blob(0);
    if (blob.size() != width * sizeof(float)) {
      return absl::DataLossError(absl::StrCat("samples.db: a row holds ", blob.size(),
                                              " feature bytes; expected ", width * sizeof(float)));
    }
    std::vector<float>& r = rows.emplace_back(width);
    std::memcpy(r.data(), blob.data(), blob.size());
    out.labels.push_back(stmt.Int(1));
  }
  std::reverse(out.labels.begin(), out.labels.end());
  out.features.reserve(rows.size() * width);
  for (auto it = rows.rbegin(); it != rows.rend(); ++it) {
    out.features.insert(out.features.end(), it->begin(), it->end());
  }
  return out;
}

absl::StatusOr<data::Dataset> SampleStore::Recent(int64_t n) {
  MutexLock lock(&mu_);
  return ReadLocked(std::max<int64_t>(0, n));
}

absl::StatusOr<data::Dataset> SampleStore::All() {
  MutexLock lock(&mu_);
  return ReadLocked(-1);  // LIMIT -1: no limit
}

int64_t SampleStore::Count() const {
  MutexLock lock(&mu_);
  return count_;
}

int64_t SampleStore::TotalAdded() const {
  MutexLock lock(&mu_);
  return total_added_;
}

int64_t SampleStore::Dropped() const {
  MutexLock lock(&mu_);
  return dropped_;
}

void SampleStore::PublishLocked() const { StoredGauge().Set(static_cast<double>(count_)); }

}  // namespace fedge::edge::samples
