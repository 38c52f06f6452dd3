#include "common/tls/x509.h"

#include <arpa/inet.h>
#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <climits>
#include <ctime>
#include <memory>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status/status.h"

namespace fedge::tls {
namespace {

template <auto kFree>
struct Deleter {
  template <typename T>
  void operator()(T* p) const {
    kFree(p);
  }
};
template <typename T, auto kFree>
using Ptr = std::unique_ptr<T, Deleter<kFree>>;

using BioPtr = Ptr<BIO, BIO_free_all>;
using PkeyPtr = Ptr<EVP_PKEY, EVP_PKEY_free>;
using X509Ptr = Ptr<X509, X509_free>;
using ReqPtr = Ptr<X509_REQ, X509_REQ_free>;
using NamePtr = Ptr<X509_NAME, X509_NAME_free>;
using ExtPtr = Ptr<X509_EXTENSION, X509_EXTENSION_free>;
using BnPtr = Ptr<BIGNUM, BN_free>;
using Asn1IntPtr = Ptr<ASN1_INTEGER, ASN1_INTEGER_free>;
using Asn1OctetPtr = Ptr<ASN1_OCTET_STRING, ASN1_OCTET_STRING_free>;
using Ia5Ptr = Ptr<ASN1_IA5STRING, ASN1_IA5STRING_free>;
using GeneralNamePtr = Ptr<GENERAL_NAME, GENERAL_NAME_free>;
using GeneralNamesPtr = Ptr<GENERAL_NAMES, GENERAL_NAMES_free>;
using BasicConstraintsPtr = Ptr<BASIC_CONSTRAINTS, BASIC_CONSTRAINTS_free>;
using StorePtr = Ptr<X509_STORE, X509_STORE_free>;
using StoreCtxPtr = Ptr<X509_STORE_CTX, X509_STORE_CTX_free>;

// OpenSSL frees strings it allocates with OPENSSL_free, which is a macro.
void FreeOpenSslString(char* p) { OPENSSL_free(p); }
void FreeOpenSslBytes(unsigned char* p) { OPENSSL_free(p); }
using OpenSslStringPtr = Ptr<char, FreeOpenSslString>;
using OpenSslBytesPtr = Ptr<unsigned char, FreeOpenSslBytes>;

constexpr size_t kMaxCommonNameBytes = 64;  // ub-common-name, RFC 5280
constexpr int kMinRsaBits = 2048;
constexpr int kSerialBits = 127;

// Empties this thread's OpenSSL error queue and returns its entries, so that a later failure
// never reports a stale reason.
std::string DrainErrors() {
  std::vector<std::string> reasons;
  while (unsigned long code = ERR_get_error()) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof(buffer));
    reasons.emplace_back(buffer);
  }
  ERR_clear_error();
  return absl::StrJoin(reasons, "; ");
}

std::string WithReason(absl::string_view message) {
  std::string reason = DrainErrors();
  if (reason.empty()) return std::string(message);
  return absl::StrCat(message, " (OpenSSL: ", reason, ")");
}

absl::Status Internal(absl::string_view what) {
  return absl::InternalError(WithReason(absl::StrCat("OpenSSL failed ", what)));
}

absl::Status Invalid(absl::string_view message) {
  return absl::InvalidArgumentError(WithReason(message));
}

absl::StatusOr<BioPtr> ReadBio(absl::string_view text) {
  if (text.size() > static_cast<size_t>(INT_MAX)) {
    return absl::InvalidArgumentError("PEM input is larger than 2 GiB");
  }
  BioPtr bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
  if (bio == nullptr) return Internal("allocating a memory BIO");
  return bio;
}

absl::StatusOr<BioPtr> WriteBio() {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (bio == nullptr) return Internal("allocating a memory BIO");
  return bio;
}

std::string BioText(BIO* bio) {
  char* data = nullptr;
  long size = BIO_get_mem_data(bio, &data);
  return std::string(data, size > 0 ? static_cast<size_t>(size) : 0);
}

// A passphrase callback that refuses: with none, OpenSSL would prompt on the terminal for an
// encrypted key.
int NoPassphrase(char* /*buf*/, int /*size*/, int /*rwflag*/, void* /*u*/) { return -1; }

absl::StatusOr<PkeyPtr> ReadPrivateKey(absl::string_view pem) {
  FEDGE_ASSIGN_OR_RETURN(BioPtr bio, ReadBio(pem));
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassphrase, nullptr));
  if (key == nullptr) {
    return Invalid(
        "the private key is not an unencrypted PEM private key; pass the PEM text "
        "(\"BEGIN PRIVATE KEY\") of a key without a passphrase");
  }
  return key;
}

absl::StatusOr<X509Ptr> ReadCertificate(absl::string_view pem, absl::string_view what) {
  FEDGE_ASSIGN_OR_RETURN(BioPtr bio, ReadBio(pem));
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (cert == nullptr) {
    return Invalid(absl::StrCat(what,
                                " holds no PEM certificate; pass the text of a "
                                "\"BEGIN CERTIFICATE\" block"));
  }
  return cert;
}

absl::StatusOr<std::vector<X509Ptr>> ReadCertificates(absl::string_view pem,
                                                      absl::string_view what) {
  FEDGE_ASSIGN_OR_RETURN(BioPtr bio, ReadBio(pem));
  std::vector<X509Ptr> certs;
  while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
    certs.emplace_back(cert);
  }
  // The loop ends at the end of the input (PEM "no start line") or at a malformed block.
  unsigned long last = ERR_peek_last_error();
  bool clean_end = certs.empty() || (ERR_GET_LIB(last) == ERR_LIB_PEM &&
                                     ERR_GET_REASON(last) == PEM_R_NO_START_LINE);
  if (certs.empty() || !clean_end) {
    return Invalid(absl::StrCat(
        what, certs.empty() ? " holds no PEM certificate" : " holds a malformed certificate",
        "; pass the text of one or more \"BEGIN CERTIFICATE\" blocks"));
  }
  DrainErrors();
  return certs;
}

absl::StatusOr<std::string> PublicKeyPem(EVP_PKEY* key) {
  FEDGE_ASSIGN_OR_RETURN(BioPtr bio, WriteBio());
  if (PEM_write_bio_PUBKEY(bio.get(), key) != 1) return Internal("writing a public key");
  return BioText(bio.get());
}

absl::Status CheckCommonName(absl::string_view common_name) {
  if (common_name.empty() || common_name.size() > kMaxCommonNameBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("common name '", common_name, "' has ", common_name.size(),
                     " bytes; X.509 allows 1 to 64 (node ids follow the node id rules)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<NamePtr> CommonNameSubject(absl::string_view common_name) {
  FEDGE_RETURN_IF_ERROR(CheckCommonName(common_name));
  NamePtr name(X509_NAME_new());
  if (name == nullptr) return Internal("allocating a name");
  if (X509_NAME_add_entry_by_NID(name.get(), NID_commonName, MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(common_name.data()),
                                 static_cast<int>(common_name.size()), -1, 0) != 1) {
    return Invalid(
        absl::StrCat("common name '", common_name, "' is not a valid X.509 name; use UTF-8 text"));
  }
  return name;
}

// The UTF-8 text of the first CN in name, or "" if it has none.
absl::StatusOr<std::string> FirstCommonName(const X509_NAME* name) {
  int index = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (index < 0) return std::string();
  const ASN1_STRING* value = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, index));
  unsigned char* utf8 = nullptr;
  int size = ASN1_STRING_to_UTF8(&utf8, value);
  if (size < 0) return Invalid("the subject's common name is not valid text");
  OpenSslBytesPtr owned(utf8);
  return std::string(reinterpret_cast<const char*>(utf8), static_cast<size_t>(size));
}

// True for the key types a fedge CA certifies: EC P-256 and RSA of at least 2048 bits.
absl::Status CheckKeyType(EVP_PKEY* key) {
  if (EVP_PKEY_is_a(key, "EC")) {
    char group[80];
    size_t length = 0;
    if (EVP_PKEY_get_group_name(key, group, sizeof(group), &length) == 1) {
      int nid = OBJ_sn2nid(group);
      if (nid == NID_undef) nid = EC_curve_nist2nid(group);
      if (nid == NID_X9_62_prime256v1) return absl::OkStatus();
      DrainErrors();
      return absl::InvalidArgumentError(absl::StrCat(
          "the CSR's key is on curve ", group, "; use EC P-256 or RSA of at least 2048 bits"));
    }
    return Invalid(
        "the CSR's EC key has no named curve; use EC P-256 or RSA of at least 2048 bits");
  }
  if (EVP_PKEY_is_a(key, "RSA")) {
    int bits = EVP_PKEY_get_bits(key);
    if (bits >= kMinRsaBits) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(
        "the CSR's RSA key has ", bits, " bits; use RSA of at least 2048 bits or EC P-256"));
  }
  return absl::InvalidArgumentError(absl::StrCat("the CSR's key is of type ",
                                                 EVP_PKEY_get0_type_name(key),
                                                 "; use EC P-256 or RSA of at least 2048 bits"));
}

// The parsed CSR, after the checks ParseCsr promises (signature, key type).
absl::StatusOr<ReqPtr> ReadCheckedCsr(absl::string_view csr_pem) {
  FEDGE_ASSIGN_OR_RETURN(BioPtr bio, ReadBio(csr_pem));
  ReqPtr req(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
  if (req == nullptr) {
    return Invalid(
        "the CSR is not a PEM certificate request; pass the text of a \"BEGIN CERTIFICATE "
        "REQUEST\" block");
  }
  EVP_PKEY* key = X509_REQ_get0_pubkey(req.get());
  if (key == nullptr) return Invalid("the CSR's public key cannot be read");
  if (X509_REQ_verify(req.get(), key) != 1) {
    return Invalid(
        "the CSR's signature does not verify against its public key; the request was altered "
        "or signed with another key");
  }
  FEDGE_RETURN_IF_ERROR(CheckKeyType(key));
  return req;
}

absl::StatusOr<absl::Time> ToTime(const ASN1_TIME* time) {
  struct tm tm = {};
  if (ASN1_TIME_to_tm(time, &tm) != 1) return Invalid("the certificate has a malformed time");
  return absl::FromCivil(absl::CivilSecond(tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                                           tm.tm_min, tm.tm_sec),
                         absl::UTCTimeZone());
}

absl::Status SetTime(ASN1_TIME* field, absl::Time time) {
  if (ASN1_TIME_set(field, absl::ToTimeT(time)) == nullptr) {
    return Internal(absl::StrCat("setting a certificate time to ", absl::FormatTime(time)));
  }
  return absl::OkStatus();
}

absl::Status SetRandomSerial(X509* cert) {
  BnPtr bn(BN_new());
  if (bn == nullptr) return Internal("allocating a serial number");
  // The top bit set makes every serial exactly 127 bits: positive, and 16 DER octets.
  if (BN_rand(bn.get(), kSerialBits, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY) != 1) {
    return Internal("drawing a random serial number");
  }
  Asn1IntPtr serial(BN_to_ASN1_INTEGER(bn.get(), nullptr));
  if (serial == nullptr || X509_set_serialNumber(cert, serial.get()) != 1) {
    return Internal("setting the serial number");
  }
  return absl::OkStatus();
}

// Adds the extension that OpenSSL's config syntax `value` describes (e.g. "critical,CA:TRUE").
absl::Status AddExtension(X509* cert, X509V3_CTX* ctx, int nid, const char* value) {
  ExtPtr ext(X509V3_EXT_conf_nid(nullptr, ctx, nid, value));
  if (ext == nullptr || X509_add_ext(cert, ext.get(), -1) != 1) {
    return Internal(absl::StrCat("adding the extension ", OBJ_nid2sn(nid), "=", value));
  }
  return absl::OkStatus();
}

bool IsDnsName(absl::string_view name) {
  if (name.empty() || name.size() > 253) return false;
  if (name.substr(0, 2) == "*.") name.remove_prefix(2);
  if (name.empty() || name.front() == '.' || name.back() == '.') return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.') {
      return false;
    }
  }
  return true;
}

// Appends name to names, which owns it afterwards.
absl::Status Push(GENERAL_NAMES* names, GeneralNamePtr name) {
  if (sk_GENERAL_NAME_push(names, name.get()) == 0) return Internal("adding a subjectAltName");
  static_cast<void>(name.release());
  return absl::OkStatus();
}

absl::Status AddSubjectAltNames(X509* cert, const IssueOptions& options) {
  if (options.dns_names.empty() && options.ip_addresses.empty()) return absl::OkStatus();
  GeneralNamesPtr names(sk_GENERAL_NAME_new_null());
  if (names == nullptr) return Internal("allocating subjectAltName");
  for (const std::string& dns : options.dns_names) {
    if (!IsDnsName(dns)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "DNS name '", dns,
          "' is malformed; use letters, digits, '-' and '.', optionally after \"*.\""));
    }
    Ia5Ptr text(ASN1_IA5STRING_new());
    if (text == nullptr ||
        ASN1_STRING_set(text.get(), dns.data(), static_cast<int>(dns.size())) != 1) {
      return Internal("encoding a DNS name");
    }
    GeneralNamePtr name(GENERAL_NAME_new());
    if (name == nullptr) return Internal("allocating a DNS name");
    GENERAL_NAME_set0_value(name.get(), GEN_DNS, text.release());
    FEDGE_RETURN_IF_ERROR(Push(names.get(), std::move(name)));
  }
  for (const std::string& ip : options.ip_addresses) {
    Asn1OctetPtr address(a2i_IPADDRESS(ip.c_str()));
    if (address == nullptr) {
      DrainErrors();
      return absl::InvalidArgumentError(absl::StrCat(
          "IP address '", ip, "' is malformed; use dotted IPv4 or IPv6 text such as \"::1\""));
    }
    GeneralNamePtr name(GENERAL_NAME_new());
    if (name == nullptr) return Internal("allocating an IP address");
    GENERAL_NAME_set0_value(name.get(), GEN_IPADD, address.release());
    FEDGE_RETURN_IF_ERROR(Push(names.get(), std::move(name)));
  }
  if (X509_add1_ext_i2d(cert, NID_subject_alt_name, names.get(), 0, X509V3_ADD_DEFAULT) != 1) {
    return Internal("adding subjectAltName");
  }
  return absl::OkStatus();
}

bool IsCa(X509* cert) {
  BasicConstraintsPtr constraints(static_cast<BASIC_CONSTRAINTS*>(
      X509_get_ext_d2i(cert, NID_basic_constraints, nullptr, nullptr)));
  return constraints != nullptr && constraints->ca != 0;
}

absl::StatusOr<std::string> SignAndWrite(X509* cert, EVP_PKEY* key) {
  if (X509_sign(cert, key, EVP_sha256()) <= 0) return Internal("signing the certificate");
  FEDGE_ASSIGN_OR_RETURN(BioPtr bio, WriteBio());
  if (PEM_write_bio_X509(bio.get(), cert) != 1) return Internal("writing the certificate");
  return BioText(bio.get());
}

std::string IpText(const ASN1_OCTET_STRING* address) {
  const unsigned char* bytes = ASN1_STRING_get0_data(address);
  char text[INET6_ADDRSTRLEN] = {};
  int length = ASN1_STRING_length(address);
  if (length == 4 && inet_ntop(AF_INET, bytes, text, sizeof(text)) != nullptr) return text;
  if (length == 16 && inet_ntop(AF_INET6, bytes, text, sizeof(text)) != nullptr) return text;
  // Not an address (a name constraint's address/mask has 8 or 32 bytes): show the bytes.
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(bytes), static_cast<size_t>(length)));
}

}  // namespace

absl::StatusOr<std::string> GenerateKeyPem() {
  PkeyPtr key(EVP_EC_gen("P-256"));
  if (key == nullptr) return Internal("generating an EC P-256 key");
  FEDGE_ASSIGN_OR_RETURN(BioPtr bio, WriteBio());
  // PEM_write_bio_PrivateKey writes PKCS#8 ("BEGIN PRIVATE KEY") in OpenSSL 3.
  if (PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return Internal("writing the private key");
  }
  return BioText(bio.get());
}

absl::StatusOr<std::string> MakeCsr(absl::string_view key_pem, absl::string_view common_name) {
  FEDGE_ASSIGN_OR_RETURN(NamePtr subject, CommonNameSubject(common_name));
  FEDGE_ASSIGN_OR_RETURN(PkeyPtr key, ReadPrivateKey(key_pem));
  ReqPtr req(X509_REQ_new());
  if (req == nullptr) return Internal("allocating a CSR");
  if (X509_REQ_set_version(req.get(), X509_REQ_VERSION_1) != 1 ||
      X509_REQ_set_subject_name(req.get(), subject.get()) != 1 ||
      X509_REQ_set_pubkey(req.get(), key.get()) != 1) {
    return Internal("filling in the CSR");
  }
  if (X509_REQ_sign(req.get(), key.get(), EVP_sha256()) <= 0) return Internal("signing the CSR");
  FEDGE_ASSIGN_OR_RETURN(BioPtr bio, WriteBio());
  if (PEM_write_bio_X509_REQ(bio.get(), req.get()) != 1) return Internal("writing the CSR");
  return BioText(bio.get());
}

absl::StatusOr<CsrInfo> ParseCsr(absl::string_view csr_pem) {
  FEDGE_ASSIGN_OR_RETURN(ReqPtr req, ReadCheckedCsr(csr_pem));
  CsrInfo info;
  FEDGE_ASSIGN_OR_RETURN(info.common_name, FirstCommonName(X509_REQ_get_subject_name(req.get())));
  FEDGE_ASSIGN_OR_RETURN(info.public_key_pem, PublicKeyPem(X509_REQ_get0_pubkey(req.get())));
  return info;
}

absl::StatusOr<CertificateInfo> ParseCertificate(absl::string_view pem) {
  FEDGE_ASSIGN_OR_RETURN(X509Ptr cert, ReadCertificate(pem, "the input"));
  CertificateInfo info;
  FEDGE_ASSIGN_OR_RETURN(info.common_name, FirstCommonName(X509_get_subject_name(cert.get())));

  int critical = 0;
  GeneralNamesPtr names(static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(cert.get(), NID_subject_alt_name, &critical, nullptr)));
  if (names == nullptr && critical != -1) {
    return Invalid("the certificate's subjectAltName is malformed or repeated");
  }
  for (int i = 0; names != nullptr && i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names.get(), i);
    if (name->type == GEN_DNS) {
      const ASN1_IA5STRING* dns = name->d.dNSName;
      info.dns_names.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(dns)),
                                  static_cast<size_t>(ASN1_STRING_length(dns)));
    } else if (name->type == GEN_IPADD) {
      info.ip_addresses.push_back(IpText(name->d.iPAddress));
    }
  }

  FEDGE_ASSIGN_OR_RETURN(info.not_before, ToTime(X509_get0_notBefore(cert.get())));
  FEDGE_ASSIGN_OR_RETURN(info.not_after, ToTime(X509_get0_notAfter(cert.get())));

  BnPtr serial(ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert.get()), nullptr));
  if (serial == nullptr) return Invalid("the certificate's serial number is malformed");
  OpenSslStringPtr hex(BN_bn2hex(serial.get()));
  if (hex == nullptr) return Internal("printing the serial number");
  info.serial_hex = absl::AsciiStrToLower(hex.get());

  info.is_ca = IsCa(cert.get());

  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_size = 0;
  if (X509_digest(cert.get(), EVP_sha256(), digest, &digest_size) != 1) {
    return Internal("hashing the certificate");
  }
  info.sha256_fingerprint =
      absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(digest), digest_size));
  DrainErrors();  // X509_get_ext_d2i leaves no error for an absent extension, but be sure.
  return info;
}

absl::StatusOr<std::string> MakeSelfSignedCa(absl::string_view key_pem,
                                             absl::string_view common_name, absl::Time now,
                                             absl::Duration validity) {
  if (validity <= kClockSkew) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CA validity ", absl::FormatDuration(validity),
        " ends before now because certificates start 5m before now; ask for more than 5m"));
  }
  FEDGE_ASSIGN_OR_RETURN(NamePtr subject, CommonNameSubject(common_name));
  FEDGE_ASSIGN_OR_RETURN(PkeyPtr key, ReadPrivateKey(key_pem));
  X509Ptr cert(X509_new());
  if (cert == nullptr) return Internal("allocating a certificate");
  if (X509_set_version(cert.get(), X509_VERSION_3) != 1 ||
      X509_set_subject_name(cert.get(), subject.get()) != 1 ||
      X509_set_issuer_name(cert.get(), subject.get()) != 1 ||
      X509_set_pubkey(cert.get(), key.get()) != 1) {
    return Internal("filling in the CA certificate");
  }
  FEDGE_RETURN_IF_ERROR(SetRandomSerial(cert.get()));
  const absl::Time not_before = now - kClockSkew;
  FEDGE_RETURN_IF_ERROR(SetTime(X509_getm_notBefore(cert.get()), not_before));
  FEDGE_RETURN_IF_ERROR(SetTime(X509_getm_notAfter(cert.get()), not_before + validity));

  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, cert.get(), cert.get(), nullptr, nullptr, 0);
  FEDGE_RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_basic_constraints, "critical,CA:TRUE"));
  FEDGE_RETURN_IF_ERROR(
      AddExtension(cert.get(), &ctx, NID_key_usage, "critical,keyCertSign,cRLSign"));
  FEDGE_RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_subject_key_identifier, "hash"));
  return SignAndWrite(cert.get(), key.get());
}

absl::StatusOr<std::string> SignCsr(const Issuer& issuer, absl::string_view csr_pem,
                                    const IssueOptions& options) {
  FEDGE_ASSIGN_OR_RETURN(X509Ptr issuer_cert, ReadCertificate(issuer.cert_pem, "issuer.cert_pem"));
  FEDGE_ASSIGN_OR_RETURN(PkeyPtr issuer_key, ReadPrivateKey(issuer.key_pem));
  if (EVP_PKEY_eq(X509_get0_pubkey(issuer_cert.get()), issuer_key.get()) != 1) {
    return Invalid(
        "the issuer's private key does not match its certificate; pass the key the CA "
        "certificate was made for");
  }
  if (!IsCa(issuer_cert.get())) {
    DrainErrors();
    return absl::InvalidArgumentError(
        "the issuer's certificate is not a CA (basicConstraints CA:TRUE); pass the CA "
        "certificate, not a leaf");
  }
  FEDGE_ASSIGN_OR_RETURN(ReqPtr req, ReadCheckedCsr(csr_pem));
  EVP_PKEY* subject_key = X509_REQ_get0_pubkey(req.get());
  FEDGE_ASSIGN_OR_RETURN(NamePtr subject, CommonNameSubject(options.common_name));

  const absl::Time not_before = options.now - kClockSkew;
  FEDGE_ASSIGN_OR_RETURN(absl::Time issuer_not_after,
                         ToTime(X509_get0_notAfter(issuer_cert.get())));
  const absl::Time not_after = std::min(not_before + options.validity, issuer_not_after);
  if (issuer_not_after <= options.now) {
    return absl::InvalidArgumentError(
        absl::StrCat("the issuer's certificate expired at ", absl::FormatTime(issuer_not_after),
                     ", before now (", absl::FormatTime(options.now), "); renew the CA"));
  }
  if (not_after <= options.now) {
    return absl::InvalidArgumentError(absl::StrCat(
        "validity ", absl::FormatDuration(options.validity),
        " ends before now because certificates start 5m before now; ask for more than 5m"));
  }

  X509Ptr cert(X509_new());
  if (cert == nullptr) return Internal("allocating a certificate");
  if (X509_set_version(cert.get(), X509_VERSION_3) != 1 ||
      X509_set_subject_name(cert.get(), subject.get()) != 1 ||
      X509_set_issuer_name(cert.get(), X509_get_subject_name(issuer_cert.get())) != 1 ||
      X509_set_pubkey(cert.get(), subject_key) != 1) {
    return Internal("filling in the certificate");
  }
  FEDGE_RETURN_IF_ERROR(SetRandomSerial(cert.get()));
  FEDGE_RETURN_IF_ERROR(SetTime(X509_getm_notBefore(cert.get()), not_before));
  FEDGE_RETURN_IF_ERROR(SetTime(X509_getm_notAfter(cert.get()), not_after));

  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer_cert.get(), cert.get(), nullptr, nullptr, 0);
  FEDGE_RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_basic_constraints, "critical,CA:FALSE"));
  FEDGE_RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_key_usage,
                                     EVP_PKEY_is_a(subject_key, "RSA")
                                         ? "critical,digitalSignature,keyEncipherment"
                                         : "critical,digitalSignature"));
  std::vector<std::string> purposes;
  if (options.client_auth) purposes.push_back("clientAuth");
  if (options.server_auth) purposes.push_back("serverAuth");
  if (!purposes.empty()) {
    FEDGE_RETURN_IF_ERROR(
        AddExtension(cert.get(), &ctx, NID_ext_key_usage, absl::StrJoin(purposes, ",").c_str()));
  }
  FEDGE_RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_subject_key_identifier, "hash"));
  // "keyid" takes the issuer's SKI; an issuer without one gets no AKI rather than an error.
  FEDGE_RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_authority_key_identifier, "keyid"));
  FEDGE_RETURN_IF_ERROR(AddSubjectAltNames(cert.get(), options));
  return SignAndWrite(cert.get(), issuer_key.get());
}

absl::StatusOr<std::string> IssueCertificate(const Issuer& issuer, absl::string_view key_pem,
                                             const IssueOptions& options) {
  FEDGE_ASSIGN_OR_RETURN(std::string csr, MakeCsr(key_pem, options.common_name));
  return SignCsr(issuer, csr, options);
}

absl::Status KeyMatchesCertificate(absl::string_view key_pem, absl::string_view cert_pem) {
  FEDGE_ASSIGN_OR_RETURN(X509Ptr cert, ReadCertificate(cert_pem, "the certificate"));
  FEDGE_ASSIGN_OR_RETURN(PkeyPtr key, ReadPrivateKey(key_pem));
  if (EVP_PKEY_eq(X509_get0_pubkey(cert.get()), key.get()) != 1) {
    return Invalid(
        "the private key does not belong to the certificate; pass the key the certificate "
        "was issued for");
  }
  return absl::OkStatus();
}

absl::Status VerifyCertificate(absl::string_view cert_pem, absl::string_view ca_pem,
                               absl::Time at) {
  FEDGE_ASSIGN_OR_RETURN(X509Ptr cert, ReadCertificate(cert_pem, "the certificate"));
  FEDGE_ASSIGN_OR_RETURN(std::vector<X509Ptr> cas, ReadCertificates(ca_pem, "the CA bundle"));
  StorePtr store(X509_STORE_new());
  if (store == nullptr) return Internal("allocating a certificate store");
  for (const X509Ptr& ca : cas) {
    // X509_STORE_add_cert takes its own reference.
    if (X509_STORE_add_cert(store.get(), ca.get()) != 1) {
      unsigned long last = ERR_peek_last_error();
      if (ERR_GET_REASON(last) != X509_R_CERT_ALREADY_IN_HASH_TABLE) {
        return Internal("adding a CA certificate to the store");
      }
      DrainErrors();
    }
  }
  StoreCtxPtr ctx(X509_STORE_CTX_new());
  if (ctx == nullptr || X509_STORE_CTX_init(ctx.get(), store.get(), cert.get(), nullptr) != 1) {
    return Internal("setting up verification");
  }
  X509_VERIFY_PARAM_set_time(X509_STORE_CTX_get0_param(ctx.get()), absl::ToTimeT(at));
  int verified = X509_verify_cert(ctx.get());
  if (verified == 1) {
    DrainErrors();
    return absl::OkStatus();
  }
  int error = X509_STORE_CTX_get_error(ctx.get());
  if (verified < 0 || error == X509_V_OK) return Internal("verifying the certificate");
  DrainErrors();
  return absl::UnauthenticatedError(
      absl::StrCat("certificate does not verify against the CA bundle at ", absl::FormatTime(at),
                   ": ", X509_verify_cert_error_string(error), " (depth ",
                   X509_STORE_CTX_get_error_depth(ctx.get()), ")"));
}

}  // namespace fedge::tls
