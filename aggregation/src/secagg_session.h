// Internals shared by the SecAgg+ client and server: config validation, the session id,
// signed transcripts, key derivations and share encodings. docs/secure-aggregation.md
// gives every byte layout; both sides must agree exactly.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "flotilla/aggregation/crypto_suite.h"
#include "flotilla/aggregation/fixed_point.h"
#include "flotilla/aggregation/harary_graph.h"
#include "flotilla/aggregation/param_finder.h"
#include "flotilla/core/bytes.h"
#include "flotilla/core/status.h"
#include "flotilla/security/hash.h"
#include "flotilla/security/prg.h"
#include "flotilla/security/shamir.h"
#include "flotilla/v1/round.pb.h"

namespace flotilla::aggregation::internal {

using SessionId = security::Sha256Digest;

inline constexpr size_t kSecretSize = 32;  // b_u and the X25519 mask private key
inline constexpr size_t kShareElements = security::ShamirElementCount(kSecretSize);
inline constexpr size_t kShareBytes = 8 + 8 * kShareElements;  // x, then y[] (u64 LE each)
inline constexpr size_t kSharePlaintextBytes = 8 + 2 * kShareBytes;
inline constexpr size_t kShareCiphertextBytes = kSharePlaintextBytes + 16;
inline constexpr size_t kMaxRoundIdBytes = 128;
inline constexpr size_t kMaxDeviceIdBytes = 128;
inline constexpr uint32_t kMaxCohort = 1000000;

// The validated, round-wide view of a SecAggConfig (identical for every client).
struct SessionParams {
  std::string round_id;
  uint32_t n = 0, k = 0, t = 0;
  FixedPointConfig fixed_point;
  bool hardened = true;
  AdversaryModel model = AdversaryModel::kSemiMalicious;
  uint32_t min_survivors = 0;
  SessionId sid{};
  std::optional<SecAggGraph> graph;
};

AdversaryModel ModelFor(bool hardened);
bool IsHardened(v1::SecAggProfile profile);

// Validates every round-wide field (ring and overflow, PRG, hashes, graph, the client's
// (k, t) floor, DP config) and computes sid and the graph. InvalidArgument or
// FailedPrecondition naming the field.
Result<SessionParams> ValidateSessionConfig(const v1::SecAggConfig& config);

// sid = SHA-256("flotilla/v1/secagg/sid" || for each round-wide field in field-number
// order: u32be(field number) || u32be(len) || value), integers big-endian, doubles as
// their IEEE-754 bits, nested messages field by field. self_index and neighbours are
// excluded, so all clients of a round compute the same sid.
SessionId ComputeSessionId(const v1::SecAggConfig& config);

// What a hardened advert signature covers.
Bytes AdvertTranscript(const SessionId& sid, uint32_t index, std::string_view device_id, ByteSpan pk_c,
                       ByteSpan pk_s);
// What a consistency-check signature covers: domain || SHA-256(sid || u32be(n) || bitmap).
Bytes ConsistencyTranscript(const SessionId& sid, uint32_t n, ByteSpan bitmap);

// AES-128-GCM key for the shares `from` sends `to`: HKDF(salt = sid,
// ikm = X25519(c_from, pk_c_to) (= X25519(c_to, pk_c_from)),
// info = "flotilla/v1/secagg/share" || u32be(from) || u32be(to)). Direction-specific and
// fresh every round, so the all-zero nonce never repeats under a key.
Result<Bytes> ShareKey(const security::X25519Key& shared, const SessionId& sid, uint32_t from, uint32_t to);
Bytes ShareAad(const SessionId& sid, uint32_t from, uint32_t to);
inline constexpr std::array<uint8_t, 12> kShareNonce{};

Bytes EncodeShare(const security::ShamirShare& share);
// Exactly kShareBytes, x == expected_x, every y < p. InvalidArgument otherwise.
Result<security::ShamirShare> DecodeShare(ByteSpan bytes, uint64_t expected_x);

// PRG seed of u's self mask: HKDF(salt = sid, ikm = b_u,
// info = "flotilla/v1/secagg/self-mask" || u32be(u)).
Result<security::PrgSeed> SelfMaskSeed(const SessionId& sid, uint32_t index, ByteSpan b);
// PRG seed shared by u and v: HKDF(salt = sid, ikm = X25519(s_u, pk_s_v),
// info = "flotilla/v1/secagg/mask" || u32be(min) || u32be(max) || pk_s_min || pk_s_max).
Result<security::PrgSeed> PairwiseMaskSeed(const security::X25519Key& shared, const SessionId& sid, uint32_t u,
                                           ByteSpan pk_s_u, uint32_t v, ByteSpan pk_s_v);

// Survivor bitmap: bit (i-1) set for index i, ceil(n/8) bytes, LSB first.
Bytes EncodeBitmap(const std::vector<bool>& members);  // members[i] for index i (members[0] unused)
// InvalidArgument for a wrong length or bits set past n.
Result<std::vector<bool>> DecodeBitmap(ByteSpan bitmap, uint32_t n);

security::X25519Key KeyFromBytes(std::string_view bytes);  // REQUIRES: bytes.size() == 32
void Wipe(std::span<uint8_t> secret);

}  // namespace flotilla::aggregation::internal
