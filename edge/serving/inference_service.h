#ifndef FEDGE_EDGE_SERVING_INFERENCE_SERVICE_H_
#define FEDGE_EDGE_SERVING_INFERENCE_SERVICE_H_

#include <atomic>
#include <string>
#include <vector>

#include "edge/runtime/runtime.h"
#include "edge/samples/sample_store.h"
#include "edge/serving/drift_watch.h"
#include "edge/serving/health.h"
#include "edge/serving/recent_inputs.h"
#include "fedge/v1/inference.grpc.pb.h"

namespace fedge::edge::serving {

// Where the Inference API puts labelled samples.
struct LocalSamples {
  // Null: the node keeps no samples (Ingest is FAILED_PRECONDITION, Feedback only counts).
  samples::SampleStore* store = nullptr;
  // Class names that Ingest resolves label names with while no model is active.
  std::vector<std::string> label_names;
  // Inputs of recent predictions, kept for Feedback to label.
  RecentInputs::Options inputs;
};

// The local Inference API for devices next to the edge. A thin adapter over the runtime:
// Predict takes the active version's handle and lets go of every lock before running the
// model, so a hot swap never fails or stalls a request. Labelled samples (Ingest, and
// Feedback on a remembered prediction) go to the node's sample store.
class InferenceService final : public v1::Inference::Service {
 public:
  // drift may be null (inputs are not watched).
  InferenceService(runtime::Runtime* runtime, HealthTracker* health, DriftWatch* drift = nullptr,
                   LocalSamples samples = {})
      : runtime_(runtime),
        health_(health),
        drift_(drift),
        store_(samples.store),
        label_names_(std::move(samples.label_names)),
        inputs_(samples.inputs) {
    RegisterMetrics();
  }

  grpc::Status Predict(grpc::ServerContext* context, const v1::PredictRequest* request,
                       v1::PredictResponse* response) override;
  grpc::Status PredictBatch(grpc::ServerContext* context, const v1::PredictBatchRequest* request,
                            v1::PredictBatchResponse* response) override;
  grpc::Status Feedback(grpc::ServerContext* context, const v1::FeedbackRequest* request,
                        v1::FeedbackResponse* response) override;
  grpc::Status Ingest(grpc::ServerContext* context, grpc::ServerReader<v1::IngestRequest>* reader,
                      v1::IngestResponse* response) override;

  // The most rows one PredictBatch takes.
  static constexpr int kMaxBatch = 4096;
  // The most samples one IngestRequest message takes.
  static constexpr int kMaxIngestBatch = 4096;

 private:
  // Creates the prediction series (ok and error) and the latency histogram.
  static void RegisterMetrics();
  grpc::Status Run(const std::string& model, const google::protobuf::RepeatedPtrField<v1::Instance>& rows,
                   google::protobuf::RepeatedPtrField<v1::Prediction>* out, v1::VersionRef* version);
  // One Ingest message as samples, or INVALID_ARGUMENT naming the bad sample.
  absl::StatusOr<std::vector<samples::Sample>> ToSamples(const v1::IngestRequest& request) const;

  runtime::Runtime* const runtime_;
  HealthTracker* const health_;
  DriftWatch* const drift_;
  samples::SampleStore* const store_;
  const std::vector<std::string> label_names_;
  RecentInputs inputs_;
  std::atomic<uint64_t> next_id_{1};
  // Prediction ids are unique across restarts of the edge: a per-process prefix.
  const std::string prefix_ = NewPrefix();
  static std::string NewPrefix();
};

}  // namespace fedge::edge::serving

#endif  // FEDGE_EDGE_SERVING_INFERENCE_SERVICE_H_
