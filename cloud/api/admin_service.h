#ifndef FEDGE_CLOUD_API_ADMIN_SERVICE_H_
#define FEDGE_CLOUD_API_ADMIN_SERVICE_H_

#include "cloud/fleet/fleet.h"
#include "cloud/jobs/job_manager.h"
#include "cloud/registry/registry.h"
#include "fedge/v1/admin.grpc.pb.h"

namespace fedge::cloud::api {

// The operators' gRPC adapter. Operator traffic is low-rate and its handlers do disk I/O and
// LibTorch work (building and checking models), so it uses the synchronous API: each call gets
// a pool thread and never stalls the callback reactors that carry edge Sessions.
class AdminService final : public v1::Admin::Service {
 public:
  struct Options {
    fleet::Fleet* fleet = nullptr;
    jobs::JobManager* jobs = nullptr;
    registry::Registry* registry = nullptr;
    // The largest archive RegisterModel accepts.
    int64_t max_archive_bytes = int64_t{2} << 30;
  };
  explicit AdminService(Options options) : options_(options) {}

  grpc::Status RegisterModel(grpc::ServerContext* context,
                             grpc::ServerReader<v1::RegisterModelRequest>* reader,
                             v1::Version* response) override;
  grpc::Status ListModels(grpc::ServerContext* context, const v1::ListModelsRequest* request,
                          v1::ListModelsResponse* response) override;
  grpc::Status ListVersions(grpc::ServerContext* context, const v1::ListVersionsRequest* request,
                            v1::ListVersionsResponse* response) override;
  grpc::Status GetVersion(grpc::ServerContext* context, const v1::GetVersionRequest* request,
                          v1::Version* response) override;
  grpc::Status DownloadVersion(grpc::ServerContext* context,
                               const v1::GetVersionRequest* request,
                               grpc::ServerWriter<v1::Chunk>* writer) override;
  grpc::Status StartJob(grpc::ServerContext* context, const v1::StartJobRequest* request,
                        v1::Job* response) override;
  grpc::Status GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request,
                      v1::Job* response) override;
  grpc::Status ListJobs(grpc::ServerContext* context, const v1::ListJobsRequest* request,
                        v1::ListJobsResponse* response) override;
  grpc::Status ListNodes(grpc::ServerContext* context, const v1::ListNodesRequest* request,
                         v1::ListNodesResponse* response) override;
  grpc::Status Deploy(grpc::ServerContext* context, const v1::DeployRequest* request,
                      v1::DeployResponse* response) override;

 private:
  const Options options_;
};

}  // namespace fedge::cloud::api

#endif  // FEDGE_CLOUD_API_ADMIN_SERVICE_H_
