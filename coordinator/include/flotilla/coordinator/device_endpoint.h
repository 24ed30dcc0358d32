// DeviceEndpoint: the coordinator's side of the device uplink over a Transport.
// Subscribes to fl/v1/d/+/up/# and, for every message:
//   enrol event   -> Enrolment (signature checked with the key the request carries),
//                    EnrolmentResponse published on dn/cmd/enrolment
//   anything else -> envelope opened with the store's keys of ACTIVE devices (revoked or
//                    unknown senders are refused), topic binding and replay checked, then
//                    presence -> Store::SetPresence, reported -> Store::SetReportedState,
//                    other events -> the uplink handler (the round engine's hook).
// Refused messages are counted and logged at debug level, never acted on.
//
// Threading: handlers run on the transport's owner thread (inside Poll()); Start() and
// Poll() belong to that thread too. stats() is safe from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>

#include "flotilla/coordinator/enrolment.h"
#include "flotilla/coordinator/store.h"
#include "flotilla/core/clock.h"
#include "flotilla/core/random.h"
#include "flotilla/protocol/envelope.h"
#include "flotilla/protocol/replay_window.h"
#include "flotilla/protocol/signer.h"
#include "flotilla/protocol/topics.h"
#include "flotilla/protocol/transport.h"

namespace flotilla::coordinator {

// Verifies envelope signatures with the identity key of an active enrolled device.
// NotFound for unknown ids, PermissionDenied for revoked ones. Thread-safe.
class StoreKeyVerifier final : public protocol::SignatureVerifier {
 public:
  explicit StoreKeyVerifier(Store& store) : store_(store) {}
  Status Verify(std::string_view identity, ByteSpan message, ByteSpan signature) const override;

 private:
  Store& store_;
};

struct DeviceEndpointStats {
  uint64_t accepted = 0;
  uint64_t refused = 0;
  uint64_t enrolments = 0;
  uint64_t enrolments_refused = 0;
};

using UplinkHandler = std::function<void(const protocol::Topic& topic, const protocol::OpenedEnvelope& envelope)>;

class DeviceEndpoint {
 public:
  // Everything passed in must outlive the endpoint. `signer` signs as the coordinator.
  DeviceEndpoint(protocol::Transport& transport, Store& store, Enrolment& enrolment, const protocol::Signer& signer,
                 const Clock& clock, Random& random);

  // Registers the message handler and subscribes (owner thread, before or after connect).
  Status Start();
  // Events the round engine consumes (RoundResponse, SecAgg messages, ...). Set before Start.
  void SetUplinkHandler(UplinkHandler handler) { uplink_ = std::move(handler); }
  // Dispatches one received message (also what the transport handler calls).
  void HandleMessage(const protocol::Message& message);

  DeviceEndpointStats stats() const;

 private:
  void Refuse(const std::string& topic, const Status& why);
  void HandleEnrolment(const std::string& device_id, const protocol::Message& message);

  protocol::Transport& transport_;
  Store& store_;
  Enrolment& enrolment_;
  const protocol::Signer& signer_;
  const Clock& clock_;
  Random& random_;
  StoreKeyVerifier verifier_;
  protocol::ReplayWindow replay_;
  UplinkHandler uplink_;
  std::atomic<uint64_t> accepted_{0}, refused_{0}, enrolments_{0}, enrolments_refused_{0};
};

}  // namespace flotilla::coordinator
