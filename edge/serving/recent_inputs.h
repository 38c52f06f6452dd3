#ifndef FEDGE_EDGE_SERVING_RECENT_INPUTS_H_
#define FEDGE_EDGE_SERVING_RECENT_INPUTS_H_

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/types/span.h"
#include "common/sync/mutex.h"

namespace fedge::edge::serving {

// The input rows of recent predictions, by prediction id, so that a label arriving later
// through Feedback can become a labelled sample. Bounded by rows and by bytes (wide inputs,
// such as raw sensor windows, hit the byte bound first); the oldest are forgotten first.
// Thread-safe.
class RecentInputs {
 public:
  struct Options {
    size_t max_rows = 100000;
    size_t max_bytes = size_t{32} << 20;  // feature bytes held
  };
  explicit RecentInputs(Options options) : options_(options) {}

  void Remember(const std::string& prediction_id, const float* row, int64_t width);
  // The rows of one request at once (one lock for the batch): rows holds
  // prediction_ids.size() rows of `width` values, row i belonging to prediction_ids[i].
  void RememberAll(absl::Span<const std::string> prediction_ids, const float* rows, int64_t width);
  // The row of a remembered prediction, forgetting it (a prediction is labelled once);
  // nullopt if it was never remembered or has been forgotten.
  std::optional<std::vector<float>> Take(const std::string& prediction_id);

  size_t rows() const;
  size_t bytes() const;

 private:
  void ForgetOldestLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  mutable Mutex mu_;
  std::unordered_map<std::string, std::vector<float>> rows_ ABSL_GUARDED_BY(mu_);
  // Ids in arrival order, oldest first; taken ids stay until they reach the front.
  std::deque<std::string> order_ ABSL_GUARDED_BY(mu_);
  size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace fedge::edge::serving

#endif  // FEDGE_EDGE_SERVING_RECENT_INPUTS_H_
