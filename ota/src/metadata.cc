#include "flotilla/ota/metadata.h"

#include <set>
#include <string>

#include "flotilla/security/hash.h"

namespace flotilla::ota {
namespace {

v1::RoleType BodyRole(const v1::Metadata& m) {
  switch (m.body_case()) {
    case v1::Metadata::kRoot: return v1::ROLE_TYPE_ROOT;
    case v1::Metadata::kTargets: return v1::ROLE_TYPE_TARGETS;
    case v1::Metadata::kSnapshot: return v1::ROLE_TYPE_SNAPSHOT;
    case v1::Metadata::kTimestamp: return v1::ROLE_TYPE_TIMESTAMP;
    case v1::Metadata::kDirector: return v1::ROLE_TYPE_DIRECTOR;
    default: return v1::ROLE_TYPE_UNSPECIFIED;
  }
}

std::string Where(v1::RoleType role) { return std::string(RoleName(role)) + " metadata"; }

}  // namespace

size_t MaxMetadataBytes(v1::RoleType role) {
  switch (role) {
    case v1::ROLE_TYPE_ROOT: return 64 * 1024;
    case v1::ROLE_TYPE_TIMESTAMP: return 4 * 1024;
    case v1::ROLE_TYPE_SNAPSHOT: return 256 * 1024;
    case v1::ROLE_TYPE_DIRECTOR: return 64 * 1024;
    case v1::ROLE_TYPE_TARGETS: return 16 * 1024 * 1024;
    default: return 0;
  }
}

std::string_view RoleName(v1::RoleType role) {
  switch (role) {
    case v1::ROLE_TYPE_ROOT: return "root";
    case v1::ROLE_TYPE_TARGETS: return "targets";
    case v1::ROLE_TYPE_SNAPSHOT: return "snapshot";
    case v1::ROLE_TYPE_TIMESTAMP: return "timestamp";
    case v1::ROLE_TYPE_DIRECTOR: return "director";
    default: return "unknown";
  }
}

v1::PublicKey ToPublicKeyProto(const security::EcdsaPublicKey& key) {
  v1::PublicKey out;
  out.set_key_id(key.KeyId());
  out.set_key_type(v1::KEY_TYPE_ECDSA_P256_SHA256);
  out.set_public_key_der(std::string(AsStringView(key.der())));
  return out;
}

Result<Bytes> SignMetadata(const v1::Metadata& metadata, const std::vector<const security::EcdsaPrivateKey*>& keys) {
  if (keys.empty()) return InvalidArgumentError("SignMetadata: no signing keys");
  if (metadata.spec_version() != kSpecVersion) return InvalidArgumentError("SignMetadata: spec_version must be 1");
  if (BodyRole(metadata) != metadata.role() || metadata.role() == v1::ROLE_TYPE_UNSPECIFIED) {
    return InvalidArgumentError("SignMetadata: role does not match the body");
  }
  v1::SignedMetadata out;
  if (!metadata.SerializeToString(out.mutable_signed_())) return InternalError("SignMetadata: serialize failed");
  std::set<std::string> seen;
  for (const security::EcdsaPrivateKey* key : keys) {
    if (key == nullptr) return InvalidArgumentError("SignMetadata: null key");
    std::string id = key->public_key().KeyId();
    if (!seen.insert(id).second) continue;
    FLT_ASSIGN_OR_RETURN(Bytes sig, key->Sign(AsBytes(out.signed_())));
    auto* s = out.add_signatures();
    s->set_key_id(id);
    s->set_signature(std::string(AsStringView(sig)));
  }
  std::string wire;
  if (!out.SerializeToString(&wire)) return InternalError("SignMetadata: serialize failed");
  if (wire.size() > MaxMetadataBytes(metadata.role())) {
    return ResourceExhaustedError("SignMetadata: " + Where(metadata.role()) + " is " + std::to_string(wire.size()) +
                                  " bytes, over the device limit");
  }
  return ToBytes(wire);
}

Result<v1::SignedMetadata> ParseSignedMetadata(ByteSpan wire, v1::RoleType role) {
  const size_t cap = MaxMetadataBytes(role);
  if (cap == 0) return InvalidArgumentError("unknown metadata role");
  if (wire.empty()) return InvalidArgumentError(Where(role) + ": empty");
  if (wire.size() > cap) {
    return ResourceExhaustedError(Where(role) + ": " + std::to_string(wire.size()) + " bytes exceeds the " +
                                  std::to_string(cap) + "-byte limit");
  }
  v1::SignedMetadata out;
  if (!out.ParseFromArray(wire.data(), static_cast<int>(wire.size()))) {
    return InvalidArgumentError(Where(role) + ": not a SignedMetadata message");
  }
  if (out.signed_().empty()) return InvalidArgumentError(Where(role) + ": empty signed bytes");
  if (out.signatures_size() == 0) return UnauthenticatedError(Where(role) + ": unsigned");
  if (out.signatures_size() > 64) return InvalidArgumentError(Where(role) + ": too many signatures");
  return out;
}

const v1::RoleKeys* FindRole(const v1::RootMetadata& root, v1::RoleType role) {
  for (const auto& r : root.roles()) {
    if (r.role() == role) return &r;
  }
  return nullptr;
}

Status ValidateRoot(const v1::RootMetadata& root) {
  std::set<std::string> defined;
  for (const auto& k : root.keys()) {
    if (k.key_type() != v1::KEY_TYPE_ECDSA_P256_SHA256) {
      return InvalidArgumentError("root metadata: key " + k.key_id() + " has unknown key type " +
                                  std::to_string(static_cast<int>(k.key_type())));
    }
    auto pub = security::EcdsaPublicKey::FromDer(AsBytes(k.public_key_der()));
    if (!pub.ok()) return InvalidArgumentError("root metadata: key " + k.key_id() + " does not parse as P-256");
    if (pub->KeyId() != k.key_id()) {
      return InvalidArgumentError("root metadata: key id " + k.key_id() + " is not SHA-256 of its DER");
    }
    if (!defined.insert(k.key_id()).second) {
      return InvalidArgumentError("root metadata: key " + k.key_id() + " listed twice");
    }
  }
  for (v1::RoleType role : kAllRoles) {
    int count = 0;
    for (const auto& r : root.roles()) count += r.role() == role ? 1 : 0;
    if (count != 1) {
      return InvalidArgumentError("root metadata: role " + std::string(RoleName(role)) + " defined " +
                                  std::to_string(count) + " times (need exactly 1)");
    }
    const v1::RoleKeys* r = FindRole(root, role);
    std::set<std::string> ids(r->key_ids().begin(), r->key_ids().end());
    for (const auto& id : ids) {
      if (!defined.count(id)) {
        return InvalidArgumentError("root metadata: role " + std::string(RoleName(role)) + " uses undefined key " + id);
      }
    }
    if (r->threshold() < 1 || r->threshold() > ids.size()) {
      return InvalidArgumentError("root metadata: role " + std::string(RoleName(role)) + " threshold " +
                                  std::to_string(r->threshold()) + " with " + std::to_string(ids.size()) +
                                  " unique keys");
    }
  }
  return Status::Ok();
}

Status CheckThreshold(const v1::SignedMetadata& signed_metadata, const v1::RootMetadata& root, v1::RoleType role) {
  const v1::RoleKeys* r = FindRole(root, role);
  if (r == nullptr || r->threshold() == 0) {
    return UnauthenticatedError(Where(role) + ": role has no keys in the trusted root");
  }
  std::set<std::string> role_ids(r->key_ids().begin(), r->key_ids().end());
  std::set<std::string> counted;
  for (const auto& sig : signed_metadata.signatures()) {
    if (!role_ids.count(sig.key_id()) || counted.count(sig.key_id())) continue;  // foreign or duplicate
    const v1::PublicKey* pk = nullptr;
    for (const auto& k : root.keys()) {
      if (k.key_id() == sig.key_id()) pk = &k;
    }
    if (pk == nullptr || pk->key_type() != v1::KEY_TYPE_ECDSA_P256_SHA256) continue;  // unknown key type
    auto pub = security::EcdsaPublicKey::FromDer(AsBytes(pk->public_key_der()));
    if (!pub.ok() || pub->KeyId() != sig.key_id()) continue;
    if (pub->Verify(AsBytes(signed_metadata.signed_()), AsBytes(sig.signature())).ok()) counted.insert(sig.key_id());
  }
  if (counted.size() < r->threshold()) {
    return UnauthenticatedError(Where(role) + ": " + std::to_string(counted.size()) + " valid signature(s) from " +
                                "distinct keys, threshold is " + std::to_string(r->threshold()));
  }
  return Status::Ok();
}

Result<v1::Metadata> ParseMetadataBody(std::string_view signed_bytes, v1::RoleType expected_role) {
  v1::Metadata m;
  if (!m.ParseFromArray(signed_bytes.data(), static_cast<int>(signed_bytes.size()))) {
    return InvalidArgumentError(Where(expected_role) + ": signed bytes are not a Metadata message");
  }
  if (m.spec_version() != kSpecVersion) {
    return InvalidArgumentError(Where(expected_role) + ": unsupported spec_version " +
                                std::to_string(m.spec_version()));
  }
  if (m.role() != expected_role) {
    return InvalidArgumentError(Where(expected_role) + ": signed role is " + std::string(RoleName(m.role())));
  }
  if (BodyRole(m) != expected_role) return InvalidArgumentError(Where(expected_role) + ": body does not match role");
  if (m.version() == 0) return InvalidArgumentError(Where(expected_role) + ": version 0");
  if (expected_role == v1::ROLE_TYPE_ROOT) FLT_RETURN_IF_ERROR(ValidateRoot(m.root()));
  return m;
}

Result<v1::Metadata> VerifyMetadata(ByteSpan wire, const v1::RootMetadata& root, v1::RoleType role) {
  FLT_ASSIGN_OR_RETURN(v1::SignedMetadata sm, ParseSignedMetadata(wire, role));
  FLT_RETURN_IF_ERROR(CheckThreshold(sm, root, role));
  return ParseMetadataBody(sm.signed_(), role);
}

Result<v1::Metadata> ParseTrustedMetadata(ByteSpan wire, v1::RoleType role) {
  FLT_ASSIGN_OR_RETURN(v1::SignedMetadata sm, ParseSignedMetadata(wire, role));
  return ParseMetadataBody(sm.signed_(), role);
}

}  // namespace flotilla::ota
