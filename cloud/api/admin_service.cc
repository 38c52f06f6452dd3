#include "cloud/api/admin_service.h"

#include <map>

#include "absl/strings/str_cat.h"
#include "cloud/api/blob_stream.h"
#include "cloud/models/intake.h"
#include "common/net/identity.h"
#include "common/status/grpc_status.h"
#include "common/tensor/sha256.h"
#include "glog/logging.h"

namespace fedge::cloud::api {

grpc::Status AdminService::RegisterModel(grpc::ServerContext* context,
                                         grpc::ServerReader<v1::RegisterModelRequest>* reader,
                                         v1::Version* response) {
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
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("chunk at offset ", chunk.offset(), ", expected ",
                                       archive.size()));
    }
    if (static_cast<int64_t>(archive.size() + chunk.data().size()) > header.archive_size()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("archive exceeds its declared size of ",
                                       header.archive_size(), " bytes"));
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
  auto intake = models::BuildVersion(header, archive);
  if (!intake.ok()) return ToGrpcStatus(intake.status());
  auto sha = options_.registry->PutBlob(intake->archive);
  if (!sha.ok()) return ToGrpcStatus(sha.status());
  v1::Version version = intake->version;
  version.set_sha256(*sha);
  version.set_creator(net::CallerPrincipal(*context));
  auto added = options_.registry->AddVersion(version, header.description());
  if (!added.ok()) return ToGrpcStatus(added.status());
  LOG(INFO) << "registered " << added->model() << " v" << added->version() << " ("
            << added->contract().architecture() << ", " << added->size_bytes() << " bytes) by "
            << added->creator();
  *response = *added;
  return grpc::Status::OK;
}

grpc::Status AdminService::ListModels(grpc::ServerContext*, const v1::ListModelsRequest*,
                                      v1::ListModelsResponse* response) {
  auto models = options_.registry->ListModels();
  if (!models.ok()) return ToGrpcStatus(models.status());
  for (auto& m : *models) *response->add_models() = std::move(m);
  return grpc::Status::OK;
}

grpc::Status AdminService::ListVersions(grpc::ServerContext*,
                                        const v1::ListVersionsRequest* request,
                                        v1::ListVersionsResponse* response) {
  auto versions = options_.registry->ListVersions(request->model());
  if (!versions.ok()) return ToGrpcStatus(versions.status());
  for (auto& v : *versions) *response->add_versions() = std::move(v);
  return grpc::Status::OK;
}

grpc::Status AdminService::GetVersion(grpc::ServerContext*, const v1::GetVersionRequest* request,
                                      v1::Version* response) {
  auto version = options_.registry->GetVersion(request->model(), request->version());
  if (!version.ok()) return ToGrpcStatus(version.status());
  *response = *version;
  return grpc::Status::OK;
}

grpc::Status AdminService::DownloadVersion(grpc::ServerContext* context,
                                           const v1::GetVersionRequest* request,
                                           grpc::ServerWriter<v1::Chunk>* writer) {
  auto version = options_.registry->GetVersion(request->model(), request->version());
  if (!version.ok()) return ToGrpcStatus(version.status());
  return StreamBlob(*options_.registry, version->sha256(), request->offset(), context, writer);
}

grpc::Status AdminService::StartJob(grpc::ServerContext* context,
                                    const v1::StartJobRequest* request, v1::Job* response) {
  auto job = options_.jobs->Start(request->spec(), net::CallerPrincipal(*context));
  if (!job.ok()) return ToGrpcStatus(job.status());
  *response = *job;
  return grpc::Status::OK;
}

grpc::Status AdminService::GetJob(grpc::ServerContext*, const v1::GetJobRequest* request,
                                  v1::Job* response) {
  auto job = options_.jobs->Get(request->id());
  if (!job.ok()) return ToGrpcStatus(job.status());
  *response = *job;
  return grpc::Status::OK;
}

grpc::Status AdminService::ListJobs(grpc::ServerContext*, const v1::ListJobsRequest*,
                                    v1::ListJobsResponse* response) {
  auto jobs = options_.jobs->List();
  if (!jobs.ok()) return ToGrpcStatus(jobs.status());
  for (auto& j : *jobs) *response->add_jobs() = std::move(j);
  return grpc::Status::OK;
}

grpc::Status AdminService::ListNodes(grpc::ServerContext*, const v1::ListNodesRequest*,
                                     v1::ListNodesResponse* response) {
  for (auto& n : options_.fleet->List()) *response->add_nodes() = std::move(n);
  return grpc::Status::OK;
}

grpc::Status AdminService::Deploy(grpc::ServerContext* context, const v1::DeployRequest* request,
                                  v1::DeployResponse* response) {
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
            << " node(s) by " << net::CallerPrincipal(*context) << ": " << request->reason();
  return grpc::Status::OK;
}

}  // namespace fedge::cloud::api
