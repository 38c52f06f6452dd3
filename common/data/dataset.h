#ifndef FEDGE_COMMON_DATA_DATASET_H_
#define FEDGE_COMMON_DATA_DATASET_H_

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"

namespace fedge::data {

// Labelled samples, features row-major. Labels are class indices in [0, num_classes).
struct Dataset {
  std::vector<std::string> feature_names;
  std::vector<float> features;  // size() * num_features() values
  std::vector<int64_t> labels;

  int64_t num_features() const { return static_cast<int64_t>(feature_names.size()); }
  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  // Appends other's rows; INVALID_ARGUMENT if the feature names differ.
  absl::Status Append(const Dataset& other);
};

struct CsvOptions {
  // The column that holds the label. Every other column must be numeric.
  std::string label_column = "label";
  // Label names in class-index order. When set, a label cell may be one of these names or an
  // integer index; when empty, label cells must be integers >= 0.
  std::vector<std::string> label_names;
  // Larger input is refused with RESOURCE_EXHAUSTED before it is read: the whole file is held
  // in memory while it is parsed.
  int64_t max_bytes = int64_t{1} << 30;
};

// Parses CSV text with a header row. Errors are INVALID_ARGUMENT and name the source, the
// line and the column ("data.csv:14: column 'temp' (3): 'abc' is not a number").
absl::StatusOr<Dataset> ParseCsv(absl::string_view text, const CsvOptions& options,
                                 absl::string_view source_name);
absl::StatusOr<Dataset> ReadCsv(const std::string& path, const CsvOptions& options);

// Splits rows deterministically (seeded shuffle) into train and holdout.
void Split(const Dataset& all, double holdout_fraction, uint64_t seed, Dataset* train,
           Dataset* holdout);

// Per-feature mean and standard deviation (std floored at 1e-6).
struct FeatureStats {
  std::vector<float> mean;
  std::vector<float> std;
};
FeatureStats ComputeStats(const Dataset& data);

}  // namespace fedge::data

#endif  // FEDGE_COMMON_DATA_DATASET_H_
