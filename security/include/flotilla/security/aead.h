// AES-GCM (NIST SP 800-38D) with a 12-byte nonce and a 16-byte tag appended to the
// ciphertext. Keys are 16 (AES-128) or 32 (AES-256) bytes. mbedTLS underneath.
// Pure functions, thread-safe. A nonce must never repeat under one key: draw it from
// SystemCsprng() or use a fresh key per message.
#pragma once

#include <cstddef>

#include "flotilla/core/bytes.h"
#include "flotilla/core/status.h"

namespace flotilla::security {

inline constexpr size_t kAesGcmNonceSize = 12;
inline constexpr size_t kAesGcmTagSize = 16;

// Returns ciphertext || tag (plaintext.size() + 16 bytes). InvalidArgument for a bad key
// or nonce size.
Result<Bytes> AesGcmSeal(ByteSpan key, ByteSpan nonce, ByteSpan plaintext, ByteSpan aad);

// Inverse of AesGcmSeal. Unauthenticated if the tag, ciphertext, nonce, key or AAD do not
// match (no plaintext is ever returned in that case); InvalidArgument for bad sizes.
Result<Bytes> AesGcmOpen(ByteSpan key, ByteSpan nonce, ByteSpan ciphertext_and_tag, ByteSpan aad);

}  // namespace flotilla::security
