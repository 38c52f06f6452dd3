#include "common/data/fedprox_synthetic.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "gtest/gtest.h"

namespace fedge::data {
namespace {

std::vector<FedProxDevice> Generate(const FedProxSyntheticOptions& options) {
  absl::StatusOr<std::vector<FedProxDevice>> devices = GenerateFedProxSynthetic(options);
  EXPECT_TRUE(devices.ok()) << devices.status();
  return devices.ok() ? *std::move(devices) : std::vector<FedProxDevice>{};
}

double Mean(const std::vector<double>& v) {
  return std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

TEST(FedProxSyntheticTest, LabelIsTheArgmaxOfTheDevicesOwnModel) {
  const std::vector<FedProxDevice> devices = Generate({});
  ASSERT_EQ(devices.size(), 30u);
  int64_t checked = 0;
  for (const FedProxDevice& dev : devices) {
    ASSERT_EQ(dev.weights.size(), 600u);
    ASSERT_EQ(dev.bias.size(), 10u);
    for (const Dataset* part : {&dev.train, &dev.test}) {
      ASSERT_EQ(part->num_features(), 60);
      for (int64_t i = 0; i < part->size(); ++i) {
        // Softmax probabilities, whose argmax is the label.
        std::vector<double> p(10);
        for (int c = 0; c < 10; ++c) {
          double z = dev.bias[c];
          for (int j = 0; j < 60; ++j) z += dev.weights[c * 60 + j] * part->features[i * 60 + j];
          p[c] = z;
        }
        const double top = *std::max_element(p.begin(), p.end());
        double total = 0;
        for (double& v : p) total += (v = std::exp(v - top));
        for (double& v : p) v /= total;
        const int64_t want = std::max_element(p.begin(), p.end()) - p.begin();
        ASSERT_EQ(part->labels[i], want) << "row " << i;
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 30 * 50);
}

TEST(FedProxSyntheticTest, FeatureVarianceFollowsSigma) {
  const std::vector<FedProxDevice> devices = Generate({});
  const std::vector<double> sigma = FedProxFeatureVariances(60);
  ASSERT_EQ(sigma.size(), 60u);
  EXPECT_DOUBLE_EQ(sigma[0], 1.0);
  EXPECT_NEAR(sigma[59], std::pow(60.0, -1.2), 1e-15);
  // Deviations from each device's own mean v_k pool into N(0, Σ_jj) per feature.
  std::vector<double> sum_sq(60, 0.0);
  int64_t n = 0;
  for (const FedProxDevice& dev : devices) {
    for (const Dataset* part : {&dev.train, &dev.test}) {
      for (int64_t i = 0; i < part->size(); ++i) {
        for (int j = 0; j < 60; ++j) {
          const double e = part->features[i * 60 + j] - dev.mean[j];
          sum_sq[j] += e * e;
        }
      }
      n += part->size();
    }
  }
  ASSERT_GT(n, 2000);
  for (int j = 0; j < 60; ++j) {
    const double var = sum_sq[j] / static_cast<double>(n);
    const double want = std::pow(j + 1.0, -1.2);
    EXPECT_NEAR(var / want, 1.0, 0.12) << "feature " << j;
  }
}

TEST(FedProxSyntheticTest, DeviceModelsCenterOnTheirOwnDraws) {
  FedProxSyntheticOptions options;
  options.alpha = 1;
  options.beta = 1;
  const std::vector<FedProxDevice> devices = Generate(options);
  std::vector<double> us;
  for (const FedProxDevice& dev : devices) {
    std::vector<double> wb = dev.weights;
    wb.insert(wb.end(), dev.bias.begin(), dev.bias.end());
    // 610 entries of N(u_k, 1) and 60 of N(B_k, 1): means within 5 standard errors.
    EXPECT_NEAR(Mean(wb), dev.u, 5 / std::sqrt(610.0));
    EXPECT_NEAR(Mean(dev.mean), dev.b, 5 / std::sqrt(60.0));
    us.push_back(dev.u);
  }
  // u_k ~ N(0, 1): across 30 devices they spread (sample std well above zero).
  double var = 0;
  for (double u : us) var += (u - Mean(us)) * (u - Mean(us));
  EXPECT_GT(std::sqrt(var / 29), 0.5);
}

TEST(FedProxSyntheticTest, IidDevicesShareOneModelAndZeroMean) {
  FedProxSyntheticOptions options;
  options.iid = true;
  const std::vector<FedProxDevice> devices = Generate(options);
  for (const FedProxDevice& dev : devices) {
    EXPECT_EQ(dev.weights, devices[0].weights);
    EXPECT_EQ(dev.bias, devices[0].bias);
    EXPECT_EQ(dev.mean, std::vector<double>(60, 0.0));
  }
  EXPECT_GT(std::abs(Mean(devices[0].weights)), 0.0);
}

TEST(FedProxSyntheticTest, CountsAreFiftyPlusLognormalAndSplitEightyTwenty) {
  FedProxSyntheticOptions options;
  options.num_devices = 400;
  options.num_features = 5;  // keep the test fast; counts do not depend on the width
  const std::vector<FedProxDevice> devices = Generate(options);
  std::vector<double> logs;
  int64_t largest = 0;
  for (const FedProxDevice& dev : devices) {
    const int64_t n = dev.train.size() + dev.test.size();
    ASSERT_GE(n, 50);
    largest = std::max(largest, n);
    EXPECT_EQ(dev.train.size(), std::llround(0.8 * n));
    logs.push_back(std::log(std::max<double>(n - 50, 1)));
  }
  // log(count − 50) ~ N(4, 1.5²): the sample mean within 5 standard errors (0.075).
  EXPECT_NEAR(Mean(logs), 4.0, 0.4);
  double var = 0;
  for (double l : logs) var += (l - Mean(logs)) * (l - Mean(logs));
  EXPECT_NEAR(std::sqrt(var / (logs.size() - 1)), 1.5, 0.25);
  EXPECT_GT(largest, 1000);
}

TEST(FedProxSyntheticTest, SameSeedSameDataOtherSeedOtherData) {
  FedProxSyntheticOptions options;
  options.seed = 7;
  const std::vector<FedProxDevice> a = Generate(options);
  const std::vector<FedProxDevice> b = Generate(options);
  options.seed = 8;
  const std::vector<FedProxDevice> c = Generate(options);
  ASSERT_EQ(a.size(), b.size());
  for (size_t k = 0; k < a.size(); ++k) {
    EXPECT_EQ(a[k].train.features, b[k].train.features);
    EXPECT_EQ(a[k].train.labels, b[k].train.labels);
    EXPECT_EQ(a[k].test.labels, b[k].test.labels);
  }
  EXPECT_NE(a[0].train.features, c[0].train.features);
}

TEST(FedProxSyntheticTest, RefusesBadOptions) {
  FedProxSyntheticOptions options;
  options.alpha = -1;
  EXPECT_EQ(GenerateFedProxSynthetic(options).status().code(), absl::StatusCode::kInvalidArgument);
  options = {};
  options.train_fraction = 1.0;
  EXPECT_EQ(GenerateFedProxSynthetic(options).status().code(), absl::StatusCode::kInvalidArgument);
  options = {};
  options.num_devices = 0;
  EXPECT_EQ(GenerateFedProxSynthetic(options).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fedge::data
