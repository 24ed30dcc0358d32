// Device-side metadata verification: the TUF client workflow (root chain, timestamp,
// snapshot, targets) plus the Uptane director check, against a TrustedState the device
// persists. docs/ota.md lists every rule; reference/ota.md section 2 explains why.
//
// Use: Create() from the persisted state, BeginCycle(now) once per update cycle (the time
// every expiry is compared with), then UpdateRoot (repeatedly, N+1 each), UpdateTimestamp,
// UpdateSnapshot, UpdateTargets, VerifyDirector. Each Update* either accepts the new bytes
// into state() or leaves state() unchanged and returns the reason. Persist state() after
// a successful cycle (or after each step: each step leaves a consistent state).
// Not thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "flotilla/core/bytes.h"
#include "flotilla/core/status.h"
#include "flotilla/v1/ota.pb.h"

namespace flotilla::ota {

// What the device knows about itself for director and compatibility checks.
struct DeviceIdentity {
  std::string device_id;
  std::vector<std::string> cohorts;
  std::string hardware_class;  // must appear in TargetInfo.hardware_compat (if non-empty)
};

// A target the director assigned and the image repository (targets) agrees with.
struct VerifiedAssignment {
  std::string deployment_id;
  std::string nonce;  // echoed in the report
  uint64_t director_version = 0;
  std::vector<v1::TargetInfo> targets;
};

class UpdateVerifier {
 public:
  // `state.root()` must hold a trusted (provisioned) root; its structure is validated.
  static Result<UpdateVerifier> Create(v1::OtaTrustedState state);

  // Fixes the cycle time. FailedPrecondition ("clock moved backwards") if it is earlier
  // than the newest cycle time seen before; the state then stays unchanged.
  Status BeginCycle(int64_t now_ms);

  // Root N+1: signed by the threshold of root N *and* of N+1, version exactly N+1.
  // Rotated timestamp/snapshot keys clear the trusted timestamp and snapshot (TUF 5.3.11).
  Status UpdateRoot(ByteSpan wire);
  // After the last UpdateRoot: the trusted root must not be expired.
  Status CheckRootNotExpired() const;
  // Timestamp: threshold, version >= trusted (equal must be byte-identical), snapshot
  // version it names >= trusted snapshot's, not expired.
  Status UpdateTimestamp(ByteSpan wire);
  // Snapshot: length + SHA-256 as the timestamp names, version equal to it, threshold,
  // no targets version going back, not expired.
  Status UpdateSnapshot(ByteSpan wire);
  // Targets: length + SHA-256 + version as the snapshot names (mix-and-match), threshold,
  // version >= trusted, not expired.
  Status UpdateTargets(ByteSpan wire);
  // Director assignment for this device (device id or one of its cohorts), threshold,
  // version >= trusted director version, not expired; every assigned target must exist
  // in the trusted targets with the same hash, length and release counter, list this
  // hardware class, and have a release counter >= the persisted one. On success the
  // director version and release counters in state() move forward.
  Result<VerifiedAssignment> VerifyDirector(ByteSpan wire, const DeviceIdentity& device);

  // Metadata paths inside a repository (content-addressed by version, like TUF's
  // consistent snapshots, so CDNs can cache everything but the timestamp).
  std::string SnapshotPath() const;  // from the trusted timestamp
  std::string TargetsPath() const;   // from the trusted snapshot
  uint64_t RootVersion() const;

  const v1::OtaTrustedState& state() const { return state_; }
  const v1::RootMetadata& root() const { return root_.root(); }
  const v1::Metadata* trusted_targets() const { return targets_ ? &*targets_ : nullptr; }

 private:
  explicit UpdateVerifier(v1::OtaTrustedState state) : state_(std::move(state)) {}
  Status Load();
  Status CheckExpiry(const v1::Metadata& m) const;

  v1::OtaTrustedState state_;
  v1::Metadata root_;
  std::optional<v1::Metadata> timestamp_, snapshot_, targets_;
  int64_t cycle_time_ms_ = 0;
  bool cycle_started_ = false;
};

// Adapter/base compatibility: an adapter target must name the base it applies to, equal
// to `installed_base_sha256`. FailedPrecondition otherwise. Base models always pass.
Status CheckBaseCompatibility(const v1::TargetInfo& target, ByteSpan installed_base_sha256);

// Release counter persisted for `name` (0 if none).
uint64_t ReleaseCounter(const v1::OtaTrustedState& state, const std::string& name);

}  // namespace flotilla::ota
