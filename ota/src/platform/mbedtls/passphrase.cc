#include "platform/mbedtls/passphrase.h"

#include <mbedtls/base64.h>
#include <mbedtls/md.h>
#include <mbedtls/pkcs5.h>
#include <mbedtls/platform_util.h>

namespace flotilla::ota::internal {

Result<Bytes> Pbkdf2HmacSha256(std::string_view passphrase, ByteSpan salt, uint32_t iterations, size_t length) {
  if (iterations == 0 || length == 0) return InvalidArgumentError("PBKDF2: zero iterations or length");
  mbedtls_md_context_t ctx;
  mbedtls_md_init(&ctx);
  Bytes out(length);
  int rc = mbedtls_md_setup(&ctx, mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), 1);
  if (rc == 0) {
    rc = mbedtls_pkcs5_pbkdf2_hmac(&ctx, reinterpret_cast<const unsigned char*>(passphrase.data()), passphrase.size(),
                                   salt.data(), salt.size(), iterations, static_cast<uint32_t>(length), out.data());
  }
  mbedtls_md_free(&ctx);
  if (rc != 0) return InternalError("PBKDF2 failed (mbedtls " + std::to_string(rc) + ")");
  return out;
}

std::string Base64Encode(ByteSpan data) {
  size_t n = 0;
  mbedtls_base64_encode(nullptr, 0, &n, data.data(), data.size());
  std::string out(n, '\0');
  if (mbedtls_base64_encode(reinterpret_cast<unsigned char*>(out.data()), out.size(), &n, data.data(), data.size()) !=
      0) {
    return {};
  }
  out.resize(n);
  return out;
}

Result<Bytes> Base64Decode(std::string_view text) {
  size_t n = 0;
  const auto* in = reinterpret_cast<const unsigned char*>(text.data());
  int rc = mbedtls_base64_decode(nullptr, 0, &n, in, text.size());
  if (rc == MBEDTLS_ERR_BASE64_INVALID_CHARACTER) return InvalidArgumentError("base64: invalid character");
  Bytes out(n);
  if (mbedtls_base64_decode(out.data(), out.size(), &n, in, text.size()) != 0) {
    return InvalidArgumentError("base64: malformed input");
  }
  out.resize(n);
  return out;
}

void Wipe(Bytes& secret) {
  if (!secret.empty()) mbedtls_platform_zeroize(secret.data(), secret.size());
}
void Wipe(std::string& secret) {
  if (!secret.empty()) mbedtls_platform_zeroize(secret.data(), secret.size());
}

}  // namespace flotilla::ota::internal
