#include "edge/agent/credentials.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status/grpc_status.h"
#include "common/status/status.h"
#include "common/tls/files.h"
#include "common/tls/x509.h"
#include "fedge/v1/fleet.grpc.pb.h"
#include "glog/logging.h"
#include "grpcpp/client_context.h"

namespace fedge::edge::agent {
namespace {

void SetDeadline(grpc::ClientContext* context, absl::Duration timeout) {
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::milliseconds(absl::ToInt64Milliseconds(timeout)));
}

}  // namespace

net::ChannelTls NodeCredentials::channel_tls() const {
  net::ChannelTls tls;
  tls.ca_file = options_.ca_file;
  tls.cert_file = cert_path_;
  tls.key_file = key_path_;
  tls.server_name = options_.server_name;
  return tls;
}

absl::Status NodeCredentials::EnsureKey() {
  if (::mkdir(options_.dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create ", options_.dir, ": ", std::strerror(errno)));
  }
  struct stat st;
  if (::stat(key_path_.c_str(), &st) == 0) {
    if ((st.st_mode & 077) != 0) {
      // Someone loosened it; the key is only this node's business.
      ::chmod(key_path_.c_str(), 0600);
      LOG(WARNING) << key_path_ << " was readable by others; its mode is now 0600";
    }
    return absl::OkStatus();
  }
  FEDGE_ASSIGN_OR_RETURN(std::string key, tls::GenerateKeyPem());
  return tls::WritePemFile(key_path_, key, 0600);
}

absl::Status NodeCredentials::Ensure() {
  MutexLock lock(&mu_);
  FEDGE_RETURN_IF_ERROR(EnsureKey());
  absl::StatusOr<std::string> cert = tls::ReadPemFile(cert_path_);
  absl::StatusOr<std::string> key = tls::ReadPemFile(key_path_);
  if (!cert.ok() || !key.ok() || !tls::KeyMatchesCertificate(*key, *cert).ok()) return Enroll();
  FEDGE_ASSIGN_OR_RETURN(tls::CertificateInfo info, tls::ParseCertificate(*cert));
  const absl::Time now = absl::Now();
  if (info.common_name != options_.node_id) {
    return absl::FailedPreconditionError(absl::StrCat(
        cert_path_, " names node '", info.common_name, "' but this node is '", options_.node_id,
        "': use the --node_id it enrolled with, or a fresh --state_dir to enroll anew"));
  }
  if (now >= info.not_after) {
    LOG(WARNING) << "node=" << options_.node_id << " its certificate expired at "
                 << absl::FormatTime(info.not_after, absl::UTCTimeZone()) << "; enrolling again";
    return Enroll();
  }
  const absl::Time renew_at =
      info.not_before + (info.not_after - info.not_before) * options_.renew_after;
  if (now < renew_at) return absl::OkStatus();
  absl::Status renewed = Renew();
  if (!renewed.ok()) {
    // The certificate still works; try again on the next call.
    LOG(WARNING) << "node=" << options_.node_id << " cannot renew its certificate (valid until "
                 << absl::FormatTime(info.not_after, absl::UTCTimeZone()) << "): " << renewed;
  }
  return absl::OkStatus();
}

absl::Status NodeCredentials::Enroll() {
  if (options_.enroll_token.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "node '", options_.node_id, "' has no certificate in ", options_.dir,
        ": start it once with --enroll_token (from `fedgectl nodes token create`)"));
  }
  FEDGE_ASSIGN_OR_RETURN(std::string key, tls::ReadPemFile(key_path_));
  FEDGE_ASSIGN_OR_RETURN(std::string csr, tls::MakeCsr(key, options_.node_id));
  net::ChannelTls tls;
  tls.ca_file = options_.ca_file;
  tls.server_name = options_.server_name;
  auto stub = v1::Fleet::NewStub(net::MakeChannel(options_.cloud_address, tls));
  grpc::ClientContext context;
  SetDeadline(&context, options_.rpc_timeout);
  v1::EnrollRequest request;
  request.set_token(options_.enroll_token);
  request.set_node_id(options_.node_id);
  request.set_csr_pem(csr);
  v1::EnrollResponse response;
  grpc::Status st = stub->Enroll(&context, request, &response);
  if (!st.ok()) {
    return absl::Status(FromGrpcStatus(st).code(),
                        absl::StrCat("enrollment refused: ", st.error_message()));
  }
  FEDGE_RETURN_IF_ERROR(tls::KeyMatchesCertificate(key, response.certificate_pem()));
  FEDGE_RETURN_IF_ERROR(tls::WritePemFile(cert_path_, response.certificate_pem(), 0644));
  LOG(INFO) << "node=" << options_.node_id << " enrolled; certificate valid until "
            << absl::FormatTime(absl::FromUnixMillis(response.not_after_unix_ms()),
                                absl::UTCTimeZone());
  return absl::OkStatus();
}

absl::Status NodeCredentials::Renew() {
  FEDGE_ASSIGN_OR_RETURN(std::string key, tls::ReadPemFile(key_path_));
  FEDGE_ASSIGN_OR_RETURN(std::string csr, tls::MakeCsr(key, options_.node_id));
  auto stub = v1::Fleet::NewStub(net::MakeChannel(options_.cloud_address, channel_tls()));
  grpc::ClientContext context;
  SetDeadline(&context, options_.rpc_timeout);
  v1::RenewCertificateRequest request;
  request.set_csr_pem(csr);
  v1::EnrollResponse response;
  grpc::Status st = stub->RenewCertificate(&context, request, &response);
  if (!st.ok()) return FromGrpcStatus(st);
  FEDGE_RETURN_IF_ERROR(tls::KeyMatchesCertificate(key, response.certificate_pem()));
  FEDGE_RETURN_IF_ERROR(tls::WritePemFile(cert_path_, response.certificate_pem(), 0644));
  LOG(INFO) << "node=" << options_.node_id << " renewed its certificate until "
            << absl::FormatTime(absl::FromUnixMillis(response.not_after_unix_ms()),
                                absl::UTCTimeZone());
  return absl::OkStatus();
}

}  // namespace fedge::edge::agent
