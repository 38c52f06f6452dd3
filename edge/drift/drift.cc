#include "edge/drift/drift.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status/status.h"

namespace fedge::edge::drift {
namespace {

constexpr absl::string_view kMagic = "fedge-drift-profile";
constexpr int kFormatVersion = 1;
constexpr int kMaxBins = 1000;

// sup |F_a − F_b| over two sorted samples. Both cursors step past every copy of the smaller
// current value before comparing, so ties between the samples are handled exactly.
template <typename A, typename B>
double KsSorted(const A* a, size_t n, const B* b, size_t m) {
  if (n == 0 || m == 0) return 0;
  size_t i = 0, j = 0;
  double d = 0;
  while (i < n && j < m) {
    const double x = std::min<double>(a[i], b[j]);
    while (i < n && a[i] <= x) ++i;
    while (j < m && b[j] <= x) ++j;
    d = std::max(d, std::abs(static_cast<double>(i) / n - static_cast<double>(j) / m));
  }
  // Once one side is exhausted its CDF is 1 and the other's only climbs towards 1.
  return d;
}

// Whitespace-token reader for Parse(); every getter fails with a message naming what it wanted.
class Tokens {
 public:
  explicit Tokens(absl::string_view text)
      : tokens_(absl::StrSplit(text, absl::ByAnyChar(" \t\r\n"), absl::SkipEmpty())) {}

  size_t remaining() const { return tokens_.size() - pos_; }

  absl::Status Expect(absl::string_view word) {
    if (pos_ >= tokens_.size() || tokens_[pos_] != word) {
      return absl::InvalidArgumentError(absl::StrCat("drift profile: expected '", word, "'"));
    }
    ++pos_;
    return absl::OkStatus();
  }
  absl::StatusOr<int64_t> Int(absl::string_view what, int64_t lo, int64_t hi) {
    int64_t v;
    if (pos_ >= tokens_.size() || !absl::SimpleAtoi(tokens_[pos_], &v) || v < lo || v > hi) {
      return absl::InvalidArgumentError(
          absl::StrCat("drift profile: bad ", what, " (want an integer in [", lo, ", ", hi, "])"));
    }
    ++pos_;
    return v;
  }
  absl::StatusOr<double> Double(absl::string_view what) {
    double v;
    if (pos_ >= tokens_.size() || !absl::SimpleAtod(tokens_[pos_], &v) || !std::isfinite(v)) {
      return absl::InvalidArgumentError(
          absl::StrCat("drift profile: bad ", what, " (want a finite number)"));
    }
    ++pos_;
    return v;
  }
  // A count that precedes that many values; bounded by what is left so garbage cannot make us
  // allocate.
  absl::StatusOr<int64_t> Count(absl::string_view what, int64_t lo, int64_t hi) {
    auto n = Int(what, lo, hi);
    if (n.ok() && *n > static_cast<int64_t>(remaining())) {
      return absl::InvalidArgumentError(
          absl::StrCat("drift profile: ", what, " ", *n, " exceeds the data that follows"));
    }
    return n;
  }

 private:
  std::vector<absl::string_view> tokens_;
  size_t pos_ = 0;
};

absl::Status CheckProportions(const std::vector<double>& p, absl::string_view what) {
  double sum = 0;
  for (double v : p) {
    if (v < 0) return absl::InvalidArgumentError(absl::StrCat("drift profile: negative ", what));
    sum += v;
  }
  if (std::abs(sum - 1) > 1e-6) {
    return absl::InvalidArgumentError(absl::StrCat("drift profile: ", what, " sum to ", sum));
  }
  return absl::OkStatus();
}

void AppendDouble(std::string* out, double v) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), " %.17g", v);
  out->append(buf);
}

void AppendFloat(std::string* out, float v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), " %.9g", static_cast<double>(v));
  out->append(buf);
}

}  // namespace

double Psi(const std::vector<double>& expected, const std::vector<double>& actual) {
  if (expected.size() != actual.size()) return std::numeric_limits<double>::quiet_NaN();
  double psi = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    const double e = std::max(expected[i], kPsiEpsilon);
    const double a = std::max(actual[i], kPsiEpsilon);
    psi += (a - e) * std::log(a / e);
  }
  return psi;
}

double KsStatistic(const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> sa = a, sb = b;
  std::sort(sa.begin(), sa.end());
  std::sort(sb.begin(), sb.end());
  return KsSorted(sa.data(), sa.size(), sb.data(), sb.size());
}

absl::StatusOr<ReferenceProfile> ReferenceProfile::Build(
    const std::vector<float>& rows, int num_features, const std::vector<int64_t>& predicted_labels,
    int num_classes, int bins) {
  if (num_features < 1) return absl::InvalidArgumentError("drift: num_features must be >= 1");
  if (bins < 2 || bins > kMaxBins) {
    return absl::InvalidArgumentError(absl::StrCat("drift: bins must be in [2, ", kMaxBins, "]"));
  }
  if (rows.empty() || rows.size() % num_features != 0) {
    return absl::InvalidArgumentError(absl::StrCat("drift: ", rows.size(),
                                                   " values are not a whole, non-zero number of "
                                                   "rows of ",
                                                   num_features, " features"));
  }
  const int64_t n = static_cast<int64_t>(rows.size() / num_features);
  if (num_classes < 0) return absl::InvalidArgumentError("drift: num_classes must be >= 0");
  if (num_classes == 0 && !predicted_labels.empty()) {
    return absl::InvalidArgumentError("drift: predicted labels given but num_classes is 0");
  }
  if (num_classes > 0 && static_cast<int64_t>(predicted_labels.size()) != n) {
    return absl::InvalidArgumentError(absl::StrCat("drift: ", predicted_labels.size(),
                                                   " predicted labels for ", n, " rows"));
  }
  for (float v : rows) {
    if (!std::isfinite(v)) return absl::InvalidArgumentError("drift: non-finite training value");
  }

  ReferenceProfile profile;
  profile.reference_rows_ = n;
  profile.features_.resize(num_features);
  std::vector<float> column(n);
  const int64_t k = std::min<int64_t>(kKsSketchSize, n);
  for (int f = 0; f < num_features; ++f) {
    for (int64_t r = 0; r < n; ++r) column[r] = rows[r * num_features + f];
    std::sort(column.begin(), column.end());
    Feature& feat = profile.features_[f];
    for (int j = 1; j < bins; ++j) {
      const double edge = column[std::min<int64_t>(j * n / bins, n - 1)];
      if (feat.edges.empty() || edge > feat.edges.back()) feat.edges.push_back(edge);
    }
    std::vector<int64_t> counts(feat.edges.size() + 1, 0);
    for (float v : column) {
      ++counts[std::upper_bound(feat.edges.begin(), feat.edges.end(), v) - feat.edges.begin()];
    }
    feat.proportions.resize(counts.size());
    for (size_t b = 0; b < counts.size(); ++b) {
      feat.proportions[b] = static_cast<double>(counts[b]) / n;
    }
    feat.sketch.resize(k);
    for (int64_t i = 0; i < k; ++i) {
      feat.sketch[i] = column[std::min<int64_t>((2 * i + 1) * n / (2 * k), n - 1)];
    }
  }
  if (num_classes > 0) {
    std::vector<int64_t> counts(num_classes, 0);
    for (int64_t label : predicted_labels) {
      if (label < 0 || label >= num_classes) {
        return absl::InvalidArgumentError(
            absl::StrCat("drift: predicted label ", label, " outside [0, ", num_classes, ")"));
      }
      ++counts[label];
    }
    profile.prediction_proportions_.resize(num_classes);
    for (int c = 0; c < num_classes; ++c) {
      profile.prediction_proportions_[c] = static_cast<double>(counts[c]) / n;
    }
  }
  return profile;
}

std::string ReferenceProfile::Serialize() const {
  std::string out = absl::StrCat(kMagic, " ", kFormatVersion, "\nrows ", reference_rows_,
                                 " features ", features_.size(), "\npredictions ",
                                 prediction_proportions_.size());
  for (double p : prediction_proportions_) AppendDouble(&out, p);
  for (size_t f = 0; f < features_.size(); ++f) {
    const Feature& feat = features_[f];
    absl::StrAppend(&out, "\nfeature ", f, "\nedges ", feat.edges.size());
    for (double e : feat.edges) AppendDouble(&out, e);
    absl::StrAppend(&out, "\nproportions ", feat.proportions.size());
    for (double p : feat.proportions) AppendDouble(&out, p);
    absl::StrAppend(&out, "\nsketch ", feat.sketch.size());
    for (float s : feat.sketch) AppendFloat(&out, s);
  }
  out.append("\n");
  return out;
}

absl::StatusOr<ReferenceProfile> ReferenceProfile::Parse(absl::string_view text) {
  Tokens in(text);
  FEDGE_RETURN_IF_ERROR(in.Expect(kMagic));
  FEDGE_ASSIGN_OR_RETURN(auto version, in.Int("format version", kFormatVersion, kFormatVersion));
  (void)version;
  ReferenceProfile profile;
  FEDGE_RETURN_IF_ERROR(in.Expect("rows"));
  FEDGE_ASSIGN_OR_RETURN(auto rows, in.Int("row count", 1, std::numeric_limits<int64_t>::max()));
  profile.reference_rows_ = rows;
  FEDGE_RETURN_IF_ERROR(in.Expect("features"));
  // Each feature takes at least 8 tokens, which bounds the count by the input.
  FEDGE_ASSIGN_OR_RETURN(auto num_features, in.Int("feature count", 1, 1 << 24));
  if (num_features > static_cast<int64_t>(in.remaining()) / 8) {
    return absl::InvalidArgumentError("drift profile: feature count exceeds the data");
  }
  FEDGE_RETURN_IF_ERROR(in.Expect("predictions"));
  FEDGE_ASSIGN_OR_RETURN(auto num_classes, in.Count("class count", 0, 1 << 24));
  for (int64_t c = 0; c < num_classes; ++c) {
    FEDGE_ASSIGN_OR_RETURN(auto p, in.Double("prediction proportion"));
    profile.prediction_proportions_.push_back(p);
  }
  if (num_classes > 0) {
    FEDGE_RETURN_IF_ERROR(CheckProportions(profile.prediction_proportions_, "prediction shares"));
  }
  profile.features_.resize(num_features);
  for (int64_t f = 0; f < num_features; ++f) {
    Feature& feat = profile.features_[f];
    FEDGE_RETURN_IF_ERROR(in.Expect("feature"));
    FEDGE_ASSIGN_OR_RETURN(auto index, in.Int("feature index", f, f));
    (void)index;
    FEDGE_RETURN_IF_ERROR(in.Expect("edges"));
    FEDGE_ASSIGN_OR_RETURN(auto num_edges, in.Count("edge count", 0, kMaxBins - 1));
    for (int64_t i = 0; i < num_edges; ++i) {
      FEDGE_ASSIGN_OR_RETURN(auto e, in.Double("edge"));
      if (!feat.edges.empty() && e <= feat.edges.back()) {
        return absl::InvalidArgumentError(
            absl::StrCat("drift profile: edges of feature ", f, " not strictly increasing"));
      }
      feat.edges.push_back(e);
    }
    FEDGE_RETURN_IF_ERROR(in.Expect("proportions"));
    FEDGE_ASSIGN_OR_RETURN(auto num_props, in.Count("proportion count", num_edges + 1, num_edges + 1));
    for (int64_t i = 0; i < num_props; ++i) {
      FEDGE_ASSIGN_OR_RETURN(auto p, in.Double("proportion"));
      feat.proportions.push_back(p);
    }
    FEDGE_RETURN_IF_ERROR(CheckProportions(feat.proportions, "bin proportions"));
    FEDGE_RETURN_IF_ERROR(in.Expect("sketch"));
    FEDGE_ASSIGN_OR_RETURN(auto num_sketch, in.Count("sketch size", 1, kKsSketchSize));
    for (int64_t i = 0; i < num_sketch; ++i) {
      FEDGE_ASSIGN_OR_RETURN(auto s, in.Double("sketch value"));
      const float v = static_cast<float>(s);
      if (!std::isfinite(v) || (!feat.sketch.empty() && v < feat.sketch.back())) {
        return absl::InvalidArgumentError(
            absl::StrCat("drift profile: sketch of feature ", f, " not sorted finite floats"));
      }
      feat.sketch.push_back(v);
    }
  }
  if (in.remaining() != 0) {
    return absl::InvalidArgumentError("drift profile: trailing data");
  }
  return profile;
}

Monitor::Monitor(ReferenceProfile profile, Options options)
    : profile_(std::move(profile)), options_([&options] {
        Options o = options;
        o.window = std::max(o.window, 1);
        o.sustained_windows = std::max(o.sustained_windows, 1);
        return o;
      }()) {
  const int nf = profile_.num_features();
  int64_t total = 0;
  for (int f = 0; f < nf; ++f) {
    bin_offset_.push_back(total);
    total += static_cast<int64_t>(profile_.feature(f).proportions.size());
  }
  MutexLock lock(&mu_);
  bin_counts_.assign(total, 0);
  values_.assign(static_cast<size_t>(nf) * options_.window, 0.0f);
  class_counts_.assign(profile_.num_classes(), 0);
}

std::optional<WindowResult> Monitor::Observe(const float* row, int64_t predicted_label) {
  const int nf = profile_.num_features();
  MutexLock lock(&mu_);
  const int64_t slot = rows_in_window_;
  for (int f = 0; f < nf; ++f) {
    const float x = row[f];
    const std::vector<double>& edges = profile_.feature(f).edges;
    const int64_t bin = std::isnan(x) ? static_cast<int64_t>(edges.size())
                                      : std::upper_bound(edges.begin(), edges.end(), x) -
                                            edges.begin();
    ++bin_counts_[bin_offset_[f] + bin];
    values_[static_cast<size_t>(f) * options_.window + slot] =
        std::isnan(x) ? std::numeric_limits<float>::infinity() : x;
  }
  if (predicted_label >= 0 && predicted_label < profile_.num_classes()) {
    ++class_counts_[predicted_label];
  }
  if (++rows_in_window_ < options_.window) return std::nullopt;
  return CloseWindowLocked();
}

WindowResult Monitor::CloseWindowLocked() {
  const int nf = profile_.num_features();
  const int64_t w = options_.window;
  WindowResult result;
  result.window_index = windows_done_++;
  result.psi.resize(nf);
  result.ks.resize(nf);
  std::vector<double> actual;
  for (int f = 0; f < nf; ++f) {
    const ReferenceProfile::Feature& feat = profile_.feature(f);
    actual.resize(feat.proportions.size());
    for (size_t b = 0; b < actual.size(); ++b) {
      actual[b] = static_cast<double>(bin_counts_[bin_offset_[f] + b]) / w;
    }
    result.psi[f] = Psi(feat.proportions, actual);
    float* values = values_.data() + static_cast<size_t>(f) * w;
    std::sort(values, values + w);
    result.ks[f] = KsSorted(feat.sketch.data(), feat.sketch.size(), values, w);
    const bool drifted = result.psi[f] >= options_.psi_threshold ||
                         (options_.ks_threshold > 0 && result.ks[f] >= options_.ks_threshold);
    if (drifted) result.drifted_features.push_back(f);
  }
  int64_t labelled = 0;
  for (int64_t c : class_counts_) labelled += c;
  if (labelled > 0) {
    actual.resize(class_counts_.size());
    for (size_t c = 0; c < actual.size(); ++c) {
      actual[c] = static_cast<double>(class_counts_[c]) / labelled;
    }
    result.prediction_psi = Psi(profile_.prediction_proportions(), actual);
  }
  result.drifted = !result.drifted_features.empty() ||
                   (options_.prediction_psi_threshold > 0 &&
                    result.prediction_psi >= options_.prediction_psi_threshold);
  streak_ = result.drifted ? streak_ + 1 : 0;
  if (streak_ >= options_.sustained_windows) {
    result.report = true;
    streak_ = 0;
  }

  std::fill(bin_counts_.begin(), bin_counts_.end(), 0);
  std::fill(class_counts_.begin(), class_counts_.end(), 0);
  rows_in_window_ = 0;
  last_ = result;
  return result;
}

WindowResult Monitor::Last() const {
  MutexLock lock(&mu_);
  return last_;
}


}  // namespace fedge::edge::drift
