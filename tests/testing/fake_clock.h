#ifndef FEDGE_TESTS_TESTING_FAKE_CLOCK_H_
#define FEDGE_TESTS_TESTING_FAKE_CLOCK_H_

#include "common/sync/mutex.h"
#include "common/time/clock.h"

namespace fedge::testing {

// A clock that moves only when the test says so.
class FakeClock : public Clock {
 public:
  explicit FakeClock(absl::Time start = absl::FromUnixSeconds(1700000000)) : now_(start) {}
  absl::Time Now() const override {
    MutexLock lock(&mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    MutexLock lock(&mu_);
    now_ += d;
  }

 private:
  mutable Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fedge::testing

#endif  // FEDGE_TESTS_TESTING_FAKE_CLOCK_H_
