#include "common/metrics/metrics.h"

#include <map>
#include <mutex>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "prometheus/text_serializer.h"

namespace fedge::metrics {

prometheus::Registry& Registry() {
  static prometheus::Registry* registry = new prometheus::Registry;
  return *registry;
}

absl::Status CheckName(absl::string_view name, Kind kind) {
  if (!absl::StartsWith(name, "fedge_") || name.size() <= 6) {
    return absl::InvalidArgumentError(absl::StrCat("metric '", name, "' must start with fedge_"));
  }
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) {
      return absl::InvalidArgumentError(
          absl::StrCat("metric '", name, "' must be lowercase snake case"));
    }
  }
  const bool total = absl::EndsWith(name, "_total");
  switch (kind) {
    case Kind::kCounter:
      if (!total) {
        return absl::InvalidArgumentError(absl::StrCat("counter '", name, "' must end in _total"));
      }
      break;
    case Kind::kGauge:
      if (total) {
        return absl::InvalidArgumentError(
            absl::StrCat("gauge '", name, "' must not end in _total"));
      }
      break;
    case Kind::kHistogram:
      if (!absl::EndsWith(name, "_seconds") && !absl::EndsWith(name, "_bytes")) {
        return absl::InvalidArgumentError(
            absl::StrCat("histogram '", name, "' must be in base units (_seconds or _bytes)"));
      }
      break;
  }
  return absl::OkStatus();
}

namespace {

// prometheus-cpp refuses a second family of the same name, so families are memoized by name.
std::mutex& FamiliesMutex() {
  static std::mutex* mu = new std::mutex;
  return *mu;
}

template <typename T, typename Builder>
prometheus::Family<T>& GetOrAdd(const std::string& name, const std::string& help, Kind kind,
                                Builder builder) {
  static std::map<std::string, prometheus::Family<T>*>* families =
      new std::map<std::string, prometheus::Family<T>*>;
  std::lock_guard<std::mutex> lock(FamiliesMutex());
  auto it = families->find(name);
  if (it != families->end()) return *it->second;
  absl::Status st = CheckName(name, kind);
  CHECK(st.ok()) << st;
  auto& family = builder.Name(name).Help(help).Register(Registry());
  (*families)[name] = &family;
  return family;
}

}  // namespace

prometheus::Family<prometheus::Counter>& CounterFamily(const std::string& name,
                                                       const std::string& help) {
  return GetOrAdd<prometheus::Counter>(name, help, Kind::kCounter, prometheus::BuildCounter());
}

prometheus::Family<prometheus::Gauge>& GaugeFamily(const std::string& name,
                                                   const std::string& help) {
  return GetOrAdd<prometheus::Gauge>(name, help, Kind::kGauge, prometheus::BuildGauge());
}

prometheus::Family<prometheus::Histogram>& HistogramFamily(const std::string& name,
                                                           const std::string& help) {
  return GetOrAdd<prometheus::Histogram>(name, help, Kind::kHistogram,
                                         prometheus::BuildHistogram());
}

prometheus::Histogram::BucketBoundaries LatencyBuckets() {
  prometheus::Histogram::BucketBoundaries b;
  for (double v = 1e-4; v < 200; v *= 2.5) b.push_back(v);
  return b;
}

prometheus::Histogram::BucketBoundaries SizeBuckets() {
  prometheus::Histogram::BucketBoundaries b;
  for (double v = 1024; v <= 1024.0 * 1024 * 1024; v *= 4) b.push_back(v);
  return b;
}

std::string RenderText() {
  return prometheus::TextSerializer().Serialize(Registry().Collect());
}

}  // namespace fedge::metrics
