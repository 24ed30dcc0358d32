#include "test_pki.h"

#include <system_error>

#include "flotilla/core/file.h"
#include "flotilla/security/x509.h"

namespace flotilla::testsupport {

Result<TestPki> TestPki::Create(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return UnavailableError("cannot create " + dir.string() + ": " + ec.message());
  FLT_ASSIGN_OR_RETURN(security::CertificateAndKey ca, security::CreateCertificateAuthority("flotilla test fleet CA"));
  security::CertificateRequest req;
  req.common_name = "broker";
  req.role = security::CertificateRole::kServer;
  req.dns_names = {"localhost"};
  req.ip_addresses = {"127.0.0.1"};
  FLT_ASSIGN_OR_RETURN(security::CertificateAndKey broker, security::IssueCertificate(ca, req));
  TestPki pki;
  pki.dir_ = dir;
  pki.ca_cert = dir / "ca.crt";
  pki.broker_cert = dir / "broker.crt";
  pki.broker_key = dir / "broker.key";
  FLT_RETURN_IF_ERROR(WriteFileAtomic(pki.ca_cert, ca.cert_pem));
  FLT_RETURN_IF_ERROR(WriteFileAtomic(pki.broker_cert, broker.cert_pem));
  FLT_RETURN_IF_ERROR(WriteFileAtomic(pki.broker_key, broker.key_pem, 0600));
  pki.ca_cert_pem_ = std::move(ca.cert_pem);
  pki.ca_key_pem_ = std::move(ca.key_pem);
  return pki;
}

Result<std::pair<std::filesystem::path, std::filesystem::path>> TestPki::IssueClient(const std::string& name) {
  security::CertificateRequest req;
  req.common_name = name;
  req.role = security::CertificateRole::kClient;
  FLT_ASSIGN_OR_RETURN(security::CertificateAndKey cert,
                       security::IssueCertificate({ca_cert_pem_, ca_key_pem_}, req));
  std::pair<std::filesystem::path, std::filesystem::path> paths{dir_ / (name + ".crt"), dir_ / (name + ".key")};
  FLT_RETURN_IF_ERROR(WriteFileAtomic(paths.first, cert.cert_pem));
  FLT_RETURN_IF_ERROR(WriteFileAtomic(paths.second, cert.key_pem, 0600));
  return paths;
}

}  // namespace flotilla::testsupport
