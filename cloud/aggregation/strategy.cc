#include "cloud/aggregation/strategy.h"

#include <cmath>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status/status.h"

namespace fedge::cloud::aggregation {

absl::StatusOr<std::unique_ptr<Strategy>> Strategy::Create(const StrategyConfig& config,
                                                           int64_t num_elements) {
  if (!std::isfinite(config.proximal_mu) || config.proximal_mu < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("proximal_mu is ", config.proximal_mu, "; it must be finite and >= 0"));
  }
  // Building one aggregator checks the rule's name and parameters now, not at the first round.
  FEDGE_RETURN_IF_ERROR(MakeRoundAggregator(config.rule, num_elements, config.params).status());
  FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<ServerOptimizer> optimizer,
                         MakeServerOptimizer(config.server_optimizer.empty()
                                                 ? std::string("none")
                                                 : config.server_optimizer,
                                             num_elements, config.server));
  std::unique_ptr<Strategy> strategy(new Strategy(config, num_elements, std::move(optimizer)));
  strategy->BeginRound();
  return strategy;
}

Strategy::Strategy(const StrategyConfig& config, int64_t num_elements,
                   std::unique_ptr<ServerOptimizer> optimizer)
    : config_(config), num_elements_(num_elements), optimizer_(std::move(optimizer)) {}

std::string Strategy::name() const {
  std::vector<std::string> parts;
  const bool mean = config_.rule.empty() || config_.rule == "fedavg" || config_.rule == "mean";
  if (config_.proximal_mu > 0) {
    parts.push_back(absl::StrCat("fedprox(mu=", config_.proximal_mu, ")"));
  } else if (mean) {
    parts.push_back("fedavg");
  }
  if (!mean) {
    const RuleParams& p = config_.params;
    if (config_.rule == "trimmed_mean") {
      parts.push_back(absl::StrCat("trimmed_mean(", p.trim_fraction, ")"));
    } else if (config_.rule == "krum" || config_.rule == "multi_krum") {
      parts.push_back(p.multi_krum > 1
                          ? absl::StrCat("multi_krum(f=", p.byzantine, ",m=", p.multi_krum, ")")
                          : absl::StrCat("krum(f=", p.byzantine, ")"));
    } else {
      parts.push_back(config_.rule);
    }
  }
  if (config_.params.clip_norm > 0) parts.push_back(absl::StrCat("clip(", config_.params.clip_norm, ")"));
  const std::string opt = optimizer_->name();
  if (opt != "none") parts.push_back(absl::StrCat(opt, "(lr=", config_.server.server_lr, ")"));
  return absl::StrJoin(parts, "+");
}

absl::StatusOr<std::unique_ptr<RoundAggregator>> Strategy::NewAggregator() const {
  return MakeRoundAggregator(config_.rule.empty() ? std::string("fedavg") : config_.rule,
                             num_elements_, config_.params);
}

void Strategy::BeginRound() {
  // Create() built one with the same arguments, so this cannot fail.
  auto aggregator = NewAggregator();
  MutexLock lock(&mu_);
  round_ = std::shared_ptr<RoundAggregator>(std::move(*aggregator));
}

absl::Status Strategy::Fold(const UpdateView& update) {
  std::shared_ptr<RoundAggregator> round;
  {
    MutexLock lock(&mu_);
    round = round_;
  }
  return round->Fold(update);
}

absl::Status Strategy::FoldEncoded(absl::string_view payload, const codec::CodecParams& params,
                                   int64_t num_samples, double scale) {
  std::shared_ptr<RoundAggregator> round;
  {
    MutexLock lock(&mu_);
    round = round_;
  }
  return round->FoldEncoded(payload, params, num_samples, scale);
}

absl::Status Strategy::Merge(Strategy& other) {
  if (&other == this) return absl::InvalidArgumentError("a strategy cannot merge itself");
  std::shared_ptr<RoundAggregator> mine, theirs;
  {
    MutexLock lock(&mu_);
    mine = round_;
  }
  {
    MutexLock lock(&other.mu_);
    theirs = other.round_;
  }
  return mine->Merge(*theirs);
}

int Strategy::folded() const {
  MutexLock lock(&mu_);
  return round_->folded();
}

absl::StatusOr<FlatTensor> Strategy::Finish(absl::Span<const float> base) {
  std::shared_ptr<RoundAggregator> round;
  {
    MutexLock lock(&mu_);
    round = round_;
  }
  FEDGE_ASSIGN_OR_RETURN(std::vector<double> delta, round->Aggregate());
  return optimizer_->Apply(base, delta);
}

std::string Strategy::SaveState() const { return optimizer_->SaveState(); }

absl::Status Strategy::LoadState(absl::string_view state) { return optimizer_->LoadState(state); }

double StalenessScale(int staleness, double exponent) {
  if (staleness <= 0) return 1.0;
  return std::pow(1.0 + staleness, -exponent);
}

}  // namespace fedge::cloud::aggregation
