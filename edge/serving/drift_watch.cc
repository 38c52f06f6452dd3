#include "edge/serving/drift_watch.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/metrics/metrics.h"
#include "common/status/status.h"
#include "glog/logging.h"

namespace fedge::edge::serving {
namespace {

prometheus::Counter& WindowsCounter(const std::string& result) {
  return metrics::CounterFamily("fedge_edge_drift_windows_total",
                                "Input windows checked for drift, by result (stable, drifted).")
      .Add({{"result", result}});
}

prometheus::Counter& ReportsCounter() {
  static auto& c = metrics::CounterFamily("fedge_edge_drift_reports_total",
                                          "Sustained drift reported to the cloud.")
                       .Add({});
  return c;
}

prometheus::Gauge& PsiGauge(const std::string& feature) {
  // Bounded: one series per feature of the served model.
  return metrics::GaugeFamily("fedge_edge_drift_psi",
                              "Population stability index of the last input window, per feature.")
      .Add({{"feature", feature}});
}

}  // namespace

DriftWatch::DriftWatch(Options options) : options_(std::move(options)) {
  for (const char* r : {"stable", "drifted"}) WindowsCounter(r);
  ReportsCounter();
}

absl::Status DriftWatch::Prepare(const runtime::LoadedModel& loaded) {
  if (!options_.reference) return absl::OkStatus();
  {
    MutexLock lock(&mu_);
    if (by_sha_.count(loaded.ref.sha256()) > 0) return absl::OkStatus();
  }
  const data::Dataset reference = options_.reference();
  const data::Dataset* ref = &reference;
  if (ref->size() == 0) return absl::OkStatus();
  if (ref->num_features() != loaded.contract.feature_names_size()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "local data has ", ref->num_features(), " features; ", loaded.ref.model(), " takes ",
        loaded.contract.feature_names_size(), "; drift is not watched"));
  }
  FEDGE_ASSIGN_OR_RETURN(auto predictions,
                         loaded.model->Predict(ref->features, ref->num_features()));
  std::vector<int64_t> labels;
  labels.reserve(predictions.size());
  for (const auto& p : predictions) labels.push_back(p.label);
  FEDGE_ASSIGN_OR_RETURN(
      drift::ReferenceProfile profile,
      drift::ReferenceProfile::Build(ref->features, static_cast<int>(ref->num_features()), labels,
                                     loaded.contract.labels_size()));
  auto watched = std::make_shared<Watched>();
  watched->ref = loaded.ref;
  watched->feature_names.assign(loaded.contract.feature_names().begin(),
                                loaded.contract.feature_names().end());
  watched->monitor = std::make_unique<drift::Monitor>(std::move(profile), options_.monitor);
  MutexLock lock(&mu_);
  by_sha_[loaded.ref.sha256()] = std::move(watched);
  return absl::OkStatus();
}

void DriftWatch::Observe(const v1::VersionRef& version, const float* row,
                         int64_t predicted_label) {
  // The width only steps between rows, so one row needs none.
  ObserveAll(version, row, 0, absl::MakeConstSpan(&predicted_label, 1));
}

void DriftWatch::ObserveAll(const v1::VersionRef& version, const float* rows, int64_t width,
                            absl::Span<const int64_t> predicted_labels) {
  std::shared_ptr<Watched> watched;
  {
    MutexLock lock(&mu_);
    auto it = by_sha_.find(version.sha256());
    if (it == by_sha_.end()) return;
    watched = it->second;
  }
  for (size_t i = 0; i < predicted_labels.size(); ++i) {
    auto result =
        watched->monitor->Observe(rows + static_cast<int64_t>(i) * width, predicted_labels[i]);
    if (result.has_value()) Publish(*watched, *result);
  }
}

void DriftWatch::Publish(const Watched& watched, const drift::WindowResult& result) {
  WindowsCounter(result.drifted ? "drifted" : "stable").Increment();
  for (size_t i = 0; i < result.psi.size() && i < watched.feature_names.size(); ++i) {
    PsiGauge(watched.feature_names[i]).Set(result.psi[i]);
  }
  if (!result.report) return;
  v1::DriftReport report;
  report.set_model(watched.ref.model());
  *report.mutable_version() = watched.ref;
  report.set_window_index(result.window_index);
  report.set_window_rows(options_.monitor.window);
  for (int f : result.drifted_features) {
    report.add_drifted_features(watched.feature_names[static_cast<size_t>(f)]);
  }
  for (size_t i = 0; i < watched.feature_names.size(); ++i) {
    if (i < result.psi.size()) (*report.mutable_psi())[watched.feature_names[i]] = result.psi[i];
    if (i < result.ks.size()) (*report.mutable_ks())[watched.feature_names[i]] = result.ks[i];
  }
  report.set_prediction_psi(result.prediction_psi);
  report.set_sent_unix_ms(absl::ToUnixMillis(absl::Now()));
  ReportsCounter().Increment();
  LOG(WARNING) << "drift in " << watched.ref.model() << " v" << watched.ref.version()
               << " inputs, window " << result.window_index << ": "
               << report.drifted_features_size() << " feature(s) over the threshold";
  MutexLock lock(&mu_);
  pending_.push_back(std::move(report));
  while (pending_.size() > options_.max_pending_reports) pending_.pop_front();
}

std::vector<v1::DriftReport> DriftWatch::TakeReports() {
  MutexLock lock(&mu_);
  std::vector<v1::DriftReport> out(pending_.begin(), pending_.end());
  pending_.clear();
  return out;
}

}  // namespace fedge::edge::serving
