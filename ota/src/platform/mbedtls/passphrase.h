// mbedTLS pieces the key files need that flotilla_security does not expose: PBKDF2 and
// base64. Internal to flotilla_ota.
#pragma once

#include <string>
#include <string_view>

#include "flotilla/core/bytes.h"
#include "flotilla/core/status.h"

namespace flotilla::ota::internal {

// PBKDF2-HMAC-SHA256 (RFC 8018). InvalidArgument for zero iterations or length.
Result<Bytes> Pbkdf2HmacSha256(std::string_view passphrase, ByteSpan salt, uint32_t iterations, size_t length);
std::string Base64Encode(ByteSpan data);
Result<Bytes> Base64Decode(std::string_view text);
// Wipes a secret buffer (not optimized away).
void Wipe(Bytes& secret);
void Wipe(std::string& secret);

}  // namespace flotilla::ota::internal
