#ifndef FEDGE_EDGE_SERVING_INFERENCE_SERVICE_H_
#define FEDGE_EDGE_SERVING_INFERENCE_SERVICE_H_

#include <atomic>

#include "edge/runtime/runtime.h"
#include "edge/serving/drift_watch.h"
#include "edge/serving/health.h"
#include "fedge/v1/inference.grpc.pb.h"

namespace fedge::edge::serving {

// The local Inference API for devices next to the edge. A thin adapter over the runtime:
// Predict takes the active version's handle and lets go of every lock before running the
// model, so a hot swap never fails or stalls a request.
class InferenceService final : public v1::Inference::Service {
 public:
  // drift may be null (inputs are not watched).
  InferenceService(runtime::Runtime* runtime, HealthTracker* health, DriftWatch* drift = nullptr)
      : runtime_(runtime), health_(health), drift_(drift) {}

  grpc::Status Predict(grpc::ServerContext* context, const v1::PredictRequest* request,
                       v1::PredictResponse* response) override;
  grpc::Status PredictBatch(grpc::ServerContext* context, const v1::PredictBatchRequest* request,
                            v1::PredictBatchResponse* response) override;
  grpc::Status Feedback(grpc::ServerContext* context, const v1::FeedbackRequest* request,
                        v1::FeedbackResponse* response) override;

  // The most rows one PredictBatch takes.
  static constexpr int kMaxBatch = 4096;

 private:
  grpc::Status Run(const std::string& model, const google::protobuf::RepeatedPtrField<v1::Instance>& rows,
                   google::protobuf::RepeatedPtrField<v1::Prediction>* out, v1::VersionRef* version);

  runtime::Runtime* const runtime_;
  HealthTracker* const health_;
  DriftWatch* const drift_;
  std::atomic<uint64_t> next_id_{1};
  // Prediction ids are unique across restarts of the edge: a per-process prefix.
  const std::string prefix_ = NewPrefix();
  static std::string NewPrefix();
};

}  // namespace fedge::edge::serving

#endif  // FEDGE_EDGE_SERVING_INFERENCE_SERVICE_H_
