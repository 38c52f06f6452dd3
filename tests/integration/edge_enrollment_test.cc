// The edge's side of enrollment (edge/agent/credentials.h) against a real coordinator with TLS:
// enrolling once, renewing before expiry with the same key, and the errors a field technician
// sees.

#include <sys/stat.h>

#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "cloud/server/cloud_server.h"
#include "common/tls/x509.h"
#include "edge/agent/credentials.h"
#include "fedge/v1/admin.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"

namespace fedge {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class EdgeEnrollmentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cloud::CloudServer::Options o;
    o.data_dir = dir_.path() + "/cloud";
    o.fleet_address = "127.0.0.1:0";
    o.admin_address = "127.0.0.1:0";
    o.metrics_address = "127.0.0.1:0";
    o.rest_address = "";
    // Certificates start 5 minutes in the past (clock skew), so with 6 minutes of life one is
    // past two thirds of it at once: every Ensure() renews.
    o.node_cert_ttl = absl::Minutes(6);
    auto server = cloud::CloudServer::Start(o);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    net::ChannelTls tls;
    tls.ca_file = server_->node_ca_file();
    admin_ = v1::Admin::NewStub(
        net::MakeChannel(absl::StrCat("127.0.0.1:", server_->admin_port()), tls));
  }

  std::string Token(int uses) {
    v1::CreateEnrollmentTokenRequest req;
    req.set_uses(uses);
    v1::EnrollmentToken token;
    auto ctx = testing::Context();
    EXPECT_TRUE(admin_->CreateEnrollmentToken(ctx.get(), req, &token).ok());
    return token.secret();
  }

  edge::agent::NodeCredentials::Options Options(const std::string& node_id,
                                                const std::string& token) {
    edge::agent::NodeCredentials::Options o;
    o.node_id = node_id;
    o.cloud_address = absl::StrCat("127.0.0.1:", server_->fleet_port());
    o.dir = absl::StrCat(dir_.path(), "/", node_id, "-tls");
    o.ca_file = server_->node_ca_file();
    o.enroll_token = token;
    return o;
  }

  testing::TempDir dir_;
  std::unique_ptr<cloud::CloudServer> server_;
  std::unique_ptr<v1::Admin::Stub> admin_;
};

TEST_F(EdgeEnrollmentTest, EnrollsOnceThenRenewsWithTheSameKey) {
  edge::agent::NodeCredentials creds(Options("gw-1", Token(1)));
  ASSERT_TRUE(creds.Ensure().ok());
  struct stat st;
  ASSERT_EQ(::stat(creds.key_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  const std::string key = ReadFile(creds.key_path());
  const std::string first = ReadFile(creds.cert_path());
  auto info = tls::ParseCertificate(first);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->common_name, "gw-1");
  EXPECT_TRUE(tls::VerifyCertificate(first, ReadFile(server_->node_ca_file()), absl::Now()).ok());

  // Past two thirds of its life: renewed over mutual TLS (the single-use token is spent, so
  // this cannot be a second enrollment).
  ASSERT_TRUE(creds.Ensure().ok());
  const std::string second = ReadFile(creds.cert_path());
  EXPECT_NE(tls::ParseCertificate(second)->serial_hex, info->serial_hex);
  EXPECT_EQ(ReadFile(creds.key_path()), key);
  EXPECT_TRUE(tls::KeyMatchesCertificate(key, second).ok());
  v1::ListNodeAccessResponse access;
  auto ctx = testing::Context();
  ASSERT_TRUE(admin_->ListNodeAccess(ctx.get(), v1::ListNodeAccessRequest(), &access).ok());
  ASSERT_EQ(access.nodes_size(), 1);
  EXPECT_EQ(access.nodes(0).certificate_serial(), tls::ParseCertificate(second)->serial_hex);
}

TEST_F(EdgeEnrollmentTest, ErrorsSayWhatToDo) {
  // No certificate and no token.
  edge::agent::NodeCredentials bare(Options("gw-2", ""));
  absl::Status st = bare.Ensure();
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_NE(st.message().find("--enroll_token"), std::string::npos) << st;
  // A spent token: the cloud's refusal, with its code.
  const std::string token = Token(1);
  ASSERT_TRUE(edge::agent::NodeCredentials(Options("gw-3", token)).Ensure().ok());
  st = edge::agent::NodeCredentials(Options("gw-4", token)).Ensure();
  EXPECT_EQ(st.code(), absl::StatusCode::kPermissionDenied) << st;
  EXPECT_NE(st.message().find("enrollment refused"), std::string::npos) << st;
  // A state directory holding another node's certificate.
  auto other = Options("gw-5", "");
  other.dir = Options("gw-3", "").dir;
  st = edge::agent::NodeCredentials(other).Ensure();
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_NE(st.message().find("gw-3"), std::string::npos) << st;
  // A key left readable by others is tightened.
  ASSERT_EQ(::chmod(absl::StrCat(other.dir, "/node.key").c_str(), 0644), 0);
  edge::agent::NodeCredentials(Options("gw-3", "")).Ensure().IgnoreError();
  struct stat s;
  ASSERT_EQ(::stat(absl::StrCat(other.dir, "/node.key").c_str(), &s), 0);
  EXPECT_EQ(s.st_mode & 0777, 0600u);
}

}  // namespace
}  // namespace fedge
