#include "tools/fedgectl/cli.h"

#include <pwd.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <iostream>

#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "common/net/identity.h"
#include "common/net/servers.h"
#include "google/protobuf/util/json_util.h"

namespace fedge::cli {

int Fail(const std::string& message) {
  std::cerr << "fedgectl: " << message << "\n";
  return kFailed;
}

int Usage(const std::string& message) {
  std::cerr << "fedgectl: " << message << "\n";
  return kUsage;
}

int FailRpc(const std::string& what, const grpc::Status& st) {
  std::string hint;
  if (st.error_code() == grpc::StatusCode::UNAVAILABLE) {
    hint = absl::StrCat(" (is fedge-cloud running at ", absl::GetFlag(FLAGS_admin),
                        "? set --admin=HOST:PORT; ",
                        absl::GetFlag(FLAGS_insecure)
                            ? "a coordinator with TLS needs --ca_file instead of --insecure)"
                            : "with TLS, --ca_file must hold the CA of its certificate, or "
                              "--insecure for a plaintext one)");
  } else if (st.error_code() == grpc::StatusCode::UNAUTHENTICATED) {
    hint = Token().empty()
               ? " (no token sent: set FEDGE_TOKEN or --token; an admin creates one with "
                 "`fedgectl tokens create --name=NAME --role=ROLE`)"
               : " (the token sent is not in the cloud's tokens file: check FEDGE_TOKEN or "
                 "--token, or ask an admin for a new one)";
  } else if (st.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
    hint = " (ask an admin for a token with that role)";
  }
  std::cerr << "fedgectl: " << what << " failed: " << st.error_message() << hint << " ["
            << static_cast<int>(st.error_code()) << "]\n";
  return 1;
}

bool Json() { return absl::GetFlag(FLAGS_output) == "json"; }

void PrintJson(const google::protobuf::Message& m) {
  std::string json;
  google::protobuf::util::JsonPrintOptions opt;
  opt.add_whitespace = true;
  opt.preserve_proto_field_names = true;
  // Every field, zero and empty ones too (a label 0, a count 0): scripts read them by name.
  opt.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(m, &json, opt);
  std::cout << json;
}

// The operator's user name, recorded by the cloud as the creator of what this call makes.
std::string UserName() {
  const char* user = getenv("USER");
  if (user != nullptr && *user != '\0') return user;
  struct passwd* pw = getpwuid(getuid());
  return pw != nullptr ? pw->pw_name : "unknown";
}

std::unique_ptr<grpc::ClientContext> Context() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() +
                    std::chrono::seconds(absl::GetFlag(FLAGS_timeout_s)));
  AddCredentials(ctx.get());
  return ctx;
}

std::string Token() {
  std::string token = absl::GetFlag(FLAGS_token);
  if (token.empty()) {
    const char* env = getenv("FEDGE_TOKEN");
    if (env != nullptr) token = env;
  }
  return std::string(absl::StripAsciiWhitespace(token));
}

void AddCredentials(grpc::ClientContext* ctx) {
  // Without authentication on the cloud, the user name is the principal; with it, the cloud
  // ignores this and records the token's name.
  ctx->AddMetadata(fedge::net::kPrincipalMetadata, UserName());
  const std::string token = Token();
  if (!token.empty()) ctx->AddMetadata("authorization", absl::StrCat("Bearer ", token));
}

std::shared_ptr<grpc::Channel> AdminChannel(const std::string& target) {
  if (absl::GetFlag(FLAGS_insecure)) return fedge::net::MakeChannel(target);
  std::string ca = absl::GetFlag(FLAGS_ca_file);
  if (ca.empty() && getenv("FEDGE_CA_FILE") != nullptr) ca = getenv("FEDGE_CA_FILE");
  if (ca.empty()) {
    // The system's CAs: a coordinator certificate from a public or company CA.
    grpc::ChannelArguments args;
    if (!absl::GetFlag(FLAGS_tls_server_name).empty()) {
      args.SetSslTargetNameOverride(absl::GetFlag(FLAGS_tls_server_name));
    }
    return grpc::CreateCustomChannel(target, grpc::SslCredentials({}), args);
  }
  fedge::net::ChannelTls tls;
  tls.ca_file = ca;
  tls.server_name = absl::GetFlag(FLAGS_tls_server_name);
  return fedge::net::MakeChannel(target, tls);
}

std::unique_ptr<Admin::Stub> Stub() {
  return Admin::NewStub(AdminChannel(absl::GetFlag(FLAGS_admin)));
}

std::vector<std::string> SplitList(const std::string& s) {
  return absl::StrSplit(s, ',', absl::SkipEmpty());
}

bool ParseSelector(const std::string& text, google::protobuf::Map<std::string, std::string>* out) {
  for (const std::string& kv : SplitList(text)) {
    std::pair<std::string, std::string> p = absl::StrSplit(kv, absl::MaxSplits('=', 1));
    if (p.first.empty() || p.second.empty()) return false;
    (*out)[p.first] = p.second;
  }
  return true;
}

std::string Time(int64_t unix_ms) {
  if (unix_ms == 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", absl::FromUnixMillis(unix_ms),
                          absl::LocalTimeZone());
}

}  // namespace fedge::cli
