// ECDSA P-256 identities on mbedTLS pk/ecdsa.
#include "flotilla/security/identity.h"

#include <mbedtls/pem.h>

#include "flotilla/core/check.h"
#include "flotilla/security/csprng.h"
#include "flotilla/security/hash.h"
#include "platform/mbedtls/pk_util.h"

namespace flotilla::security {
namespace {

constexpr char kPublicPemHeader[] = "-----BEGIN PUBLIC KEY-----\n";
constexpr char kPublicPemFooter[] = "-----END PUBLIC KEY-----\n";

// Parses SubjectPublicKeyInfo DER into `pk`, requiring a P-256 key.
Status ParsePublicDer(internal::PkContext& pk, ByteSpan der) {
  if (der.empty()) return InvalidArgumentError("public key DER: empty");
  int ret = mbedtls_pk_parse_public_key(pk.get(), der.data(), der.size());
  if (ret != 0) return internal::MbedTlsStatus(StatusCode::kInvalidArgument, "public key DER", ret);
  return internal::CheckP256(pk.get(), "public key DER");
}

}  // namespace

Result<EcdsaPublicKey> EcdsaPublicKey::FromDer(ByteSpan der) {
  internal::PkContext pk;
  FLT_RETURN_IF_ERROR(ParsePublicDer(pk, der));
  FLT_ASSIGN_OR_RETURN(Bytes canonical, internal::PublicKeyDer(pk.get()));
  return EcdsaPublicKey(std::move(canonical));
}

Result<EcdsaPublicKey> EcdsaPublicKey::FromPem(std::string_view pem) {
  if (pem.find("-----BEGIN PUBLIC KEY-----") == std::string_view::npos) {
    return InvalidArgumentError("public key PEM: no BEGIN PUBLIC KEY block");
  }
  internal::PkContext pk;
  std::string buf = internal::NulTerminated(pem);
  int ret = mbedtls_pk_parse_public_key(pk.get(), reinterpret_cast<const unsigned char*>(buf.c_str()), buf.size() + 1);
  if (ret != 0) return internal::MbedTlsStatus(StatusCode::kInvalidArgument, "public key PEM", ret);
  FLT_RETURN_IF_ERROR(internal::CheckP256(pk.get(), "public key PEM"));
  FLT_ASSIGN_OR_RETURN(Bytes der, internal::PublicKeyDer(pk.get()));
  return EcdsaPublicKey(std::move(der));
}

Result<EcdsaPublicKey> EcdsaPublicKey::FromCertificatePem(std::string_view cert_pem) {
  internal::CrtChain crt;
  FLT_RETURN_IF_ERROR(internal::ParseCertificatesPem(crt, cert_pem, "certificate PEM"));
  FLT_RETURN_IF_ERROR(internal::CheckP256(&crt.get()->pk, "certificate key"));
  FLT_ASSIGN_OR_RETURN(Bytes der, internal::PublicKeyDer(&crt.get()->pk));
  return EcdsaPublicKey(std::move(der));
}

std::string EcdsaPublicKey::ToPem() const {
  unsigned char buf[512];
  size_t olen = 0;
  int ret = mbedtls_pem_write_buffer(kPublicPemHeader, kPublicPemFooter, der_.data(), der_.size(), buf, sizeof(buf),
                                     &olen);
  FLT_CHECK_MSG(ret == 0 && olen > 0, "public key PEM encoding failed");  // der_ is a short P-256 SPKI
  return std::string(reinterpret_cast<const char*>(buf), olen - 1);      // olen counts the NUL
}

std::string EcdsaPublicKey::KeyId() const { return ToHex(Sha256(der_)); }

Status EcdsaPublicKey::Verify(ByteSpan message, ByteSpan signature) const {
  static const Status kBad = UnauthenticatedError("signature does not verify");
  if (signature.empty()) return kBad;
  internal::PkContext pk;
  if (!ParsePublicDer(pk, der_).ok()) return kBad;
  const Sha256Digest hash = Sha256(message);
  if (mbedtls_pk_verify(pk.get(), MBEDTLS_MD_SHA256, hash.data(), hash.size(), signature.data(), signature.size()) !=
      0) {
    return kBad;
  }
  return Status::Ok();
}

struct EcdsaPrivateKey::Impl {
  // mbedTLS caches precomputed multiples of G inside the key's group on first use, so
  // signing mutates the context: serialize it.
  std::mutex mu;
  internal::PkContext pk;  // GUARDED_BY(mu)
};

EcdsaPrivateKey::EcdsaPrivateKey(std::unique_ptr<Impl> impl, EcdsaPublicKey pub)
    : impl_(std::move(impl)), public_key_(std::move(pub)) {}
EcdsaPrivateKey::EcdsaPrivateKey(EcdsaPrivateKey&&) noexcept = default;
EcdsaPrivateKey& EcdsaPrivateKey::operator=(EcdsaPrivateKey&&) noexcept = default;
EcdsaPrivateKey::~EcdsaPrivateKey() = default;

Result<EcdsaPrivateKey> EcdsaPrivateKey::Generate() {
  auto impl = std::make_unique<Impl>();
  FLT_RETURN_IF_ERROR(internal::GenerateP256(impl->pk));
  FLT_ASSIGN_OR_RETURN(Bytes der, internal::PublicKeyDer(impl->pk.get()));
  FLT_ASSIGN_OR_RETURN(EcdsaPublicKey pub, EcdsaPublicKey::FromDer(der));
  return EcdsaPrivateKey(std::move(impl), std::move(pub));
}

Result<EcdsaPrivateKey> EcdsaPrivateKey::FromPem(std::string_view pem) {
  auto impl = std::make_unique<Impl>();
  FLT_RETURN_IF_ERROR(internal::ParsePrivateKeyPem(impl->pk, pem));
  FLT_ASSIGN_OR_RETURN(Bytes der, internal::PublicKeyDer(impl->pk.get()));
  FLT_ASSIGN_OR_RETURN(EcdsaPublicKey pub, EcdsaPublicKey::FromDer(der));
  return EcdsaPrivateKey(std::move(impl), std::move(pub));
}

std::string EcdsaPrivateKey::ToPem() const {
  FLT_CHECK_MSG(impl_ != nullptr, "EcdsaPrivateKey used after move");
  std::lock_guard<std::mutex> lock(impl_->mu);
  Result<std::string> pem = internal::PrivateKeyPem(impl_->pk.get());
  FLT_CHECK_OK(pem.status());  // a valid P-256 key always fits the buffer
  return std::move(pem).value();
}

Result<Bytes> EcdsaPrivateKey::Sign(ByteSpan message) const {
  FLT_CHECK_MSG(impl_ != nullptr, "EcdsaPrivateKey used after move");
  const Sha256Digest hash = Sha256(message);
  unsigned char sig[MBEDTLS_PK_SIGNATURE_MAX_SIZE];
  size_t sig_len = 0;
  int ret;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    ret = mbedtls_pk_sign(impl_->pk.get(), MBEDTLS_MD_SHA256, hash.data(), hash.size(), sig, &sig_len,
                          internal::RandomCallback, internal::RngArg(SystemCsprng()));
  }
  if (ret != 0) return internal::MbedTlsStatus(StatusCode::kInternal, "ecdsa sign", ret);
  return Bytes(sig, sig + sig_len);
}

void KeyRing::Add(std::string identity, EcdsaPublicKey key) {
  std::lock_guard<std::mutex> lock(mu_);
  keys_.insert_or_assign(std::move(identity), std::move(key));
}

void KeyRing::Remove(std::string_view identity) {
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = keys_.find(identity); it != keys_.end()) keys_.erase(it);
}

Status KeyRing::Verify(std::string_view identity, ByteSpan message, ByteSpan signature) const {
  std::optional<EcdsaPublicKey> key;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = keys_.find(identity);
    if (it == keys_.end()) return NotFoundError("key ring: unknown identity '" + std::string(identity) + "'");
    key = it->second;
  }
  // Verify outside the lock: a verification takes ~1 ms and must not serialize callers.
  return key->Verify(message, signature);
}

}  // namespace flotilla::security
