// SHA-256 / HMAC / HKDF on mbedTLS. mbedTLS fails these only on programming errors (bad
// arguments we validate first), so failures are FLT_CHECKs.
#include "flotilla/security/hash.h"

#include <mbedtls/hkdf.h>
#include <mbedtls/md.h>
#include <mbedtls/sha256.h>

#include "flotilla/core/check.h"
#include "platform/mbedtls/mbedtls_util.h"

namespace flotilla::security {
namespace {

const mbedtls_md_info_t* Sha256Info() {
  static const mbedtls_md_info_t* const info = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
  FLT_CHECK(info != nullptr);
  return info;
}

}  // namespace

Sha256Digest Sha256(ByteSpan data) {
  Sha256Digest out;
  FLT_CHECK(mbedtls_sha256_ret(data.data(), data.size(), out.data(), 0) == 0);
  return out;
}

struct Sha256Hasher::Impl {
  internal::Scoped<mbedtls_sha256_context, mbedtls_sha256_init, mbedtls_sha256_free> ctx;
  Impl() { FLT_CHECK(mbedtls_sha256_starts_ret(ctx.get(), 0) == 0); }
};

Sha256Hasher::Sha256Hasher() : impl_(std::make_unique<Impl>()) {}
Sha256Hasher::~Sha256Hasher() = default;
Sha256Hasher::Sha256Hasher(Sha256Hasher&&) noexcept = default;
Sha256Hasher& Sha256Hasher::operator=(Sha256Hasher&&) noexcept = default;

Sha256Hasher& Sha256Hasher::Update(ByteSpan data) {
  FLT_CHECK_MSG(impl_ != nullptr, "Sha256Hasher used after move");
  FLT_CHECK(mbedtls_sha256_update_ret(impl_->ctx.get(), data.data(), data.size()) == 0);
  return *this;
}

Sha256Digest Sha256Hasher::Finish() {
  FLT_CHECK_MSG(impl_ != nullptr, "Sha256Hasher used after move");
  Sha256Digest out;
  FLT_CHECK(mbedtls_sha256_finish_ret(impl_->ctx.get(), out.data()) == 0);
  FLT_CHECK(mbedtls_sha256_starts_ret(impl_->ctx.get(), 0) == 0);
  return out;
}

Sha256Digest HmacSha256(ByteSpan key, ByteSpan data) {
  Sha256Digest out;
  FLT_CHECK(mbedtls_md_hmac(Sha256Info(), key.data(), key.size(), data.data(), data.size(), out.data()) == 0);
  return out;
}

Sha256Digest HkdfExtract(ByteSpan salt, ByteSpan ikm) {
  Sha256Digest prk;
  FLT_CHECK(mbedtls_hkdf_extract(Sha256Info(), salt.data(), salt.size(), ikm.data(), ikm.size(), prk.data()) == 0);
  return prk;
}

Result<Bytes> HkdfExpand(ByteSpan prk, ByteSpan info, size_t length) {
  if (prk.size() < kSha256Size) {
    return InvalidArgumentError("hkdf expand: PRK must be at least 32 bytes, got " + std::to_string(prk.size()));
  }
  if (length > 255 * kSha256Size) {
    return InvalidArgumentError("hkdf expand: output length " + std::to_string(length) + " exceeds 255 * 32");
  }
  Bytes okm(length);
  if (length == 0) return okm;
  int ret = mbedtls_hkdf_expand(Sha256Info(), prk.data(), prk.size(), info.data(), info.size(), okm.data(), length);
  if (ret != 0) return internal::MbedTlsStatus(StatusCode::kInternal, "hkdf expand", ret);
  return okm;
}

Result<Bytes> Hkdf(ByteSpan salt, ByteSpan ikm, ByteSpan info, size_t length) {
  Sha256Digest prk = HkdfExtract(salt, ikm);
  Result<Bytes> okm = HkdfExpand(prk, info, length);
  internal::Wipe(prk.data(), prk.size());
  return okm;
}

}  // namespace flotilla::security
