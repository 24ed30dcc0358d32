// Wire forms of a masked input y_u: MaskedVector (b bits per element, little-endian bit
// order: element i occupies bits [i*b, (i+1)*b) of the byte string read as one
// little-endian integer) and the SealedBox that carries it to the coordinator.
//
// SealedBox, exactly: the device draws an ephemeral X25519 pair (e, E);
//   key   = HKDF-SHA256(salt = E || P, ikm = X25519(e, P),
//                       info = "flotilla/v1/secagg/box" || u32be(len(round_id)) || round_id
//                              || u32be(index), 16 bytes)      (P = coordinator box key)
//   nonce = 12 random bytes (the key is already single-use; the nonce is belt and braces)
//   ciphertext = AES-128-GCM(key, nonce, serialized MaskedVector, aad = same as info).
// Pure functions, thread-safe.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "flotilla/aggregation/crypto_suite.h"
#include "flotilla/core/bytes.h"
#include "flotilla/core/random.h"
#include "flotilla/core/status.h"
#include "flotilla/security/x25519.h"
#include "flotilla/v1/round.pb.h"

namespace flotilla::aggregation {

inline constexpr uint32_t kMaskedVectorFormat = 1;

// Packs values (each < 2^b; higher bits are dropped) at b bits each.
Bytes PackRing(std::span<const uint32_t> values, uint32_t bit_width);
// Unpacks exactly out.size() elements. InvalidArgument if `packed` is not exactly
// ceil(n * b / 8) bytes or has non-zero padding bits.
Status UnpackRing(ByteSpan packed, uint32_t bit_width, std::span<uint32_t> out);
// acc[i] += element i, mod 2^32, without an intermediate vector (the server's running sum).
Status AddPackedRing(ByteSpan packed, uint32_t bit_width, std::span<uint32_t> acc);

// Checks a MaskedVector's header against the round (format 1, b, length = m) and its
// packed size. InvalidArgument naming the mismatch.
Status CheckMaskedVector(const v1::MaskedVector& mv, uint32_t bit_width, uint64_t length);

// Seals `plaintext` (a serialized MaskedVector) to the coordinator's box key.
Result<v1::SealedBox> SealBox(ByteSpan plaintext, const security::X25519Key& coordinator_public,
                              std::string_view round_id, uint32_t index, Random& rng, const CryptoSuite& suite);
// Opens a box with the coordinator's private key. Unauthenticated if it was not sealed
// for this key, round and index or was altered; InvalidArgument for malformed fields.
Result<Bytes> OpenBox(const v1::SealedBox& box, const security::X25519KeyPair& coordinator_key,
                      std::string_view round_id, uint32_t index, const CryptoSuite& suite);

}  // namespace flotilla::aggregation
