// Adapters between the coordinator's Store and the engines the service runs: device
// identity keys for envelope signatures (round engine, rollouts) and the fleet view the
// RolloutManager assigns from.
#pragma once

#include <algorithm>
#include <list>
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
// key. The cache holds at most `cache_capacity` keys (least recently used go first; a
// parsed key costs OpenSSL a few kB), so memory does not grow with the fleet. NotFound
// for unknown ids, PermissionDenied for revoked ones. Thread-safe.
class EnrolledDeviceKeys final : public protocol::SignatureVerifier {
 public:
  explicit EnrolledDeviceKeys(Store& store, size_t cache_capacity = 256)
      : store_(store), capacity_(std::max<size_t>(cache_capacity, 1)) {}
  Status Verify(std::string_view identity, ByteSpan message, ByteSpan signature) const override;
  // Enrolled and not revoked (the round engine's device_allowed).
  bool Allowed(std::string_view device_id) const;

 private:
  struct Cached {
    Bytes der;
    std::list<std::string>::iterator use;  // its place in lru_
  };
  Store& store_;
  const size_t capacity_;
  mutable std::mutex mu_;
  mutable std::map<std::string, Cached, std::less<>> cached_;  // GUARDED_BY(mu_)
  mutable std::list<std::string> lru_;                          // GUARDED_BY(mu_); most recent first
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
