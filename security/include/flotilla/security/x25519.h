// X25519 (RFC 7748) key agreement on mbedTLS's Curve25519. Keys and shared secrets are
// the 32-byte little-endian encodings of RFC 7748. Pure functions, thread-safe.
// A shared secret is key material for HKDF, never a key by itself.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "flotilla/core/random.h"
#include "flotilla/core/status.h"
#include "flotilla/security/csprng.h"

namespace flotilla::security {

inline constexpr size_t kX25519KeySize = 32;
using X25519Key = std::array<uint8_t, kX25519KeySize>;

struct X25519KeyPair {
  X25519Key private_key;  // a secret: never log it; wipe it when done
  X25519Key public_key;
};

// A fresh key pair; private key bytes from `rng` (production: the default, SystemCsprng()).
Result<X25519KeyPair> X25519GenerateKeyPair(Random& rng = SystemCsprng());

// X25519(private_key, 9). Any 32 bytes are a valid private key (clamped per RFC 7748).
Result<X25519Key> X25519PublicFromPrivate(const X25519Key& private_key);

// X25519(private_key, peer_public). The top bit of peer_public is ignored (RFC 7748).
// InvalidArgument if the peer key is a low-order point (all-zero shared secret) or is
// otherwise rejected.
Result<X25519Key> X25519Agree(const X25519Key& private_key, const X25519Key& peer_public);

}  // namespace flotilla::security
