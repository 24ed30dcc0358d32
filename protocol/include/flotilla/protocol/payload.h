// Typed payloads: which protobuf message each PayloadType carries, where it is published,
// and size-limited pack/unpack that return a Status instead of throwing or aborting.
#pragma once

#include <memory>
#include <span>
#include <string_view>

#include "flotilla/core/bytes.h"
#include "flotilla/core/clock.h"
#include "flotilla/core/random.h"
#include "flotilla/core/status.h"
#include "flotilla/protocol/envelope.h"
#include "flotilla/protocol/topics.h"
#include "flotilla/protocol/version.h"
#include "flotilla/v1/device.pb.h"
#include "flotilla/v1/envelope.pb.h"
#include "flotilla/v1/ota.pb.h"
#include "flotilla/v1/round.pb.h"

namespace flotilla::protocol {

// PayloadTypeOf<Msg>::value: the PayloadType an envelope carrying Msg declares.
template <typename Msg>
struct PayloadTypeOf;  // undefined for messages that never travel alone

#define FLT_PROTOCOL_PAYLOAD(Msg, Type)                          \
  template <>                                                    \
  struct PayloadTypeOf<::flotilla::v1::Msg> {                    \
    static constexpr PayloadType value = ::flotilla::v1::Type;   \
  }
FLT_PROTOCOL_PAYLOAD(EnrolmentRequest, PAYLOAD_TYPE_ENROLMENT_REQUEST);
FLT_PROTOCOL_PAYLOAD(EnrolmentResponse, PAYLOAD_TYPE_ENROLMENT_RESPONSE);
FLT_PROTOCOL_PAYLOAD(Presence, PAYLOAD_TYPE_PRESENCE);
FLT_PROTOCOL_PAYLOAD(ReportedState, PAYLOAD_TYPE_REPORTED_STATE);
FLT_PROTOCOL_PAYLOAD(Telemetry, PAYLOAD_TYPE_TELEMETRY);
FLT_PROTOCOL_PAYLOAD(DesiredState, PAYLOAD_TYPE_DESIRED_STATE);
FLT_PROTOCOL_PAYLOAD(RoundAnnouncement, PAYLOAD_TYPE_ROUND_ANNOUNCEMENT);
FLT_PROTOCOL_PAYLOAD(RoundCheckIn, PAYLOAD_TYPE_ROUND_CHECK_IN);
FLT_PROTOCOL_PAYLOAD(RoundInvitation, PAYLOAD_TYPE_ROUND_INVITATION);
FLT_PROTOCOL_PAYLOAD(RoundResponse, PAYLOAD_TYPE_ROUND_RESPONSE);
FLT_PROTOCOL_PAYLOAD(AdvertiseKeys, PAYLOAD_TYPE_ADVERTISE_KEYS);
FLT_PROTOCOL_PAYLOAD(NeighbourKeys, PAYLOAD_TYPE_NEIGHBOUR_KEYS);
FLT_PROTOCOL_PAYLOAD(ShareKeys, PAYLOAD_TYPE_SHARE_KEYS);
FLT_PROTOCOL_PAYLOAD(ForwardedShares, PAYLOAD_TYPE_FORWARDED_SHARES);
FLT_PROTOCOL_PAYLOAD(MaskedInput, PAYLOAD_TYPE_MASKED_INPUT);
FLT_PROTOCOL_PAYLOAD(ConsistencyCheckRequest, PAYLOAD_TYPE_CONSISTENCY_CHECK_REQUEST);
FLT_PROTOCOL_PAYLOAD(ConsistencyCheckResponse, PAYLOAD_TYPE_CONSISTENCY_CHECK_RESPONSE);
FLT_PROTOCOL_PAYLOAD(UnmaskRequest, PAYLOAD_TYPE_UNMASK_REQUEST);
FLT_PROTOCOL_PAYLOAD(UnmaskResponse, PAYLOAD_TYPE_UNMASK_RESPONSE);
FLT_PROTOCOL_PAYLOAD(AggregateResult, PAYLOAD_TYPE_AGGREGATE_RESULT);
FLT_PROTOCOL_PAYLOAD(RoundAbort, PAYLOAD_TYPE_ROUND_ABORT);
FLT_PROTOCOL_PAYLOAD(TrainingMetrics, PAYLOAD_TYPE_TRAINING_METRICS);
FLT_PROTOCOL_PAYLOAD(UpdateHint, PAYLOAD_TYPE_UPDATE_HINT);
FLT_PROTOCOL_PAYLOAD(OtaReport, PAYLOAD_TYPE_OTA_REPORT);
#undef FLT_PROTOCOL_PAYLOAD

// A fresh, empty message of the type `type` carries; nullptr for unknown types.
std::unique_ptr<google::protobuf::Message> NewPayloadMessage(PayloadType type);

// Where a payload type may be published (docs/protocol.md has the table). `name` is the
// {kind}/{name} level for kEvent and kCommand, empty otherwise. Most types have one
// route; ROUND_ABORT has two (either side may abort). Empty for unknown types.
struct PayloadRoute {
  TopicKind kind;
  std::string_view name;
};
std::span<const PayloadRoute> RoutesFor(PayloadType type);

// Serializes `msg`. ResourceExhausted if it exceeds `max_bytes` (nothing is allocated
// for it), Internal if protobuf refuses (e.g. a message over 2 GiB).
Result<Bytes> PackPayload(const google::protobuf::MessageLite& msg, size_t max_bytes = kMaxPayloadBytes);

// Parses `bytes` into `out` (cleared first). ResourceExhausted over `max_bytes`,
// InvalidArgument naming the message type if the bytes are not a valid encoding. Never
// throws or aborts on hostile input.
Status ParsePayload(std::string_view bytes, google::protobuf::MessageLite& out, size_t max_bytes = kMaxPayloadBytes);

// Parses `bytes` as the message `type` carries (used by the fuzzer and by tools that log
// traffic). Unimplemented for unknown types.
Status ValidatePayload(PayloadType type, std::string_view bytes, size_t max_bytes = kMaxPayloadBytes);

// The typed payload of an opened envelope; InvalidArgument if the envelope declares a
// different payload type, else as ParsePayload.
template <typename Msg>
Result<Msg> UnpackPayload(const OpenedEnvelope& envelope, size_t max_bytes = kMaxPayloadBytes) {
  if (envelope.payload_type != PayloadTypeOf<Msg>::value) {
    return InvalidArgumentError("envelope carries " + PayloadTypeName(envelope.payload_type) + ", expected " +
                                PayloadTypeName(PayloadTypeOf<Msg>::value));
  }
  Msg msg;
  FLT_RETURN_IF_ERROR(ParsePayload(envelope.payload, msg, max_bytes));
  return msg;
}

// Packs `msg` and seals it (envelope.h Seal) with the matching payload type.
template <typename Msg>
Result<Bytes> SealMessage(const Signer& signer, const Msg& msg, std::string_view recipient, const Clock& clock,
                          Random& random, const SealOptions& options = {}) {
  // Seal() applies the exact envelope limit; this bound only keeps PackPayload cheap.
  FLT_ASSIGN_OR_RETURN(Bytes payload, PackPayload(msg, options.max_envelope_bytes));
  return Seal(signer, PayloadTypeOf<Msg>::value, payload, recipient, clock, random, options);
}

}  // namespace flotilla::protocol
