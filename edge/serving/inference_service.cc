#include "edge/serving/inference_service.h"

#include <chrono>
#include <cmath>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "common/metrics/metrics.h"
#include "common/status/grpc_status.h"

namespace fedge::edge::serving {
namespace {

prometheus::Counter& PredictionsCounter(const std::string& result) {
  return metrics::CounterFamily("fedge_edge_predictions_total",
                                "Rows scored by the local Inference API, by result (ok, error).")
      .Add({{"result", result}});
}

prometheus::Histogram& PredictSeconds() {
  static auto& h = metrics::HistogramFamily("fedge_edge_predict_duration_seconds",
                                            "Latency of Predict and PredictBatch calls.")
                       .Add({}, metrics::LatencyBuckets());
  return h;
}

}  // namespace

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
  for (size_t i = 0; i < predictions->size(); ++i) {
    const auto& p = (*predictions)[i];
    if (drift_ != nullptr) drift_->Observe(loaded.ref, flat.data() + static_cast<int64_t>(i) * width, p.label);
    v1::Prediction* o = out->Add();
    o->set_label(static_cast<int32_t>(p.label));
    if (p.label >= 0 && p.label < loaded.contract.labels_size()) {
      o->set_label_name(loaded.contract.labels(static_cast<int>(p.label)));
    }
    o->mutable_scores()->Add(p.scores.begin(), p.scores.end());
    o->mutable_probabilities()->Add(p.probabilities.begin(), p.probabilities.end());
    o->set_prediction_id(absl::StrCat(prefix_, next_id_.fetch_add(1)));
    health_->RecordPrediction(loaded.ref, o->prediction_id(), o->label(), latency);
  }
  *version = loaded.ref;
  PredictionsCounter("ok").Increment(static_cast<double>(rows.size()));
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
  if (!request->label_name().empty()) {
    // The name resolves through the label map of the model that made the prediction.
    label = -1;
    auto active = runtime_->Active(health_->ModelOf(request->prediction_id()));
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
  auto result = health_->RecordFeedback(request->prediction_id(), label);
  if (!result.ok()) return ToGrpcStatus(result.status());
  response->set_correct(result->correct);
  *response->mutable_version() = result->version;
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
