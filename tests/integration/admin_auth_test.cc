// Admin authentication and roles on a real coordinator over loopback: bearer tokens from a
// hashed token file, the least role of each method, the principal in the audit log, and the
// same rules on the REST gateway.

#include "cloud/api/admin_auth.h"

#include <httplib.h>

#include <chrono>
#include <fstream>
#include <future>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "cloud/server/cloud_server.h"
#include "common/auth/tokens.h"
#include "common/net/servers.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/test_cloud.h"

namespace fedge {
namespace {

const google::protobuf::ServiceDescriptor& AdminDescriptor() {
  return *google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
      v1::Admin::service_full_name());
}

class AdminAuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    viewer_ = *auth::GenerateSecret();
    operator_ = *auth::GenerateSecret();
    admin_ = *auth::GenerateSecret();
    WriteTokens(/*with_viewer=*/true);
    auto cloud = testing::TestCloud::Start(dir_.path(), absl::Seconds(5), tokens_path_);
    ASSERT_TRUE(cloud.ok()) << cloud.status();
    cloud_ = std::move(*cloud);
    auto v =
        testing::Register(cloud_.admin.get(), testing::SyntheticModelHeader("m"), "", operator_);
    ASSERT_TRUE(v.ok()) << v.status();
  }
  void TearDown() override {
    if (cloud_.server) cloud_.server->Shutdown();
  }

  void WriteTokens(bool with_viewer) {
    std::ofstream out(tokens_path_, std::ios::trunc);
    out << "# fedge admin tokens\n";
    if (with_viewer) out << auth::TokenLine("vera", auth::Role::kViewer, viewer_) << "\n";
    out << auth::TokenLine("otto", auth::Role::kOperator, operator_) << "\n"
        << auth::TokenLine("ada", auth::Role::kAdmin, admin_) << "\n";
  }

  // A context with `authorization: Bearer <token>` (none if empty).
  static std::unique_ptr<grpc::ClientContext> As(const std::string& token) {
    auto ctx = testing::Context();
    if (!token.empty()) ctx->AddMetadata("authorization", "Bearer " + token);
    return ctx;
  }

  grpc::Status ListModels(const std::string& token) {
    v1::ListModelsResponse resp;
    return cloud_.admin->ListModels(As(token).get(), {}, &resp);
  }

  grpc::Status StartJob(const std::string& token, v1::Job* job) {
    v1::StartJobRequest req;
    req.mutable_spec()->set_model("m");
    req.mutable_spec()->set_rounds(1);
    return cloud_.admin->StartJob(As(token).get(), req, job);
  }

  grpc::Status Promote(std::unique_ptr<grpc::ClientContext> ctx) {
    v1::PromoteRequest req;
    req.set_model("m");
    req.set_version(1);
    req.set_force(true);
    req.set_reason("auth test");
    v1::Version out;
    return cloud_.admin->Promote(ctx.get(), req, &out);
  }

  testing::TempDir dir_;
  std::string tokens_path_ = dir_.path() + "/tokens";
  std::string viewer_, operator_, admin_;
  testing::TestCloud cloud_;
};

TEST_F(AdminAuthTest, ViewerCanListButNotStartAJob) {
  v1::ListModelsResponse models;
  ASSERT_TRUE(cloud_.admin->ListModels(As(viewer_).get(), {}, &models).ok());
  EXPECT_EQ(models.models_size(), 1);
  v1::Job job;
  grpc::Status st = StartJob(viewer_, &job);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  EXPECT_EQ(st.error_message(), "Admin.StartJob needs role operator; token 'vera' has role viewer");
}

TEST_F(AdminAuthTest, OperatorCanStartAJobButNotPromote) {
  v1::Job job;
  grpc::Status st = StartJob(operator_, &job);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_FALSE(job.id().empty());
  EXPECT_EQ(job.creator(), "otto");
  st = Promote(As(operator_));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  EXPECT_EQ(st.error_message(), "Admin.Promote needs role admin; token 'otto' has role operator");
}

TEST_F(AdminAuthTest, AdminCanPromote) {
  grpc::Status st = Promote(As(admin_));
  EXPECT_TRUE(st.ok()) << st.error_message();
  v1::GetModelRequest req;
  req.set_name("m");
  v1::Model model;
  ASSERT_TRUE(cloud_.admin->GetModel(As(admin_).get(), req, &model).ok());
  EXPECT_EQ(model.aliases().at("production"), 1);
}

TEST_F(AdminAuthTest, MissingMalformedAndUnknownTokensAreUnauthenticated) {
  grpc::Status st = ListModels("");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(absl::StrContains(st.error_message(), "send `authorization: Bearer <token>`"))
      << st.error_message();
  EXPECT_TRUE(absl::StrContains(st.error_message(), "fedgectl tokens create"))
      << st.error_message();

  st = ListModels("fedge_not-a-token");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(absl::StrContains(st.error_message(), "unknown or revoked")) << st.error_message();

  // The hash from the file is not a credential.
  st = ListModels(auth::HashField(viewer_));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED);

  auto ctx = testing::Context();
  ctx->AddMetadata("authorization", "Basic " + viewer_);
  v1::ListModelsResponse resp;
  st = cloud_.admin->ListModels(ctx.get(), {}, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(absl::StrContains(st.error_message(), "not `Bearer <token>`")) << st.error_message();
}

TEST_F(AdminAuthTest, DeletingItsLineRevokesAToken) {
  ASSERT_TRUE(ListModels(viewer_).ok());
  WriteTokens(/*with_viewer=*/false);
  // The file is looked at at most once a second.
  absl::SleepFor(absl::Milliseconds(1100));
  grpc::Status st = ListModels(viewer_);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED) << st.error_message();
  EXPECT_TRUE(ListModels(operator_).ok());
}

TEST_F(AdminAuthTest, ABrokenTokensFileKeepsThePreviousTokens) {
  std::ofstream(tokens_path_, std::ios::trunc) << "ada admin plaintext-secret\n";
  absl::SleepFor(absl::Milliseconds(1100));
  EXPECT_TRUE(ListModels(viewer_).ok());
}

TEST_F(AdminAuthTest, AuditRecordsTheTokensNameAndIgnoresAForgedPrincipal) {
  auto ctx = As(admin_);
  ctx->AddMetadata("x-fedge-principal", "mallory");
  ASSERT_TRUE(Promote(std::move(ctx)).ok());
  v1::ListAuditRequest req;
  req.set_model("m");
  v1::ListAuditResponse audit;
  ASSERT_TRUE(cloud_.admin->ListAudit(As(viewer_).get(), req, &audit).ok());
  bool saw_register = false, saw_promote = false;
  for (const auto& e : audit.entries()) {
    EXPECT_NE(e.principal(), "mallory");
    if (e.action() == "register") {
      saw_register = true;
      EXPECT_EQ(e.principal(), "otto");
    }
    if (e.action() == "promote_forced") {
      saw_promote = true;
      EXPECT_EQ(e.principal(), "ada");
    }
  }
  EXPECT_TRUE(saw_register);
  EXPECT_TRUE(saw_promote);
  v1::GetVersionRequest get;
  get.set_model("m");
  get.set_version(1);
  v1::Version version;
  ASSERT_TRUE(cloud_.admin->GetVersion(As(viewer_).get(), get, &version).ok());
  EXPECT_EQ(version.creator(), "otto");
}

TEST_F(AdminAuthTest, RestAnswers401And403ByTheSameRules) {
  httplib::Client http("127.0.0.1", cloud_.server->rest_port());
  http.set_read_timeout(30, 0);
  auto post = [&](const std::string& method, const std::string& body,
                  const std::string& authorization) {
    httplib::Headers headers;
    if (!authorization.empty()) headers.emplace("Authorization", authorization);
    headers.emplace("X-Fedge-Principal", "mallory");
    return http.Post(absl::StrCat("/v1/admin/", method), headers, body, "application/json");
  };
  auto res = post("ListModels", "{}", "");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 401);
  EXPECT_EQ(res->get_header_value("WWW-Authenticate"), "Bearer");
  EXPECT_TRUE(absl::StrContains(res->body, "UNAUTHENTICATED")) << res->body;

  res = post("ListModels", "{}", "Bearer fedge_wrong");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 401);

  res = post("ListModels", "{}", "Bearer " + viewer_);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200) << res->body;

  res = post("StartJob", R"({"spec": {"model": "m", "rounds": 1}})", "Bearer " + viewer_);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 403);
  EXPECT_TRUE(absl::StrContains(res->body,
                                "Admin.StartJob needs role operator; token 'vera' has role viewer"))
      << res->body;

  res = post("Promote", R"({"model": "m", "version": 1, "force": true, "reason": "rest"})",
             "Bearer " + admin_);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200) << res->body;
  v1::ListAuditRequest req;
  req.set_model("m");
  v1::ListAuditResponse audit;
  ASSERT_TRUE(cloud_.admin->ListAudit(As(viewer_).get(), req, &audit).ok());
  ASSERT_GT(audit.entries_size(), 0);
  EXPECT_EQ(audit.entries(0).action(), "promote_forced");
  EXPECT_EQ(audit.entries(0).principal(), "ada");
}

// Whatever the method and its streaming kind, a call without a token is refused before the
// handler does anything: no method is left out of the check.
TEST_F(AdminAuthTest, EveryAdminMethodRefusesACallWithoutAToken) {
  auto channel = net::MakeChannel(absl::StrCat("127.0.0.1:", cloud_.server->admin_port()));
  grpc::GenericStub stub(channel);
  const auto& service = AdminDescriptor();
  for (int i = 0; i < service.method_count(); ++i) {
    const auto* method = service.method(i);
    SCOPED_TRACE(method->name());
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    ctx.AddMetadata("x-fedge-principal", "admin");
    grpc::Slice empty_message("");  // an empty request message, valid for every method
    grpc::ByteBuffer request(&empty_message, 1), response;
    std::promise<grpc::Status> done;
    stub.UnaryCall(&ctx, absl::StrCat("/", service.full_name(), "/", method->name()),
                   grpc::StubOptions(), &request, &response,
                   [&done](grpc::Status st) { done.set_value(std::move(st)); });
    grpc::Status st = done.get_future().get();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED) << st.error_message();
  }
}

TEST(AdminRolesTest, EveryAdminMethodHasARole) {
  absl::Status st = cloud::api::CheckAdminMethodRoles(AdminDescriptor());
  EXPECT_TRUE(st.ok()) << st;
}

TEST(AdminRolesTest, AMethodWithoutARoleIsNamed) {
  google::protobuf::FileDescriptorProto file;
  file.set_name("probe.proto");
  file.set_package("probe");
  auto* msg = file.add_message_type();
  msg->set_name("Empty");
  auto* service = file.add_service();
  service->set_name("Admin");
  for (const char* name : {"ListModels", "ExportEverything"}) {
    auto* m = service->add_method();
    m->set_name(name);
    m->set_input_type(".probe.Empty");
    m->set_output_type(".probe.Empty");
  }
  google::protobuf::DescriptorPool pool;
  ASSERT_NE(pool.BuildFile(file), nullptr);
  absl::Status st = cloud::api::CheckAdminMethodRoles(*pool.FindServiceByName("probe.Admin"));
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(absl::StrContains(st.message(), "methods without a role: [ExportEverything]")) << st;
  EXPECT_TRUE(absl::StrContains(st.message(), "AdminMethodRoles()")) << st;
}

TEST(AdminTokensFileTest, AMalformedFileFailsStartUpNamingTheLine) {
  testing::TempDir dir;
  const std::string path = dir.path() + "/tokens";
  std::ofstream(path) << "# tokens\nada admin fedge_plaintext\n";
  auto cloud = testing::TestCloud::Start(dir.path(), absl::Seconds(5), path);
  ASSERT_FALSE(cloud.ok());
  EXPECT_EQ(cloud.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(cloud.status().message(),
                               absl::StrCat("--admin_tokens_file: ", path, ":2: ")))
      << cloud.status();
}

}  // namespace
}  // namespace fedge
