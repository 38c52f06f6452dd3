#ifndef FEDGE_COMMON_TIME_CLOCK_H_
#define FEDGE_COMMON_TIME_CLOCK_H_

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace fedge {

// Injected time, so deadline, liveness and backoff logic can be driven by a fake in tests.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
  // The process-wide real clock.
  static Clock* Real();
};


}  // namespace fedge

#endif  // FEDGE_COMMON_TIME_CLOCK_H_
