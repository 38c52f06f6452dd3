#ifndef FEDGE_CLOUD_API_ADMIN_SERVICE_H_
#define FEDGE_CLOUD_API_ADMIN_SERVICE_H_

#include "cloud/api/admin_auth.h"
#include "cloud/deploy/controller.h"
#include "cloud/enroll/enrollment.h"
#include "cloud/evaluation/federated.h"
#include "cloud/policy/retrainer.h"
#include "cloud/events/event_log.h"
#include "cloud/fleet/fleet.h"
#include "cloud/jobs/job_manager.h"
#include "cloud/models/sandbox.h"
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
    deploy::Controller* deploy = nullptr;
    events::EventLog* events = nullptr;
    evaluation::FederatedEvaluator* evaluator = nullptr;
    policy::Retrainer* retrainer = nullptr;
    // Decides who each call is and whether they may make it (see admin_auth.h); null: every
    // caller is an admin, named by the `x-fedge-principal` metadata.
    const AdminAuthorizer* authorizer = nullptr;
    // The largest archive RegisterModel accepts.
    int64_t max_archive_bytes = int64_t{2} << 30;
    // How a user's archive is tried in fedge-model-check before it is loaded here.
    models::SandboxLimits model_check;
    // Enrollment tokens and node access; null (a plaintext coordinator): those calls are
    // FAILED_PRECONDITION.
    enroll::Enrollment* enrollment = nullptr;
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
  grpc::Status CancelJob(grpc::ServerContext* context, const v1::CancelJobRequest* request,
                         v1::Job* response) override;

  grpc::Status GetModel(grpc::ServerContext* context, const v1::GetModelRequest* request,
                        v1::Model* response) override;
  grpc::Status UpdateModel(grpc::ServerContext* context, const v1::UpdateModelRequest* request,
                           v1::Model* response) override;
  grpc::Status SetAlias(grpc::ServerContext* context, const v1::SetAliasRequest* request,
                        v1::Version* response) override;
  grpc::Status DeleteAlias(grpc::ServerContext* context, const v1::DeleteAliasRequest* request,
                           v1::Model* response) override;
  grpc::Status Promote(grpc::ServerContext* context, const v1::PromoteRequest* request,
                       v1::Version* response) override;
  grpc::Status SetTags(grpc::ServerContext* context, const v1::SetTagsRequest* request,
                       v1::Version* response) override;
  grpc::Status GetLineage(grpc::ServerContext* context, const v1::GetVersionRequest* request,
                          v1::Lineage* response) override;
  grpc::Status ValidateVersion(grpc::ServerContext* context,
                               const v1::ValidateVersionRequest* request,
                               v1::Version* response) override;
  grpc::Status ApplyRetention(grpc::ServerContext* context,
                              const v1::ApplyRetentionRequest* request,
                              v1::ApplyRetentionResponse* response) override;
  grpc::Status ListAudit(grpc::ServerContext* context, const v1::ListAuditRequest* request,
                         v1::ListAuditResponse* response) override;
  grpc::Status WatchEvents(grpc::ServerContext* context, const v1::WatchEventsRequest* request,
                           grpc::ServerWriter<v1::Event>* writer) override;
  grpc::Status ListEvents(grpc::ServerContext* context, const v1::WatchEventsRequest* request,
                          v1::ListEventsResponse* response) override;
  grpc::Status ListWebhookDeliveries(grpc::ServerContext* context,
                                     const v1::ListWebhookDeliveriesRequest* request,
                                     v1::ListWebhookDeliveriesResponse* response) override;
  grpc::Status CreateDeployment(grpc::ServerContext* context,
                                const v1::CreateDeploymentRequest* request,
                                v1::Deployment* response) override;
  grpc::Status ListDeployments(grpc::ServerContext* context,
                               const v1::ListDeploymentsRequest* request,
                               v1::ListDeploymentsResponse* response) override;
  grpc::Status GetDeployment(grpc::ServerContext* context,
                             const v1::GetDeploymentRequest* request,
                             v1::Deployment* response) override;
  grpc::Status PauseDeployment(grpc::ServerContext* context,
                               const v1::DeploymentActionRequest* request,
                               v1::Deployment* response) override;
  grpc::Status ResumeDeployment(grpc::ServerContext* context,
                                const v1::DeploymentActionRequest* request,
                                v1::Deployment* response) override;
  grpc::Status RollbackDeployment(grpc::ServerContext* context,
                                  const v1::DeploymentActionRequest* request,
                                  v1::Deployment* response) override;

  grpc::Status SetRetrainPolicy(grpc::ServerContext* context,
                                const v1::SetRetrainPolicyRequest* request,
                                v1::RetrainPolicy* response) override;
  grpc::Status GetRetrainPolicy(grpc::ServerContext* context,
                                const v1::GetRetrainPolicyRequest* request,
                                v1::RetrainPolicy* response) override;
  grpc::Status TriggerRetrain(grpc::ServerContext* context,
                              const v1::TriggerRetrainRequest* request, v1::Job* response) override;
  grpc::Status CreateEnrollmentToken(grpc::ServerContext* context,
                                     const v1::CreateEnrollmentTokenRequest* request,
                                     v1::EnrollmentToken* response) override;
  grpc::Status ListEnrollmentTokens(grpc::ServerContext* context,
                                    const v1::ListEnrollmentTokensRequest* request,
                                    v1::ListEnrollmentTokensResponse* response) override;
  grpc::Status RevokeEnrollmentToken(grpc::ServerContext* context,
                                     const v1::RevokeEnrollmentTokenRequest* request,
                                     v1::EnrollmentToken* response) override;
  grpc::Status SetNodeAccess(grpc::ServerContext* context,
                             const v1::SetNodeAccessRequest* request,
                             v1::NodeAccess* response) override;
  grpc::Status RevokeNode(grpc::ServerContext* context, const v1::RevokeNodeRequest* request,
                          v1::NodeAccess* response) override;
  grpc::Status ListNodeAccess(grpc::ServerContext* context,
                              const v1::ListNodeAccessRequest* request,
                              v1::ListNodeAccessResponse* response) override;

  // Runs the model's gate on a version, stores the result and emits its event. Also used by the
  // coordinator after a job registers a version.
  absl::StatusOr<v1::Version> RunGate(const v1::Version& version, const v1::GatePolicy& policy,
                                      const std::string& principal, const std::string& reason);

 private:
  // Every method checks its caller here first: the one place where Admin calls are
  // authenticated and authorized. gRPC 1.51's server interceptors cannot end a call before its
  // handler runs, so the check is the first statement of each handler instead, keyed by the
  // handler's own name; a test calls every method of the descriptor without a token.
  absl::StatusOr<std::string> Authorize(const grpc::ServerContextBase& context,
                                        absl::string_view method) const;
  // Records a change to enrollment or node access in the audit log.
  void AuditNode(const std::string& action, const std::string& principal,
                 const std::string& subject, const std::string& reason);

  const Options options_;
};

}  // namespace fedge::cloud::api

#endif  // FEDGE_CLOUD_API_ADMIN_SERVICE_H_
