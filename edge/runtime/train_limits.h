#ifndef FEDGE_EDGE_RUNTIME_TRAIN_LIMITS_H_
#define FEDGE_EDGE_RUNTIME_TRAIN_LIMITS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace fedge::edge::runtime {

// How much of the machine local fine-tuning may take, so that it never starves Predict on a
// small gateway. The defaults change nothing; the edge node sets its own (one thread, half a
// core, nice +10).
struct TrainLimits {
  // Intra-op threads of the training thread; 0: the process setting. Serving threads keep
  // theirs (see torchlib::TrainOptions::threads).
  int threads = 0;
  // (0, 1]: the most of one core the training thread uses, paced after every batch; 1: no cap.
  double cpu_share = 1.0;
  // Added to the training thread's nice value (a lower scheduling priority); 0: unchanged.
  int nice = 0;
  // When a task accepts partial work, training stops early enough to leave this much time
  // before the deadline for the upload.
  absl::Duration upload_margin = absl::Seconds(1);
};

// INVALID_ARGUMENT for a negative thread count, a share outside (0, 1] or a negative nice.
absl::Status ValidateTrainLimits(const TrainLimits& limits);

// Keeps the thread that created it at or below `share` of one core. Call Pace() on that thread
// between units of work: it compares the thread's CPU time (CLOCK_THREAD_CPUTIME_ID) with the
// wall time since the last pause and sleeps off the excess, once the excess reaches a
// millisecond. Time the thread spent waiting for a core (preempted by serving) is not owed
// back later, so the cap never turns into a burst. Not thread-safe: one thread paces itself.
class DutyCycle {
 public:
  explicit DutyCycle(double share);
  void Pace();

 private:
  void Restart();

  const double share_;
  int64_t cpu_start_ns_ = 0;
  int64_t wall_start_ns_ = 0;
};

// Adds `nice` to the calling thread's nice value (setpriority on its thread id). Logs a
// warning and carries on if the system refuses.
void LowerThreadPriority(int nice);

}  // namespace fedge::edge::runtime

#endif  // FEDGE_EDGE_RUNTIME_TRAIN_LIMITS_H_
