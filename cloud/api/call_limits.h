#ifndef FEDGE_CLOUD_API_CALL_LIMITS_H_
#define FEDGE_CLOUD_API_CALL_LIMITS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/sync/mutex.h"
#include "common/time/clock.h"
#include "grpcpp/server_context.h"

namespace prometheus {
class Counter;
}

namespace fedge::cloud::api {

// fedge_cloud_calls_limited_total{limit}: what a limit on the Fleet port refused, cut off or
// slowed.
prometheus::Counter& LimitedCounter(const std::string& limit);

// A token bucket per node for the calls a node makes on the Fleet port (Session opens,
// downloads, uploads, offsets), so one misbehaving or hostile node cannot crowd out the fleet.
// A well-behaved edge makes a few calls a minute; the defaults leave room for bursts after an
// outage. Thread-safe.
class NodeRateLimiter {
 public:
  struct Options {
    double per_second = 10;  // sustained calls per node
    double burst = 100;      // calls a node may make at once after being quiet
    // Buckets kept at most; past this, buckets idle long enough to be full again are dropped
    // first (they hold no information), then the oldest ones.
    size_t max_nodes = 100000;
    Clock* clock = Clock::Real();
  };
  explicit NodeRateLimiter(Options options);

  // OK, or RESOURCE_EXHAUSTED naming the node, the limit and when a call will be admitted.
  // `count`: a refusal counts in fedge_cloud_calls_limited_total{limit="rate"}.
  absl::Status Admit(const std::string& node_id, bool count = true);
  // Buckets held now (at most max_nodes).
  size_t tracked() const;

 private:
  struct Bucket {
    double tokens = 0;
    absl::Time updated;
  };
  void EvictLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  mutable Mutex mu_;
  absl::flat_hash_map<std::string, Bucket> buckets_ ABSL_GUARDED_BY(mu_);
};

// One token bucket, for one owner (not thread-safe): a Session paces its own messages with it.
// Take() always succeeds and says how long the caller should wait before the next use, so a
// burst is absorbed and a flood is slowed to the rate instead of refused.
class TokenBucket {
 public:
  TokenBucket(double per_second, double burst) : per_second_(per_second), burst_(burst) {}
  // Spends `n` tokens at `now`; returns how long until the balance is back to zero.
  absl::Duration Take(double n, absl::Time now);

 private:
  double per_second_;
  double burst_;
  double tokens_ = -1;  // < 0 before the first Take: starts full
  absl::Time updated_;
};

// Concurrent streams per node, and in all, for the Fleet port's transfers: a node gets at most
// its share however many streams it opens, so no node's idle or slow streams can crowd out the
// others'. Thread-safe.
class StreamSlots {
 public:
  struct Options {
    int per_node = 4;  // concurrent transfers (downloads and uploads) one node may hold
    int total = 1024;  // concurrent transfers the coordinator serves at once
  };
  explicit StreamSlots(Options options) : options_(options) {}

  // Held while a transfer runs; releases its slot when destroyed.
  class Slot {
   public:
    ~Slot();
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;

   private:
    friend class StreamSlots;
    Slot(StreamSlots* owner, std::string node_id) : owner_(owner), node_id_(std::move(node_id)) {}
    StreamSlots* owner_;
    std::string node_id_;
  };
  // A slot, or RESOURCE_EXHAUSTED saying which limit was hit.
  absl::StatusOr<std::unique_ptr<Slot>> Acquire(const std::string& node_id);
  int held(const std::string& node_id) const;

 private:
  void Release(const std::string& node_id);

  const Options options_;
  mutable Mutex mu_;
  absl::flat_hash_map<std::string, int> by_node_ ABSL_GUARDED_BY(mu_);
  int total_ ABSL_GUARDED_BY(mu_) = 0;
};

// Whether to log one more line about a source (a node, a peer address): a token bucket per
// source, so a flood of bad input cannot flood the log. Thread-safe.
class LogLimiter {
 public:
  explicit LogLimiter(double per_second = 1, double burst = 10, Clock* clock = Clock::Real());
  // True if a line may be logged; false counts a suppressed line, which the next allowed line
  // reports through Suppressed().
  bool Allow(const std::string& source);
  // Lines suppressed for `source` since its last allowed one, and resets the count.
  int64_t TakeSuppressed(const std::string& source);

 private:
  NodeRateLimiter limiter_;
  mutable Mutex mu_;
  absl::flat_hash_map<std::string, int64_t> suppressed_ ABSL_GUARDED_BY(mu_);
};

// Cancels upload streams that go quiet: a client that opens UploadUpdate and then sends
// nothing would otherwise hold a server thread, and its staged bytes, until the call's deadline,
// which a hostile client does not set. One thread checks every watched call once a second.
class IdleStreams {
 public:
  IdleStreams(absl::Duration idle_timeout, Clock* clock = Clock::Real());
  ~IdleStreams();
  IdleStreams(const IdleStreams&) = delete;
  IdleStreams& operator=(const IdleStreams&) = delete;

  // Watches `context` while the returned object lives; Touch() on every message. A call idle
  // for longer than the timeout is cancelled (its next Read returns false) and counted.
  class Watch {
   public:
    ~Watch();
    void Touch();
    // True once the call was cancelled for being idle.
    bool timed_out() const;

   private:
    friend class IdleStreams;
    Watch(IdleStreams* owner, uint64_t id) : owner_(owner), id_(id) {}
    IdleStreams* owner_;
    uint64_t id_;
  };
  std::unique_ptr<Watch> Start(grpc::ServerContextBase* context);

  absl::Duration idle_timeout() const { return idle_timeout_; }

 private:
  struct Call {
    grpc::ServerContextBase* context;
    absl::Time last;
    bool timed_out = false;
  };
  void Loop();

  const absl::Duration idle_timeout_;
  Clock* const clock_;
  mutable Mutex mu_;
  CondVar stop_cv_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  absl::flat_hash_map<uint64_t, Call> calls_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace fedge::cloud::api

#endif  // FEDGE_CLOUD_API_CALL_LIMITS_H_
