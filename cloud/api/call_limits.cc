#include "cloud/api/call_limits.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/metrics/metrics.h"
#include "glog/logging.h"

namespace fedge::cloud::api {

prometheus::Counter& LimitedCounter(const std::string& limit) {
  return metrics::CounterFamily("fedge_cloud_calls_limited_total",
                                "Fleet calls refused, cut off or slowed by a limit: rate (too many "
                                "calls), streams (too many transfers open), idle (an upload "
                                "stream that went quiet), session_rate (Session messages slowed "
                                "to the per-kind rate), session_bounds (a Session message out "
                                "of bounds, dropped).")
      .Add({{"limit", limit}});
}

NodeRateLimiter::NodeRateLimiter(Options options) : options_(options) {
  LimitedCounter("rate");
  LimitedCounter("streams");
}

absl::Status NodeRateLimiter::Admit(const std::string& node_id, bool count) {
  const absl::Time now = options_.clock->Now();
  MutexLock lock(&mu_);
  auto it = buckets_.find(node_id);
  if (it == buckets_.end()) {
    if (buckets_.size() >= options_.max_nodes) EvictLocked(now);
    it = buckets_.emplace(node_id, Bucket{options_.burst, now}).first;
  }
  Bucket& b = it->second;
  b.tokens = std::min(options_.burst,
                      b.tokens + absl::ToDoubleSeconds(now - b.updated) * options_.per_second);
  b.updated = now;
  if (b.tokens >= 1) {
    b.tokens -= 1;
    return absl::OkStatus();
  }
  if (count) LimitedCounter("rate").Increment();
  const double wait_s = (1 - b.tokens) / options_.per_second;
  return absl::ResourceExhaustedError(absl::StrFormat(
      "node %s exceeds %g calls/s (bursts of %g) on the Fleet port; retry in %.1f s", node_id,
      options_.per_second, options_.burst, wait_s));
}

absl::Duration TokenBucket::Take(double n, absl::Time now) {
  if (tokens_ < 0 && updated_ == absl::Time()) {
    tokens_ = burst_;
  } else {
    tokens_ = std::min(burst_, tokens_ + absl::ToDoubleSeconds(now - updated_) * per_second_);
  }
  updated_ = now;
  tokens_ -= n;
  if (tokens_ >= 0) return absl::ZeroDuration();
  return absl::Seconds(-tokens_ / per_second_);
}

absl::StatusOr<std::unique_ptr<StreamSlots::Slot>> StreamSlots::Acquire(
    const std::string& node_id) {
  MutexLock lock(&mu_);
  int& mine = by_node_[node_id];
  if (mine >= options_.per_node) {
    LimitedCounter("streams").Increment();
    return absl::ResourceExhaustedError(
        absl::StrCat("node ", node_id, " already has ", mine,
                     " transfers open, its limit on the Fleet port; "
                     "finish or cancel one first"));
  }
  if (total_ >= options_.total) {
    if (mine == 0) by_node_.erase(node_id);
    LimitedCounter("streams").Increment();
    return absl::ResourceExhaustedError(absl::StrCat("the coordinator serves ", options_.total,
                                                     " transfers at once; retry shortly"));
  }
  ++mine;
  ++total_;
  return std::unique_ptr<Slot>(new Slot(this, node_id));
}

int StreamSlots::held(const std::string& node_id) const {
  MutexLock lock(&mu_);
  auto it = by_node_.find(node_id);
  return it == by_node_.end() ? 0 : it->second;
}

void StreamSlots::Release(const std::string& node_id) {
  MutexLock lock(&mu_);
  auto it = by_node_.find(node_id);
  if (it != by_node_.end() && --it->second <= 0) by_node_.erase(it);
  --total_;
}

StreamSlots::Slot::~Slot() { owner_->Release(node_id_); }

LogLimiter::LogLimiter(double per_second, double burst, Clock* clock)
    : limiter_({per_second, burst, 10000, clock}) {}

bool LogLimiter::Allow(const std::string& source) {
  if (limiter_.Admit(source, /*count=*/false).ok()) return true;
  MutexLock lock(&mu_);
  if (suppressed_.size() < 10000 || suppressed_.count(source) > 0) ++suppressed_[source];
  return false;
}

int64_t LogLimiter::TakeSuppressed(const std::string& source) {
  MutexLock lock(&mu_);
  auto it = suppressed_.find(source);
  if (it == suppressed_.end()) return 0;
  const int64_t n = it->second;
  suppressed_.erase(it);
  return n;
}

size_t NodeRateLimiter::tracked() const {
  MutexLock lock(&mu_);
  return buckets_.size();
}

void NodeRateLimiter::EvictLocked(absl::Time now) {
  const absl::Duration refill = absl::Seconds(options_.burst / options_.per_second);
  for (auto it = buckets_.begin(); it != buckets_.end();) {
    if (now - it->second.updated >= refill) {
      buckets_.erase(it++);
    } else {
      ++it;
    }
  }
  if (buckets_.size() < options_.max_nodes) return;
  // Still full: drop the half that was touched longest ago.
  std::vector<absl::Time> times;
  times.reserve(buckets_.size());
  for (const auto& [id, b] : buckets_) times.push_back(b.updated);
  std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
  const absl::Time cut = times[times.size() / 2];
  for (auto it = buckets_.begin(); it != buckets_.end();) {
    if (it->second.updated <= cut) {
      buckets_.erase(it++);
    } else {
      ++it;
    }
  }
}

IdleStreams::IdleStreams(absl::Duration idle_timeout, Clock* clock)
    : idle_timeout_(idle_timeout), clock_(clock) {
  LimitedCounter("idle");
  thread_ = std::thread([this] { Loop(); });
}

IdleStreams::~IdleStreams() {
  {
    MutexLock lock(&mu_);
    stop_ = true;
    stop_cv_.SignalAll();
  }
  thread_.join();
}

std::unique_ptr<IdleStreams::Watch> IdleStreams::Start(grpc::ServerContextBase* context) {
  MutexLock lock(&mu_);
  const uint64_t id = next_id_++;
  calls_[id] = Call{context, clock_->Now()};
  return std::unique_ptr<Watch>(new Watch(this, id));
}

IdleStreams::Watch::~Watch() {
  MutexLock lock(&owner_->mu_);
  owner_->calls_.erase(id_);
}

void IdleStreams::Watch::Touch() {
  const absl::Time now = owner_->clock_->Now();
  MutexLock lock(&owner_->mu_);
  auto it = owner_->calls_.find(id_);
  if (it != owner_->calls_.end()) it->second.last = now;
}

bool IdleStreams::Watch::timed_out() const {
  MutexLock lock(&owner_->mu_);
  auto it = owner_->calls_.find(id_);
  return it != owner_->calls_.end() && it->second.timed_out;
}

void IdleStreams::Loop() {
  MutexLock lock(&mu_);
  while (!stop_) {
    const absl::Time now = clock_->Now();
    for (auto& [id, call] : calls_) {
      if (!call.timed_out && now - call.last > idle_timeout_) {
        call.timed_out = true;
        LimitedCounter("idle").Increment();
        LOG(WARNING) << "cancelling an upload stream from " << call.context->peer()
                     << " idle for over " << absl::FormatDuration(idle_timeout_);
        call.context->TryCancel();
      }
    }
    stop_cv_.WaitWithTimeout(&mu_, absl::Seconds(1));
  }
}

}  // namespace fedge::cloud::api
