// ECDSA P-256 envelope signing and verification on OpenSSL libcrypto: the coordinator's
// fast path (ARCHITECTURE.md section 6 lets the coordinator use libcrypto), about 10-20x
// cheaper than mbedTLS per operation, which matters when one coordinator verifies every
// message of a 1,000-device round. Signatures are the same format as security::EcdsaSigner
// (ECDSA over SHA-256, DER) and the two interoperate both ways (round_fast_identity_test).
// It lives with the round driver, its only production user (design note 16); if devices
// ever need it, its place is security/src/platform/openssl next to the AES-CTR backend.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "flotilla/core/bytes.h"
#include "flotilla/core/status.h"
#include "flotilla/protocol/signer.h"

namespace flotilla::rounds {

// Signs as `identity` with a PEM (PKCS#8 or SEC1) P-256 private key. Thread-safe.
class OpenSslEcdsaSigner final : public protocol::Signer {
 public:
  // InvalidArgument if the PEM is not a P-256 private key.
  static Result<std::unique_ptr<OpenSslEcdsaSigner>> FromPem(std::string identity, std::string_view private_key_pem);
  ~OpenSslEcdsaSigner() override;
  const std::string& identity() const override { return identity_; }
  Result<Bytes> Sign(ByteSpan message) const override;

  struct Key;

 private:
  OpenSslEcdsaSigner(std::string identity, std::unique_ptr<Key> key);
  std::string identity_;
  std::unique_ptr<Key> key_;
};

// Identity -> P-256 public key registry (like security::KeyRing). Thread-safe.
class OpenSslKeyRing final : public protocol::SignatureVerifier {
 public:
  OpenSslKeyRing();
  ~OpenSslKeyRing() override;
  // SubjectPublicKeyInfo DER, or the key of a PEM certificate. InvalidArgument otherwise.
  Status AddDer(std::string identity, ByteSpan spki_der);
  Status AddCertificatePem(std::string identity, std::string_view cert_pem);
  void Remove(std::string_view identity);
  Status Verify(std::string_view identity, ByteSpan message, ByteSpan signature) const override;

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<OpenSslEcdsaSigner::Key>, std::less<>> keys_;  // GUARDED_BY(mu_)
};

}  // namespace flotilla::rounds
