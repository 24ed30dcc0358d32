#include "flotilla/ota/verifier.h"

#include <algorithm>
#include <set>

#include "flotilla/ota/metadata.h"
#include "flotilla/ota/repository_layout.h"
#include "flotilla/security/hash.h"

namespace flotilla::ota {
namespace {

std::set<std::string> KeySet(const v1::RootMetadata& root, v1::RoleType role) {
  const v1::RoleKeys* r = FindRole(root, role);
  if (r == nullptr) return {};
  std::set<std::string> ids(r->key_ids().begin(), r->key_ids().end());
  ids.insert("threshold=" + std::to_string(r->threshold()));
  return ids;
}

const v1::MetaFileInfo* FindMeta(const v1::SnapshotMetadata& s, std::string_view name) {
  for (const auto& m : s.meta()) {
    if (m.name() == name) return &m;
  }
  return nullptr;
}

Status CheckLengthAndHash(ByteSpan wire, const v1::MetaFileInfo& expect, std::string_view what) {
  if (expect.length() != 0 && wire.size() != expect.length()) {
    return DataLossError(std::string(what) + ": length " + std::to_string(wire.size()) + " differs from the " +
                         std::to_string(expect.length()) + " bytes the signed metadata names");
  }
  if (!expect.sha256().empty()) {
    auto got = security::Sha256(wire);
    if (!ConstantTimeEqual(got, AsBytes(expect.sha256()))) {
      return DataLossError(std::string(what) + ": SHA-256 differs from the signed metadata");
    }
  }
  return Status::Ok();
}

}  // namespace

uint64_t ReleaseCounter(const v1::OtaTrustedState& state, const std::string& name) {
  for (const auto& rc : state.release_counters()) {
    if (rc.name() == name) return rc.counter();
  }
  return 0;
}

Result<UpdateVerifier> UpdateVerifier::Create(v1::OtaTrustedState state) {
  UpdateVerifier v(std::move(state));
  FLT_RETURN_IF_ERROR(v.Load());
  return v;
}

Status UpdateVerifier::Load() {
  if (state_.root().empty()) return FailedPreconditionError("trusted state: no root provisioned");
  FLT_ASSIGN_OR_RETURN(root_, ParseTrustedMetadata(AsBytes(state_.root()), v1::ROLE_TYPE_ROOT));
  timestamp_.reset();
  snapshot_.reset();
  targets_.reset();
  if (!state_.timestamp().empty()) {
    FLT_ASSIGN_OR_RETURN(timestamp_, ParseTrustedMetadata(AsBytes(state_.timestamp()), v1::ROLE_TYPE_TIMESTAMP));
  }
  if (!state_.snapshot().empty()) {
    FLT_ASSIGN_OR_RETURN(snapshot_, ParseTrustedMetadata(AsBytes(state_.snapshot()), v1::ROLE_TYPE_SNAPSHOT));
  }
  if (!state_.targets().empty()) {
    FLT_ASSIGN_OR_RETURN(targets_, ParseTrustedMetadata(AsBytes(state_.targets()), v1::ROLE_TYPE_TARGETS));
  }
  return Status::Ok();
}

Status UpdateVerifier::BeginCycle(int64_t now_ms) {
  if (now_ms < state_.last_cycle_time_ms()) {
    return FailedPreconditionError("clock moved backwards: cycle time " + std::to_string(now_ms) +
                                   " ms is before the last cycle at " + std::to_string(state_.last_cycle_time_ms()) +
                                   " ms");
  }
  cycle_time_ms_ = now_ms;
  cycle_started_ = true;
  state_.set_last_cycle_time_ms(now_ms);
  return Status::Ok();
}

Status UpdateVerifier::CheckExpiry(const v1::Metadata& m) const {
  if (!cycle_started_) return FailedPreconditionError("UpdateVerifier: BeginCycle() was not called");
  if (m.expires_ms() <= cycle_time_ms_) {
    return DeadlineExceededError(std::string(RoleName(m.role())) + " metadata version " + std::to_string(m.version()) +
                                 " expired at " + std::to_string(m.expires_ms()) + " ms (cycle time " +
                                 std::to_string(cycle_time_ms_) + " ms)");
  }
  return Status::Ok();
}

uint64_t UpdateVerifier::RootVersion() const { return root_.version(); }

Status UpdateVerifier::UpdateRoot(ByteSpan wire) {
  FLT_ASSIGN_OR_RETURN(v1::SignedMetadata sm, ParseSignedMetadata(wire, v1::ROLE_TYPE_ROOT));
  // Old threshold first: a root not signed by the current keys is not even parsed.
  FLT_RETURN_IF_ERROR(CheckThreshold(sm, root_.root(), v1::ROLE_TYPE_ROOT).WithContext("signatures of root N"));
  FLT_ASSIGN_OR_RETURN(v1::Metadata next, ParseMetadataBody(sm.signed_(), v1::ROLE_TYPE_ROOT));
  FLT_RETURN_IF_ERROR(CheckThreshold(sm, next.root(), v1::ROLE_TYPE_ROOT).WithContext("signatures of root N+1"));
  if (next.version() != root_.version() + 1) {
    return FailedPreconditionError("root metadata: version " + std::to_string(next.version()) + " is not " +
                                   std::to_string(root_.version() + 1));
  }
  const bool rotated = KeySet(root_.root(), v1::ROLE_TYPE_TIMESTAMP) != KeySet(next.root(), v1::ROLE_TYPE_TIMESTAMP) ||
                       KeySet(root_.root(), v1::ROLE_TYPE_SNAPSHOT) != KeySet(next.root(), v1::ROLE_TYPE_SNAPSHOT);
  state_.set_root(std::string(AsStringView(wire)));
  root_ = std::move(next);
  if (rotated) {
    // Fast-forward recovery: versions signed by a compromised key must not pin us.
    state_.clear_timestamp();
    state_.clear_snapshot();
    timestamp_.reset();
    snapshot_.reset();
  }
  return Status::Ok();
}

Status UpdateVerifier::CheckRootNotExpired() const { return CheckExpiry(root_); }

Status UpdateVerifier::UpdateTimestamp(ByteSpan wire) {
  FLT_ASSIGN_OR_RETURN(v1::Metadata m, VerifyMetadata(wire, root_.root(), v1::ROLE_TYPE_TIMESTAMP));
  if (timestamp_) {
    if (m.version() < timestamp_->version()) {
      return FailedPreconditionError("timestamp metadata: version " + std::to_string(m.version()) +
                                     " is lower than trusted " + std::to_string(timestamp_->version()));
    }
    if (m.version() == timestamp_->version() && AsStringView(wire) != state_.timestamp()) {
      return FailedPreconditionError("timestamp metadata: different content under the same version " +
                                     std::to_string(m.version()));
    }
    if (m.timestamp().snapshot().version() < timestamp_->timestamp().snapshot().version()) {
      return FailedPreconditionError("timestamp metadata: snapshot version went back to " +
                                     std::to_string(m.timestamp().snapshot().version()));
    }
  }
  if (m.timestamp().snapshot().version() == 0) return InvalidArgumentError("timestamp metadata: no snapshot version");
  if (snapshot_ && m.timestamp().snapshot().version() < snapshot_->version()) {
    return FailedPreconditionError("timestamp metadata: names snapshot version lower than trusted");
  }
  FLT_RETURN_IF_ERROR(CheckExpiry(m));
  state_.set_timestamp(std::string(AsStringView(wire)));
  timestamp_ = std::move(m);
  return Status::Ok();
}

Status UpdateVerifier::UpdateSnapshot(ByteSpan wire) {
  if (!timestamp_) return FailedPreconditionError("snapshot metadata: no trusted timestamp");
  const v1::MetaFileInfo& expect = timestamp_->timestamp().snapshot();
  if (wire.size() > MaxMetadataBytes(v1::ROLE_TYPE_SNAPSHOT)) {
    return ResourceExhaustedError("snapshot metadata: over the size limit");
  }
  FLT_RETURN_IF_ERROR(CheckLengthAndHash(wire, expect, "snapshot metadata"));
  FLT_ASSIGN_OR_RETURN(v1::Metadata m, VerifyMetadata(wire, root_.root(), v1::ROLE_TYPE_SNAPSHOT));
  if (m.version() != expect.version()) {
    return FailedPreconditionError("snapshot metadata: version " + std::to_string(m.version()) +
                                   " differs from the timestamp's " + std::to_string(expect.version()));
  }
  if (snapshot_) {
    if (m.version() < snapshot_->version()) return FailedPreconditionError("snapshot metadata: version went back");
    for (const auto& old : snapshot_->snapshot().meta()) {
      const v1::MetaFileInfo* now = FindMeta(m.snapshot(), old.name());
      if (now == nullptr) return FailedPreconditionError("snapshot metadata: " + old.name() + " disappeared");
      if (now->version() < old.version()) {
        return FailedPreconditionError("snapshot metadata: " + old.name() + " version went back from " +
                                       std::to_string(old.version()) + " to " + std::to_string(now->version()));
      }
    }
  }
  FLT_RETURN_IF_ERROR(CheckExpiry(m));
  state_.set_snapshot(std::string(AsStringView(wire)));
  snapshot_ = std::move(m);
  return Status::Ok();
}

Status UpdateVerifier::UpdateTargets(ByteSpan wire) {
  if (!snapshot_) return FailedPreconditionError("targets metadata: no trusted snapshot");
  const v1::MetaFileInfo* expect = FindMeta(snapshot_->snapshot(), "targets");
  if (expect == nullptr) return FailedPreconditionError("targets metadata: snapshot does not list targets");
  if (wire.size() > MaxMetadataBytes(v1::ROLE_TYPE_TARGETS)) {
    return ResourceExhaustedError("targets metadata: over the size limit");
  }
  FLT_RETURN_IF_ERROR(CheckLengthAndHash(wire, *expect, "targets metadata"));
  FLT_ASSIGN_OR_RETURN(v1::Metadata m, VerifyMetadata(wire, root_.root(), v1::ROLE_TYPE_TARGETS));
  if (m.version() != expect->version()) {
    return FailedPreconditionError("targets metadata: version " + std::to_string(m.version()) +
                                   " is not the snapshot's " + std::to_string(expect->version()) + " (mix-and-match)");
  }
  if (targets_ && m.version() < targets_->version()) {
    return FailedPreconditionError("targets metadata: version " + std::to_string(m.version()) +
                                   " is lower than trusted " + std::to_string(targets_->version()));
  }
  std::set<std::string> names;
  for (const auto& t : m.targets().targets()) {
    if (t.name().empty() || !names.insert(t.name()).second) {
      return InvalidArgumentError("targets metadata: empty or duplicate target name '" + t.name() + "'");
    }
    if (t.sha256().size() != security::kSha256Size) {
      return InvalidArgumentError("targets metadata: target " + t.name() + " has no SHA-256");
    }
    uint64_t off = 0;
    for (const auto& c : t.chunks()) {
      if (c.offset() != off || c.length() == 0 || c.length() > kMaxChunkBytes ||
          c.sha256().size() != security::kSha256Size) {
        return InvalidArgumentError("targets metadata: target " + t.name() + " has a bad chunk list at offset " +
                                    std::to_string(off));
      }
      off += c.length();
    }
    if (off != t.length()) {
      return InvalidArgumentError("targets metadata: chunks of " + t.name() + " do not cover its length");
    }
  }
  FLT_RETURN_IF_ERROR(CheckExpiry(m));
  state_.set_targets(std::string(AsStringView(wire)));
  targets_ = std::move(m);
  return Status::Ok();
}

Result<VerifiedAssignment> UpdateVerifier::VerifyDirector(ByteSpan wire, const DeviceIdentity& device) {
  if (!targets_) return FailedPreconditionError("director assignment: no trusted targets");
  FLT_ASSIGN_OR_RETURN(v1::Metadata m, VerifyMetadata(wire, root_.root(), v1::ROLE_TYPE_DIRECTOR));
  const v1::DirectorAssignment& a = m.director();
  const bool mine =
      (a.subject_case() == v1::DirectorAssignment::kDeviceId && a.device_id() == device.device_id) ||
      (a.subject_case() == v1::DirectorAssignment::kCohort &&
       std::find(device.cohorts.begin(), device.cohorts.end(), a.cohort()) != device.cohorts.end());
  if (!mine) return PermissionDeniedError("director assignment: addressed to another device or cohort");
  if (m.version() < state_.director_version()) {
    return FailedPreconditionError("director assignment: version " + std::to_string(m.version()) +
                                   " is lower than trusted " + std::to_string(state_.director_version()));
  }
  FLT_RETURN_IF_ERROR(CheckExpiry(m));
  VerifiedAssignment out;
  out.deployment_id = a.deployment_id();
  out.nonce = a.nonce();
  out.director_version = m.version();
  for (const auto& at : a.targets()) {
    const v1::TargetInfo* t = nullptr;
    for (const auto& cand : targets_->targets().targets()) {
      if (cand.name() == at.name()) t = &cand;
    }
    const std::string what = "director assignment: target " + at.name();
    if (t == nullptr) return FailedPreconditionError(what + " is not in the signed targets");
    if (!ConstantTimeEqual(AsBytes(at.sha256()), AsBytes(t->sha256()))) {
      return FailedPreconditionError(what + ": SHA-256 differs from targets");
    }
    if (at.length() != t->length()) return FailedPreconditionError(what + ": length differs from targets");
    if (at.release_counter() != t->release_counter()) {
      return FailedPreconditionError(what + ": release counter differs from targets");
    }
    if (t->hardware_compat_size() > 0 &&
        std::find(t->hardware_compat().begin(), t->hardware_compat().end(), device.hardware_class) ==
            t->hardware_compat().end()) {
      return FailedPreconditionError(what + ": not compatible with hardware class '" + device.hardware_class + "'");
    }
    if (t->release_counter() < ReleaseCounter(state_, t->name())) {
      return FailedPreconditionError(what + ": release counter " + std::to_string(t->release_counter()) +
                                     " is lower than installed " + std::to_string(ReleaseCounter(state_, t->name())));
    }
    out.targets.push_back(*t);
  }
  state_.set_director_version(m.version());
  for (const auto& t : out.targets) {
    bool found = false;
    for (auto& rc : *state_.mutable_release_counters()) {
      if (rc.name() == t.name()) {
        rc.set_counter(std::max(rc.counter(), t.release_counter()));
        found = true;
      }
    }
    if (!found) {
      auto* rc = state_.add_release_counters();
      rc->set_name(t.name());
      rc->set_counter(t.release_counter());
    }
  }
  return out;
}

std::string UpdateVerifier::SnapshotPath() const {
  return timestamp_ ? SnapshotMetadataPath(timestamp_->timestamp().snapshot().version()) : std::string();
}

std::string UpdateVerifier::TargetsPath() const {
  if (!snapshot_) return {};
  const v1::MetaFileInfo* t = FindMeta(snapshot_->snapshot(), "targets");
  return t ? TargetsMetadataPath(t->version()) : std::string();
}

Status CheckBaseCompatibility(const v1::TargetInfo& target, ByteSpan installed_base_sha256) {
  if (target.kind() != v1::TARGET_KIND_ADAPTER) return Status::Ok();
  if (target.base_model_sha256().size() != security::kSha256Size) {
    return FailedPreconditionError("adapter " + target.name() + " does not name its base model");
  }
  if (!ConstantTimeEqual(AsBytes(target.base_model_sha256()), installed_base_sha256)) {
    return FailedPreconditionError("adapter " + target.name() + " is for base " +
                                   ToHex(AsBytes(target.base_model_sha256())).substr(0, 16) +
                                   "…, installed base is " + ToHex(installed_base_sha256).substr(0, 16) + "…");
  }
  return Status::Ok();
}

}  // namespace flotilla::ota
