// Signed envelopes: every MQTT payload in Flotilla is an Envelope (envelope.proto) whose
// signature covers the exact body bytes (prefixed by kEnvelopeSignatureContext).
//
// Open() checks, in this order, cheapest and least-trusting first:
//   size limit -> outer framing -> signature (sender id peeked from the body) ->
//   body parse -> protocol version -> payload type -> recipient -> timestamp skew.
// Each failure has its own status code and a message starting with "envelope:":
//   oversized          ResourceExhausted     truncated        OutOfRange
//   garbage / bad body InvalidArgument       unsigned         Unauthenticated
//   unknown sender     NotFound              bad signature    Unauthenticated
//   wrong version      FailedPrecondition    unknown type     Unimplemented
//   wrong recipient    PermissionDenied      stale / future   DeadlineExceeded
// Replays are caught by ReplayWindow (replay_window.h), which the receiver applies after
// Open() succeeds (AlreadyExists).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "flotilla/core/bytes.h"
#include "flotilla/core/clock.h"
#include "flotilla/core/random.h"
#include "flotilla/core/status.h"
#include "flotilla/protocol/signer.h"
#include "flotilla/protocol/topics.h"
#include "flotilla/protocol/version.h"
#include "flotilla/v1/envelope.pb.h"

namespace flotilla::protocol {

using PayloadType = ::flotilla::v1::PayloadType;

// True for every PayloadType this build knows, except UNSPECIFIED.
bool IsKnownPayloadType(int value);
// "ROUND_INVITATION" etc.; "PAYLOAD_TYPE_<n>" for unknown values.
std::string PayloadTypeName(PayloadType type);

// Recipient string of a group ("group:<name>"); device ids and kCoordinatorId are used
// as they are. The ':' cannot appear in a safe name, so the three never collide.
std::string GroupRecipient(std::string_view group);

struct SealOptions {
  size_t max_envelope_bytes = kMaxEnvelopeBytes;
};

// Builds and signs an envelope from `signer.identity()` to `recipient` carrying
// `payload` (already serialized `type`). The message id is 16 bytes from `random` (a
// CSPRNG in production), the timestamp from `clock`. Returns the wire bytes, or
// InvalidArgument (bad ids, unknown type), ResourceExhausted (result over the limit,
// nothing signed), or the signer's error. Thread-safe if signer and random are.
Result<Bytes> Seal(const Signer& signer, PayloadType type, ByteSpan payload, std::string_view recipient,
                   const Clock& clock, Random& random, const SealOptions& options = {});

struct OpenOptions {
  size_t max_envelope_bytes = kMaxEnvelopeBytes;
  // Accept timestamps in [now - max_age, now + max_future_skew].
  std::chrono::milliseconds max_age{std::chrono::minutes(5)};
  std::chrono::milliseconds max_future_skew{std::chrono::seconds(30)};
  // Recipients this receiver answers to (its own id, kCoordinatorId, GroupRecipient(g)
  // for its groups). Required: an empty list refuses every envelope.
  std::vector<std::string> recipients;
};

// A verified envelope. `payload` is still serialized; see payload.h to unpack it.
struct OpenedEnvelope {
  uint32_t protocol_version = 0;
  std::string sender_id;
  std::string message_id;  // kMessageIdBytes raw bytes
  int64_t timestamp_ms = 0;
  PayloadType payload_type = ::flotilla::v1::PAYLOAD_TYPE_UNSPECIFIED;
  std::string payload;
  std::string recipient;
};

// Verifies and decodes wire bytes (see the order and errors above). Nothing is returned
// unless every check passed. Does not check replays: feed the result to a ReplayWindow.
// Thread-safe if `verifier` is.
Result<OpenedEnvelope> Open(ByteSpan wire, const SignatureVerifier& verifier, const Clock& clock,
                            const OpenOptions& options);

// Cross-checks an opened envelope against the topic it arrived on:
//   uplink d/{id}/up/...   sender == {id}, recipient == kCoordinatorId
//   downlink d/{id}/dn/... sender == kCoordinatorId, recipient == {id}
//   g/{group}/dn/round     sender == kCoordinatorId, recipient == GroupRecipient(group)
// and that the payload type may travel on that kind of topic (docs/protocol.md).
// PermissionDenied otherwise. Pure, thread-safe.
Status CheckTopicBinding(const Topic& topic, const OpenedEnvelope& envelope);

}  // namespace flotilla::protocol
