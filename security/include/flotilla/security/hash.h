// SHA-256, HMAC-SHA256 and HKDF-SHA256 (RFC 5869). mbedTLS underneath. All functions are
// pure and thread-safe; Sha256Hasher is a single-threaded object.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "flotilla/core/bytes.h"
#include "flotilla/core/status.h"

namespace flotilla::security {

inline constexpr size_t kSha256Size = 32;
using Sha256Digest = std::array<uint8_t, kSha256Size>;

// One-shot SHA-256.
Sha256Digest Sha256(ByteSpan data);

// Incremental SHA-256: Update() any number of times, then Finish() once (after which the
// hasher is reset and may be reused).
class Sha256Hasher {
 public:
  Sha256Hasher();
  ~Sha256Hasher();
  Sha256Hasher(Sha256Hasher&&) noexcept;
  Sha256Hasher& operator=(Sha256Hasher&&) noexcept;

  Sha256Hasher& Update(ByteSpan data);
  Sha256Digest Finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// HMAC-SHA256(key, data); any key length.
Sha256Digest HmacSha256(ByteSpan key, ByteSpan data);

// HKDF-Extract(salt, ikm) -> PRK. An empty salt means HashLen zero bytes (RFC 5869 2.2).
Sha256Digest HkdfExtract(ByteSpan salt, ByteSpan ikm);
// HKDF-Expand(prk, info, length). InvalidArgument if length > 255 * 32 or prk < 32 bytes.
Result<Bytes> HkdfExpand(ByteSpan prk, ByteSpan info, size_t length);
// Extract then Expand.
Result<Bytes> Hkdf(ByteSpan salt, ByteSpan ikm, ByteSpan info, size_t length);

}  // namespace flotilla::security
