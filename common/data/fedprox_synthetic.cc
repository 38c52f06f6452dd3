#include "common/data/fedprox_synthetic.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <utility>

#include "absl/random/distributions.h"
#include "absl/strings/str_cat.h"

namespace fedge::data {
namespace {

absl::Status Validate(const FedProxSyntheticOptions& o) {
  if (o.num_devices <= 0 || o.num_features <= 0 || o.num_classes <= 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("need num_devices > 0, num_features > 0 and num_classes > 1; got ",
                     o.num_devices, ", ", o.num_features, " and ", o.num_classes));
  }
  if (o.min_count < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_count is ", o.min_count, "; a device needs a train and a test sample"));
  }
  for (const auto& [name, value] : {std::pair<const char*, double>{"alpha", o.alpha},
                                    {"beta", o.beta},
                                    {"count_log_sigma", o.count_log_sigma}}) {
    if (!std::isfinite(value) || value < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, " is ", value, "; it must be finite and >= 0"));
    }
  }
  if (!std::isfinite(o.count_log_mean)) {
    return absl::InvalidArgumentError("count_log_mean is not finite");
  }
  if (!(o.train_fraction > 0 && o.train_fraction < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("train_fraction is ", o.train_fraction, "; it must be in (0, 1)"));
  }
  return absl::OkStatus();
}

// N(mean, stddev²), with stddev 0 giving `mean` itself (Synthetic(0, 0)).
double Normal(std::mt19937_64& rng, double mean, double stddev) {
  return stddev == 0 ? mean : absl::Gaussian<double>(rng, mean, stddev);
}

std::vector<double> Normals(std::mt19937_64& rng, size_t n, double mean) {
  std::vector<double> v(n);
  for (double& x : v) x = absl::Gaussian<double>(rng, mean, 1.0);
  return v;
}

}  // namespace

std::vector<double> FedProxFeatureVariances(int num_features) {
  std::vector<double> v(static_cast<size_t>(std::max(num_features, 0)));
  for (size_t j = 0; j < v.size(); ++j) v[j] = std::pow(static_cast<double>(j + 1), -1.2);
  return v;
}

absl::StatusOr<std::vector<FedProxDevice>> GenerateFedProxSynthetic(
    const FedProxSyntheticOptions& options) {
  if (absl::Status s = Validate(options); !s.ok()) return s;
  const size_t d = static_cast<size_t>(options.num_features);
  const size_t c = static_cast<size_t>(options.num_classes);
  std::mt19937_64 rng(options.seed);

  std::vector<std::string> names(d);
  for (size_t j = 0; j < d; ++j) names[j] = absl::StrCat("x", j);
  std::vector<double> stddev = FedProxFeatureVariances(options.num_features);
  for (double& s : stddev) s = std::sqrt(s);

  // Counts first, so that a device's count does not depend on how many draws its model took.
  std::vector<int64_t> counts(static_cast<size_t>(options.num_devices));
  for (int64_t& n : counts) {
    const double extra = std::exp(Normal(rng, options.count_log_mean, options.count_log_sigma));
    n = options.min_count + static_cast<int64_t>(std::llround(extra));
  }

  std::vector<double> shared_w, shared_b;
  if (options.iid) {
    shared_w = Normals(rng, c * d, 0.0);
    shared_b = Normals(rng, c, 0.0);
  }

  std::vector<FedProxDevice> devices(counts.size());
  for (size_t k = 0; k < devices.size(); ++k) {
    FedProxDevice& dev = devices[k];
    if (options.iid) {
      dev.weights = shared_w;
      dev.bias = shared_b;
      dev.mean.assign(d, 0.0);
    } else {
      dev.u = Normal(rng, 0.0, options.alpha);
      dev.b = Normal(rng, 0.0, options.beta);
      dev.weights = Normals(rng, c * d, dev.u);
      dev.bias = Normals(rng, c, dev.u);
      dev.mean = Normals(rng, d, dev.b);
    }
    const int64_t n = counts[k];
    int64_t n_train = std::llround(options.train_fraction * static_cast<double>(n));
    n_train = std::min(std::max<int64_t>(n_train, 1), n - 1);
    dev.train.feature_names = names;
    dev.test.feature_names = names;
    std::vector<float> row(d);
    for (int64_t i = 0; i < n; ++i) {
      for (size_t j = 0; j < d; ++j) {
        row[j] = static_cast<float>(absl::Gaussian<double>(rng, dev.mean[j], stddev[j]));
      }
      // The label comes from the stored (float) features, so it is exactly what a reader of
      // the dataset would compute from the device's model.
      int64_t label = 0;
      double best = -INFINITY;
      for (size_t cls = 0; cls < c; ++cls) {
        double z = dev.bias[cls];
        for (size_t j = 0; j < d; ++j) z += dev.weights[cls * d + j] * static_cast<double>(row[j]);
        if (z > best) {
          best = z;
          label = static_cast<int64_t>(cls);
        }
      }
      Dataset& out = i < n_train ? dev.train : dev.test;
      out.features.insert(out.features.end(), row.begin(), row.end());
      out.labels.push_back(label);
    }
  }
  return devices;
}

}  // namespace fedge::data
