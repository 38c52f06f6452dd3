#include "edge/serving/health.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace fedge::edge::serving {

HealthTracker::HealthTracker(Options options) : options_([&] {
  options.latency_samples = std::max<size_t>(1, options.latency_samples);
  options.max_remembered_predictions = std::max<size_t>(1, options.max_remembered_predictions);
  return options;
}()) {}

void HealthTracker::Reset(const std::string& sha256) {
  MutexLock lock(&mu_);
  stats_.erase(sha256);
}

std::string HealthTracker::ModelOf(const std::string& prediction_id) const {
  MutexLock lock(&mu_);
  auto it = predictions_.find(prediction_id);
  if (it == predictions_.end()) return "";
  auto stats = stats_.find(*it->second.sha256);
  return stats == stats_.end() ? "" : stats->second.ref.model();
}

HealthTracker::VersionStats& HealthTracker::StatsLocked(const v1::VersionRef& version) {
  auto [it, inserted] = stats_.try_emplace(version.sha256());
  if (inserted) {
    it->second.ref = version;
    it->second.sha256 = std::make_shared<const std::string>(version.sha256());
    it->second.first_seen = options_.clock->Now();
  }
  return it->second;
}

void HealthTracker::AddLatencyLocked(VersionStats& stats, absl::Duration latency) {
  const double ms = absl::ToDoubleMilliseconds(latency);
  if (stats.latencies_ms.size() < options_.latency_samples) {
    stats.latencies_ms.push_back(ms);
  } else {
    stats.latencies_ms[stats.next] = ms;
    stats.next = (stats.next + 1) % stats.latencies_ms.size();
  }
}

void HealthTracker::RecordPrediction(const v1::VersionRef& version,
                                     const std::string& prediction_id, int32_t predicted_label,
                                     absl::Duration latency) {
  RecordPredictions(version, absl::MakeConstSpan(&prediction_id, 1),
                    absl::MakeConstSpan(&predicted_label, 1), latency);
}

void HealthTracker::RecordPredictions(const v1::VersionRef& version,
                                      absl::Span<const std::string> prediction_ids,
                                      absl::Span<const int32_t> predicted_labels,
                                      absl::Duration latency) {
  const size_t n = std::min(prediction_ids.size(), predicted_labels.size());
  MutexLock lock(&mu_);
  VersionStats& stats = StatsLocked(version);
  for (size_t i = 0; i < n; ++i) {
    ++stats.predictions;
    AddLatencyLocked(stats, latency);
    predictions_[prediction_ids[i]] = Remembered{stats.sha256, predicted_labels[i], false};
    order_.push_back(prediction_ids[i]);
  }
  while (order_.size() > options_.max_remembered_predictions) {
    predictions_.erase(order_.front());
    order_.pop_front();
  }
}

void HealthTracker::RecordFailure(const v1::VersionRef& version, absl::Duration latency) {
  MutexLock lock(&mu_);
  VersionStats& stats = StatsLocked(version);
  ++stats.predictions;
  ++stats.errors;
  AddLatencyLocked(stats, latency);
}

absl::StatusOr<HealthTracker::FeedbackResult> HealthTracker::RecordFeedback(
    const std::string& prediction_id, int32_t label) {
  MutexLock lock(&mu_);
  auto it = predictions_.find(prediction_id);
  if (it == predictions_.end()) {
    return absl::NotFoundError(absl::StrCat(
        "prediction id '", prediction_id,
        "' is unknown or too old (the edge remembers the last ",
        options_.max_remembered_predictions, " predictions)"));
  }
  if (it->second.labelled) {
    return absl::AlreadyExistsError(
        absl::StrCat("prediction '", prediction_id, "' already has a label"));
  }
  it->second.labelled = true;
  FeedbackResult result;
  result.correct = it->second.label == label;
  auto stats = stats_.find(*it->second.sha256);
  if (stats != stats_.end()) {
    ++stats->second.feedback;
    stats->second.feedback_correct += result.correct;
    result.version = stats->second.ref;
  }
  return result;
}

std::vector<v1::HealthReport> HealthTracker::Reports(
    const std::map<std::string, v1::VersionRef>& active) const {
  std::vector<v1::HealthReport> out;
  const absl::Time now = options_.clock->Now();
  MutexLock lock(&mu_);
  for (const auto& [model, ref] : active) {
    v1::HealthReport r;
    r.set_model(model);
    *r.mutable_version() = ref;
    r.set_sent_unix_ms(absl::ToUnixMillis(now));
    auto it = stats_.find(ref.sha256());
    if (it != stats_.end()) {
      const VersionStats& s = it->second;
      r.set_window_ms(absl::ToInt64Milliseconds(now - s.first_seen));
      r.set_predictions(s.predictions);
      r.set_errors(s.errors);
      r.set_feedback(s.feedback);
      r.set_feedback_correct(s.feedback_correct);
      if (!s.latencies_ms.empty()) {
        std::vector<double> sorted = s.latencies_ms;
        const size_t k = static_cast<size_t>(std::ceil(0.99 * sorted.size())) - 1;
        std::nth_element(sorted.begin(), sorted.begin() + k, sorted.end());
        r.set_p99_latency_ms(sorted[k]);
      }
    }
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace fedge::edge::serving
