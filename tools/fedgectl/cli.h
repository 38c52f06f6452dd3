#ifndef FEDGE_TOOLS_FEDGECTL_CLI_H_
#define FEDGE_TOOLS_FEDGECTL_CLI_H_

// Helpers shared by fedgectl's commands.

#include <memory>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "fedge/v1/admin.grpc.pb.h"
#include "google/protobuf/map.h"
#include "google/protobuf/message.h"
#include "grpcpp/client_context.h"

ABSL_DECLARE_FLAG(std::string, admin);
ABSL_DECLARE_FLAG(std::string, output);
ABSL_DECLARE_FLAG(int, timeout_s);
ABSL_DECLARE_FLAG(std::string, token);
ABSL_DECLARE_FLAG(bool, insecure);
ABSL_DECLARE_FLAG(std::string, ca_file);
ABSL_DECLARE_FLAG(std::string, tls_server_name);

namespace fedge::cli {

using v1::Admin;

// Exit codes scripts can trust.
inline constexpr int kOk = 0;
inline constexpr int kFailed = 1;  // the cloud refused, or the job / deployment failed
inline constexpr int kUsage = 2;   // the command line is wrong

// Print "fedgectl: <message>" and return kFailed (or kUsage).
int Fail(const std::string& message);
int Usage(const std::string& message);
int FailRpc(const std::string& what, const grpc::Status& st);
bool Json();
void PrintJson(const google::protobuf::Message& m);
std::string UserName();
// An Admin call's context: the deadline and the credentials.
std::unique_ptr<grpc::ClientContext> Context();
// The bearer token: --token, else $FEDGE_TOKEN; empty if neither.
std::string Token();
// The principal metadata and, if there is a token, `authorization: Bearer <token>`.
void AddCredentials(grpc::ClientContext* ctx);
std::unique_ptr<Admin::Stub> Stub();
std::vector<std::string> SplitList(const std::string& s);
// key=value,... into a map; false if an entry is malformed.
bool ParseSelector(const std::string& text, google::protobuf::Map<std::string, std::string>* out);
std::string Time(int64_t unix_ms);

// One unary Admin call; on failure prints why (with a hint) and returns false.
template <typename Request, typename Response>
bool CallAdmin(const char* what,
               grpc::Status (Admin::Stub::*method)(grpc::ClientContext*, const Request&, Response*),
               const Request& request, Response* response) {
  auto stub = Stub();
  auto ctx = Context();
  grpc::Status st = (stub.get()->*method)(ctx.get(), request, response);
  if (!st.ok()) {
    FailRpc(what, st);
    return false;
  }
  return true;
}

// A paged list call (admin.proto) page by page to its end, gathering what `items` names of each
// page into `all`; on failure prints why and returns false.
template <typename Request, typename Response, typename Items>
bool CallAdminAllPages(const char* what,
                       grpc::Status (Admin::Stub::*method)(grpc::ClientContext*, const Request&,
                                                           Response*),
                       Request request, Response* all, Items items) {
  while (true) {
    Response page;
    if (!CallAdmin(what, method, request, &page)) return false;
    for (auto& item : *items(&page)) *items(all)->Add() = std::move(item);
    if (page.next_page_token().empty()) return true;
    request.set_page_token(page.next_page_token());
  }
}

// Lifecycle commands (lifecycle.cc). `args` are the positional words after the command.
int ModelsLineage(const std::string& model);
int ModelsPromote(const std::string& model);
int ModelsAlias(const std::string& model);
int ModelsTag(const std::string& model);
int ModelsPolicy(const std::string& model);
int ModelsValidate(const std::string& model);
int ModelsRetention(const std::string& model);
int ModelsAudit(const std::string& model);
int ModelsRetrainPolicy(const std::string& model);
// The job's aggregation, selection, compression and async settings from the flags.
void FillStrategy(v1::JobSpec* spec);
int ModelsRetrain(const std::string& model);
int DeployCreate();
int DeployList();
int DeployStatus(const std::string& id);
int DeployAction(const std::string& action, const std::string& id);
int JobsCancel(const std::string& id);
int EventsWatch(bool follow);
int EventsDeliveries();

}  // namespace fedge::cli

#endif  // FEDGE_TOOLS_FEDGECTL_CLI_H_
