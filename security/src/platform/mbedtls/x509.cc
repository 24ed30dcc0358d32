// Fleet X.509 on mbedtls_x509write_crt. mbedTLS 2.28 has setters for neither
// subjectAltName nor extendedKeyUsage, so both extensions are built here with
// mbedtls_asn1_write_* (which writes backwards from the end of a buffer).
#include "flotilla/security/x509.h"

#include <arpa/inet.h>
#include <mbedtls/asn1write.h>
#include <mbedtls/bignum.h>
#include <mbedtls/oid.h>
#include <mbedtls/x509_crt.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <ctime>

#include "flotilla/security/csprng.h"
#include "platform/mbedtls/pk_util.h"

namespace flotilla::security {
namespace {

using internal::MbedTlsStatus;
using CertWriter = internal::Scoped<mbedtls_x509write_cert, mbedtls_x509write_crt_init, mbedtls_x509write_crt_free>;
using Mpi = internal::Scoped<mbedtls_mpi, mbedtls_mpi_init, mbedtls_mpi_free>;

constexpr size_t kMaxCommonName = 64;  // X.520 ub-common-name
constexpr size_t kMaxSanEntries = 64;
constexpr auto kBackdate = std::chrono::minutes(5);  // tolerate small clock skew between hosts
constexpr auto kMaxValidity = std::chrono::hours(24 * 365 * 100);

// A CN is placed into mbedTLS's "CN=..." name string, so characters with meaning in that
// syntax (and anything non-printable) are refused rather than escaped.
Status CheckCommonName(std::string_view cn) {
  if (cn.empty() || cn.size() > kMaxCommonName) {
    return InvalidArgumentError("certificate: common name must be 1-64 characters, got " + std::to_string(cn.size()));
  }
  for (char c : cn) {
    if (c < 0x20 || c > 0x7e || std::strchr(",\\=+;\"<>#", c) != nullptr) {
      return InvalidArgumentError("certificate: common name '" + std::string(cn) +
                                  "' contains a character outside printable ASCII or one of ,\\=+;\"<>#");
    }
  }
  return Status::Ok();
}

// LDH labels separated by dots, optionally starting with a "*." wildcard label.
Status CheckDnsName(std::string_view name) {
  const std::string bad = "certificate: invalid DNS name '" + std::string(name) + "'";
  std::string_view rest = name;
  if (rest.starts_with("*.")) rest.remove_prefix(2);
  if (rest.empty() || name.size() > 253) return InvalidArgumentError(bad);
  size_t label = 0;
  for (size_t i = 0; i <= rest.size(); ++i) {
    if (i == rest.size() || rest[i] == '.') {
      if (label == 0 || label > 63 || rest[i - 1] == '-' || rest[i - label] == '-') return InvalidArgumentError(bad);
      label = 0;
      continue;
    }
    const char c = rest[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-')) {
      return InvalidArgumentError(bad);
    }
    ++label;
  }
  return Status::Ok();
}

Result<Bytes> ParseIp(const std::string& text) {
  std::array<uint8_t, 16> addr{};
  if (inet_pton(AF_INET, text.c_str(), addr.data()) == 1) return Bytes(addr.begin(), addr.begin() + 4);
  if (inet_pton(AF_INET6, text.c_str(), addr.data()) == 1) return Bytes(addr.begin(), addr.end());
  return InvalidArgumentError("certificate: invalid IP address '" + text + "'");
}

// Prepends `value` with an implicit context tag [tag] (primitive) at *p.
int WriteTagged(unsigned char** p, unsigned char* start, unsigned char tag, ByteSpan value) {
  int total = 0;
  int ret = mbedtls_asn1_write_raw_buffer(p, start, value.data(), value.size());
  if (ret < 0) return ret;
  total += ret;
  if ((ret = mbedtls_asn1_write_len(p, start, value.size())) < 0) return ret;
  total += ret;
  if ((ret = mbedtls_asn1_write_tag(p, start, tag)) < 0) return ret;
  return total + ret;
}

// Wraps the `len` bytes at *p in a SEQUENCE.
int WriteSequence(unsigned char** p, unsigned char* start, int len) {
  int ret = mbedtls_asn1_write_len(p, start, static_cast<size_t>(len));
  if (ret < 0) return ret;
  int total = len + ret;
  if ((ret = mbedtls_asn1_write_tag(p, start, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE)) < 0) return ret;
  return total + ret;
}

Status SetExtension(CertWriter& w, const char* oid, size_t oid_len, int critical, const unsigned char* der,
                    size_t len, std::string_view what) {
  int ret = mbedtls_x509write_crt_set_extension(w.get(), oid, oid_len, critical, der, len);
  if (ret != 0) return MbedTlsStatus(StatusCode::kInternal, what, ret);
  return Status::Ok();
}

// subjectAltName ::= SEQUENCE OF GeneralName; dNSName [2] IA5String, iPAddress [7] OCTET STRING.
Status SetSubjectAltName(CertWriter& w, const CertificateRequest& req) {
  std::vector<std::pair<unsigned char, Bytes>> names;  // (tag, value) in certificate order
  for (const std::string& dns : req.dns_names) {
    FLT_RETURN_IF_ERROR(CheckDnsName(dns));
    names.emplace_back(MBEDTLS_ASN1_CONTEXT_SPECIFIC | 2, ToBytes(dns));
  }
  for (const std::string& ip : req.ip_addresses) {
    FLT_ASSIGN_OR_RETURN(Bytes addr, ParseIp(ip));
    names.emplace_back(MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7, std::move(addr));
  }
  if (names.empty()) return Status::Ok();
  size_t cap = 16;
  for (const auto& [tag, value] : names) cap += value.size() + 8;
  Bytes buf(cap);
  unsigned char* p = buf.data() + buf.size();
  int len = 0;
  for (auto it = names.rbegin(); it != names.rend(); ++it) {
    int ret = WriteTagged(&p, buf.data(), it->first, it->second);
    if (ret < 0) return MbedTlsStatus(StatusCode::kInternal, "certificate: subjectAltName", ret);
    len += ret;
  }
  len = WriteSequence(&p, buf.data(), len);
  if (len < 0) return MbedTlsStatus(StatusCode::kInternal, "certificate: subjectAltName", len);
  return SetExtension(w, MBEDTLS_OID_SUBJECT_ALT_NAME, MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME), 0, p,
                      static_cast<size_t>(len), "certificate: subjectAltName");
}

// extKeyUsage ::= SEQUENCE OF KeyPurposeId.
Status SetExtendedKeyUsage(CertWriter& w, CertificateRole role) {
  unsigned char buf[64];
  unsigned char* p = buf + sizeof(buf);
  int len = 0;
  auto add = [&](const char* oid, size_t oid_len) {
    int ret = mbedtls_asn1_write_oid(&p, buf, oid, oid_len);
    if (ret >= 0) len += ret;
    return ret;
  };
  int ret = 0;
  if (role == CertificateRole::kClient || role == CertificateRole::kBoth) {
    ret = add(MBEDTLS_OID_CLIENT_AUTH, MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH));
  }
  if (ret >= 0 && (role == CertificateRole::kServer || role == CertificateRole::kBoth)) {
    ret = add(MBEDTLS_OID_SERVER_AUTH, MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH));
  }
  if (ret >= 0) ret = len = WriteSequence(&p, buf, len);
  if (ret < 0) return MbedTlsStatus(StatusCode::kInternal, "certificate: extKeyUsage", ret);
  return SetExtension(w, MBEDTLS_OID_EXTENDED_KEY_USAGE, MBEDTLS_OID_SIZE(MBEDTLS_OID_EXTENDED_KEY_USAGE), 0, p,
                      static_cast<size_t>(len), "certificate: extKeyUsage");
}

std::string X509Time(std::chrono::system_clock::time_point t) {
  const std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y%m%d%H%M%S", &tm);
  return buf;
}

// Fields every certificate we write shares: v3, SHA-256, a random positive 128-bit
// serial, validity [now - 5 min, now + validity], subject, key identifiers.
Status SetCommon(CertWriter& w, mbedtls_pk_context* subject_key, mbedtls_pk_context* issuer_key,
                 const std::string& subject, const std::string& issuer, std::chrono::hours validity) {
  if (validity <= std::chrono::hours(0) || validity > kMaxValidity) {
    return InvalidArgumentError("certificate: validity must be between 1 hour and 100 years");
  }
  mbedtls_x509write_crt_set_version(w.get(), MBEDTLS_X509_CRT_VERSION_3);
  mbedtls_x509write_crt_set_md_alg(w.get(), MBEDTLS_MD_SHA256);
  mbedtls_x509write_crt_set_subject_key(w.get(), subject_key);
  mbedtls_x509write_crt_set_issuer_key(w.get(), issuer_key);

  std::array<uint8_t, 16> serial_bytes;
  SystemCsprng().Fill(serial_bytes);
  serial_bytes[0] = static_cast<uint8_t>((serial_bytes[0] & 0x7f) | 0x40);  // positive, full 16 bytes
  Mpi serial;
  const auto now = std::chrono::system_clock::now();
  const std::string not_before = X509Time(now - kBackdate);
  const std::string not_after = X509Time(now + validity);
  int ret = mbedtls_mpi_read_binary(serial.get(), serial_bytes.data(), serial_bytes.size());
  if (ret == 0) ret = mbedtls_x509write_crt_set_serial(w.get(), serial.get());
  if (ret == 0) ret = mbedtls_x509write_crt_set_validity(w.get(), not_before.c_str(), not_after.c_str());
  if (ret == 0) ret = mbedtls_x509write_crt_set_subject_name(w.get(), subject.c_str());
  if (ret == 0) ret = mbedtls_x509write_crt_set_issuer_name(w.get(), issuer.c_str());
  if (ret == 0) ret = mbedtls_x509write_crt_set_subject_key_identifier(w.get());
  if (ret == 0) ret = mbedtls_x509write_crt_set_authority_key_identifier(w.get());
  if (ret != 0) return MbedTlsStatus(StatusCode::kInternal, "certificate fields", ret);
  return Status::Ok();
}

Result<CertificateAndKey> Finish(CertWriter& w, internal::PkContext& subject_key) {
  std::vector<unsigned char> buf(16 * 1024);
  int ret = mbedtls_x509write_crt_pem(w.get(), buf.data(), buf.size(), internal::RandomCallback,
                                      internal::RngArg(SystemCsprng()));
  if (ret != 0) return MbedTlsStatus(StatusCode::kInternal, "certificate signing", ret);
  CertificateAndKey out;
  out.cert_pem = reinterpret_cast<const char*>(buf.data());
  FLT_ASSIGN_OR_RETURN(out.key_pem, internal::PrivateKeyPem(subject_key.get()));
  return out;
}

}  // namespace

Result<CertificateAndKey> CreateCertificateAuthority(std::string_view common_name, std::chrono::hours validity) {
  FLT_RETURN_IF_ERROR(CheckCommonName(common_name));
  internal::PkContext key;
  FLT_RETURN_IF_ERROR(internal::GenerateP256(key));
  CertWriter w;
  const std::string name = "CN=" + std::string(common_name);
  FLT_RETURN_IF_ERROR(SetCommon(w, key.get(), key.get(), name, name, validity));
  // pathlen 0: the fleet CA signs end-entity certificates only.
  int ret = mbedtls_x509write_crt_set_basic_constraints(w.get(), 1, 0);
  if (ret == 0) {
    ret = mbedtls_x509write_crt_set_key_usage(w.get(), MBEDTLS_X509_KU_KEY_CERT_SIGN | MBEDTLS_X509_KU_CRL_SIGN);
  }
  if (ret != 0) return MbedTlsStatus(StatusCode::kInternal, "CA certificate extensions", ret);
  return Finish(w, key);
}

Result<CertificateAndKey> IssueCertificate(const CertificateAndKey& ca, const CertificateRequest& request) {
  FLT_RETURN_IF_ERROR(CheckCommonName(request.common_name));
  if (request.dns_names.size() + request.ip_addresses.size() > kMaxSanEntries) {
    return InvalidArgumentError("certificate: more than 64 subjectAltName entries");
  }
  if (request.role == CertificateRole::kServer && request.dns_names.empty() && request.ip_addresses.empty()) {
    return InvalidArgumentError("certificate: a server certificate needs at least one DNS or IP subjectAltName");
  }
  internal::CrtChain ca_crt;
  FLT_RETURN_IF_ERROR(internal::ParseCertificatesPem(ca_crt, ca.cert_pem, "CA certificate"));
  if (ca_crt.get()->ca_istrue == 0) return InvalidArgumentError("CA certificate: basicConstraints CA is not set");
  internal::PkContext ca_key;
  FLT_RETURN_IF_ERROR(internal::ParsePrivateKeyPem(ca_key, ca.key_pem).WithContext("CA key"));
  if (mbedtls_pk_check_pair(&ca_crt.get()->pk, ca_key.get()) != 0) {
    return InvalidArgumentError("CA key does not match the CA certificate");
  }
  char issuer[512];
  int ret = mbedtls_x509_dn_gets(issuer, sizeof(issuer), &ca_crt.get()->subject);
  if (ret < 0) return MbedTlsStatus(StatusCode::kInvalidArgument, "CA certificate subject", ret);

  internal::PkContext key;
  FLT_RETURN_IF_ERROR(internal::GenerateP256(key));
  CertWriter w;
  FLT_RETURN_IF_ERROR(
      SetCommon(w, key.get(), ca_key.get(), "CN=" + request.common_name, issuer, request.validity));
  ret = mbedtls_x509write_crt_set_basic_constraints(w.get(), 0, 0);
  if (ret == 0) ret = mbedtls_x509write_crt_set_key_usage(w.get(), MBEDTLS_X509_KU_DIGITAL_SIGNATURE);
  if (ret != 0) return MbedTlsStatus(StatusCode::kInternal, "certificate extensions", ret);
  FLT_RETURN_IF_ERROR(SetExtendedKeyUsage(w, request.role));
  FLT_RETURN_IF_ERROR(SetSubjectAltName(w, request));
  return Finish(w, key);
}

namespace {

// Subject CN of a parsed certificate; InvalidArgument naming `what` if it has none.
Result<std::string> CommonName(const mbedtls_x509_crt& crt, std::string_view what) {
  constexpr std::string_view kCnOid(MBEDTLS_OID_AT_CN, MBEDTLS_OID_SIZE(MBEDTLS_OID_AT_CN));
  for (const mbedtls_x509_name* n = &crt.subject; n != nullptr; n = n->next) {
    if (n->oid.p != nullptr && AsStringView(ByteSpan(n->oid.p, n->oid.len)) == kCnOid) {
      return std::string(AsStringView(ByteSpan(n->val.p, n->val.len)));
    }
  }
  return InvalidArgumentError(std::string(what) + ": subject has no common name");
}

// OK if the first certificate of `crt` chains to `ca`; Unauthenticated with mbedTLS's
// reasons otherwise.
Status VerifyChain(internal::CrtChain& crt, internal::CrtChain& ca) {
  uint32_t flags = 0;
  int ret = mbedtls_x509_crt_verify(crt.get(), ca.get(), nullptr, nullptr, &flags, nullptr, nullptr);
  if (ret == 0) return Status::Ok();
  char info[512] = "";
  mbedtls_x509_crt_verify_info(info, sizeof(info), "", flags);
  std::string reasons(info);
  std::replace(reasons.begin(), reasons.end(), '\n', ';');
  while (!reasons.empty() && reasons.back() == ';') reasons.pop_back();
  char hex[16];
  std::snprintf(hex, sizeof(hex), "0x%08x", flags);
  return UnauthenticatedError("certificate does not verify (flags " + std::string(hex) + "): " + reasons);
}

}  // namespace

Result<std::string> CertificateCommonName(std::string_view cert_pem) {
  internal::CrtChain crt;
  FLT_RETURN_IF_ERROR(internal::ParseCertificatesPem(crt, cert_pem, "certificate PEM"));
  return CommonName(*crt.get(), "certificate PEM");
}

Status VerifyCertificate(std::string_view ca_pem, std::string_view cert_pem) {
  internal::CrtChain ca;
  FLT_RETURN_IF_ERROR(internal::ParseCertificatesPem(ca, ca_pem, "CA certificate"));
  internal::CrtChain crt;
  FLT_RETURN_IF_ERROR(internal::ParseCertificatesPem(crt, cert_pem, "certificate"));
  return VerifyChain(crt, ca);
}

Result<Bytes> CertificateDer(std::string_view cert_pem) {
  internal::CrtChain crt;
  FLT_RETURN_IF_ERROR(internal::ParseCertificatesPem(crt, cert_pem, "certificate PEM"));
  return Bytes(crt.get()->raw.p, crt.get()->raw.p + crt.get()->raw.len);
}

Result<EcdsaPublicKey> VerifiedCertificateKey(std::string_view ca_pem, ByteSpan cert_der, std::string_view expected_cn) {
  constexpr size_t kMaxCertificateDer = 4096;
  if (cert_der.empty() || cert_der.size() > kMaxCertificateDer) {
    return InvalidArgumentError("peer certificate: " + std::to_string(cert_der.size()) + " bytes (want 1.." +
                                std::to_string(kMaxCertificateDer) + ")");
  }
  internal::CrtChain ca;
  FLT_RETURN_IF_ERROR(internal::ParseCertificatesPem(ca, ca_pem, "CA certificate"));
  internal::CrtChain crt;
  int ret = mbedtls_x509_crt_parse_der(crt.get(), cert_der.data(), cert_der.size());
  if (ret != 0) return MbedTlsStatus(StatusCode::kInvalidArgument, "peer certificate", ret);
  FLT_RETURN_IF_ERROR(VerifyChain(crt, ca));
  FLT_ASSIGN_OR_RETURN(std::string cn, CommonName(*crt.get(), "peer certificate"));
  if (cn != expected_cn) {
    return UnauthenticatedError("peer certificate names \"" + cn + "\", not \"" + std::string(expected_cn) + "\"");
  }
  FLT_RETURN_IF_ERROR(internal::CheckP256(&crt.get()->pk, "peer certificate key"));
  FLT_ASSIGN_OR_RETURN(Bytes der, internal::PublicKeyDer(&crt.get()->pk));
  return EcdsaPublicKey::FromDer(der);
}

}  // namespace flotilla::security
