#include "edge/runtime/train_limits.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <thread>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace fedge::edge::runtime {
namespace {

constexpr int64_t kMinSleepNs = 1000000;  // shorter sleeps cost more in wake-ups than they pace

int64_t ClockNs(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

}  // namespace

absl::Status ValidateTrainLimits(const TrainLimits& limits) {
  if (limits.threads < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("training threads must be >= 0, got ", limits.threads));
  }
  if (!std::isfinite(limits.cpu_share) || limits.cpu_share <= 0 || limits.cpu_share > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("the training CPU share must lie in (0, 1], got ", limits.cpu_share));
  }
  if (limits.nice < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("the training nice increment must be >= 0, got ", limits.nice));
  }
  return absl::OkStatus();
}

DutyCycle::DutyCycle(double share) : share_(share) { Restart(); }

void DutyCycle::Restart() {
  cpu_start_ns_ = ClockNs(CLOCK_THREAD_CPUTIME_ID);
  wall_start_ns_ = ClockNs(CLOCK_MONOTONIC);
}

void DutyCycle::Pace() {
  if (share_ >= 1.0) return;
  const int64_t cpu = ClockNs(CLOCK_THREAD_CPUTIME_ID) - cpu_start_ns_;
  const int64_t wall = ClockNs(CLOCK_MONOTONIC) - wall_start_ns_;
  // The wall time this much CPU needs at the share, less the wall time already passed.
  const int64_t owed = static_cast<int64_t>(static_cast<double>(cpu) / share_) - wall;
  if (owed >= kMinSleepNs) {
    std::this_thread::sleep_for(std::chrono::nanoseconds(owed));
    Restart();
  } else if (owed <= 0) {
    Restart();  // under the share (the thread waited for a core): no credit carried forward
  }
  // Else a little is owed: carry it until it is worth a sleep.
}

void LowerThreadPriority(int nice) {
  if (nice <= 0) return;
  const pid_t tid = gettid();
  errno = 0;
  const int current = getpriority(PRIO_PROCESS, static_cast<id_t>(tid));
  if (current == -1 && errno != 0) {
    LOG(WARNING) << "cannot read the training thread's priority: " << std::strerror(errno);
    return;
  }
  const int wanted = std::min(19, current + nice);
  if (setpriority(PRIO_PROCESS, static_cast<id_t>(tid), wanted) != 0) {
    LOG(WARNING) << "cannot lower the training thread's priority to nice " << wanted << ": "
                 << std::strerror(errno) << "; training runs at the serving priority";
  }
}

}  // namespace fedge::edge::runtime
