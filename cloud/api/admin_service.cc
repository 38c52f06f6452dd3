#include "cloud/api/admin_service.h"

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "cloud/api/blob_stream.h"
#include "cloud/models/intake.h"
#include "cloud/models/validator.h"
#include "common/net/identity.h"
#include "common/status/grpc_status.h"
#include "common/status/status.h"
#include "common/tensor/sha256.h"
#include "glog/logging.h"

namespace fedge::cloud::api {

// Every method starts here: `var` becomes the caller's principal, or the method answers
// UNAUTHENTICATED / PERMISSION_DENIED. The method's own name (__func__) is the key of its role,
// so the check cannot name the wrong method.
#define FEDGE_ADMIN_AUTHORIZE(var)                            \
  auto var##_or = Authorize(*context, __func__);              \
  if (!var##_or.ok()) return ToGrpcStatus(var##_or.status()); \
  const std::string var = std::move(*var##_or)

namespace {

constexpr int kMaxPage = 1000;
constexpr size_t kMaxPageBytes = 2 << 20;

// One page of a list response (admin.proto): the items whose key is past `after`, in key
// order, at most `limit` of them (0 or more than kMaxPage: kMaxPage) and about kMaxPageBytes.
// Returns the key to ask after for the next page, or the empty key when the list ends here.
template <typename T, typename Key, typename KeyOf>
Key TakePage(std::vector<T> items, const Key& after, int limit, KeyOf key_of,
             google::protobuf::RepeatedPtrField<T>* out) {
  std::sort(items.begin(), items.end(),
            [&key_of](const T& a, const T& b) { return key_of(a) < key_of(b); });
  const int max = limit > 0 && limit < kMaxPage ? limit : kMaxPage;
  size_t bytes = 0;
  for (T& item : items) {
    if (!(after < key_of(item))) continue;
    bytes += item.ByteSizeLong();
    if (out->size() >= max || (out->size() > 0 && bytes > kMaxPageBytes)) {
      return key_of(*out->rbegin());
    }
    *out->Add() = std::move(item);
  }
  return Key{};
}

// The key of lists shown newest first (jobs, deployments): (-created_unix_ms, id), and its page
// token "created_unix_ms/id".
using NewestFirst = std::pair<int64_t, std::string>;

absl::StatusOr<NewestFirst> ParseNewestFirst(const std::string& token) {
  if (token.empty()) return NewestFirst{std::numeric_limits<int64_t>::min(), ""};
  const size_t slash = token.find('/');
  int64_t created = 0;
  if (slash == std::string::npos || !absl::SimpleAtoi(token.substr(0, slash), &created)) {
    return absl::InvalidArgumentError("page_token is not one a list response gave");
  }
  return NewestFirst{-created, token.substr(slash + 1)};
}

std::string NewestFirstToken(const NewestFirst& key) {
  return key.second.empty() ? "" : absl::StrCat(-key.first, "/", key.second);
}

}  // namespace

absl::StatusOr<std::string> AdminService::Authorize(const grpc::ServerContextBase& context,
                                                    absl::string_view method) const {
  if (options_.authorizer == nullptr) return net::CallerPrincipal(context);
  return options_.authorizer->Authorize(context, method);
}

grpc::Status AdminService::RegisterModel(grpc::ServerContext* context,
                                         grpc::ServerReader<v1::RegisterModelRequest>* reader,
                                         v1::Version* response) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  v1::RegisterModelRequest msg;
  if (!reader->Read(&msg) || !msg.has_header()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "RegisterModel must start with a RegisterModelHeader");
  }
  const v1::RegisterModelHeader header = msg.header();
  if (header.archive_size() < 0 || header.archive_size() > options_.max_archive_bytes) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        absl::StrCat("archive of ", header.archive_size(),
                                     " bytes exceeds the limit of ", options_.max_archive_bytes));
  }
  std::string archive;
  archive.reserve(static_cast<size_t>(header.archive_size()));
  Sha256 digest;
  while (reader->Read(&msg)) {
    if (!msg.has_chunk()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "a second header in one request");
    }
    const v1::Chunk& chunk = msg.chunk();
    if (chunk.offset() != static_cast<int64_t>(archive.size())) {
      return grpc::Status(
          grpc::StatusCode::INVALID_ARGUMENT,
          absl::StrCat("chunk at offset ", chunk.offset(), ", expected ", archive.size()));
    }
    if (static_cast<int64_t>(archive.size() + chunk.data().size()) > header.archive_size()) {
      return grpc::Status(
          grpc::StatusCode::INVALID_ARGUMENT,
          absl::StrCat("archive exceeds its declared size of ", header.archive_size(), " bytes"));
    }
    digest.Update(chunk.data());
    archive.append(chunk.data());
  }
  if (static_cast<int64_t>(archive.size()) != header.archive_size()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("archive truncated: received ", archive.size(), " of ",
                                     header.archive_size(), " bytes"));
  }
  if (!archive.empty() && digest.HexDigest() != header.archive_sha256()) {
    return grpc::Status(grpc::StatusCode::DATA_LOSS,
                        "archive corrupted in transit: its sha256 does not match the header's");
  }
  auto intake = models::BuildVersion(header, archive, options_.model_check);
  if (!intake.ok()) return ToGrpcStatus(intake.status());
  auto sha = options_.registry->PutBlob(intake->archive);
  if (!sha.ok()) return ToGrpcStatus(sha.status());
  v1::Version version = intake->version;
  version.set_sha256(*sha);
  version.set_creator(caller);
  auto added = options_.registry->AddVersion(version, header.description());
  if (!added.ok()) return ToGrpcStatus(added.status());
  LOG(INFO) << "registered " << added->model() << " v" << added->version() << " ("
            << added->contract().architecture() << ", " << added->size_bytes() << " bytes) by "
            << added->creator();
  v1::AuditEntry audit;
  audit.set_action("register");
  audit.set_principal(added->creator());
  audit.set_model(added->model());
  audit.set_version(added->version());
  audit.set_reason(added->reason());
  (void)options_.registry->AppendAudit(audit);
  if (options_.events != nullptr) {
    v1::Event e;
    e.set_type("version.registered");
    e.set_model(added->model());
    e.set_version(added->version());
    e.set_message(
        absl::StrCat(added->model(), " v", added->version(), " registered by ", added->creator()));
    options_.events->Append(std::move(e));
  }
  *response = *added;
  return grpc::Status::OK;
}

grpc::Status AdminService::ListModels(grpc::ServerContext* context, const v1::ListModelsRequest*,
                                      v1::ListModelsResponse* response) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  auto models = options_.registry->ListModels();
  if (!models.ok()) return ToGrpcStatus(models.status());
  for (auto& m : *models) *response->add_models() = std::move(m);
  return grpc::Status::OK;
}

grpc::Status AdminService::ListVersions(grpc::ServerContext* context,
                                        const v1::ListVersionsRequest* request,
                                        v1::ListVersionsResponse* response) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  auto versions = options_.registry->ListVersions(request->model());
  if (!versions.ok()) return ToGrpcStatus(versions.status());
  int64_t after = 0;
  if (!request->page_token().empty() && !absl::SimpleAtoi(request->page_token(), &after)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "page_token is not one a ListVersions response gave");
  }
  const int64_t next = TakePage(
      std::move(*versions), after, request->limit(),
      [](const v1::Version& v) { return v.version(); }, response->mutable_versions());
  if (next != 0) response->set_next_page_token(absl::StrCat(next));
  return grpc::Status::OK;
}

grpc::Status AdminService::GetVersion(grpc::ServerContext* context,
                                      const v1::GetVersionRequest* request, v1::Version* response) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  auto version = options_.registry->GetVersion(request->model(), request->version());
  if (!version.ok()) return ToGrpcStatus(version.status());
  *response = *version;
  return grpc::Status::OK;
}

grpc::Status AdminService::DownloadVersion(grpc::ServerContext* context,
                                           const v1::GetVersionRequest* request,
                                           grpc::ServerWriter<v1::Chunk>* writer) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  auto version = options_.registry->GetVersion(request->model(), request->version());
  if (!version.ok()) return ToGrpcStatus(version.status());
  return StreamBlob(*options_.registry, version->sha256(), request->offset(), context, writer);
}

grpc::Status AdminService::StartJob(grpc::ServerContext* context,
                                    const v1::StartJobRequest* request, v1::Job* response) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  auto job = options_.jobs->Start(request->spec(), caller);
  if (!job.ok()) return ToGrpcStatus(job.status());
  *response = *job;
  return grpc::Status::OK;
}

grpc::Status AdminService::GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request,
                                  v1::Job* response) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  auto job = options_.jobs->Get(request->id());
  if (!job.ok()) return ToGrpcStatus(job.status());
  *response = *job;
  return grpc::Status::OK;
}

grpc::Status AdminService::ListJobs(grpc::ServerContext* context,
                                    const v1::ListJobsRequest* request,
                                    v1::ListJobsResponse* response) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  auto jobs = options_.jobs->List();
  if (!jobs.ok()) return ToGrpcStatus(jobs.status());
  auto after = ParseNewestFirst(request->page_token());
  if (!after.ok()) return ToGrpcStatus(after.status());
  response->set_next_page_token(NewestFirstToken(TakePage(
      std::move(*jobs), *after, request->limit(),
      [](const v1::Job& j) {
        return NewestFirst{-j.created_unix_ms(), j.id()};
      },
      response->mutable_jobs())));
  return grpc::Status::OK;
}

grpc::Status AdminService::ListNodes(grpc::ServerContext* context,
                                     const v1::ListNodesRequest* request,
                                     v1::ListNodesResponse* response) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  response->set_next_page_token(TakePage(
      options_.fleet->List(), request->page_token(), request->limit(),
      [](const v1::Node& n) { return n.node_id(); }, response->mutable_nodes()));
  return grpc::Status::OK;
}

grpc::Status AdminService::Deploy(grpc::ServerContext* context, const v1::DeployRequest* request,
                                  v1::DeployResponse* response) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  auto version = options_.registry->GetVersion(request->model(), request->version());
  if (!version.ok()) return ToGrpcStatus(version.status());
  v1::VersionRef ref;
  ref.set_model(version->model());
  ref.set_version(version->version());
  ref.set_sha256(version->sha256());
  std::map<std::string, std::string> selector(request->selector().begin(),
                                              request->selector().end());
  std::vector<std::string> nodes = options_.fleet->Eligible(selector, "predict");
  if (nodes.empty()) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "no connected node matches the selector; nothing was deployed");
  }
  v1::CloudMessage command;
  *command.mutable_deploy()->mutable_version() = ref;
  for (const std::string& node : nodes) {
    absl::Status st = options_.registry->SetDesiredVersion(node, ref);
    if (!st.ok()) return ToGrpcStatus(st);
    options_.fleet->SetDesired(node, ref);
    if (options_.fleet->Send(node, command)) response->add_node_ids(node);
  }
  LOG(INFO) << "deploy " << ref.model() << " v" << ref.version() << " to " << nodes.size()
            << " node(s) by " << caller << ": " << request->reason();
  return grpc::Status::OK;
}

grpc::Status AdminService::CancelJob(grpc::ServerContext* context,
                                     const v1::CancelJobRequest* request, v1::Job* response) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  auto job = options_.jobs->Cancel(request->id(), caller, request->reason());
  if (!job.ok()) return ToGrpcStatus(job.status());
  *response = *job;
  return grpc::Status::OK;
}

namespace {

registry::Registry::Audit AuditOf(const std::string& principal, const std::string& reason) {
  return {principal, reason};
}

// Returns the status if not ok, else assigns the value.
#define FEDGE_GRPC_ASSIGN(lhs, expr)              \
  do {                                            \
    auto fedge_value_ = (expr);                   \
    if (!fedge_value_.ok()) {                     \
      return ToGrpcStatus(fedge_value_.status()); \
    }                                             \
    lhs = std::move(*fedge_value_);               \
  } while (0)

}  // namespace

grpc::Status AdminService::GetModel(grpc::ServerContext* context,
                                    const v1::GetModelRequest* request, v1::Model* response) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  FEDGE_GRPC_ASSIGN(*response, options_.registry->GetModel(request->name()));
  return grpc::Status::OK;
}

grpc::Status AdminService::UpdateModel(grpc::ServerContext* context,
                                       const v1::UpdateModelRequest* request, v1::Model* response) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  std::optional<std::string> description;
  if (request->has_description()) description = request->description();
  std::optional<v1::GatePolicy> policy;
  if (request->has_gate_policy()) policy = request->gate_policy();
  std::optional<int32_t> keep;
  if (request->has_keep_versions()) keep = request->keep_versions();
  FEDGE_GRPC_ASSIGN(*response,
                    options_.registry->UpdateModel(request->name(), description, policy, keep,
                                                   AuditOf(caller, request->reason())));
  return grpc::Status::OK;
}

grpc::Status AdminService::SetAlias(grpc::ServerContext* context,
                                    const v1::SetAliasRequest* request, v1::Version* response) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  if (request->alias() == "production") {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "the production alias moves only through Promote, which checks the gate");
  }
  FEDGE_GRPC_ASSIGN(
      *response, options_.registry->SetAlias(request->model(), request->alias(), request->version(),
                                             AuditOf(caller, request->reason())));
  return grpc::Status::OK;
}

grpc::Status AdminService::DeleteAlias(grpc::ServerContext* context,
                                       const v1::DeleteAliasRequest* request, v1::Model* response) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  FEDGE_GRPC_ASSIGN(*response, options_.registry->DeleteAlias(request->model(), request->alias(),
                                                              AuditOf(caller, request->reason())));
  return grpc::Status::OK;
}

grpc::Status AdminService::Promote(grpc::ServerContext* context, const v1::PromoteRequest* request,
                                   v1::Version* response) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  const std::string alias = request->alias().empty() ? "production" : request->alias();
  v1::Version version;
  FEDGE_GRPC_ASSIGN(version, options_.registry->GetVersion(request->model(), request->version()));
  std::string action = "promote";
  if (!version.validation().passed()) {
    const std::string why =
        version.has_validation()
            ? absl::StrCat("it failed its validation gate (", version.validation().reason(), ")")
            : "it has not been validated";
    if (!request->force()) {
      return grpc::Status(
          grpc::StatusCode::FAILED_PRECONDITION,
          absl::StrCat(version.model(), " v", version.version(), " cannot be promoted: ", why,
                       ". Validate it (fedgectl models validate), or promote it anyway with "
                       "--force --reason=WHY (force and reason in the request)."));
    }
    if (request->reason().empty()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("a forced promotion needs a reason: ", why));
    }
    action = "promote_forced";
  }
  FEDGE_GRPC_ASSIGN(*response,
                    options_.registry->SetAlias(version.model(), alias, version.version(),
                                                AuditOf(caller, request->reason()), action));
  if (options_.events != nullptr) {
    v1::Event e;
    e.set_type("version.promoted");
    e.set_model(version.model());
    e.set_version(version.version());
    e.set_message(absl::StrCat(alias, " -> v", version.version(),
                               action == "promote_forced" ? " (forced)" : ""));
    (*e.mutable_attributes())["alias"] = alias;
    options_.events->Append(std::move(e));
  }
  return grpc::Status::OK;
}

grpc::Status AdminService::SetTags(grpc::ServerContext* context, const v1::SetTagsRequest* request,
                                   v1::Version* response) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  std::map<std::string, std::string> tags(request->tags().begin(), request->tags().end());
  FEDGE_GRPC_ASSIGN(*response,
                    options_.registry->SetTags(request->model(), request->version(), tags,
                                               AuditOf(caller, request->reason())));
  return grpc::Status::OK;
}

grpc::Status AdminService::GetLineage(grpc::ServerContext* context,
                                      const v1::GetVersionRequest* request, v1::Lineage* response) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  FEDGE_GRPC_ASSIGN(*response, options_.registry->GetLineage(request->model(), request->version()));
  return grpc::Status::OK;
}

absl::StatusOr<v1::Version> AdminService::RunGate(const v1::Version& version,
                                                  const v1::GatePolicy& policy,
                                                  const std::string& principal,
                                                  const std::string& reason) {
  FEDGE_ASSIGN_OR_RETURN(v1::Validation validation,
                         models::Validate(*options_.registry, version, policy, options_.model_check,
                                          options_.evaluator));
  validation.set_principal(principal);
  FEDGE_ASSIGN_OR_RETURN(v1::Version stored,
                         options_.registry->SetValidation(version.model(), version.version(),
                                                          validation, {principal, reason}));
  if (options_.events != nullptr) {
    v1::Event e;
    e.set_type(validation.passed() ? "validation.passed" : "validation.failed");
    e.set_model(version.model());
    e.set_version(version.version());
    e.set_message(validation.passed() ? absl::StrCat("accuracy ", validation.accuracy(), " on ",
                                                     validation.source())
                                      : validation.reason());
    options_.events->Append(std::move(e));
  }
  LOG(INFO) << "validation of " << version.model() << " v" << version.version() << ": "
            << (validation.passed() ? "passed" : "failed: " + validation.reason());
  return stored;
}

grpc::Status AdminService::ValidateVersion(grpc::ServerContext* context,
                                           const v1::ValidateVersionRequest* request,
                                           v1::Version* response) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  v1::Version version;
  FEDGE_GRPC_ASSIGN(version, options_.registry->GetVersion(request->model(), request->version()));
  v1::GatePolicy policy = request->policy();
  if (!request->has_policy()) {
    v1::Model model;
    FEDGE_GRPC_ASSIGN(model, options_.registry->GetModel(version.model()));
    policy = model.gate_policy();
  }
  FEDGE_GRPC_ASSIGN(*response, RunGate(version, policy, caller, request->reason()));
  return grpc::Status::OK;
}

grpc::Status AdminService::ApplyRetention(grpc::ServerContext* context,
                                          const v1::ApplyRetentionRequest* request,
                                          v1::ApplyRetentionResponse* response) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  int keep = request->keep_versions();
  if (keep == 0) {
    v1::Model model;
    FEDGE_GRPC_ASSIGN(model, options_.registry->GetModel(request->model()));
    keep = model.keep_versions();
  }
  // Versions that some node runs or is meant to run are never archived.
  std::set<int64_t> protect;
  for (const auto& node : options_.fleet->List()) {
    for (const auto& [m, ref] : node.active_versions()) {
      if (m == request->model()) protect.insert(ref.version());
    }
    for (const auto& [m, ref] : node.desired_versions()) {
      if (m == request->model()) protect.insert(ref.version());
    }
  }
  std::vector<int64_t> archived;
  FEDGE_GRPC_ASSIGN(archived,
                    options_.registry->ApplyRetention(request->model(), keep, protect,
                                                      AuditOf(caller, request->reason())));
  for (int64_t v : archived) response->add_archived(v);
  std::vector<v1::Version> versions;
  FEDGE_GRPC_ASSIGN(versions, options_.registry->ListVersions(request->model()));
  for (const auto& v : versions) {
    if (!v.archived()) response->add_kept(v.version());
  }
  return grpc::Status::OK;
}

grpc::Status AdminService::ListAudit(grpc::ServerContext* context,
                                     const v1::ListAuditRequest* request,
                                     v1::ListAuditResponse* response) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  std::vector<v1::AuditEntry> entries;
  FEDGE_GRPC_ASSIGN(entries, options_.registry->ListAudit(
                                 request->model(), request->deployment_id(), request->limit()));
  for (auto& e : entries) *response->add_entries() = std::move(e);
  return grpc::Status::OK;
}

grpc::Status AdminService::WatchEvents(grpc::ServerContext* context,
                                       const v1::WatchEventsRequest* request,
                                       grpc::ServerWriter<v1::Event>* writer) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  if (options_.events == nullptr) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "events are not configured");
  }
  std::vector<std::string> types(request->types().begin(), request->types().end());
  int64_t after = request->after_id();
  while (!context->IsCancelled()) {
    auto batch = options_.events->WaitAfter(after, types, 100, absl::Milliseconds(500));
    if (!batch.ok()) return ToGrpcStatus(batch.status());
    for (const auto& e : *batch) {
      if (!writer->Write(e)) return grpc::Status::OK;
      after = std::max(after, e.id());
    }
  }
  return grpc::Status::OK;
}

grpc::Status AdminService::ListEvents(grpc::ServerContext* context,
                                      const v1::WatchEventsRequest* request,
                                      v1::ListEventsResponse* response) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  if (options_.events == nullptr) return grpc::Status::OK;
  std::vector<std::string> types(request->types().begin(), request->types().end());
  std::vector<v1::Event> events;
  FEDGE_GRPC_ASSIGN(events, options_.events->List(request->after_id(), types,
                                                  request->limit() > 0 ? request->limit() : 100));
  for (auto& e : events) *response->add_events() = std::move(e);
  return grpc::Status::OK;
}

grpc::Status AdminService::ListWebhookDeliveries(grpc::ServerContext* context,
                                                 const v1::ListWebhookDeliveriesRequest* request,
                                                 v1::ListWebhookDeliveriesResponse* response) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  if (options_.events == nullptr) return grpc::Status::OK;
  std::vector<v1::WebhookDelivery> deliveries;
  FEDGE_GRPC_ASSIGN(deliveries, options_.events->Deliveries(request->limit()));
  for (auto& d : deliveries) *response->add_deliveries() = std::move(d);
  return grpc::Status::OK;
}

grpc::Status AdminService::CreateDeployment(grpc::ServerContext* context,
                                            const v1::CreateDeploymentRequest* request,
                                            v1::Deployment* response) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  FEDGE_GRPC_ASSIGN(*response, options_.deploy->Create(*request, caller));
  return grpc::Status::OK;
}

grpc::Status AdminService::ListDeployments(grpc::ServerContext* context,
                                           const v1::ListDeploymentsRequest* request,
                                           v1::ListDeploymentsResponse* response) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  std::vector<v1::Deployment> all;
  FEDGE_GRPC_ASSIGN(all, options_.deploy->List());
  auto after = ParseNewestFirst(request->page_token());
  if (!after.ok()) return ToGrpcStatus(after.status());
  response->set_next_page_token(NewestFirstToken(TakePage(
      std::move(all), *after, request->limit(),
      [](const v1::Deployment& d) {
        return NewestFirst{-d.created_unix_ms(), d.id()};
      },
      response->mutable_deployments())));
  return grpc::Status::OK;
}

grpc::Status AdminService::GetDeployment(grpc::ServerContext* context,
                                         const v1::GetDeploymentRequest* request,
                                         v1::Deployment* response) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  FEDGE_GRPC_ASSIGN(*response, options_.deploy->Get(request->id()));
  return grpc::Status::OK;
}

grpc::Status AdminService::PauseDeployment(grpc::ServerContext* context,
                                           const v1::DeploymentActionRequest* request,
                                           v1::Deployment* response) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  FEDGE_GRPC_ASSIGN(*response, options_.deploy->Pause(request->id(), caller, request->reason()));
  return grpc::Status::OK;
}

grpc::Status AdminService::ResumeDeployment(grpc::ServerContext* context,
                                            const v1::DeploymentActionRequest* request,
                                            v1::Deployment* response) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  FEDGE_GRPC_ASSIGN(*response, options_.deploy->Resume(request->id(), caller, request->reason()));
  return grpc::Status::OK;
}

grpc::Status AdminService::RollbackDeployment(grpc::ServerContext* context,
                                              const v1::DeploymentActionRequest* request,
                                              v1::Deployment* response) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  FEDGE_GRPC_ASSIGN(*response, options_.deploy->Rollback(request->id(), caller, request->reason()));
  return grpc::Status::OK;
}

grpc::Status AdminService::SetRetrainPolicy(grpc::ServerContext* context,
                                            const v1::SetRetrainPolicyRequest* request,
                                            v1::RetrainPolicy* response) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  const v1::RetrainPolicy& p = request->policy();
  if (p.drift_quorum_nodes() < 0 || p.drift_quorum_fraction() < 0 ||
      p.drift_quorum_fraction() > 1 || p.drift_window_ms() < 0 || p.schedule_ms() < 0 ||
      p.cooldown_ms() < 0 || p.min_new_samples() < 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "retraining policy: counts and times must be >= 0 and the quorum share "
                        "in [0, 1]");
  }
  if (p.enabled() && p.drift_quorum_nodes() == 0 && p.drift_quorum_fraction() == 0 &&
      p.schedule_ms() == 0 && p.min_new_samples() == 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "an enabled retraining policy needs a drift quorum, a schedule or a "
                        "new-samples count (the manual trigger works without a policy being "
                        "enabled)");
  }
  absl::Status st =
      options_.registry->PutRetrainPolicy(request->model(), p, {caller, request->reason()});
  if (!st.ok()) return ToGrpcStatus(st);
  *response = p;
  return grpc::Status::OK;
}

grpc::Status AdminService::GetRetrainPolicy(grpc::ServerContext* context,
                                            const v1::GetRetrainPolicyRequest* request,
                                            v1::RetrainPolicy* response) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  std::map<std::string, v1::RetrainPolicy> all;
  FEDGE_GRPC_ASSIGN(all, options_.registry->RetrainPolicies());
  auto it = all.find(request->model());
  if (it == all.end()) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("model ", request->model(), " has no retraining policy"));
  }
  *response = it->second;
  return grpc::Status::OK;
}

grpc::Status AdminService::TriggerRetrain(grpc::ServerContext* context,
                                          const v1::TriggerRetrainRequest* request,
                                          v1::Job* response) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  if (options_.retrainer == nullptr) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "retraining is not configured");
  }
  FEDGE_GRPC_ASSIGN(
      *response,
      options_.retrainer->Trigger(
          request->model(),
          request->reason().empty() ? "manual" : absl::StrCat("manual: ", request->reason()),
          caller));
  return grpc::Status::OK;
}

namespace {

grpc::Status NoEnrollment() {
  return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                      "this coordinator runs without TLS (--insecure): there is no enrollment "
                      "and no node access to manage");
}

}  // namespace

void AdminService::AuditNode(const std::string& action, const std::string& principal,
                             const std::string& subject, const std::string& reason) {
  v1::AuditEntry audit;
  audit.set_action(action);
  audit.set_principal(principal);
  audit.set_reason(reason.empty() ? subject : absl::StrCat(subject, ": ", reason));
  (void)options_.registry->AppendAudit(audit);
}

grpc::Status AdminService::CreateEnrollmentToken(grpc::ServerContext* context,
                                                 const v1::CreateEnrollmentTokenRequest* request,
                                                 v1::EnrollmentToken* response) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  if (options_.enrollment == nullptr) return NoEnrollment();
  FEDGE_GRPC_ASSIGN(*response, options_.enrollment->CreateToken(*request, caller));
  AuditNode("enrollment_token.create", caller, absl::StrCat("token ", response->id()),
            absl::StrCat(response->uses(), " use(s)", request->description().empty() ? "" : ", ",
                         request->description()));
  return grpc::Status::OK;
}

grpc::Status AdminService::ListEnrollmentTokens(grpc::ServerContext* context,
                                                const v1::ListEnrollmentTokensRequest*,
                                                v1::ListEnrollmentTokensResponse* response) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  if (options_.enrollment == nullptr) return NoEnrollment();
  std::vector<v1::EnrollmentToken> tokens;
  FEDGE_GRPC_ASSIGN(tokens, options_.enrollment->ListTokens());
  for (auto& t : tokens) *response->add_tokens() = std::move(t);
  return grpc::Status::OK;
}

grpc::Status AdminService::RevokeEnrollmentToken(grpc::ServerContext* context,
                                                 const v1::RevokeEnrollmentTokenRequest* request,
                                                 v1::EnrollmentToken* response) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  if (options_.enrollment == nullptr) return NoEnrollment();
  FEDGE_GRPC_ASSIGN(*response, options_.enrollment->RevokeToken(request->id()));
  AuditNode("enrollment_token.revoke", caller, absl::StrCat("token ", request->id()),
            request->reason());
  return grpc::Status::OK;
}

grpc::Status AdminService::SetNodeAccess(grpc::ServerContext* context,
                                         const v1::SetNodeAccessRequest* request,
                                         v1::NodeAccess* response) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  if (options_.enrollment == nullptr) return NoEnrollment();
  FEDGE_GRPC_ASSIGN(*response, options_.enrollment->SetAccess(request->node_id(), request->state(),
                                                              caller, request->reason()));
  AuditNode(request->state() == v1::NODE_ENABLED ? "node.enable" : "node.disable", caller,
            absl::StrCat("node ", request->node_id()), request->reason());
  return grpc::Status::OK;
}

grpc::Status AdminService::RevokeNode(grpc::ServerContext* context,
                                      const v1::RevokeNodeRequest* request,
                                      v1::NodeAccess* response) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  if (options_.enrollment == nullptr) return NoEnrollment();
  FEDGE_GRPC_ASSIGN(*response,
                    options_.enrollment->Revoke(request->node_id(), caller, request->reason()));
  AuditNode("node.revoke", caller, absl::StrCat("node ", request->node_id()), request->reason());
  return grpc::Status::OK;
}

grpc::Status AdminService::ListNodeAccess(grpc::ServerContext* context,
                                          const v1::ListNodeAccessRequest* request,
                                          v1::ListNodeAccessResponse* response) {
  FEDGE_ADMIN_AUTHORIZE(caller);
  if (options_.enrollment == nullptr) return NoEnrollment();
  std::vector<v1::NodeAccess> nodes;
  FEDGE_GRPC_ASSIGN(nodes, options_.enrollment->ListNodes());
  response->set_next_page_token(TakePage(
      std::move(nodes), request->page_token(), request->limit(),
      [](const v1::NodeAccess& n) { return n.node_id(); }, response->mutable_nodes()));
  return grpc::Status::OK;
}

}  // namespace fedge::cloud::api
