#ifndef FEDGE_COMMON_DATA_SYNTHETIC_H_
#define FEDGE_COMMON_DATA_SYNTHETIC_H_

#include <cstdint>
#include <string>
#include <vector>

#include "common/data/dataset.h"

namespace fedge::data {

// The built-in synthetic IoT task: multi-sensor machine-health classification. Each site is a
// plant with its own mix of machine states (label skew) and its own sensor offsets (ambient
// temperature, supply voltage), so the data is non-IID across sites and no single site sees
// enough of every state to learn the whole task. All sites share one underlying physics, so a
// model federated across them approaches one trained on the pooled data.
struct SyntheticOptions {
  int num_sites = 4;
  uint64_t seed = 1;
  // 0: covariate shift off. 1.0: a shift of about one standard deviation on several sensors,
  // the way a recalibrated or ageing sensor looks.
  double drift = 0.0;
  // 0: summary features per sensor (for the MLP). > 0: raw windows of this many time steps per
  // sensor channel, flattened channel-major (for the 1-D conv net).
  int window = 0;
};

// Class names of the machine states, in class-index order.
const std::vector<std::string>& SyntheticLabels();
std::vector<std::string> SyntheticFeatureNames(const SyntheticOptions& options);
// Channels in window mode.
int SyntheticChannels();

// `count` samples of site `site` (0-based, < num_sites). Deterministic in (options, site, count,
// stream): different `stream` values give independent samples of the same distribution.
Dataset GenerateSite(const SyntheticOptions& options, int site, int64_t count,
                     uint64_t stream = 0);

// A holdout drawn from every site equally: the fleet-wide task the global model is scored on.
Dataset GenerateHoldout(const SyntheticOptions& options, int64_t count);

}  // namespace fedge::data

#endif  // FEDGE_COMMON_DATA_SYNTHETIC_H_
