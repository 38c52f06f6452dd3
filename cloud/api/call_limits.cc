#include "cloud/api/call_limits.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/metrics/metrics.h"
#include "glog/logging.h"

namespace fedge::cloud::api {
namespace {

prometheus::Counter& LimitedCounter(const std::string& limit) {
  return metrics::CounterFamily("fedge_cloud_calls_limited_total",
                                "Fleet calls refused or cut off by a per-node limit: rate (too "
                                "many calls) or idle (an upload stream that went quiet).")
      .Add({{"limit", limit}});
}

}  // namespace

NodeRateLimiter::NodeRateLimiter(Options options) : options_(options) {
  LimitedCounter("rate");
}

absl::Status NodeRateLimiter::Admit(const std::string& node_id) {
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
  LimitedCounter("rate").Increment();
  const double wait_s = (1 - b.tokens) / options_.per_second;
  return absl::ResourceExhaustedError(absl::StrFormat(
      "node %s exceeds %g calls/s (bursts of %g) on the Fleet port; retry in %.1f s", node_id,
      options_.per_second, options_.burst, wait_s));
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
