#ifndef FEDGE_CLOUD_AGGREGATION_STRATEGY_H_
#define FEDGE_CLOUD_AGGREGATION_STRATEGY_H_

// A job's aggregation strategy, the one object the coordinator drives:
//
//   configure a round   BeginRound(); proximal_mu() is what the edges are told
//   fold an update      Fold(), from many threads (Merge() adds a partial aggregate made
//                       elsewhere, for hierarchical aggregation)
//   finish              Finish(base): the rule's aggregate delta, stepped by the server
//                       optimizer into the next global model
//
// FedAvg is the default configuration; FedProx is FedAvg with proximal_mu > 0 (the term lives
// in the edges' local loss); the robust rules and the adaptive server optimizers are picked by
// name.

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "cloud/aggregation/robust.h"
#include "cloud/aggregation/rules.h"
#include "cloud/aggregation/server_optimizer.h"
#include "common/sync/mutex.h"
#include "common/tensor/flat.h"

namespace fedge::cloud::aggregation {

struct StrategyConfig {
  std::string rule = "fedavg";  // see MakeRoundAggregator
  RuleParams params;
  std::string server_optimizer = "none";  // see MakeServerOptimizer
  AdaptiveOptions server;
  double proximal_mu = 0;  // FedProx; must be finite and >= 0
};

class Strategy {
 public:
  // INVALID_ARGUMENT, naming the field, for an unknown rule or optimizer or a bad parameter.
  static absl::StatusOr<std::unique_ptr<Strategy>> Create(const StrategyConfig& config,
                                                          int64_t num_elements);

  // E.g. "fedavg", "fedprox(mu=1)", "fedprox(mu=0.1)+krum(f=1)+clip(2)+fedadam(lr=0.01)".
  std::string name() const;
  double proximal_mu() const { return config_.proximal_mu; }
  const StrategyConfig& config() const { return config_; }

  // Starts a round: what was folded before is discarded.
  void BeginRound();
  absl::Status Fold(const UpdateView& update);
  // See RoundAggregator::FoldEncoded: the payload must have passed codec::Inspect.
  absl::Status FoldEncoded(absl::string_view payload, const codec::CodecParams& params,
                           int64_t num_samples, double scale = 1.0);
  absl::Status Merge(Strategy& other);
  int folded() const;
  // The next global model. FAILED_PRECONDITION if too few updates were folded for the rule;
  // then the optimizer's state is unchanged.
  absl::StatusOr<FlatTensor> Finish(absl::Span<const float> base);

  // The server optimizer's state across rounds (empty for a stateless one).
  std::string SaveState() const;
  absl::Status LoadState(absl::string_view state);

 private:
  Strategy(const StrategyConfig& config, int64_t num_elements,
           std::unique_ptr<ServerOptimizer> optimizer);
  absl::StatusOr<std::unique_ptr<RoundAggregator>> NewAggregator() const;

  const StrategyConfig config_;
  const int64_t num_elements_;
  const std::unique_ptr<ServerOptimizer> optimizer_;
  mutable Mutex mu_;
  // Fold and Merge hold a reference while they run, so BeginRound may swap it concurrently.
  std::shared_ptr<RoundAggregator> round_ ABSL_GUARDED_BY(mu_);
};

// FedBuff's staleness weighting (Nguyen et al. 2022): an update that started from a model
// `staleness` server steps old is scaled by 1 / (1 + staleness)^exponent before it is folded.
// 1 for a fresh update; staleness < 0 is treated as 0.
double StalenessScale(int staleness, double exponent);

}  // namespace fedge::cloud::aggregation

#endif  // FEDGE_CLOUD_AGGREGATION_STRATEGY_H_
