#ifndef FEDGE_CLOUD_MODELS_VALIDATOR_H_
#define FEDGE_CLOUD_MODELS_VALIDATOR_H_

#include <string>

#include "absl/status/statusor.h"
#include "cloud/models/sandbox.h"
#include "cloud/registry/registry.h"
#include "common/data/dataset.h"
#include "common/torch/model.h"
#include "fedge/v1/model.pb.h"

namespace fedge::cloud::evaluation {
class FederatedEvaluator;
}

namespace fedge::cloud::models {

// The cloud-side data a holdout spec names: the synthetic generator's fleet-wide holdout, or a
// CSV file on the coordinator whose labels map through the contract. An empty spec gives an
// empty dataset.
absl::StatusOr<data::Dataset> LoadHoldout(const v1::HoldoutSpec& spec,
                                          const v1::ModelContract& contract);

// The validation gate. Scores the version on the policy's cloud holdout and, when the policy
// asks, by federated evaluation on the edges' local holdouts; then checks the thresholds on
// each result: minimum accuracy, maximum loss, and at most max_regression below the version
// the "production" alias points at (scored on the same cloud data). Does not store the result.
// FAILED_PRECONDITION when the policy names no data at all, or federated evaluation gets too
// few answers.
// User models (kUserArchitecture) are scored in fedge-model-check under `model_check`.
absl::StatusOr<v1::Validation> Validate(const registry::Registry& registry,
                                        const v1::Version& version, const v1::GatePolicy& policy,
                                        const SandboxLimits& model_check,
                                        evaluation::FederatedEvaluator* federated = nullptr);

// Scores a model on holdout data: in this process for the coordinator's built-in models, in
// fedge-model-check (its limits, a kill on timeout) for a user's model, whose code the
// coordinator never runs itself.
absl::StatusOr<torchlib::EvalResult> ScoreModel(const torchlib::Model& model,
                                                const v1::ModelContract& contract,
                                                const data::Dataset& holdout,
                                                const SandboxLimits& model_check);

}  // namespace fedge::cloud::models

#endif  // FEDGE_CLOUD_MODELS_VALIDATOR_H_
