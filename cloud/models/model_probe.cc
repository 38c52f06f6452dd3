#include "cloud/models/model_probe.h"

#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/data/dataset.h"
#include "common/status/status.h"

namespace fedge::cloud::models {

absl::Status CheckModelShape(const torchlib::Model& model, int64_t features, int64_t labels) {
  std::vector<float> zeros(static_cast<size_t>(features), 0.0f);
  auto probe = model.Predict(zeros, features);
  if (!probe.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the model does not accept ", features,
                     " features as the contract says: ", probe.status().message()));
  }
  if (static_cast<int64_t>((*probe)[0].scores.size()) != labels) {
    return absl::InvalidArgumentError(absl::StrCat("the model outputs ", (*probe)[0].scores.size(),
                                                   " scores but the contract has ", labels,
                                                   " labels"));
  }
  return absl::OkStatus();
}

namespace {

data::Dataset RandomRows(int64_t rows, int64_t features, int64_t labels, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> value(0.0f, 1.0f);
  std::uniform_int_distribution<int64_t> label(0, labels - 1);
  data::Dataset d;
  for (int64_t f = 0; f < features; ++f) d.feature_names.push_back(absl::StrCat("f", f));
  d.features.resize(static_cast<size_t>(rows * features));
  for (float& v : d.features) v = value(rng);
  for (int64_t r = 0; r < rows; ++r) d.labels.push_back(label(rng));
  return d;
}

}  // namespace

absl::Status TryModelAsUsed(const torchlib::Model& model, int64_t features, int64_t labels) {
  for (int64_t batch : {2, 32, 256, 1024}) {
    const data::Dataset rows = RandomRows(batch, features, labels, static_cast<uint64_t>(batch));
    auto out = model.Predict(rows.features, features);
    if (!out.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("the model fails on a batch of ", batch, " rows: ", out.status().message()));
    }
    if (static_cast<int64_t>(out->size()) != batch) {
      return absl::InvalidArgumentError(
          absl::StrCat("the model answers ", out->size(), " rows for a batch of ", batch));
    }
    for (const auto& p : *out) {
      if (static_cast<int64_t>(p.scores.size()) != labels) {
        return absl::InvalidArgumentError(
            absl::StrCat("on a batch of ", batch, " rows the model outputs ", p.scores.size(),
                         " scores but the contract has ", labels, " labels"));
      }
    }
  }
  auto eval = model.Evaluate(RandomRows(1024 + 3, features, labels, 7));
  if (!eval.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the model fails evaluation: ", eval.status().message()));
  }
  FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<torchlib::Model> copy, model.Clone());
  torchlib::TrainOptions train;
  train.batch_size = 32;
  train.seed = 11;
  auto trained = copy->Train(RandomRows(64, features, labels, 11), train);
  if (!trained.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the model fails a training step: ", trained.status().message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<torchlib::Model>> LoadAndCheckArchive(absl::string_view archive,
                                                                     int64_t features,
                                                                     int64_t labels) {
  std::unique_ptr<torchlib::Model> model;
  FEDGE_ASSIGN_OR_RETURN(model, torchlib::Model::Load(archive));
  FEDGE_RETURN_IF_ERROR(CheckModelShape(*model, features, labels));
  return model;
}

}  // namespace fedge::cloud::models
