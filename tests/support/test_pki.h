// A throw-away fleet PKI for mTLS tests and benchmarks (target flotilla_test_pki):
// CA, broker and client certificates made with flotilla/security/x509.h (no openssl
// command line), written as PEM files into a test's temp dir. Never commit its output.
#pragma once

#include <filesystem>
#include <string>
#include <utility>

#include "flotilla/core/status.h"

namespace flotilla::testsupport {

// A throw-away fleet PKI (ECDSA P-256 via flotilla/security/x509.h) written as PEM files.
struct TestPki {
  std::filesystem::path ca_cert;
  std::filesystem::path broker_cert, broker_key;  // SAN: 127.0.0.1, localhost
  // Issues a client certificate with CN `name`; returns {cert path, key path}.
  Result<std::pair<std::filesystem::path, std::filesystem::path>> IssueClient(const std::string& name);

  static Result<TestPki> Create(const std::filesystem::path& dir);

 private:
  std::filesystem::path dir_;
  std::string ca_cert_pem_, ca_key_pem_;
};

}  // namespace flotilla::testsupport
