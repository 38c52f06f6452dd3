#ifndef FEDGE_COMMON_DATA_FEDPROX_SYNTHETIC_H_
#define FEDGE_COMMON_DATA_FEDPROX_SYNTHETIC_H_

// Synthetic(α, β), the heterogeneous federated classification task of Li et al., "Federated
// Optimization in Heterogeneous Networks" (MLSys 2020, Section 5.1), after Shamir et al.
//
// Device k draws u_k ~ N(0, α²) and B_k ~ N(0, β²) (α and β are standard deviations), then
// W_k ∈ R^{C×D} and b_k ∈ R^C with entries ~ N(u_k, 1), and v_k ∈ R^D with entries
// ~ N(B_k, 1). Its samples are x ~ N(v_k, Σ), Σ diagonal with Σ_jj = j^{-1.2} (j = 1..D), and
// y = argmax(W_k x + b_k) (softmax does not move the argmax). α sets how much the devices'
// models differ, β how much their inputs do. The IID variant gives every device one W, b with
// entries ~ N(0, 1) and v = 0.
//
// Sample counts are 50 + round(LogNormal(4, 1.5)) by default: a median near 105 and, over 30
// devices, typically a largest device of about a thousand samples. (The paper's counts
// follow a power law; the lognormal is this reproduction's choice.)
//
// All randomness comes from one seeded generator; the same options give the same data.

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "common/data/dataset.h"

namespace fedge::data {

struct FedProxSyntheticOptions {
  double alpha = 1.0;
  double beta = 1.0;
  bool iid = false;  // one shared W, b ~ N(0, 1) and v = 0; alpha and beta are ignored
  int num_devices = 30;
  int num_features = 60;
  int num_classes = 10;
  // count = min_count + round(exp(N(count_log_mean, count_log_sigma²)))
  int64_t min_count = 50;
  double count_log_mean = 4.0;
  double count_log_sigma = 1.5;
  // The first round(train_fraction · count) samples are the device's training set, the rest
  // its test set (samples are i.i.d. within a device, so no shuffle is needed).
  double train_fraction = 0.8;
  uint64_t seed = 1;
};

struct FedProxDevice {
  Dataset train;
  Dataset test;
  // The device's generating model: y = argmax(weights · x + bias), weights row-major C×D.
  std::vector<double> weights;
  std::vector<double> bias;
  std::vector<double> mean;  // v_k
  double u = 0;              // u_k (0 in the IID variant)
  double b = 0;              // B_k (0 in the IID variant)
};

// Σ's diagonal: j^{-1.2} for j = 1..num_features.
std::vector<double> FedProxFeatureVariances(int num_features);

// INVALID_ARGUMENT on a non-positive size, a negative or non-finite alpha, beta or sigma, or a
// train_fraction outside (0, 1).
absl::StatusOr<std::vector<FedProxDevice>> GenerateFedProxSynthetic(
    const FedProxSyntheticOptions& options);

}  // namespace fedge::data

#endif  // FEDGE_COMMON_DATA_FEDPROX_SYNTHETIC_H_
