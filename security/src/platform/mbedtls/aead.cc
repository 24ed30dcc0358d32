// AES-GCM on mbedtls_gcm.
#include "flotilla/security/aead.h"

#include <mbedtls/gcm.h>

#include <string>

#include "platform/mbedtls/mbedtls_util.h"

namespace flotilla::security {
namespace {

using GcmContext = internal::Scoped<mbedtls_gcm_context, mbedtls_gcm_init, mbedtls_gcm_free>;

Status CheckSizes(std::string_view op, ByteSpan key, ByteSpan nonce) {
  if (key.size() != 16 && key.size() != 32) {
    return InvalidArgumentError(std::string(op) + ": key must be 16 or 32 bytes, got " + std::to_string(key.size()));
  }
  if (nonce.size() != kAesGcmNonceSize) {
    return InvalidArgumentError(std::string(op) + ": nonce must be 12 bytes, got " + std::to_string(nonce.size()));
  }
  return Status::Ok();
}

Status SetKey(GcmContext& gcm, std::string_view op, ByteSpan key) {
  int ret = mbedtls_gcm_setkey(gcm.get(), MBEDTLS_CIPHER_ID_AES, key.data(), static_cast<unsigned>(key.size() * 8));
  if (ret != 0) return internal::MbedTlsStatus(StatusCode::kInternal, std::string(op) + ": setkey", ret);
  return Status::Ok();
}

}  // namespace

Result<Bytes> AesGcmSeal(ByteSpan key, ByteSpan nonce, ByteSpan plaintext, ByteSpan aad) {
  FLT_RETURN_IF_ERROR(CheckSizes("aes-gcm seal", key, nonce));
  GcmContext gcm;
  FLT_RETURN_IF_ERROR(SetKey(gcm, "aes-gcm seal", key));
  Bytes out(plaintext.size() + kAesGcmTagSize);
  int ret = mbedtls_gcm_crypt_and_tag(gcm.get(), MBEDTLS_GCM_ENCRYPT, plaintext.size(), nonce.data(), nonce.size(),
                                      aad.data(), aad.size(), plaintext.data(), out.data(), kAesGcmTagSize,
                                      out.data() + plaintext.size());
  if (ret != 0) return internal::MbedTlsStatus(StatusCode::kInternal, "aes-gcm seal", ret);
  return out;
}

Result<Bytes> AesGcmOpen(ByteSpan key, ByteSpan nonce, ByteSpan ciphertext_and_tag, ByteSpan aad) {
  FLT_RETURN_IF_ERROR(CheckSizes("aes-gcm open", key, nonce));
  if (ciphertext_and_tag.size() < kAesGcmTagSize) {
    return InvalidArgumentError("aes-gcm open: input of " + std::to_string(ciphertext_and_tag.size()) +
                                " bytes is shorter than the 16-byte tag");
  }
  GcmContext gcm;
  FLT_RETURN_IF_ERROR(SetKey(gcm, "aes-gcm open", key));
  const size_t n = ciphertext_and_tag.size() - kAesGcmTagSize;
  Bytes out(n);
  int ret = mbedtls_gcm_auth_decrypt(gcm.get(), n, nonce.data(), nonce.size(), aad.data(), aad.size(),
                                     ciphertext_and_tag.data() + n, kAesGcmTagSize, ciphertext_and_tag.data(),
                                     out.data());
  if (ret != 0) {
    internal::Wipe(out.data(), out.size());  // never hand out unauthenticated plaintext
    if (ret == MBEDTLS_ERR_GCM_AUTH_FAILED) return UnauthenticatedError("aes-gcm open: authentication failed");
    return internal::MbedTlsStatus(StatusCode::kInternal, "aes-gcm open", ret);
  }
  return out;
}

}  // namespace flotilla::security
