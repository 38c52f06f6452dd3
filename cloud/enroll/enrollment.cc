#include "cloud/enroll/enrollment.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/auth/tokens.h"
#include "common/metrics/metrics.h"
#include "common/net/identity.h"
#include "common/sqlite/sqlite.h"
#include "common/status/status.h"
#include "common/sync/mutex.h"
#include "common/tensor/sha256.h"
#include "common/tls/files.h"
#include "common/tls/x509.h"
#include "glog/logging.h"

namespace fedge::cloud::enroll {
namespace {

using sqlite::Stmt;

constexpr char kDbFile[] = "enroll.db";
constexpr int kMaxTokenUses = 100000;
constexpr absl::Duration kDefaultTokenTtl = absl::Hours(24);
constexpr absl::Duration kMaxTokenTtl = absl::Hours(24 * 365);

// Forward migrations. Entry i takes the schema from user_version i to i + 1. Never edit an
// entry once released: append a new one.
const std::vector<const char*>& Migrations() {
  static const auto* const kMigrations = new std::vector<const char*>{
      R"sql(
CREATE TABLE tokens (
  id TEXT PRIMARY KEY,
  secret_sha256 TEXT NOT NULL,
  uses INTEGER NOT NULL,
  used INTEGER NOT NULL DEFAULT 0,
  expires_unix_ms INTEGER NOT NULL,
  labels TEXT NOT NULL,
  description TEXT NOT NULL,
  creator TEXT NOT NULL,
  created_unix_ms INTEGER NOT NULL,
  revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE nodes (
  node_id TEXT PRIMARY KEY,
  state INTEGER NOT NULL,
  labels TEXT NOT NULL,
  token_id TEXT NOT NULL,
  certificate_serial TEXT NOT NULL,
  certificate_not_after_unix_ms INTEGER NOT NULL,
  enrolled_unix_ms INTEGER NOT NULL,
  changed_by TEXT NOT NULL,
  reason TEXT NOT NULL,
  changed_unix_ms INTEGER NOT NULL
);
)sql",
  };
  return *kMigrations;
}

prometheus::Counter& EnrollCounter(const std::string& result) {
  return metrics::CounterFamily("fedge_cloud_enrollments_total",
                                "Enroll and RenewCertificate calls by result: enrolled, renewed, "
                                "or refused.")
      .Add({{"result", result}});
}

absl::Status MakeDir(const std::string& dir, mode_t mode) {
  if (::mkdir(dir.c_str(), mode) != 0 && errno != EEXIST) {
    return sqlite::ErrnoStatus(errno, absl::StrCat("cannot create ", dir));
  }
  return absl::OkStatus();
}

bool Exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

std::string EncodeLabels(const std::map<std::string, std::string>& labels) {
  std::vector<std::string> lines;
  for (const auto& [k, v] : labels) lines.push_back(absl::StrCat(k, "=", v));
  return absl::StrJoin(lines, "\n");
}

std::map<std::string, std::string> DecodeLabels(absl::string_view text) {
  std::map<std::string, std::string> labels;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(line, absl::MaxSplits('=', 1));
    labels[kv.first] = kv.second;
  }
  return labels;
}

absl::StatusOr<std::string> RandomHex(int bytes) {
  std::string raw(bytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), bytes) != 1) {
    return absl::InternalError("the random source failed");
  }
  return absl::BytesToHexString(raw);
}

// The columns TokenFromRow and NodeFromRow read, in their order.
constexpr char kSelectTokens[] =
    "SELECT id, uses, used, expires_unix_ms, labels, description, creator, created_unix_ms, "
    "revoked FROM tokens ";
constexpr char kSelectNodes[] =
    "SELECT node_id, state, labels, token_id, certificate_serial, "
    "certificate_not_after_unix_ms, enrolled_unix_ms, changed_by, reason, changed_unix_ms "
    "FROM nodes ";

absl::Status Refused(absl::Status status) {
  EnrollCounter("refused").Increment();
  return status;
}

}  // namespace

absl::Status ValidateLabel(absl::string_view key, absl::string_view value) {
  bool key_ok = !key.empty() && key.size() <= 63;
  for (char c : key) {
    key_ok = key_ok && (absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' ||
                        c == '_' || c == '/' || c == '-');
  }
  if (!key_ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "label key '", key, "' is invalid: use 1-63 characters [A-Za-z0-9._/-]"));
  }
  bool value_ok = value.size() <= 256;
  for (char c : value) value_ok = value_ok && static_cast<unsigned char>(c) >= 0x20 && c != 0x7f;
  if (!value_ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "label '", key, "' has an invalid value: at most 256 characters, no control characters"));
  }
  return absl::OkStatus();
}

absl::StatusOr<CaFiles> LoadOrCreateCa(const std::string& dir, Clock* clock) {
  CaFiles files{dir + "/ca.crt", dir + "/ca.key"};
  const bool have_cert = Exists(files.cert_path);
  const bool have_key = Exists(files.key_path);
  if (have_cert && have_key) {
    FEDGE_ASSIGN_OR_RETURN(std::string cert, tls::ReadPemFile(files.cert_path));
    FEDGE_ASSIGN_OR_RETURN(std::string key, tls::ReadPemFile(files.key_path));
    absl::Status match = tls::KeyMatchesCertificate(key, cert);
    if (!match.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          files.key_path, " is not the key of ", files.cert_path, ": ", match.message(),
          "; restore the pair from a backup (new node certificates need the same CA)"));
    }
    return files;
  }
  if (have_cert != have_key) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the node CA in ", dir, " is half there (", have_cert ? files.key_path : files.cert_path,
        " is missing); restore it from a backup, or remove both files to make a new CA (every "
        "enrolled node must then enroll again)"));
  }
  FEDGE_RETURN_IF_ERROR(MakeDir(dir, 0700));
  FEDGE_ASSIGN_OR_RETURN(std::string key, tls::GenerateKeyPem());
  FEDGE_ASSIGN_OR_RETURN(
      std::string cert,
      tls::MakeSelfSignedCa(key, "fedge node CA", clock->Now(), absl::Hours(24 * 365 * 10)));
  FEDGE_RETURN_IF_ERROR(tls::WritePemFile(files.key_path, key, 0600));
  FEDGE_RETURN_IF_ERROR(tls::WritePemFile(files.cert_path, cert, 0644));
  LOG(INFO) << "made a new node CA in " << dir << "; edges trust the coordinator with "
            << files.cert_path;
  return files;
}

absl::StatusOr<ServerCertFiles> EnsureServerCertificate(const CaFiles& ca, const std::string& dir,
                                                        const std::vector<std::string>& names,
                                                        Clock* clock) {
  ServerCertFiles files{dir + "/server.crt", dir + "/server.key"};
  tls::IssueOptions issue;
  // Not a valid node id, so this certificate can never pass for a node's.
  issue.common_name = "fedge coordinator";
  for (const std::string& name : names) {
    const bool ip = name.find(':') != std::string::npos ||
                    name.find_first_not_of("0123456789.") == std::string::npos;
    (ip ? issue.ip_addresses : issue.dns_names).push_back(name);
  }
  issue.now = clock->Now();
  issue.validity = absl::Hours(24 * 365);
  issue.server_auth = true;
  if (Exists(files.cert_path) && Exists(files.key_path)) {
    auto cert = tls::ReadPemFile(files.cert_path);
    auto key = tls::ReadPemFile(files.key_path);
    if (cert.ok() && key.ok() && tls::KeyMatchesCertificate(*key, *cert).ok()) {
      auto info = tls::ParseCertificate(*cert);
      if (info.ok() && info->dns_names == issue.dns_names &&
          info->ip_addresses.size() == issue.ip_addresses.size() &&
          info->not_after - issue.now > (info->not_after - info->not_before) / 3) {
        return files;
      }
    }
  }
  FEDGE_RETURN_IF_ERROR(MakeDir(dir, 0700));
  FEDGE_ASSIGN_OR_RETURN(std::string ca_cert, tls::ReadPemFile(ca.cert_path));
  FEDGE_ASSIGN_OR_RETURN(std::string ca_key, tls::ReadPemFile(ca.key_path));
  FEDGE_ASSIGN_OR_RETURN(std::string key, tls::GenerateKeyPem());
  FEDGE_ASSIGN_OR_RETURN(std::string cert,
                         tls::IssueCertificate(tls::Issuer{ca_cert, ca_key}, key, issue));
  // Key first: the certificate file's change is what a watcher picks up.
  FEDGE_RETURN_IF_ERROR(tls::WritePemFile(files.key_path, key, 0600));
  FEDGE_RETURN_IF_ERROR(tls::WritePemFile(files.cert_path, cert, 0644));
  LOG(INFO) << "issued the coordinator's server certificate for " << absl::StrJoin(names, ", ")
            << " into " << files.cert_path;
  return files;
}

struct Enrollment::Impl {
  struct Node {
    v1::NodeAccessState state = v1::NODE_ENABLED;
    std::map<std::string, std::string> labels;
    std::string changed_by;
    std::string reason;
  };

  Options options;
  tls::Issuer issuer;
  mutable Mutex mu;
  sqlite::Db db ABSL_GUARDED_BY(mu);
  std::map<std::string, Node> nodes ABSL_GUARDED_BY(mu);

  absl::Status LoadNodesLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    FEDGE_ASSIGN_OR_RETURN(
        Stmt q, Stmt::Prepare(db, "SELECT node_id, state, labels, changed_by, reason FROM nodes"));
    while (true) {
      FEDGE_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      Node& n = nodes[q.Text(0)];
      n.state = static_cast<v1::NodeAccessState>(q.Int(1));
      n.labels = DecodeLabels(q.Text(2));
      n.changed_by = q.Text(3);
      n.reason = q.Text(4);
    }
    return absl::OkStatus();
  }

  absl::StatusOr<v1::EnrollmentToken> ReadTokenLocked(const std::string& id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    FEDGE_ASSIGN_OR_RETURN(
        Stmt q, Stmt::Prepare(db, absl::StrCat(kSelectTokens, "WHERE id = ?")));
    q.Bind(1, id);
    FEDGE_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("no enrollment token '", id, "'"));
    v1::EnrollmentToken t = TokenFromRow(q);
    FEDGE_RETURN_IF_ERROR(AddTokenNodesLocked(&t));
    return t;
  }

  static v1::EnrollmentToken TokenFromRow(const Stmt& q) {
    v1::EnrollmentToken t;
    t.set_id(q.Text(0));
    t.set_uses(static_cast<int32_t>(q.Int(1)));
    t.set_used(static_cast<int32_t>(q.Int(2)));
    t.set_expires_unix_ms(q.Int(3));
    for (const auto& [k, v] : DecodeLabels(q.Text(4))) (*t.mutable_labels())[k] = v;
    t.set_description(q.Text(5));
    t.set_creator(q.Text(6));
    t.set_created_unix_ms(q.Int(7));
    t.set_revoked(q.Int(8) != 0);
    return t;
  }

  absl::Status AddTokenNodesLocked(v1::EnrollmentToken* t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    FEDGE_ASSIGN_OR_RETURN(
        Stmt q, Stmt::Prepare(db, "SELECT node_id FROM nodes WHERE token_id = ? ORDER BY node_id"));
    q.Bind(1, t->id());
    while (true) {
      FEDGE_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      t->add_node_ids(q.Text(0));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<v1::NodeAccess> ReadNodeLocked(const std::string& node_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    FEDGE_ASSIGN_OR_RETURN(
        Stmt q, Stmt::Prepare(db, absl::StrCat(kSelectNodes, "WHERE node_id = ?")));
    q.Bind(1, node_id);
    FEDGE_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("node '", node_id, "' never enrolled"));
    return NodeFromRow(q);
  }

  static v1::NodeAccess NodeFromRow(const Stmt& q) {
    v1::NodeAccess n;
    n.set_node_id(q.Text(0));
    n.set_state(static_cast<v1::NodeAccessState>(q.Int(1)));
    for (const auto& [k, v] : DecodeLabels(q.Text(2))) (*n.mutable_labels())[k] = v;
    n.set_token_id(q.Text(3));
    n.set_certificate_serial(q.Text(4));
    n.set_certificate_not_after_unix_ms(q.Int(5));
    n.set_enrolled_unix_ms(q.Int(6));
    n.set_changed_by(q.Text(7));
    n.set_reason(q.Text(8));
    n.set_changed_unix_ms(q.Int(9));
    return n;
  }

  struct Issued {
    v1::EnrollResponse response;  // all but the labels
    std::string serial_hex;
  };

  // Signs the CSR for node_id.
  absl::StatusOr<Issued> Issue(const std::string& node_id, absl::string_view csr_pem) const {
    tls::IssueOptions issue;
    issue.common_name = node_id;
    issue.now = options.clock->Now();
    issue.validity = options.certificate_ttl;
    issue.client_auth = true;
    FEDGE_ASSIGN_OR_RETURN(std::string cert, tls::SignCsr(issuer, csr_pem, issue));
    FEDGE_ASSIGN_OR_RETURN(tls::CertificateInfo info, tls::ParseCertificate(cert));
    Issued issued;
    issued.response.set_certificate_pem(cert);
    issued.response.set_issuer_pem(issuer.cert_pem);
    issued.response.set_not_after_unix_ms(absl::ToUnixMillis(info.not_after));
    issued.serial_hex = info.serial_hex;
    return issued;
  }
};

absl::StatusOr<std::unique_ptr<Enrollment>> Enrollment::Open(Options options) {
  auto impl = std::make_unique<Impl>();
  FEDGE_ASSIGN_OR_RETURN(impl->issuer.cert_pem, tls::ReadPemFile(options.ca.cert_path));
  FEDGE_ASSIGN_OR_RETURN(impl->issuer.key_pem, tls::ReadPemFile(options.ca.key_path));
  FEDGE_RETURN_IF_ERROR(tls::KeyMatchesCertificate(impl->issuer.key_pem, impl->issuer.cert_pem));
  if (options.certificate_ttl < absl::Minutes(5)) {
    return absl::InvalidArgumentError(
        "node certificates must live at least 5 minutes (--node_cert_ttl_h)");
  }
  sqlite::Db::Options db_opts;
  db_opts.label = kDbFile;
  db_opts.append_system_error = true;
  FEDGE_ASSIGN_OR_RETURN(
      sqlite::Db db,
      sqlite::Db::Open(absl::StrCat(options.data_dir, "/", kDbFile), Migrations(), db_opts));
  impl->options = std::move(options);
  {
    MutexLock lock(&impl->mu);
    impl->db = std::move(db);
    FEDGE_RETURN_IF_ERROR(impl->LoadNodesLocked());
  }
  for (const char* r : {"enrolled", "renewed", "refused"}) EnrollCounter(r);
  return std::unique_ptr<Enrollment>(new Enrollment(std::move(impl)));
}

Enrollment::Enrollment(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Enrollment::~Enrollment() = default;

const std::string& Enrollment::ca_pem() const { return impl_->issuer.cert_pem; }

absl::StatusOr<v1::EnrollmentToken> Enrollment::CreateToken(
    const v1::CreateEnrollmentTokenRequest& request, const std::string& creator) {
  if (request.uses() < 0 || request.uses() > kMaxTokenUses) {
    return absl::InvalidArgumentError(
        absl::StrCat("uses must be between 1 and ", kMaxTokenUses, " (0 means 1)"));
  }
  const absl::Duration ttl =
      request.ttl_seconds() == 0 ? kDefaultTokenTtl : absl::Seconds(request.ttl_seconds());
  if (ttl <= absl::ZeroDuration() || ttl > kMaxTokenTtl) {
    return absl::InvalidArgumentError("ttl must be between 1 s and 365 days (0 means one day)");
  }
  std::map<std::string, std::string> labels(request.labels().begin(), request.labels().end());
  for (const auto& [k, v] : labels) FEDGE_RETURN_IF_ERROR(ValidateLabel(k, v));
  if (request.description().size() > 1024) {
    return absl::InvalidArgumentError("description is longer than 1024 characters");
  }
  FEDGE_ASSIGN_OR_RETURN(std::string id, RandomHex(6));
  FEDGE_ASSIGN_OR_RETURN(std::string secret, auth::GenerateSecret());
  const std::string token = absl::StrCat(id, ".", secret);
  const int64_t now_ms = absl::ToUnixMillis(impl_->options.clock->Now());
  MutexLock lock(&impl_->mu);
  FEDGE_ASSIGN_OR_RETURN(
      Stmt ins, Stmt::Prepare(impl_->db,
                              "INSERT INTO tokens (id, secret_sha256, uses, expires_unix_ms, "
                              "labels, description, creator, created_unix_ms) VALUES "
                              "(?, ?, ?, ?, ?, ?, ?, ?)"));
  ins.Bind(1, id)
      .Bind(2, Sha256Hex(token))
      .Bind(3, int64_t{request.uses() == 0 ? 1 : request.uses()})
      .Bind(4, now_ms + absl::ToInt64Milliseconds(ttl))
      .Bind(5, EncodeLabels(labels))
      .Bind(6, request.description())
      .Bind(7, creator)
      .Bind(8, now_ms);
  FEDGE_RETURN_IF_ERROR(ins.Run());
  FEDGE_ASSIGN_OR_RETURN(v1::EnrollmentToken t, impl_->ReadTokenLocked(id));
  t.set_secret(token);
  LOG(INFO) << "enrollment token " << id << " created by " << creator << ": " << t.uses()
            << " use(s), expires in " << absl::FormatDuration(ttl);
  return t;
}

absl::StatusOr<std::vector<v1::EnrollmentToken>> Enrollment::ListTokens() {
  MutexLock lock(&impl_->mu);
  FEDGE_ASSIGN_OR_RETURN(
      Stmt q,
      Stmt::Prepare(impl_->db, absl::StrCat(kSelectTokens, "ORDER BY created_unix_ms, id")));
  std::vector<v1::EnrollmentToken> tokens;
  while (true) {
    FEDGE_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    tokens.push_back(Impl::TokenFromRow(q));
  }
  for (auto& t : tokens) FEDGE_RETURN_IF_ERROR(impl_->AddTokenNodesLocked(&t));
  return tokens;
}

absl::StatusOr<v1::EnrollmentToken> Enrollment::RevokeToken(const std::string& id) {
  MutexLock lock(&impl_->mu);
  FEDGE_ASSIGN_OR_RETURN(Stmt up,
                         Stmt::Prepare(impl_->db, "UPDATE tokens SET revoked = 1 WHERE id = ?"));
  up.Bind(1, id);
  FEDGE_RETURN_IF_ERROR(up.Run());
  return impl_->ReadTokenLocked(id);
}

absl::StatusOr<v1::EnrollResponse> Enrollment::Enroll(const v1::EnrollRequest& request) {
  const absl::Time now = impl_->options.clock->Now();
  std::pair<std::string, std::string> parts =
      absl::StrSplit(request.token(), absl::MaxSplits('.', 1));
  if (parts.first.empty() || parts.second.empty() || parts.first.size() > 32) {
    return Refused(absl::UnauthenticatedError(
        "the enrollment token is malformed: pass the whole token that `fedgectl nodes token "
        "create` printed"));
  }
  FEDGE_RETURN_IF_ERROR(net::ValidateNodeId(request.node_id()));
  if (request.csr_pem().size() > 16384) {
    return Refused(absl::InvalidArgumentError("the CSR is larger than 16 KiB"));
  }
  // Check the CSR before spending a use.
  absl::Status csr = tls::ParseCsr(request.csr_pem()).status();
  if (!csr.ok()) return Refused(csr);
  MutexLock lock(&impl_->mu);
  v1::EnrollResponse response;
  std::map<std::string, std::string> labels;
  absl::Status st =
      sqlite::InTransaction(impl_->db, [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status {
        FEDGE_ASSIGN_OR_RETURN(
            Stmt q, Stmt::Prepare(impl_->db,
                                  "SELECT secret_sha256, uses, used, expires_unix_ms, labels, "
                                  "revoked FROM tokens WHERE id = ?"));
        q.Bind(1, parts.first);
        FEDGE_ASSIGN_OR_RETURN(bool row, q.Step());
        const std::string want = row ? q.Text(0) : std::string(64, '0');
        const std::string got = Sha256Hex(request.token());
        const bool match = row && want.size() == got.size() &&
                           CRYPTO_memcmp(want.data(), got.data(), got.size()) == 0;
        if (!match) {
          return absl::UnauthenticatedError(
              "the enrollment token is not valid: create one with `fedgectl nodes token create`");
        }
        if (q.Int(5) != 0) {
          return absl::UnauthenticatedError(
              absl::StrCat("enrollment token ", parts.first, " was revoked"));
        }
        if (absl::FromUnixMillis(q.Int(3)) <= now) {
          return absl::UnauthenticatedError(absl::StrCat(
              "enrollment token ", parts.first, " expired at ",
              absl::FormatTime(absl::FromUnixMillis(q.Int(3)), absl::UTCTimeZone()),
              "; create a new one with `fedgectl nodes token create`"));
        }
        if (q.Int(2) >= q.Int(1)) {
          return absl::PermissionDeniedError(absl::StrCat(
              "enrollment token ", parts.first, " has been used ", q.Int(2), " of ", q.Int(1),
              " time(s); create a new one with `fedgectl nodes token create`"));
        }
        labels = DecodeLabels(q.Text(4));
        auto known = impl_->nodes.find(request.node_id());
        if (known != impl_->nodes.end()) {
          if (known->second.state == v1::NODE_REVOKED) {
            return absl::PermissionDeniedError(absl::StrCat(
                "node '", request.node_id(), "' was revoked and cannot enroll again; use a new id"));
          }
          return absl::AlreadyExistsError(absl::StrCat(
              "node '", request.node_id(),
              "' is already enrolled; a device that lost its key enrolls under a new id, and "
              "`fedgectl nodes revoke ",
              request.node_id(), "` retires the old one"));
        }
        FEDGE_ASSIGN_OR_RETURN(Impl::Issued issued,
                               impl_->Issue(request.node_id(), request.csr_pem()));
        response = std::move(issued.response);
        FEDGE_ASSIGN_OR_RETURN(
            Stmt use, Stmt::Prepare(impl_->db, "UPDATE tokens SET used = used + 1 WHERE id = ?"));
        use.Bind(1, parts.first);
        FEDGE_RETURN_IF_ERROR(use.Run());
        FEDGE_ASSIGN_OR_RETURN(
            Stmt ins,
            Stmt::Prepare(impl_->db,
                          "INSERT INTO nodes (node_id, state, labels, token_id, "
                          "certificate_serial, certificate_not_after_unix_ms, enrolled_unix_ms, "
                          "changed_by, reason, changed_unix_ms) VALUES "
                          "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
        const int64_t now_ms = absl::ToUnixMillis(now);
        ins.Bind(1, request.node_id())
            .Bind(2, int64_t{v1::NODE_ENABLED})
            .Bind(3, EncodeLabels(labels))
            .Bind(4, parts.first)
            .Bind(5, issued.serial_hex)
            .Bind(6, response.not_after_unix_ms())
            .Bind(7, now_ms)
            .Bind(8, absl::StrCat("token:", parts.first))
            .Bind(9, "enrolled")
            .Bind(10, now_ms);
        return ins.Run();
      });
  if (!st.ok()) return Refused(st);
  Impl::Node& node = impl_->nodes[request.node_id()];
  node.state = v1::NODE_ENABLED;
  node.labels = labels;
  for (const auto& [k, v] : labels) (*response.mutable_labels())[k] = v;
  EnrollCounter("enrolled").Increment();
  LOG(INFO) << "node=" << request.node_id() << " enrolled with token " << parts.first
            << "; certificate valid until "
            << absl::FormatTime(absl::FromUnixMillis(response.not_after_unix_ms()),
                                absl::UTCTimeZone());
  return response;
}

absl::StatusOr<v1::EnrollResponse> Enrollment::Renew(const std::string& node_id,
                                                     absl::string_view csr_pem) {
  FEDGE_RETURN_IF_ERROR(CheckNode(node_id));
  if (csr_pem.size() > 16384) {
    return Refused(absl::InvalidArgumentError("the CSR is larger than 16 KiB"));
  }
  absl::StatusOr<Impl::Issued> issued = impl_->Issue(node_id, csr_pem);
  if (!issued.ok()) return Refused(issued.status());
  v1::EnrollResponse& response = issued->response;
  MutexLock lock(&impl_->mu);
  auto known = impl_->nodes.find(node_id);
  if (known != impl_->nodes.end()) {
    for (const auto& [k, v] : known->second.labels) (*response.mutable_labels())[k] = v;
    FEDGE_ASSIGN_OR_RETURN(
        Stmt up, Stmt::Prepare(impl_->db,
                               "UPDATE nodes SET certificate_serial = ?, "
                               "certificate_not_after_unix_ms = ? WHERE node_id = ?"));
    up.Bind(1, issued->serial_hex).Bind(2, response.not_after_unix_ms()).Bind(3, node_id);
    FEDGE_RETURN_IF_ERROR(up.Run());
  }
  EnrollCounter("renewed").Increment();
  LOG(INFO) << "node=" << node_id << " renewed its certificate until "
            << absl::FormatTime(absl::FromUnixMillis(response.not_after_unix_ms()),
                                absl::UTCTimeZone());
  return response;
}

absl::Status Enrollment::CheckNode(const std::string& node_id) const {
  MutexLock lock(&impl_->mu);
  auto it = impl_->nodes.find(node_id);
  if (it == impl_->nodes.end() || it->second.state == v1::NODE_ENABLED) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat(
      "node '", node_id, "' is ", it->second.state == v1::NODE_REVOKED ? "revoked" : "disabled",
      " (by ", it->second.changed_by, it->second.reason.empty() ? "" : ": ", it->second.reason,
      ")"));
}

std::map<std::string, std::string> Enrollment::BoundLabels(const std::string& node_id) const {
  MutexLock lock(&impl_->mu);
  auto it = impl_->nodes.find(node_id);
  return it == impl_->nodes.end() ? std::map<std::string, std::string>{} : it->second.labels;
}

absl::StatusOr<v1::NodeAccess> Enrollment::SetAccess(const std::string& node_id,
                                                     v1::NodeAccessState state,
                                                     const std::string& principal,
                                                     const std::string& reason) {
  if (state != v1::NODE_ENABLED && state != v1::NODE_DISABLED) {
    return absl::InvalidArgumentError(
        "state must be NODE_ENABLED or NODE_DISABLED; revoking is RevokeNode");
  }
  FEDGE_RETURN_IF_ERROR(net::ValidateNodeId(node_id));
  const int64_t now_ms = absl::ToUnixMillis(impl_->options.clock->Now());
  v1::NodeAccess access;
  {
    MutexLock lock(&impl_->mu);
    auto it = impl_->nodes.find(node_id);
    if (it == impl_->nodes.end()) {
      return absl::NotFoundError(absl::StrCat("node '", node_id, "' never enrolled"));
    }
    if (it->second.state == v1::NODE_REVOKED) {
      return absl::FailedPreconditionError(
          absl::StrCat("node '", node_id, "' is revoked; revoking is final"));
    }
    FEDGE_ASSIGN_OR_RETURN(
        Stmt up, Stmt::Prepare(impl_->db,
                               "UPDATE nodes SET state = ?, changed_by = ?, reason = ?, "
                               "changed_unix_ms = ? WHERE node_id = ?"));
    up.Bind(1, int64_t{state}).Bind(2, principal).Bind(3, reason).Bind(4, now_ms).Bind(5, node_id);
    FEDGE_RETURN_IF_ERROR(up.Run());
    it->second.state = state;
    it->second.changed_by = principal;
    it->second.reason = reason;
    FEDGE_ASSIGN_OR_RETURN(access, impl_->ReadNodeLocked(node_id));
  }
  LOG(WARNING) << "node=" << node_id << (state == v1::NODE_ENABLED ? " enabled" : " disabled")
               << " by " << principal << (reason.empty() ? "" : ": ") << reason;
  if (state == v1::NODE_DISABLED && impl_->options.on_refused) {
    impl_->options.on_refused(node_id, CheckNode(node_id));
  }
  return access;
}

absl::StatusOr<v1::NodeAccess> Enrollment::Revoke(const std::string& node_id,
                                                  const std::string& principal,
                                                  const std::string& reason) {
  FEDGE_RETURN_IF_ERROR(net::ValidateNodeId(node_id));
  const int64_t now_ms = absl::ToUnixMillis(impl_->options.clock->Now());
  v1::NodeAccess access;
  {
    MutexLock lock(&impl_->mu);
    FEDGE_ASSIGN_OR_RETURN(
        Stmt up,
        Stmt::Prepare(impl_->db,
                      "INSERT INTO nodes (node_id, state, labels, token_id, certificate_serial, "
                      "certificate_not_after_unix_ms, enrolled_unix_ms, changed_by, reason, "
                      "changed_unix_ms) VALUES (?1, ?2, '', '', '', 0, 0, ?3, ?4, ?5) "
                      "ON CONFLICT(node_id) DO UPDATE SET state = ?2, changed_by = ?3, "
                      "reason = ?4, changed_unix_ms = ?5"));
    up.Bind(1, node_id)
        .Bind(2, int64_t{v1::NODE_REVOKED})
        .Bind(3, principal)
        .Bind(4, reason)
        .Bind(5, now_ms);
    FEDGE_RETURN_IF_ERROR(up.Run());
    Impl::Node& n = impl_->nodes[node_id];
    n.state = v1::NODE_REVOKED;
    n.changed_by = principal;
    n.reason = reason;
    FEDGE_ASSIGN_OR_RETURN(access, impl_->ReadNodeLocked(node_id));
  }
  LOG(WARNING) << "node=" << node_id << " revoked by " << principal
               << (reason.empty() ? "" : ": ") << reason;
  if (impl_->options.on_refused) impl_->options.on_refused(node_id, CheckNode(node_id));
  return access;
}

absl::StatusOr<std::vector<v1::NodeAccess>> Enrollment::ListNodes() {
  MutexLock lock(&impl_->mu);
  FEDGE_ASSIGN_OR_RETURN(
      Stmt q, Stmt::Prepare(impl_->db, absl::StrCat(kSelectNodes, "ORDER BY node_id")));
  std::vector<v1::NodeAccess> nodes;
  while (true) {
    FEDGE_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    nodes.push_back(Impl::NodeFromRow(q));
  }
  return nodes;
}

}  // namespace fedge::cloud::enroll
