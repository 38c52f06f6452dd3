// Attacks on a coordinator with TLS on, over real gRPC on loopback: no certificate, a
// certificate from another CA, impersonation, enrollment tokens that are wrong, expired,
// revoked or spent, revoked and disabled nodes, certificate rotation, and HTTPS on REST.

#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "cloud/server/cloud_server.h"
#include "common/net/servers.h"
#include "common/tls/x509.h"
#include "fedge/v1/admin.grpc.pb.h"
#include "fedge/v1/fleet.grpc.pb.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "openssl/bio.h"
#include "openssl/pem.h"
#include "openssl/ssl.h"
#include "tests/testing/fixtures.h"

namespace fedge {
namespace {

void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The serial of the certificate a TLS server on 127.0.0.1:port presents to a new connection
// (verified against nothing: only read). Empty if the handshake fails.
std::string ServedSerial(int port) {
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()),
                                                         &SSL_CTX_free);
  static const unsigned char kAlpn[] = {2, 'h', '2', 8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  SSL_CTX_set_alpn_protos(ctx.get(), kAlpn, sizeof(kAlpn));
  std::unique_ptr<BIO, decltype(&BIO_free_all)> bio(BIO_new_ssl_connect(ctx.get()), &BIO_free_all);
  const std::string target = absl::StrCat("127.0.0.1:", port);
  BIO_set_conn_hostname(bio.get(), target.c_str());
  if (BIO_do_handshake(bio.get()) != 1) return "";
  SSL* ssl = nullptr;
  BIO_get_ssl(bio.get(), &ssl);
  std::unique_ptr<X509, decltype(&X509_free)> cert(SSL_get1_peer_certificate(ssl), &X509_free);
  if (!cert) return "";
  std::unique_ptr<BIO, decltype(&BIO_free)> mem(BIO_new(BIO_s_mem()), &BIO_free);
  PEM_write_bio_X509(mem.get(), cert.get());
  char* data = nullptr;
  long size = BIO_get_mem_data(mem.get(), &data);
  auto info = tls::ParseCertificate(std::string(data, static_cast<size_t>(size)));
  return info.ok() ? info->serial_hex : "";
}

class SecurityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cloud::CloudServer::Options o;
    o.data_dir = dir_.path() + "/cloud";
    o.fleet_address = "127.0.0.1:0";
    o.admin_address = "127.0.0.1:0";
    o.metrics_address = "127.0.0.1:0";
    o.rest_address = "127.0.0.1:0";
    o.tls_refresh_interval_s = 1;
    auto server = cloud::CloudServer::Start(o);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    ca_file_ = server_->node_ca_file();
    net::ChannelTls tls;
    tls.ca_file = ca_file_;
    admin_ = v1::Admin::NewStub(
        net::MakeChannel(absl::StrCat("127.0.0.1:", server_->admin_port()), tls));
  }

  std::string fleet() const { return absl::StrCat("127.0.0.1:", server_->fleet_port()); }

  // TLS toward the Fleet port without a client certificate.
  std::unique_ptr<v1::Fleet::Stub> Anonymous() {
    net::ChannelTls tls;
    tls.ca_file = ca_file_;
    return v1::Fleet::NewStub(net::MakeChannel(fleet(), tls));
  }

  v1::EnrollmentToken CreateToken(int uses, int64_t ttl_seconds = 0,
                                  std::map<std::string, std::string> labels = {}) {
    v1::CreateEnrollmentTokenRequest req;
    req.set_uses(uses);
    req.set_ttl_seconds(ttl_seconds);
    for (const auto& [k, v] : labels) (*req.mutable_labels())[k] = v;
    v1::EnrollmentToken token;
    auto ctx = testing::Context();
    grpc::Status st = admin_->CreateEnrollmentToken(ctx.get(), req, &token);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return token;
  }

  // Enrolls node_id with a key made here; on success the key and certificate are written to
  // <dir>/<node_id>.key/.crt.
  grpc::Status Enroll(const std::string& node_id, const std::string& token,
                      v1::EnrollResponse* response = nullptr) {
    auto key = tls::GenerateKeyPem();
    EXPECT_TRUE(key.ok());
    auto csr = tls::MakeCsr(*key, node_id);
    EXPECT_TRUE(csr.ok());
    v1::EnrollRequest req;
    req.set_token(token);
    req.set_node_id(node_id);
    req.set_csr_pem(*csr);
    v1::EnrollResponse resp;
    auto ctx = testing::Context();
    grpc::Status st = Anonymous()->Enroll(ctx.get(), req, &resp);
    if (st.ok()) {
      WriteFile(KeyPath(node_id), *key);
      WriteFile(CertPath(node_id), resp.certificate_pem());
      if (response != nullptr) *response = resp;
    }
    return st;
  }

  std::string KeyPath(const std::string& node_id) const {
    return absl::StrCat(dir_.path(), "/", node_id, ".key");
  }
  std::string CertPath(const std::string& node_id) const {
    return absl::StrCat(dir_.path(), "/", node_id, ".crt");
  }

  // Mutual TLS as an enrolled node.
  std::unique_ptr<v1::Fleet::Stub> AsNode(const std::string& node_id) {
    net::ChannelTls tls;
    tls.ca_file = ca_file_;
    tls.cert_file = CertPath(node_id);
    tls.key_file = KeyPath(node_id);
    return v1::Fleet::NewStub(net::MakeChannel(fleet(), tls));
  }

  // Opens a Session as `stub`'s node, with `claimed` in metadata and in the Hello; returns
  // the first message, or the status the stream ended with.
  grpc::Status Hello(v1::Fleet::Stub* stub, const std::string& claimed,
                     grpc::ClientContext* ctx, v1::CloudMessage* first) {
    auto stream = stub->Session(ctx);
    v1::EdgeMessage hello;
    hello.mutable_hello()->set_node_id(claimed);
    hello.mutable_hello()->set_protocol_version(1);
    stream->Write(hello);
    if (stream->Read(first)) return grpc::Status::OK;
    return stream->Finish();
  }

  using Stream = grpc::ClientReaderWriter<v1::EdgeMessage, v1::CloudMessage>;

  // Opens node_id's Session with a Hello (and the labels it claims); null unless the cloud
  // answers with a HelloAck.
  std::unique_ptr<Stream> OpenSession(v1::Fleet::Stub* stub, const std::string& node_id,
                                      grpc::ClientContext* ctx,
                                      const std::map<std::string, std::string>& labels = {}) {
    auto stream = stub->Session(ctx);
    v1::EdgeMessage hello;
    hello.mutable_hello()->set_node_id(node_id);
    for (const auto& [k, v] : labels) (*hello.mutable_hello()->mutable_labels())[k] = v;
    hello.mutable_hello()->set_protocol_version(1);
    v1::CloudMessage first;
    if (!stream->Write(hello) || !stream->Read(&first) || !first.has_hello_ack()) return nullptr;
    return stream;
  }

  grpc::Status Offset(v1::Fleet::Stub* stub, const std::string& metadata_node = "") {
    auto ctx = testing::Context(metadata_node);
    v1::UploadOffsetRequest req;
    req.set_task_id("t");
    req.set_sha256(std::string(64, 'a'));
    v1::UploadOffsetResponse resp;
    return stub->UploadOffset(ctx.get(), req, &resp);
  }

  testing::TempDir dir_;
  std::unique_ptr<cloud::CloudServer> server_;
  std::string ca_file_;
  std::unique_ptr<v1::Admin::Stub> admin_;
};

TEST_F(SecurityTest, WithoutACertificateOnlyEnrollIsReachable) {
  auto anon = Anonymous();
  // Metadata naming a node counts for nothing over TLS.
  grpc::Status st = Offset(anon.get(), "edge-1");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED) << st.error_message();
  EXPECT_NE(st.error_message().find("certificate"), std::string::npos) << st.error_message();
  {
    auto ctx = testing::Context("edge-1");
    v1::DownloadRequest req;
    req.set_sha256(std::string(64, 'a'));
    auto reader = anon->DownloadModel(ctx.get(), req);
    v1::Chunk chunk;
    while (reader->Read(&chunk)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    auto ctx = testing::Context("edge-1");
    v1::CloudMessage first;
    EXPECT_EQ(Hello(anon.get(), "edge-1", ctx.get(), &first).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    auto ctx = testing::Context();
    v1::RenewCertificateRequest req;
    v1::EnrollResponse resp;
    EXPECT_EQ(anon->RenewCertificate(ctx.get(), req, &resp).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  // Enroll answers (here: the token is wrong), so the port is reachable without a certificate.
  EXPECT_EQ(Enroll("edge-1", "0123456789ab.fedge_not-a-token").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // Plaintext does not even connect.
  auto plain = v1::Fleet::NewStub(net::MakeChannel(fleet()));
  EXPECT_EQ(Offset(plain.get(), "edge-1").error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(SecurityTest, AnEnrolledNodeIsItsCertificateAndCannotPoseAsAnother) {
  const v1::EnrollmentToken token = CreateToken(2, 0, {{"site", "plant-9"}});
  v1::EnrollResponse enrolled;
  ASSERT_TRUE(Enroll("edge-1", token.secret(), &enrolled).ok());
  auto info = tls::ParseCertificate(enrolled.certificate_pem());
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->common_name, "edge-1");
  EXPECT_TRUE(tls::VerifyCertificate(enrolled.certificate_pem(), ReadFile(ca_file_), absl::Now())
                  .ok());
  EXPECT_EQ(enrolled.labels().at("site"), "plant-9");

  auto node = AsNode("edge-1");
  EXPECT_TRUE(Offset(node.get()).ok());
  // Metadata naming another node is ignored; a Hello naming another node is refused.
  EXPECT_TRUE(Offset(node.get(), "edge-2").ok());
  {
    auto ctx = testing::Context("edge-2", absl::Seconds(10));
    v1::CloudMessage first;
    grpc::Status st = Hello(node.get(), "edge-2", ctx.get(), &first);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  }
  // Its own Hello works, and the labels bound at enrollment override what the node claims.
  {
    auto ctx = testing::Context("", absl::Seconds(10));
    auto stream = OpenSession(node.get(), "edge-1", ctx.get(), {{"site", "plant-1"}});
    ASSERT_NE(stream, nullptr);
    v1::ListNodesResponse nodes;
    auto lctx = testing::Context();
    ASSERT_TRUE(admin_->ListNodes(lctx.get(), v1::ListNodesRequest(), &nodes).ok());
    ASSERT_EQ(nodes.nodes_size(), 1);
    EXPECT_EQ(nodes.nodes(0).labels().at("site"), "plant-9");
    ctx->TryCancel();
  }
  // A node cannot download what it was not sent.
  {
    auto ctx = testing::Context();
    v1::DownloadRequest req;
    req.set_sha256(std::string(64, 'c'));
    auto reader = node->DownloadModel(ctx.get(), req);
    v1::Chunk chunk;
    while (reader->Read(&chunk)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  // A second enrollment of the same id is refused, even with uses left.
  EXPECT_EQ(Enroll("edge-1", token.secret()).error_code(), grpc::StatusCode::ALREADY_EXISTS);
}

TEST_F(SecurityTest, ACertificateFromAnotherCaDoesNotConnect) {
  auto key = tls::GenerateKeyPem();
  auto ca = tls::MakeSelfSignedCa(*key, "rogue CA", absl::Now(), absl::Hours(24));
  ASSERT_TRUE(ca.ok());
  auto node_key = tls::GenerateKeyPem();
  tls::IssueOptions issue;
  issue.common_name = "edge-1";
  issue.now = absl::Now();
  issue.validity = absl::Hours(1);
  issue.client_auth = true;
  auto cert = tls::IssueCertificate(tls::Issuer{*ca, *key}, *node_key, issue);
  ASSERT_TRUE(cert.ok());
  WriteFile(KeyPath("edge-1"), *node_key);
  WriteFile(CertPath("edge-1"), *cert);
  auto rogue = AsNode("edge-1");
  grpc::Status st = Offset(rogue.get());
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << st.error_message();
  EXPECT_TRUE(server_->registry() != nullptr);  // the coordinator is still serving
  EXPECT_TRUE(Offset(Anonymous().get()).error_code() == grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(SecurityTest, TokensThatAreWrongExpiredRevokedOrSpentAreRefused) {
  // Single use: the second use is refused, and a failed attempt spends nothing.
  const v1::EnrollmentToken once = CreateToken(1);
  {
    v1::EnrollRequest req;
    req.set_token(once.secret());
    req.set_node_id("edge-1");
    req.set_csr_pem("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n");
    v1::EnrollResponse resp;
    auto ctx = testing::Context();
    EXPECT_EQ(Anonymous()->Enroll(ctx.get(), req, &resp).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  EXPECT_EQ(Enroll("bad id!", once.secret()).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(Enroll("edge-1", once.secret()).ok());
  grpc::Status st = Enroll("edge-2", once.secret());
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  EXPECT_NE(st.error_message().find("used 1 of 1"), std::string::npos) << st.error_message();

  // N uses.
  const v1::EnrollmentToken three = CreateToken(3);
  for (const char* id : {"n-1", "n-2", "n-3"}) EXPECT_TRUE(Enroll(id, three.secret()).ok()) << id;
  EXPECT_EQ(Enroll("n-4", three.secret()).error_code(), grpc::StatusCode::PERMISSION_DENIED);

  // The right id with a wrong secret.
  EXPECT_EQ(Enroll("edge-3", absl::StrCat(three.id(), ".fedge_guess")).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);

  // Revoked.
  const v1::EnrollmentToken revoked = CreateToken(5);
  {
    v1::RevokeEnrollmentTokenRequest req;
    req.set_id(revoked.id());
    v1::EnrollmentToken out;
    auto ctx = testing::Context();
    ASSERT_TRUE(admin_->RevokeEnrollmentToken(ctx.get(), req, &out).ok());
    EXPECT_TRUE(out.revoked());
  }
  EXPECT_EQ(Enroll("edge-4", revoked.secret()).error_code(), grpc::StatusCode::UNAUTHENTICATED);

  // Expired.
  const v1::EnrollmentToken brief = CreateToken(5, 1);
  absl::SleepFor(absl::Milliseconds(1100));
  st = Enroll("edge-5", brief.secret());
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED) << st.error_message();
  EXPECT_NE(st.error_message().find("expired"), std::string::npos) << st.error_message();

  // What was used, by whom, is listed; no secret is.
  v1::ListEnrollmentTokensResponse list;
  auto ctx = testing::Context();
  ASSERT_TRUE(admin_->ListEnrollmentTokens(ctx.get(), v1::ListEnrollmentTokensRequest(), &list)
                  .ok());
  ASSERT_EQ(list.tokens_size(), 4);
  EXPECT_EQ(list.tokens(0).used(), 1);
  EXPECT_EQ(list.tokens(0).node_ids_size(), 1);
  EXPECT_EQ(list.tokens(1).used(), 3);
  for (const auto& t : list.tokens()) EXPECT_TRUE(t.secret().empty());
  // Only the hash is stored.
  auto rows = testing::QueryFile(dir_.path() + "/cloud/enroll.db",
                                 "SELECT secret_sha256 FROM tokens");
  for (const auto& row : rows) EXPECT_EQ(row[0].find("fedge_"), std::string::npos);
}

TEST_F(SecurityTest, DisablingOrRevokingANodeClosesItsSessionAndRefusesItsCalls) {
  const v1::EnrollmentToken token = CreateToken(2);
  ASSERT_TRUE(Enroll("edge-1", token.secret()).ok());
  auto node = AsNode("edge-1");
  auto ctx = testing::Context("", absl::Seconds(20));
  auto stream = OpenSession(node.get(), "edge-1", ctx.get());
  ASSERT_NE(stream, nullptr);

  v1::SetNodeAccessRequest disable;
  disable.set_node_id("edge-1");
  disable.set_state(v1::NODE_DISABLED);
  disable.set_reason("stolen gateway");
  v1::NodeAccess access;
  auto actx = testing::Context();
  ASSERT_TRUE(admin_->SetNodeAccess(actx.get(), disable, &access).ok());
  EXPECT_EQ(access.state(), v1::NODE_DISABLED);
  // The open session ends with PERMISSION_DENIED, and the next call is refused.
  v1::CloudMessage more;
  while (stream->Read(&more)) {
  }
  grpc::Status st = stream->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  EXPECT_NE(st.error_message().find("stolen gateway"), std::string::npos) << st.error_message();
  EXPECT_EQ(Offset(node.get()).error_code(), grpc::StatusCode::PERMISSION_DENIED);

  // Enabled again, it may call; revoked, it may not, and cannot enroll again.
  v1::SetNodeAccessRequest enable = disable;
  enable.set_state(v1::NODE_ENABLED);
  auto ectx = testing::Context();
  ASSERT_TRUE(admin_->SetNodeAccess(ectx.get(), enable, &access).ok());
  EXPECT_TRUE(Offset(node.get()).ok());
  v1::RevokeNodeRequest revoke;
  revoke.set_node_id("edge-1");
  auto rctx = testing::Context();
  ASSERT_TRUE(admin_->RevokeNode(rctx.get(), revoke, &access).ok());
  EXPECT_EQ(Offset(node.get()).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Enroll("edge-1", token.secret()).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  auto rctx2 = testing::Context();
  EXPECT_EQ(admin_->SetNodeAccess(rctx2.get(), enable, &access).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  // The audit log names who did what.
  v1::ListAuditResponse audit;
  auto lctx = testing::Context();
  ASSERT_TRUE(admin_->ListAudit(lctx.get(), v1::ListAuditRequest(), &audit).ok());
  std::set<std::string> actions;
  for (const auto& e : audit.entries()) actions.insert(e.action());
  for (const char* a : {"enrollment_token.create", "node.disable", "node.enable", "node.revoke"}) {
    EXPECT_EQ(actions.count(a), 1u) << a;
  }
}

TEST_F(SecurityTest, ANodeRenewsItsCertificateOverMutualTls) {
  const v1::EnrollmentToken token = CreateToken(1);
  v1::EnrollResponse first;
  ASSERT_TRUE(Enroll("edge-1", token.secret(), &first).ok());
  auto csr = tls::MakeCsr(ReadFile(KeyPath("edge-1")), "someone-else");
  ASSERT_TRUE(csr.ok());
  v1::RenewCertificateRequest req;
  req.set_csr_pem(*csr);
  v1::EnrollResponse renewed;
  auto ctx = testing::Context();
  grpc::Status st = AsNode("edge-1")->RenewCertificate(ctx.get(), req, &renewed);
  ASSERT_TRUE(st.ok()) << st.error_code() << " " << st.error_message();
  auto info = tls::ParseCertificate(renewed.certificate_pem());
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->common_name, "edge-1");  // the CSR's name is not the node's to choose
  EXPECT_NE(info->serial_hex, tls::ParseCertificate(first.certificate_pem())->serial_hex);
  EXPECT_TRUE(tls::KeyMatchesCertificate(ReadFile(KeyPath("edge-1")), renewed.certificate_pem())
                  .ok());
}

TEST_F(SecurityTest, ARotatedServerCertificateServesNewConnectionsWithoutDroppingOpenOnes) {
  const v1::EnrollmentToken token = CreateToken(1);
  ASSERT_TRUE(Enroll("edge-1", token.secret()).ok());
  auto node = AsNode("edge-1");
  auto ctx = testing::Context("", absl::Seconds(30));
  auto stream = OpenSession(node.get(), "edge-1", ctx.get());
  ASSERT_NE(stream, nullptr);

  // Rotate: a new key and certificate from the same CA, written over the served files.
  const std::string cert_path = server_->tls_cert_file();
  const std::string before = tls::ParseCertificate(ReadFile(cert_path))->serial_hex;
  const std::string ca_dir = dir_.path() + "/cloud/ca";
  auto key = tls::GenerateKeyPem();
  tls::IssueOptions issue;
  issue.common_name = "fedge coordinator";
  issue.dns_names = {"localhost"};
  issue.ip_addresses = {"127.0.0.1"};
  issue.now = absl::Now();
  issue.validity = absl::Hours(48);
  issue.server_auth = true;
  auto cert = tls::IssueCertificate(
      tls::Issuer{ReadFile(ca_dir + "/ca.crt"), ReadFile(ca_dir + "/ca.key")}, *key, issue);
  ASSERT_TRUE(cert.ok()) << cert.status();
  const std::string after = tls::ParseCertificate(*cert)->serial_hex;
  WriteFile(server_->tls_cert_file() + ".new", *cert);
  const std::string key_path = cert_path.substr(0, cert_path.size() - 4) + ".key";
  WriteFile(key_path + ".new", *key);
  ASSERT_EQ(std::rename((key_path + ".new").c_str(), key_path.c_str()), 0);
  ASSERT_EQ(std::rename((cert_path + ".new").c_str(), cert_path.c_str()), 0);

  // New connections see the new certificate within the refresh interval (1 s here), on the
  // gRPC ports and on REST.
  for (int port : {server_->fleet_port(), server_->admin_port(), server_->rest_port()}) {
    std::string served;
    for (int i = 0; i < 100 && served != after; ++i) {
      served = ServedSerial(port);
      if (served != after) absl::SleepFor(absl::Milliseconds(100));
    }
    EXPECT_EQ(served, after) << "port " << port << " still serves " << served;
  }
  auto fresh = AsNode("edge-1");
  EXPECT_TRUE(Offset(fresh.get()).ok());
  // The session opened before the rotation is still up.
  v1::EdgeMessage beat;
  beat.mutable_heartbeat()->set_sent_unix_ms(1);
  EXPECT_TRUE(stream->Write(beat));
  v1::ListNodesResponse nodes;
  auto lctx = testing::Context();
  ASSERT_TRUE(admin_->ListNodes(lctx.get(), v1::ListNodesRequest(), &nodes).ok());
  ASSERT_EQ(nodes.nodes_size(), 1);
  EXPECT_TRUE(nodes.nodes(0).connected());
}

TEST_F(SecurityTest, RestIsHttpsOnly) {
  httplib::SSLClient client("127.0.0.1", server_->rest_port());
  client.set_ca_cert_path(ca_file_.c_str());
  client.enable_server_certificate_verification(true);
  auto res = client.Post("/v1/admin/ListModels", "{}", "application/json");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200) << res->body;
  // Plain HTTP gets no answer.
  httplib::Client plain("127.0.0.1", server_->rest_port());
  plain.set_connection_timeout(2);
  plain.set_read_timeout(2);
  auto refused = plain.Post("/v1/admin/ListModels", "{}", "application/json");
  EXPECT_TRUE(!refused || refused->status != 200);
}

}  // namespace
}  // namespace fedge
