// X.509 for the fleet: a fleet CA (ECDSA P-256) that signs the coordinator's, the
// broker's and each device's certificate, so tests and `flotilla pki` never need the
// openssl command line. All PEM in, PEM out. Thread-safe (no shared state).
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "flotilla/core/bytes.h"
#include "flotilla/core/status.h"
#include "flotilla/security/identity.h"

namespace flotilla::security {

struct CertificateAndKey {
  std::string cert_pem;  // X.509 certificate
  std::string key_pem;   // PKCS#8 or SEC1 EC private key (P-256); a secret: never log it
};

enum class CertificateRole {
  kServer,  // TLS server (broker, coordinator HTTP): serverAuth, SANs required
  kClient,  // TLS client (device): clientAuth
  kBoth,    // coordinator: MQTT client and HTTPS server
};

struct CertificateRequest {
  std::string common_name;                     // device id / "coordinator" / "broker"
  CertificateRole role = CertificateRole::kClient;
  std::vector<std::string> dns_names = {};     // subjectAltName DNS entries
  std::vector<std::string> ip_addresses = {};  // subjectAltName IP entries ("127.0.0.1", "::1")
  std::chrono::hours validity = std::chrono::hours(24 * 365);
};

// Creates a self-signed fleet CA with a fresh P-256 key (CA:TRUE, keyCertSign).
Result<CertificateAndKey> CreateCertificateAuthority(std::string_view common_name,
                                                     std::chrono::hours validity = std::chrono::hours(24 * 3650));

// Issues a certificate for a fresh P-256 key, signed by `ca`.
Result<CertificateAndKey> IssueCertificate(const CertificateAndKey& ca, const CertificateRequest& request);

// Subject CN of a PEM certificate (InvalidArgument if it does not parse).
Result<std::string> CertificateCommonName(std::string_view cert_pem);

// OK if `cert_pem` chains to `ca_pem` and is within its validity period;
// Unauthenticated otherwise, with the mbedTLS verification flags in the message.
Status VerifyCertificate(std::string_view ca_pem, std::string_view cert_pem);

// DER of the (first) certificate in `cert_pem`; InvalidArgument if it does not parse.
Result<Bytes> CertificateDer(std::string_view cert_pem);

// The P-256 identity key of a peer's DER certificate (untrusted bytes, at most 4 KiB),
// after checking that it chains to `ca_pem`, is within its validity period and has
// subject CN `expected_cn`. Unauthenticated for a certificate that fails any check,
// InvalidArgument for one that does not parse.
Result<EcdsaPublicKey> VerifiedCertificateKey(std::string_view ca_pem, ByteSpan cert_der, std::string_view expected_cn);

}  // namespace flotilla::security
