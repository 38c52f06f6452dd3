#include "edge/serving/inference_service.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/metrics/metrics.h"
#include "common/status/grpc_status.h"
#include "glog/logging.h"

namespace fedge::edge::serving {
namespace {

prometheus::Counter& PredictionsCounter(const std::string& result) {
  return metrics::CounterFamily("fedge_edge_predictions_total",
                                "Rows scored by the local Inference API, by result (ok, error).")
      .Add({{"result", result}});
}

// Looked up once: every request counts its rows.
prometheus::Counter& OkPredictions() {
  static auto& c = PredictionsCounter("ok");
  return c;
}

prometheus::Histogram& PredictSeconds() {
  static auto& h = metrics::HistogramFamily("fedge_edge_predict_duration_seconds",
                                            "Latency of Predict and PredictBatch calls.")
                       .Add({}, metrics::LatencyBuckets());
  return h;
}

}  // namespace

void InferenceService::RegisterMetrics() {
  OkPredictions();
  PredictionsCounter("error");
  PredictSeconds();
}

std::string InferenceService::NewPrefix() {
  absl::BitGen gen;
  return absl::StrCat(absl::Hex(absl::Uniform<uint32_t>(gen), absl::kZeroPad8), "-");
}

grpc::Status InferenceService::Run(const std::string& model,
                                   const google::protobuf::RepeatedPtrField<v1::Instance>& rows,
                                   google::protobuf::RepeatedPtrField<v1::Prediction>* out,
                                   v1::VersionRef* version) {
  const auto start = std::chrono::steady_clock::now();
  auto active = runtime_->Active(model);
  if (!active.ok()) return ToGrpcStatus(active.status());
  const runtime::LoadedModel& loaded = **active;
  const int64_t width = loaded.contract.feature_names_size();
  if (rows.empty()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no instances given");
  if (rows.size() > kMaxBatch) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        absl::StrCat(rows.size(), " instances exceed the batch limit of ",
                                     kMaxBatch));
  }
  std::vector<float> flat;
  flat.reserve(static_cast<size_t>(rows.size() * width));
  for (int i = 0; i < rows.size(); ++i) {
    if (rows[i].features_size() != width) {
      PredictionsCounter("error").Increment();
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("instance ", i, " has ", rows[i].features_size(),
                                       " features; ", loaded.ref.model(), " v",
                                       loaded.ref.version(), " takes ", width));
    }
    for (float v : rows[i].features()) {
      if (!std::isfinite(v)) {
        PredictionsCounter("error").Increment();
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            absl::StrCat("instance ", i, " holds a non-finite feature"));
      }
      flat.push_back(v);
    }
  }
  auto predictions = loaded.model->Predict(flat, width);
  const absl::Duration latency = absl::FromChrono(std::chrono::steady_clock::now() - start);
  if (!predictions.ok()) {
    PredictionsCounter("error").Increment();
    health_->RecordFailure(loaded.ref, latency);
    return ToGrpcStatus(predictions.status());
  }
  // The bookkeeping (drift, remembered inputs, health) takes each lock once per request.
  const size_t n = predictions->size();
  const uint64_t first_id = next_id_.fetch_add(n);
  std::vector<std::string> ids;
  ids.reserve(n);
  std::vector<int32_t> labels;
  labels.reserve(n);
  std::vector<int64_t> drift_labels;
  drift_labels.reserve(n);
  out->Reserve(static_cast<int>(n));
  for (size_t i = 0; i < n; ++i) {
    const auto& p = (*predictions)[i];
    v1::Prediction* o = out->Add();
    o->set_label(static_cast<int32_t>(p.label));
    if (p.label >= 0 && p.label < loaded.contract.labels_size()) {
      o->set_label_name(loaded.contract.labels(static_cast<int>(p.label)));
    }
    o->mutable_scores()->Add(p.scores.begin(), p.scores.end());
    o->mutable_probabilities()->Add(p.probabilities.begin(), p.probabilities.end());
    o->set_prediction_id(absl::StrCat(prefix_, first_id + i));
    ids.push_back(o->prediction_id());
    labels.push_back(o->label());
    drift_labels.push_back(p.label);
  }
  if (drift_ != nullptr) drift_->ObserveAll(loaded.ref, flat.data(), width, drift_labels);
  // Inputs are remembered only when they fit the sample store, for Feedback to label.
  if (store_ != nullptr && store_->num_features() == width) {
    inputs_.RememberAll(ids, flat.data(), width);
  }
  health_->RecordPredictions(loaded.ref, ids, labels, latency);
  *version = loaded.ref;
  OkPredictions().Increment(static_cast<double>(rows.size()));
  PredictSeconds().Observe(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return grpc::Status::OK;
}

grpc::Status InferenceService::Feedback(grpc::ServerContext*,
                                        const v1::FeedbackRequest* request,
                                        v1::FeedbackResponse* response) {
  if (request->prediction_id().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "feedback needs a prediction_id");
  }
  int32_t label = request->label();
  // Labels resolve through the label map of the model that made the prediction.
  auto active = runtime_->Active(health_->ModelOf(request->prediction_id()));
  if (!request->label_name().empty()) {
    label = -1;
    if (active.ok()) {
      const auto& labels = (*active)->contract.labels();
      for (int i = 0; i < labels.size(); ++i) {
        if (labels[i] == request->label_name()) label = i;
      }
    }
    if (label < 0) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("label '", request->label_name(),
                                       "' is not in the model's label map (or the prediction "
                                       "id is unknown)"));
    }
  }
  if (label < 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "label must be >= 0");
  }
  if (active.ok() && (*active)->contract.labels_size() > 0 &&
      label >= (*active)->contract.labels_size()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("label ", label, " is out of range: ", (*active)->ref.model(),
                                     " has ", (*active)->contract.labels_size(), " classes"));
  }
  auto result = health_->RecordFeedback(request->prediction_id(), label);
  if (!result.ok()) return ToGrpcStatus(result.status());
  if (store_ != nullptr) {
    // The prediction's input with its true label is a labelled sample. The feedback itself is
    // already counted, so a failure to store it is logged, not returned.
    std::optional<std::vector<float>> row = inputs_.Take(request->prediction_id());
    if (row.has_value()) {
      samples::Sample sample;
      sample.features = std::move(*row);
      sample.label = label;
      sample.source = samples::Source::kFeedback;
      absl::Status st = store_->Add({std::move(sample)});
      if (!st.ok()) {
        LOG(WARNING) << "feedback for " << request->prediction_id() << " not stored: " << st;
      }
    }
  }
  response->set_correct(result->correct);
  *response->mutable_version() = result->version;
  return grpc::Status::OK;
}

absl::StatusOr<std::vector<samples::Sample>> InferenceService::ToSamples(
    const v1::IngestRequest& request) const {
  // The label map: the named (or only) active model's contract, else the node's own names.
  std::vector<std::string> labels = label_names_;
  auto active = runtime_->Active(request.model());
  if (active.ok()) {
    labels.assign((*active)->contract.labels().begin(), (*active)->contract.labels().end());
  } else if (!request.model().empty()) {
    return active.status();
  }
  const int64_t width = store_->num_features();
  std::vector<samples::Sample> out;
  out.reserve(static_cast<size_t>(request.samples_size()));
  for (int i = 0; i < request.samples_size(); ++i) {
    const v1::LabelledSample& in = request.samples(i);
    if (in.features_size() != width) {
      return absl::InvalidArgumentError(absl::StrCat("sample ", i, " has ", in.features_size(),
                                                     " features; this edge's samples have ",
                                                     width));
    }
    for (int f = 0; f < in.features_size(); ++f) {
      if (!std::isfinite(in.features(f))) {
        return absl::InvalidArgumentError(
            absl::StrCat("sample ", i, ": feature ", f, " is not a finite number"));
      }
    }
    int64_t label = in.label();
    if (!in.label_name().empty()) {
      auto it = std::find(labels.begin(), labels.end(), in.label_name());
      if (it == labels.end()) {
        return absl::InvalidArgumentError(
            labels.empty()
                ? absl::StrCat("sample ", i, ": label '", in.label_name(),
                               "' cannot be resolved: no model is active and this edge has no "
                               "label names; send the class index")
                : absl::StrCat("sample ", i, ": label '", in.label_name(), "' is not one of ",
                               absl::StrJoin(labels, ", ")));
      }
      label = it - labels.begin();
    }
    if (label < 0 || (!labels.empty() && label >= static_cast<int64_t>(labels.size()))) {
      return absl::InvalidArgumentError(
          absl::StrCat("sample ", i, ": label ", label, " is out of range",
                       labels.empty() ? "" : absl::StrCat(" [0, ", labels.size(), ")")));
    }
    samples::Sample& s = out.emplace_back();
    s.features.assign(in.features().begin(), in.features().end());
    s.label = label;
    s.source = samples::Source::kIngest;
  }
  return out;
}

grpc::Status InferenceService::Ingest(grpc::ServerContext*,
                                      grpc::ServerReader<v1::IngestRequest>* reader,
                                      v1::IngestResponse* response) {
  if (store_ == nullptr) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "this edge keeps no sample store (it has no local data to take the "
                        "feature schema from, or --max_samples=0)");
  }
  int64_t accepted = 0;
  v1::IngestRequest request;
  for (int64_t message = 0; reader->Read(&request); ++message) {
    // Earlier messages stay stored; say so, so the device resends only from this one.
    const std::string at = absl::StrCat("message ", message, ": ");
    const std::string kept =
        absl::StrCat(" (", accepted, " samples of earlier messages of this stream were stored)");
    if (request.samples_size() > kMaxIngestBatch) {
      return grpc::Status(
          grpc::StatusCode::RESOURCE_EXHAUSTED,
          absl::StrCat(at, request.samples_size(), " samples in one message exceed the limit of ",
                       kMaxIngestBatch, kept));
    }
    absl::StatusOr<std::vector<samples::Sample>> batch = ToSamples(request);
    absl::Status st = batch.status();
    if (st.ok()) st = store_->Add(*batch);
    if (!st.ok()) {
      return ToGrpcStatus(absl::Status(st.code(), absl::StrCat(at, st.message(), kept)));
    }
    accepted += request.samples_size();
  }
  response->set_accepted(accepted);
  response->set_stored(store_->Count());
  response->set_total_added(store_->TotalAdded());
  return grpc::Status::OK;
}

grpc::Status InferenceService::Predict(grpc::ServerContext*, const v1::PredictRequest* request,
                                       v1::PredictResponse* response) {
  google::protobuf::RepeatedPtrField<v1::Instance> rows;
  *rows.Add() = request->instance();
  google::protobuf::RepeatedPtrField<v1::Prediction> out;
  grpc::Status st = Run(request->model(), rows, &out, response->mutable_version());
  if (st.ok()) *response->mutable_prediction() = out[0];
  return st;
}

grpc::Status InferenceService::PredictBatch(grpc::ServerContext*,
                                            const v1::PredictBatchRequest* request,
                                            v1::PredictBatchResponse* response) {
  return Run(request->model(), request->instances(), response->mutable_predictions(),
             response->mutable_version());
}

}  // namespace fedge::edge::serving
