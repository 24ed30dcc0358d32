// Adapters between the coordinator's Store and the engines the service runs: device
// identity keys for envelope signatures (round engine, rollouts) and the fleet view the
// RolloutManager assigns from.
#pragma once

#include <map>
#include <mutex>
#include <string>

#include "flotilla/coordinator/rollout.h"
#include "flotilla/coordinator/round_fast_identity.h"
#include "flotilla/coordinator/store.h"
#include "flotilla/protocol/signer.h"

namespace flotilla::coordinator::internal {

// Verifies with the identity key of an ENROLLED, ACTIVE device, read from the Store on
// every call (so a revocation or a new enrolment takes effect at the next message), with
// the parsed OpenSSL key cached per (device, key bytes): a re-keyed device gets its new
// key. NotFound for unknown ids, PermissionDenied for revoked ones. Thread-safe.
class EnrolledDeviceKeys final : public protocol::SignatureVerifier {
 public:
  explicit EnrolledDeviceKeys(Store& store) : store_(store) {}
  Status Verify(std::string_view identity, ByteSpan message, ByteSpan signature) const override;
  // Enrolled and not revoked (the round engine's device_allowed).
  bool Allowed(std::string_view device_id) const;

 private:
  Store& store_;
  mutable std::mutex mu_;
  mutable std::map<std::string, Bytes, std::less<>> cached_der_;  // GUARDED_BY(mu_)
  mutable rounds::OpenSslKeyRing ring_;
};

// Active devices and their hardware class (HardwareInfo.hardware_class), for rollouts.
class StoreFleetView final : public FleetView {
 public:
  explicit StoreFleetView(Store& store) : store_(store) {}
  Result<std::vector<FleetDevice>> ListDevices() override;

 private:
  Store& store_;
};

}  // namespace flotilla::coordinator::internal
