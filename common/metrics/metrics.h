#ifndef FEDGE_COMMON_METRICS_METRICS_H_
#define FEDGE_COMMON_METRICS_METRICS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace fedge::metrics {

// The one metrics registry of the process. Every fedge metric is registered here and rendered
// by the plaintext /metrics endpoint.
prometheus::Registry& Registry();

// The naming rules every fedge metric follows (Prometheus conventions):
//  - lowercase snake case, prefix `fedge_`;
//  - counters end in `_total`;
//  - histograms are in base units and end in `_seconds` or `_bytes`;
//  - gauges do not end in `_total`.
enum class Kind { kCounter, kGauge, kHistogram };
absl::Status CheckName(absl::string_view name, Kind kind);

// Families are created once and live for the process; names are checked (a bad name is a
// programming error and aborts at start-up). Calling twice with one name returns the same family.
prometheus::Family<prometheus::Counter>& CounterFamily(const std::string& name,
                                                       const std::string& help);
prometheus::Family<prometheus::Gauge>& GaugeFamily(const std::string& name,
                                                   const std::string& help);
prometheus::Family<prometheus::Histogram>& HistogramFamily(const std::string& name,
                                                           const std::string& help);

// Bucket layouts shared by fedge histograms.
prometheus::Histogram::BucketBoundaries LatencyBuckets();  // 100 µs .. ~100 s
prometheus::Histogram::BucketBoundaries SizeBuckets();     // 1 KiB .. 1 GiB

// The Prometheus text exposition of Registry().
std::string RenderText();

}  // namespace fedge::metrics

#endif  // FEDGE_COMMON_METRICS_METRICS_H_
