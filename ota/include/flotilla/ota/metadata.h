// Signed OTA metadata (a TUF profile with an Uptane-style director; docs/ota.md).
//
// Wire form: a SignedMetadata protobuf whose `signed` field holds the serialized
// Metadata. Signatures (ECDSA P-256 over SHA-256, DER) cover `signed` exactly as
// received, so no canonical encoding is needed: verifiers check the bytes first and only
// then parse them. Key id = lower-case hex SHA-256 of the SubjectPublicKeyInfo DER.
//
// All functions here are pure and thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "flotilla/core/bytes.h"
#include "flotilla/core/status.h"
#include "flotilla/security/identity.h"
#include "flotilla/v1/ota.pb.h"

namespace flotilla::ota {

inline constexpr uint32_t kSpecVersion = 1;
// Artifact chunks are at most this long (tensor-aligned boundaries are sub-split).
inline constexpr uint64_t kMaxChunkBytes = uint64_t{4} << 20;

// Every role, in root-first order.
inline constexpr v1::RoleType kAllRoles[] = {v1::ROLE_TYPE_ROOT, v1::ROLE_TYPE_TARGETS, v1::ROLE_TYPE_SNAPSHOT,
                                             v1::ROLE_TYPE_TIMESTAMP, v1::ROLE_TYPE_DIRECTOR};

// Byte caps for untrusted metadata (TUF "endless data"): anything longer is refused
// before it is parsed. Targets is the largest (one chunk list per target).
size_t MaxMetadataBytes(v1::RoleType role);
// "root", "targets", "snapshot", "timestamp", "director" ("unknown" otherwise).
std::string_view RoleName(v1::RoleType role);

// A public key as listed in root metadata.
v1::PublicKey ToPublicKeyProto(const security::EcdsaPublicKey& key);

// Serializes `metadata` and signs it with every key in `keys` (each signature once per
// distinct key). InvalidArgument if `keys` is empty or the metadata is not well formed
// (role/body mismatch). The keys are borrowed.
Result<Bytes> SignMetadata(const v1::Metadata& metadata, const std::vector<const security::EcdsaPrivateKey*>& keys);

// Parses the outer SignedMetadata of untrusted bytes with the role's size cap. Checks
// framing only; nothing is trusted yet.
Result<v1::SignedMetadata> ParseSignedMetadata(ByteSpan wire, v1::RoleType role);

// Structural checks of a root body: every key has a known type (ECDSA P-256), a DER that
// parses and a key id equal to SHA-256(DER); every role (root, targets, snapshot,
// timestamp, director) is present once with 1 <= threshold <= number of unique key ids,
// and every key id it lists is defined. InvalidArgument says which rule broke.
Status ValidateRoot(const v1::RootMetadata& root);

// OK if signatures by at least `threshold` distinct keys of `role` in `root` verify over
// `signed_metadata.signed()`. Each key id counts once however often it appears; signatures
// by unknown or foreign keys are ignored. Unauthenticated otherwise (with the count).
Status CheckThreshold(const v1::SignedMetadata& signed_metadata, const v1::RootMetadata& root, v1::RoleType role);

// Parses the (already signature-checked) inner bytes: spec version, role equal to
// `expected_role`, and the body that matches the role. InvalidArgument otherwise.
Result<v1::Metadata> ParseMetadataBody(std::string_view signed_bytes, v1::RoleType expected_role);

// ParseSignedMetadata + CheckThreshold against `root` + ParseMetadataBody. Does not check
// expiry or versions (UpdateVerifier does, against the cycle's fixed time).
Result<v1::Metadata> VerifyMetadata(ByteSpan wire, const v1::RootMetadata& root, v1::RoleType role);

// The role's key ids and threshold in `root`, or nullptr.
const v1::RoleKeys* FindRole(const v1::RootMetadata& root, v1::RoleType role);

// Version of signed metadata bytes that were verified before (trusted storage); 0 when
// `wire` is empty. InvalidArgument if the stored bytes do not parse.
Result<v1::Metadata> ParseTrustedMetadata(ByteSpan wire, v1::RoleType role);

}  // namespace flotilla::ota
