#include "cloud/aggregation/rules.h"

#include <vector>

#include "common/status/status.h"

namespace fedge::cloud::aggregation {

absl::Status RoundAggregator::FoldEncoded(absl::string_view payload,
                                          const codec::CodecParams& params, int64_t num_samples,
                                          double scale) {
  FEDGE_ASSIGN_OR_RETURN(std::vector<float> delta,
                         codec::Decode(payload, params, num_elements()));
  if (scale != 1.0) {
    for (float& v : delta) v = static_cast<float>(v * scale);
  }
  return Fold({delta, num_samples});
}

}  // namespace fedge::cloud::aggregation
