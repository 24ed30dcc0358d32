// OpenSSL 3 EVP adapter for ECDSA P-256 envelope signatures. Every OpenSSL object stays
// in this file; errors become Status.
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "flotilla/coordinator/round_fast_identity.h"

namespace flotilla::rounds {
namespace {

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};

bool IsP256(EVP_PKEY* key) {
  if (EVP_PKEY_get_base_id(key) != EVP_PKEY_EC) return false;
  char group[64] = {0};
  size_t len = 0;
  if (EVP_PKEY_get_utf8_string_param(key, "group", group, sizeof(group), &len) != 1) return false;
  return std::string_view(group, len) == "prime256v1" || std::string_view(group, len) == "P-256";
}

std::unique_ptr<BIO, BioFree> MemBio(std::string_view text) {
  return std::unique_ptr<BIO, BioFree>(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

}  // namespace

struct OpenSslEcdsaSigner::Key {
  std::unique_ptr<EVP_PKEY, PkeyFree> pkey;
};

OpenSslEcdsaSigner::OpenSslEcdsaSigner(std::string identity, std::unique_ptr<Key> key)
    : identity_(std::move(identity)), key_(std::move(key)) {}
OpenSslEcdsaSigner::~OpenSslEcdsaSigner() = default;

Result<std::unique_ptr<OpenSslEcdsaSigner>> OpenSslEcdsaSigner::FromPem(std::string identity,
                                                                        std::string_view private_key_pem) {
  auto bio = MemBio(private_key_pem);
  if (!bio) return InternalError("BIO_new_mem_buf failed");
  auto key = std::make_unique<Key>();
  key->pkey.reset(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key->pkey || !IsP256(key->pkey.get())) return InvalidArgumentError("not a PEM P-256 private key");
  return std::unique_ptr<OpenSslEcdsaSigner>(new OpenSslEcdsaSigner(std::move(identity), std::move(key)));
}

Result<Bytes> OpenSslEcdsaSigner::Sign(ByteSpan message) const {
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key_->pkey.get()) != 1)
    return InternalError("EVP_DigestSignInit failed");
  size_t len = 0;
  if (EVP_DigestSign(ctx.get(), nullptr, &len, message.data(), message.size()) != 1)
    return InternalError("EVP_DigestSign (size) failed");
  Bytes sig(len);
  if (EVP_DigestSign(ctx.get(), sig.data(), &len, message.data(), message.size()) != 1)
    return InternalError("EVP_DigestSign failed");
  sig.resize(len);
  return sig;
}

OpenSslKeyRing::OpenSslKeyRing() = default;
OpenSslKeyRing::~OpenSslKeyRing() = default;

Status OpenSslKeyRing::AddDer(std::string identity, ByteSpan spki_der) {
  const unsigned char* p = spki_der.data();
  auto key = std::make_shared<OpenSslEcdsaSigner::Key>();
  key->pkey.reset(d2i_PUBKEY(nullptr, &p, static_cast<long>(spki_der.size())));
  if (!key->pkey || p != spki_der.data() + spki_der.size() || !IsP256(key->pkey.get()))
    return InvalidArgumentError("not a P-256 SubjectPublicKeyInfo");
  std::lock_guard<std::mutex> lock(mu_);
  keys_[std::move(identity)] = std::move(key);
  return Status::Ok();
}

Status OpenSslKeyRing::AddCertificatePem(std::string identity, std::string_view cert_pem) {
  auto bio = MemBio(cert_pem);
  if (!bio) return InternalError("BIO_new_mem_buf failed");
  std::unique_ptr<X509, X509Free> cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) return InvalidArgumentError("not a PEM certificate");
  auto key = std::make_shared<OpenSslEcdsaSigner::Key>();
  key->pkey.reset(X509_get_pubkey(cert.get()));
  if (!key->pkey || !IsP256(key->pkey.get())) return InvalidArgumentError("certificate key is not P-256");
  std::lock_guard<std::mutex> lock(mu_);
  keys_[std::move(identity)] = std::move(key);
  return Status::Ok();
}

void OpenSslKeyRing::Remove(std::string_view identity) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = keys_.find(identity);
  if (it != keys_.end()) keys_.erase(it);
}

Status OpenSslKeyRing::Verify(std::string_view identity, ByteSpan message, ByteSpan signature) const {
  std::shared_ptr<OpenSslEcdsaSigner::Key> key;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = keys_.find(identity);
    if (it == keys_.end()) return NotFoundError("unknown identity");
    key = it->second;
  }
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key->pkey.get()) != 1)
    return InternalError("EVP_DigestVerifyInit failed");
  if (EVP_DigestVerify(ctx.get(), signature.data(), signature.size(), message.data(), message.size()) != 1)
    return UnauthenticatedError("signature does not verify");
  return Status::Ok();
}

}  // namespace flotilla::rounds
