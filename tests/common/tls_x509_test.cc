// X.509 helpers (common/tls). Every certificate this code makes is also read back by the real
// `openssl` command line, so the checks do not rest on the code under test alone.

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/tls/x509.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fedge::tls {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kOpenssl[] = "/usr/bin/openssl";

struct RunResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

RunResult RunShell(const std::string& command) {
  RunResult result;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return result;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) result.output.append(buffer, n);
  int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

// Whole seconds, as certificates hold them.
absl::Time NowSeconds() { return absl::FromUnixSeconds(absl::ToUnixSeconds(absl::Now())); }

// "notAfter=Nov 29 03:13:41 2026 GMT" as `openssl x509 -dates` prints it.
absl::Time OpensslDate(const std::string& dates, absl::string_view field) {
  for (absl::string_view line : absl::StrSplit(dates, '\n')) {
    if (absl::ConsumePrefix(&line, absl::StrCat(field, "="))) {
      absl::Time time;
      std::string error;
      // Days below 10 are padded with a space ("Nov  2"), which %d accepts.
      EXPECT_TRUE(absl::ParseTime("%b %d %H:%M:%S %Y GMT", std::string(line), &time, &error))
          << line << ": " << error;
      return time;
    }
  }
  ADD_FAILURE() << "no " << field << " in " << dates;
  return absl::InfinitePast();
}

class TlsX509Test : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "tls_x509_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    now_ = NowSeconds();
    auto key = GenerateKeyPem();
    ASSERT_TRUE(key.ok()) << key.status();
    auto cert = MakeSelfSignedCa(*key, "fedge test CA", now_, absl::Hours(24 * 30));
    ASSERT_TRUE(cert.ok()) << cert.status();
    ca_ = Issuer{*cert, *key};
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Writes text to a file in the test's directory and returns its path.
  std::string Write(const std::string& name, const std::string& text) {
    std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::trunc) << text;
    return path;
  }

  RunResult Openssl(const std::string& args) { return RunShell(absl::StrCat(kOpenssl, " ", args)); }

  IssueOptions ClientOptions(const std::string& node_id) {
    IssueOptions options;
    options.common_name = node_id;
    options.now = now_;
    options.validity = absl::Hours(24);
    options.client_auth = true;
    return options;
  }

  // A new key and a certificate for it from ca_.
  std::pair<std::string, std::string> Leaf(const IssueOptions& options) {
    auto key = GenerateKeyPem();
    EXPECT_TRUE(key.ok()) << key.status();
    auto cert = IssueCertificate(ca_, *key, options);
    EXPECT_TRUE(cert.ok()) << cert.status();
    return {*key, cert.value_or("")};
  }

  std::string dir_;
  absl::Time now_;
  Issuer ca_;
};

TEST_F(TlsX509Test, GeneratedKeyIsPkcs8OnP256) {
  auto key = GenerateKeyPem();
  ASSERT_TRUE(key.ok()) << key.status();
  EXPECT_TRUE(absl::StartsWith(*key, "-----BEGIN PRIVATE KEY-----\n")) << *key;
  RunResult text = Openssl(absl::StrCat("pkey -noout -text -in ", Write("key.pem", *key)));
  ASSERT_EQ(text.exit_code, 0) << text.output;
  EXPECT_THAT(text.output, HasSubstr("NIST CURVE: P-256"));
}

TEST_F(TlsX509Test, CsrVerifiesWithOpensslAndParsesBack) {
  auto key = GenerateKeyPem();
  ASSERT_TRUE(key.ok()) << key.status();
  auto csr = MakeCsr(*key, "node-1");
  ASSERT_TRUE(csr.ok()) << csr.status();
  RunResult req = Openssl(absl::StrCat("req -noout -verify -subject -in ", Write("csr.pem", *csr)));
  ASSERT_EQ(req.exit_code, 0) << req.output;
  EXPECT_THAT(req.output, HasSubstr("self-signature verify OK"));
  EXPECT_THAT(req.output, HasSubstr("subject=CN = node-1"));
  RunResult sig = Openssl(absl::StrCat("req -noout -text -in ", dir_, "/csr.pem"));
  EXPECT_THAT(sig.output, HasSubstr("Signature Algorithm: ecdsa-with-SHA256"));

  auto info = ParseCsr(*csr);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->common_name, "node-1");
  RunResult pub = Openssl(absl::StrCat("pkey -pubout -in ", Write("key.pem", *key)));
  ASSERT_EQ(pub.exit_code, 0) << pub.output;
  EXPECT_EQ(info->public_key_pem, pub.output);
}

TEST_F(TlsX509Test, ParsesCsrMadeByOpensslWithRsa2048) {
  std::string key = absl::StrCat(dir_, "/rsa.pem");
  ASSERT_EQ(Openssl(absl::StrCat("genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out ", key))
                .exit_code,
            0);
  std::string csr_path = absl::StrCat(dir_, "/rsa.csr");
  RunResult made =
      Openssl(absl::StrCat("req -new -key ", key, " -subj /CN=rsa-node -out ", csr_path));
  ASSERT_EQ(made.exit_code, 0) << made.output;
  std::ifstream in(csr_path);
  std::string csr((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto info = ParseCsr(csr);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->common_name, "rsa-node");

  // RSA leaves also get keyEncipherment (RSA key exchange in TLS 1.2).
  auto cert = SignCsr(ca_, csr, ClientOptions("rsa-node"));
  ASSERT_TRUE(cert.ok()) << cert.status();
  RunResult text = Openssl(absl::StrCat("x509 -noout -text -in ", Write("rsa.crt", *cert)));
  EXPECT_THAT(text.output, HasSubstr("Digital Signature, Key Encipherment"));
}

TEST_F(TlsX509Test, RejectsWeakOrUnexpectedCsrKeys) {
  for (const std::string& genpkey : {std::string("-algorithm RSA -pkeyopt rsa_keygen_bits:1024"),
                                     std::string("-algorithm EC -pkeyopt ec_paramgen_curve:P-384"),
                                     std::string("-algorithm ED25519")}) {
    SCOPED_TRACE(genpkey);
    std::string key = absl::StrCat(dir_, "/weak.pem");
    std::string csr_path = absl::StrCat(dir_, "/weak.csr");
    ASSERT_EQ(Openssl(absl::StrCat("genpkey ", genpkey, " -out ", key)).exit_code, 0);
    RunResult made =
        Openssl(absl::StrCat("req -new -key ", key, " -subj /CN=weak -out ", csr_path));
    ASSERT_EQ(made.exit_code, 0) << made.output;
    std::ifstream in(csr_path);
    std::string csr((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto info = ParseCsr(csr);
    EXPECT_EQ(info.status().code(), absl::StatusCode::kInvalidArgument) << info.status();
    EXPECT_THAT(info.status().message(), HasSubstr("EC P-256"));
    EXPECT_EQ(SignCsr(ca_, csr, ClientOptions("weak")).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
}

TEST_F(TlsX509Test, CaHasCriticalCaTrueAndCertSignUsage) {
  RunResult text = Openssl(absl::StrCat("x509 -noout -text -in ", Write("ca.pem", ca_.cert_pem)));
  ASSERT_EQ(text.exit_code, 0) << text.output;
  EXPECT_THAT(text.output,
              HasSubstr("X509v3 Basic Constraints: critical\n                CA:TRUE"));
  EXPECT_THAT(text.output, HasSubstr("X509v3 Key Usage: critical\n                Certificate "
                                     "Sign, CRL Sign"));
  EXPECT_THAT(text.output, HasSubstr("X509v3 Subject Key Identifier"));
  EXPECT_THAT(text.output, HasSubstr("Subject: CN = fedge test CA"));
  // A self-signed certificate verifies against itself.
  RunResult verify = Openssl(absl::StrCat("verify -CAfile ", dir_, "/ca.pem ", dir_, "/ca.pem"));
  EXPECT_EQ(verify.exit_code, 0) << verify.output;

  auto info = ParseCertificate(ca_.cert_pem);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_TRUE(info->is_ca);
  EXPECT_EQ(info->common_name, "fedge test CA");
  EXPECT_EQ(info->not_before, now_ - absl::Minutes(5));
  EXPECT_EQ(info->not_after, now_ - absl::Minutes(5) + absl::Hours(24 * 30));
}

TEST_F(TlsX509Test, IssuedLeafVerifiesWithOpensslAndVerifyCertificate) {
  IssueOptions options = ClientOptions("node-1");
  auto [key, cert] = Leaf(options);
  std::string ca_path = Write("ca.pem", ca_.cert_pem);
  std::string leaf_path = Write("leaf.pem", cert);
  RunResult verify =
      Openssl(absl::StrCat("verify -purpose sslclient -CAfile ", ca_path, " ", leaf_path));
  EXPECT_EQ(verify.exit_code, 0) << verify.output;
  EXPECT_THAT(verify.output, HasSubstr(": OK"));
  // clientAuth only: a TLS server must not accept it as its own certificate.
  RunResult server =
      Openssl(absl::StrCat("verify -purpose sslserver -CAfile ", ca_path, " ", leaf_path));
  EXPECT_NE(server.exit_code, 0) << server.output;

  EXPECT_TRUE(VerifyCertificate(cert, ca_.cert_pem, now_).ok())
      << VerifyCertificate(cert, ca_.cert_pem, now_);
  EXPECT_TRUE(KeyMatchesCertificate(key, cert).ok()) << KeyMatchesCertificate(key, cert);
}

TEST_F(TlsX509Test, ServerLeafCarriesSansAndExtensions) {
  IssueOptions options;
  options.common_name = "coordinator";
  options.dns_names = {"coordinator.fedge.svc", "*.fleet.example"};
  options.ip_addresses = {"127.0.0.1", "::1"};
  options.now = now_;
  options.validity = absl::Hours(72);
  options.client_auth = true;
  options.server_auth = true;
  auto [key, cert] = Leaf(options);
  std::string leaf_path = Write("leaf.pem", cert);

  RunResult text = Openssl(absl::StrCat("x509 -noout -text -in ", leaf_path));
  ASSERT_EQ(text.exit_code, 0) << text.output;
  EXPECT_THAT(text.output, HasSubstr("Version: 3 (0x2)"));
  EXPECT_THAT(text.output, HasSubstr("Signature Algorithm: ecdsa-with-SHA256"));
  EXPECT_THAT(text.output,
              HasSubstr("X509v3 Basic Constraints: critical\n                CA:FALSE"));
  EXPECT_THAT(text.output,
              HasSubstr("X509v3 Key Usage: critical\n                Digital Signature\n"));
  EXPECT_THAT(text.output, HasSubstr("TLS Web Client Authentication, TLS Web Server "
                                     "Authentication"));
  EXPECT_THAT(text.output, HasSubstr("X509v3 Subject Key Identifier"));
  EXPECT_THAT(text.output, HasSubstr("X509v3 Authority Key Identifier"));
  EXPECT_THAT(text.output,
              HasSubstr("DNS:coordinator.fedge.svc, DNS:*.fleet.example, IP Address:127.0.0.1, "
                        "IP Address:0:0:0:0:0:0:0:1"));
  RunResult verify = Openssl(absl::StrCat("verify -purpose sslserver -CAfile ",
                                          Write("ca.pem", ca_.cert_pem), " ", leaf_path));
  EXPECT_EQ(verify.exit_code, 0) << verify.output;

  auto info = ParseCertificate(cert);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->common_name, "coordinator");
  EXPECT_THAT(info->dns_names, ElementsAre("coordinator.fedge.svc", "*.fleet.example"));
  EXPECT_THAT(info->ip_addresses, ElementsAre("127.0.0.1", "::1"));
  EXPECT_FALSE(info->is_ca);
}

TEST_F(TlsX509Test, ParsedValiditySerialAndSubjectMatchOpenssl) {
  IssueOptions options = ClientOptions("node-7");
  auto [key, cert] = Leaf(options);
  std::string leaf_path = Write("leaf.pem", cert);
  auto info = ParseCertificate(cert);
  ASSERT_TRUE(info.ok()) << info.status();

  EXPECT_EQ(info->not_before, now_ - absl::Minutes(5));
  EXPECT_EQ(info->not_after, now_ - absl::Minutes(5) + absl::Hours(24));
  RunResult fields = Openssl(absl::StrCat("x509 -noout -subject -serial -dates -in ", leaf_path));
  ASSERT_EQ(fields.exit_code, 0) << fields.output;
  EXPECT_EQ(OpensslDate(fields.output, "notBefore"), info->not_before);
  EXPECT_EQ(OpensslDate(fields.output, "notAfter"), info->not_after);
  EXPECT_THAT(fields.output, HasSubstr("subject=CN = node-7\n"));
  EXPECT_THAT(fields.output,
              HasSubstr(absl::StrCat("serial=", absl::AsciiStrToUpper(info->serial_hex), "\n")));
  // 127 random bits with the top one set: 32 hex digits, the first of them 4 to 7.
  ASSERT_EQ(info->serial_hex.size(), 32u) << info->serial_hex;
  EXPECT_THAT("4567", HasSubstr(info->serial_hex.substr(0, 1)));
  EXPECT_EQ(info->serial_hex, absl::AsciiStrToLower(info->serial_hex));

  auto other = ParseCertificate(Leaf(options).second);
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_NE(other->serial_hex, info->serial_hex);
}

TEST_F(TlsX509Test, FingerprintIsSha256OfDer) {
  auto [key, cert] = Leaf(ClientOptions("node-1"));
  std::string leaf_path = Write("leaf.pem", cert);
  auto info = ParseCertificate(cert);
  ASSERT_TRUE(info.ok()) << info.status();

  RunResult sum =
      RunShell(absl::StrCat(kOpenssl, " x509 -outform DER -in ", leaf_path, " | sha256sum"));
  ASSERT_EQ(sum.exit_code, 0) << sum.output;
  EXPECT_EQ(info->sha256_fingerprint, sum.output.substr(0, 64));

  RunResult fingerprint = Openssl(absl::StrCat("x509 -noout -fingerprint -sha256 -in ", leaf_path));
  ASSERT_EQ(fingerprint.exit_code, 0) << fingerprint.output;
  std::string hex(
      absl::StripAsciiWhitespace(absl::StripPrefix(fingerprint.output, "sha256 Fingerprint=")));
  EXPECT_EQ(info->sha256_fingerprint, absl::AsciiStrToLower(absl::StrReplaceAll(hex, {{":", ""}})));
}

TEST_F(TlsX509Test, CsrSubjectIsIgnored) {
  auto key = GenerateKeyPem();
  ASSERT_TRUE(key.ok()) << key.status();
  auto csr = MakeCsr(*key, "evil");
  ASSERT_TRUE(csr.ok()) << csr.status();
  auto cert = SignCsr(ca_, *csr, ClientOptions("node-1"));
  ASSERT_TRUE(cert.ok()) << cert.status();
  RunResult subject = Openssl(absl::StrCat("x509 -noout -subject -in ", Write("leaf.pem", *cert)));
  EXPECT_EQ(subject.output, "subject=CN = node-1\n");
  auto info = ParseCertificate(*cert);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->common_name, "node-1");
  EXPECT_TRUE(KeyMatchesCertificate(*key, *cert).ok());
}

TEST_F(TlsX509Test, TamperedCsrIsInvalidArgument) {
  auto key = GenerateKeyPem();
  ASSERT_TRUE(key.ok()) << key.status();
  auto csr = MakeCsr(*key, "node-1");
  ASSERT_TRUE(csr.ok()) << csr.status();

  // One flipped base64 character in the body.
  std::string flipped = *csr;
  size_t body = flipped.find('\n') + 1;
  char& c = flipped[body + 40];
  c = c == 'A' ? 'B' : 'A';
  auto parsed = ParseCsr(flipped);
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << parsed.status();
  EXPECT_EQ(SignCsr(ca_, flipped, ClientOptions("node-1")).status().code(),
            absl::StatusCode::kInvalidArgument);

  // A well-formed request whose signed subject was changed after signing: only the signature
  // check can catch it, and openssl agrees that it does not verify.
  std::string der;
  std::string b64 = std::string(absl::StripSuffix(
      absl::StripPrefix(absl::StripAsciiWhitespace(*csr), "-----BEGIN CERTIFICATE REQUEST-----"),
      "-----END CERTIFICATE REQUEST-----"));
  b64 = absl::StrReplaceAll(b64, {{"\n", ""}});
  ASSERT_TRUE(absl::Base64Unescape(b64, &der));
  size_t at = der.find("node-1");
  ASSERT_NE(at, std::string::npos);
  der[at + 5] = '2';
  std::string altered =
      absl::StrCat("-----BEGIN CERTIFICATE REQUEST-----\n", absl::Base64Escape(der),
                   "\n-----END CERTIFICATE REQUEST-----\n");
  // OpenSSL 3.0's `req -verify` exits 0 even when the signature fails, so read its verdict.
  RunResult openssl =
      Openssl(absl::StrCat("req -noout -verify -in ", Write("altered.csr", altered)));
  EXPECT_THAT(openssl.output, HasSubstr("verify failure"));
  auto result = ParseCsr(altered);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
  EXPECT_THAT(result.status().message(), HasSubstr("signature does not verify"));
}

TEST_F(TlsX509Test, GarbageIsInvalidArgument) {
  const std::string garbage =
      "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
  for (const std::string& input : {std::string(""), std::string("hello"), garbage}) {
    SCOPED_TRACE(input);
    EXPECT_EQ(ParseCertificate(input).status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(ParseCsr(input).status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(MakeCsr(input, "node-1").status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(VerifyCertificate(input, ca_.cert_pem, now_).code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(VerifyCertificate(ca_.cert_pem, input, now_).code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(KeyMatchesCertificate(input, ca_.cert_pem).code(),
              absl::StatusCode::kInvalidArgument);
  }
  // A certificate is not a CSR, and a CSR is not a certificate.
  EXPECT_EQ(ParseCsr(ca_.cert_pem).status().code(), absl::StatusCode::kInvalidArgument);
  auto csr = MakeCsr(ca_.key_pem, "node-1");
  ASSERT_TRUE(csr.ok()) << csr.status();
  auto status = ParseCertificate(*csr).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("no PEM certificate"));
}

TEST_F(TlsX509Test, EncryptedKeyIsInvalidArgumentWithoutPrompting) {
  std::string path = absl::StrCat(dir_, "/enc.pem");
  ASSERT_EQ(Openssl(absl::StrCat("genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 "
                                 "-aes256 -pass pass:secret -out ",
                                 path))
                .exit_code,
            0);
  std::ifstream in(path);
  std::string key((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_THAT(key, HasSubstr("ENCRYPTED PRIVATE KEY"));
  auto csr = MakeCsr(key, "node-1");
  EXPECT_EQ(csr.status().code(), absl::StatusCode::kInvalidArgument) << csr.status();
  EXPECT_THAT(csr.status().message(), HasSubstr("unencrypted"));
}

TEST_F(TlsX509Test, MalformedOptionsAreInvalidArgument) {
  auto key = GenerateKeyPem();
  ASSERT_TRUE(key.ok()) << key.status();
  EXPECT_EQ(MakeCsr(*key, "").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeCsr(*key, std::string(65, 'a')).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(MakeCsr(*key, std::string(64, 'a')).ok());

  IssueOptions bad_ip = ClientOptions("node-1");
  bad_ip.ip_addresses = {"300.1.1.1"};
  auto status = IssueCertificate(ca_, *key, bad_ip).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("300.1.1.1"));

  IssueOptions bad_dns = ClientOptions("node-1");
  bad_dns.dns_names = {"a.example,DNS:evil.example"};
  EXPECT_EQ(IssueCertificate(ca_, *key, bad_dns).status().code(),
            absl::StatusCode::kInvalidArgument);

  IssueOptions too_short = ClientOptions("node-1");
  too_short.validity = absl::Minutes(5);
  EXPECT_EQ(IssueCertificate(ca_, *key, too_short).status().code(),
            absl::StatusCode::kInvalidArgument);

  // A leaf cannot issue.
  auto [leaf_key, leaf_cert] = Leaf(ClientOptions("node-2"));
  EXPECT_EQ(
      IssueCertificate(Issuer{leaf_cert, leaf_key}, *key, ClientOptions("node-3")).status().code(),
      absl::StatusCode::kInvalidArgument);
}

TEST_F(TlsX509Test, ExpiredCertificateIsUnauthenticated) {
  // Both made two days ago; the CA is still valid, the 1-hour leaf is not.
  const absl::Time then = now_ - absl::Hours(48);
  auto ca_key = GenerateKeyPem();
  ASSERT_TRUE(ca_key.ok());
  auto ca_cert = MakeSelfSignedCa(*ca_key, "old CA", then, absl::Hours(24 * 30));
  ASSERT_TRUE(ca_cert.ok()) << ca_cert.status();
  Issuer old_ca{*ca_cert, *ca_key};
  IssueOptions options = ClientOptions("node-1");
  options.now = then;
  options.validity = absl::Hours(1);
  auto key = GenerateKeyPem();
  ASSERT_TRUE(key.ok());
  auto cert = IssueCertificate(old_ca, *key, options);
  ASSERT_TRUE(cert.ok()) << cert.status();

  absl::Status expired = VerifyCertificate(*cert, old_ca.cert_pem, now_);
  EXPECT_EQ(expired.code(), absl::StatusCode::kUnauthenticated) << expired;
  EXPECT_THAT(expired.message(), HasSubstr("certificate has expired"));
  RunResult verify = Openssl(absl::StrCat("verify -CAfile ", Write("ca.pem", old_ca.cert_pem), " ",
                                          Write("leaf.pem", *cert)));
  EXPECT_NE(verify.exit_code, 0) << verify.output;
  EXPECT_THAT(verify.output, HasSubstr("certificate has expired"));

  // `at` is the time of the check: within the window it verifies, before it it does not.
  EXPECT_TRUE(VerifyCertificate(*cert, old_ca.cert_pem, then + absl::Minutes(30)).ok());
  absl::Status early = VerifyCertificate(*cert, old_ca.cert_pem, then - absl::Hours(1));
  EXPECT_EQ(early.code(), absl::StatusCode::kUnauthenticated) << early;
  EXPECT_THAT(early.message(), HasSubstr("not yet valid"));
}

TEST_F(TlsX509Test, CertificateFromAnotherCaIsUnauthenticated) {
  auto other_key = GenerateKeyPem();
  ASSERT_TRUE(other_key.ok());
  auto other_ca = MakeSelfSignedCa(*other_key, "other CA", now_, absl::Hours(24));
  ASSERT_TRUE(other_ca.ok()) << other_ca.status();
  auto [key, cert] = Leaf(ClientOptions("node-1"));

  absl::Status status = VerifyCertificate(cert, *other_ca, now_);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated) << status;
  EXPECT_THAT(status.message(), HasSubstr("unable to get local issuer certificate"));
  RunResult verify = Openssl(
      absl::StrCat("verify -CAfile ", Write("other.pem", *other_ca), " ", Write("leaf.pem", cert)));
  EXPECT_NE(verify.exit_code, 0) << verify.output;

  // A bundle holding both CAs trusts it.
  EXPECT_TRUE(VerifyCertificate(cert, *other_ca + ca_.cert_pem, now_).ok());
  // A CA with the same name but another key does not.
  auto impostor = MakeSelfSignedCa(*other_key, "fedge test CA", now_, absl::Hours(24));
  ASSERT_TRUE(impostor.ok());
  EXPECT_EQ(VerifyCertificate(cert, *impostor, now_).code(), absl::StatusCode::kUnauthenticated);
}

TEST_F(TlsX509Test, KeyMismatchIsDetected) {
  auto [key, cert] = Leaf(ClientOptions("node-1"));
  auto other = GenerateKeyPem();
  ASSERT_TRUE(other.ok());
  EXPECT_TRUE(KeyMatchesCertificate(key, cert).ok());
  EXPECT_EQ(KeyMatchesCertificate(*other, cert).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(KeyMatchesCertificate(ca_.key_pem, cert).code(), absl::StatusCode::kInvalidArgument);

  // The same as openssl's view: the public keys differ.
  RunResult from_cert = Openssl(absl::StrCat("x509 -noout -pubkey -in ", Write("leaf.pem", cert)));
  RunResult from_key = Openssl(absl::StrCat("pkey -pubout -in ", Write("other.pem", *other)));
  EXPECT_NE(from_cert.output, from_key.output);

  Issuer wrong{ca_.cert_pem, *other};
  auto issued = IssueCertificate(wrong, key, ClientOptions("node-1"));
  EXPECT_EQ(issued.status().code(), absl::StatusCode::kInvalidArgument) << issued.status();
  EXPECT_THAT(issued.status().message(), HasSubstr("does not match"));
}

TEST_F(TlsX509Test, ValidityIsCappedAtIssuerNotAfter) {
  auto short_key = GenerateKeyPem();
  ASSERT_TRUE(short_key.ok());
  auto short_ca = MakeSelfSignedCa(*short_key, "short CA", now_, absl::Hours(24));
  ASSERT_TRUE(short_ca.ok()) << short_ca.status();
  IssueOptions options = ClientOptions("node-1");
  options.validity = absl::Hours(24 * 30);
  auto key = GenerateKeyPem();
  ASSERT_TRUE(key.ok());
  auto cert = IssueCertificate(Issuer{*short_ca, *short_key}, *key, options);
  ASSERT_TRUE(cert.ok()) << cert.status();

  RunResult ca_dates = Openssl(absl::StrCat("x509 -noout -dates -in ", Write("ca.pem", *short_ca)));
  RunResult leaf_dates = Openssl(absl::StrCat("x509 -noout -dates -in ", Write("leaf.pem", *cert)));
  absl::Time ca_not_after = OpensslDate(ca_dates.output, "notAfter");
  EXPECT_EQ(ca_not_after, now_ - absl::Minutes(5) + absl::Hours(24));
  EXPECT_EQ(OpensslDate(leaf_dates.output, "notAfter"), ca_not_after);
  auto info = ParseCertificate(*cert);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->not_after, ca_not_after);
}

TEST_F(TlsX509Test, ParseCertificateReadsTheFirstOfSeveral) {
  auto [key, cert] = Leaf(ClientOptions("node-1"));
  auto info = ParseCertificate(cert + ca_.cert_pem);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->common_name, "node-1");
}

}  // namespace
}  // namespace fedge::tls
