// Enrolment: turns an EnrolmentRequest envelope (device → coordinator on
// fl/v1/d/{id}/up/event/enrol) into a device record, or a refusal with a reason.
//
// A device proves who it is with
//   (a) a certificate chaining to the fleet CA whose CN is the device id and whose public
//       key is the identity key, and/or
//   (b) a one-time enrolment token the operator created (Store::CreateEnrolmentToken),
// and in both cases by signing the envelope with that identity key. A certificate alone
// suffices unless the policy requires a token; a token alone (no certificate) enrols the
// key for signed envelopes (the broker still wants a certificate for mTLS). Revoked
// devices are refused; an identical redelivery is accepted again without changes.
//
// Thread-safe (the store is; the rest is immutable).
#pragma once

#include <string>
#include <string_view>

#include "flotilla/coordinator/store.h"
#include "flotilla/core/bytes.h"
#include "flotilla/core/clock.h"
#include "flotilla/core/status.h"
#include "flotilla/v1/device.pb.h"

namespace flotilla::coordinator {

struct EnrolmentPolicy {
  bool require_token = false;
};

// Reads the EnrolmentRequest out of envelope wire bytes WITHOUT checking the signature
// (the signing key is inside the request, so it must be read first). Size-limited;
// InvalidArgument naming what is wrong. Callers must not trust the result until
// Enrolment::HandleEnvelope has verified the signature with the key it names.
Result<v1::EnrolmentRequest> PeekEnrolmentRequest(ByteSpan wire);

class Enrolment {
 public:
  // `ca_cert_pem`: the fleet CA. `store` and `clock` must outlive this object.
  Enrolment(Store& store, std::string ca_cert_pem, EnrolmentPolicy policy, const Clock& clock);

  // Verifies and records an enrolment that arrived on `topic_device_id`'s uplink.
  // OK with the device record; otherwise InvalidArgument (malformed),
  // Unauthenticated (certificate or signature does not verify), PermissionDenied
  // (revoked, token refused, names do not match), AlreadyExists (other key).
  Result<DeviceRecord> HandleEnvelope(std::string_view topic_device_id, ByteSpan wire);

  // The answer to send back (command "enrolment").
  static v1::EnrolmentResponse ResponseFor(std::string_view device_id, const Result<DeviceRecord>& outcome);

 private:
  Store& store_;
  std::string ca_cert_pem_;
  EnrolmentPolicy policy_;
  const Clock& clock_;
};

}  // namespace flotilla::coordinator
