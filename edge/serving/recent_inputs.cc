#include "edge/serving/recent_inputs.h"

namespace fedge::edge::serving {

void RecentInputs::Remember(const std::string& prediction_id, const float* row, int64_t width) {
  RememberAll(absl::MakeConstSpan(&prediction_id, 1), row, width);
}

void RecentInputs::RememberAll(absl::Span<const std::string> prediction_ids, const float* rows,
                               int64_t width) {
  const size_t size = static_cast<size_t>(width) * sizeof(float);
  if (options_.max_rows == 0 || size > options_.max_bytes) return;
  MutexLock lock(&mu_);
  for (size_t i = 0; i < prediction_ids.size(); ++i) {
    const float* row = rows + static_cast<int64_t>(i) * width;
    auto [it, inserted] = rows_.try_emplace(prediction_ids[i], row, row + width);
    if (!inserted) continue;  // ids are unique; keep the first
    order_.push_back(prediction_ids[i]);
    bytes_ += size;
  }
  while (order_.size() > options_.max_rows || bytes_ > options_.max_bytes) ForgetOldestLocked();
}

void RecentInputs::ForgetOldestLocked() {
  auto it = rows_.find(order_.front());
  if (it != rows_.end()) {
    bytes_ -= it->second.size() * sizeof(float);
    rows_.erase(it);
  }
  order_.pop_front();
}

std::optional<std::vector<float>> RecentInputs::Take(const std::string& prediction_id) {
  MutexLock lock(&mu_);
  auto it = rows_.find(prediction_id);
  if (it == rows_.end()) return std::nullopt;
  std::vector<float> row = std::move(it->second);
  bytes_ -= row.size() * sizeof(float);
  rows_.erase(it);
  return row;
}

size_t RecentInputs::rows() const {
  MutexLock lock(&mu_);
  return rows_.size();
}

size_t RecentInputs::bytes() const {
  MutexLock lock(&mu_);
  return bytes_;
}

}  // namespace fedge::edge::serving
