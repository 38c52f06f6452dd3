#ifndef FEDGE_EDGE_OUTBOX_OUTBOX_H_
#define FEDGE_EDGE_OUTBOX_OUTBOX_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/sqlite/sqlite.h"
#include "common/sync/mutex.h"
#include "common/time/clock.h"
#include "fedge/v1/fleet.pb.h"

namespace fedge::edge::outbox {

// Everything the edge owes the cloud (task, deploy and health status, evaluation results, drift
// and metrics reports), kept in SQLite (`outbox.db` under the state dir) until the cloud
// acknowledges it, so an outage or a restart of either side loses nothing.
//
// - Push assigns the next message id (ids only grow, across restarts) and commits before it
//   returns.
// - The outbox is bounded in messages, bytes and age. Beyond a bound the oldest messages are
//   dropped, and each drop is counted by reason ("count", "bytes", "age") in a persisted
//   counter and in fedge_edge_outbox_dropped_total.
// - Ack(id) deletes every message up to id once the cloud has applied them.
// - The epoch is a random id made when the file is created; the cloud deduplicates by
//   (node, epoch, id), so a node whose state was wiped is not mistaken for a replay.
//
// Thread-safe.
class Outbox {
 public:
  struct Options {
    std::string path;  // the SQLite file
    int64_t max_messages = 100000;
    int64_t max_bytes = 64 << 20;
    absl::Duration max_age = absl::Hours(72);  // absl::InfiniteDuration(): no age bound
    Clock* clock = Clock::Real();
  };

  struct Stats {
    int64_t messages = 0;  // queued now
    int64_t bytes = 0;
    uint64_t last_id = 0;  // the newest id ever assigned
    int64_t dropped_count = 0;
    int64_t dropped_bytes = 0;
    int64_t dropped_age = 0;
    int64_t dropped() const { return dropped_count + dropped_bytes + dropped_age; }
  };

  // INVALID_ARGUMENT for bounds below 1; the SQLite error if the file cannot be opened.
  static absl::StatusOr<std::unique_ptr<Outbox>> Open(Options options);

  const std::string& epoch() const { return epoch_; }

  // Queues `message` with the next id and the queue time, then enforces the bounds. Returns the
  // id. A message larger than max_bytes on its own is refused with RESOURCE_EXHAUSTED.
  absl::StatusOr<uint64_t> Push(v1::EdgeMessage message);

  // Up to `limit` queued messages with id > after_id, oldest first, each with message_id and
  // queued_unix_ms set. Messages past max_age are dropped first.
  absl::StatusOr<std::vector<v1::EdgeMessage>> After(uint64_t after_id, int limit);

  // Deletes every message with id <= applied_id.
  absl::Status Ack(uint64_t applied_id);

  Stats stats() const;

 private:
  Outbox(Options options, sqlite::Db db) : options_(std::move(options)), db_(std::move(db)) {}
  absl::Status Load() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops the oldest messages while a bound is exceeded; inside the caller's transaction.
  absl::Status EnforceBoundsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Deletes the messages matching `where` (one integer parameter, arg) and takes them off the
  // stats. Returns how many.
  absl::StatusOr<int64_t> DeleteLocked(const char* where, int64_t arg)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status SaveCountersLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PublishLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  std::string epoch_;
  mutable Mutex mu_;
  sqlite::Db db_ ABSL_GUARDED_BY(mu_);
  Stats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fedge::edge::outbox

#endif  // FEDGE_EDGE_OUTBOX_OUTBOX_H_
