// ECDSA P-256 identity keys (devices, coordinator, OTA roles) and the envelope
// Signer/SignatureVerifier implementations built on them. mbedTLS underneath.
// Signatures are ECDSA over SHA-256(message), DER-encoded.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "flotilla/core/bytes.h"
#include "flotilla/core/status.h"
#include "flotilla/protocol/signer.h"

namespace flotilla::security {

class EcdsaPublicKey {
 public:
  // SubjectPublicKeyInfo DER / PEM, or the key inside a PEM certificate.
  static Result<EcdsaPublicKey> FromDer(ByteSpan der);
  static Result<EcdsaPublicKey> FromPem(std::string_view pem);
  static Result<EcdsaPublicKey> FromCertificatePem(std::string_view cert_pem);

  const Bytes& der() const { return der_; }  // SubjectPublicKeyInfo DER
  std::string ToPem() const;
  // Key id: lower-case hex SHA-256 of the SubjectPublicKeyInfo DER.
  std::string KeyId() const;
  // OK, or Unauthenticated("signature does not verify") for any bad signature/message.
  Status Verify(ByteSpan message, ByteSpan signature) const;

  friend bool operator==(const EcdsaPublicKey& a, const EcdsaPublicKey& b) { return a.der_ == b.der_; }

 private:
  explicit EcdsaPublicKey(Bytes der) : der_(std::move(der)) {}
  Bytes der_;
};

class EcdsaPrivateKey {
 public:
  // A fresh key from the CSPRNG.
  static Result<EcdsaPrivateKey> Generate();
  // PKCS#8 or SEC1 PEM (unencrypted).
  static Result<EcdsaPrivateKey> FromPem(std::string_view pem);

  EcdsaPrivateKey(EcdsaPrivateKey&&) noexcept;
  EcdsaPrivateKey& operator=(EcdsaPrivateKey&&) noexcept;
  ~EcdsaPrivateKey();

  std::string ToPem() const;  // a secret: never log it
  const EcdsaPublicKey& public_key() const { return public_key_; }
  Result<Bytes> Sign(ByteSpan message) const;  // thread-safe

 private:
  struct Impl;
  EcdsaPrivateKey(std::unique_ptr<Impl> impl, EcdsaPublicKey pub);
  std::unique_ptr<Impl> impl_;
  EcdsaPublicKey public_key_;
};

// Signs envelopes as `identity` with an ECDSA key.
class EcdsaSigner final : public protocol::Signer {
 public:
  EcdsaSigner(std::string identity, std::shared_ptr<const EcdsaPrivateKey> key)
      : identity_(std::move(identity)), key_(std::move(key)) {}
  const std::string& identity() const override { return identity_; }
  Result<Bytes> Sign(ByteSpan message) const override { return key_->Sign(message); }

 private:
  std::string identity_;
  std::shared_ptr<const EcdsaPrivateKey> key_;
};

// Identity → public key map that verifies envelope signatures. Thread-safe.
class KeyRing final : public protocol::SignatureVerifier {
 public:
  void Add(std::string identity, EcdsaPublicKey key);
  void Remove(std::string_view identity);
  Status Verify(std::string_view identity, ByteSpan message, ByteSpan signature) const override;

 private:
  mutable std::mutex mu_;
  std::map<std::string, EcdsaPublicKey, std::less<>> keys_;  // GUARDED_BY(mu_)
};

}  // namespace flotilla::security
