#include "flotilla/protocol/payload.h"

#include <array>
#include <climits>
#include <string>

namespace flotilla::protocol {
namespace {

namespace v1 = ::flotilla::v1;
namespace names = topic_names;

// The routing table of docs/protocol.md, one row per payload type.
struct RouteRow {
  PayloadType type;
  std::array<PayloadRoute, 2> routes;
  size_t count;
};

constexpr PayloadRoute Leaf(TopicKind kind) { return {kind, {}}; }  // a topic without a {name} level
constexpr PayloadRoute Event(std::string_view name) { return {TopicKind::kEvent, name}; }
constexpr PayloadRoute Command(std::string_view name) { return {TopicKind::kCommand, name}; }

constexpr RouteRow kRoutes[] = {
    {v1::PAYLOAD_TYPE_ENROLMENT_REQUEST, {Event(names::kEnrolEvent)}, 1},
    {v1::PAYLOAD_TYPE_ENROLMENT_RESPONSE, {Command(names::kEnrolmentCommand)}, 1},
    {v1::PAYLOAD_TYPE_PRESENCE, {Leaf(TopicKind::kPresence)}, 1},
    {v1::PAYLOAD_TYPE_REPORTED_STATE, {Leaf(TopicKind::kReported)}, 1},
    {v1::PAYLOAD_TYPE_TELEMETRY, {Leaf(TopicKind::kTelemetry)}, 1},
    {v1::PAYLOAD_TYPE_DESIRED_STATE, {Leaf(TopicKind::kDesired)}, 1},
    {v1::PAYLOAD_TYPE_ROUND_ANNOUNCEMENT, {Leaf(TopicKind::kGroupRound)}, 1},
    {v1::PAYLOAD_TYPE_ROUND_CHECK_IN, {Event(names::kRoundEvent)}, 1},
    {v1::PAYLOAD_TYPE_ROUND_INVITATION, {Command(names::kRoundCommand)}, 1},
    {v1::PAYLOAD_TYPE_ROUND_RESPONSE, {Event(names::kRoundEvent)}, 1},
    {v1::PAYLOAD_TYPE_ADVERTISE_KEYS, {Event(names::kSecAggEvent)}, 1},
    {v1::PAYLOAD_TYPE_NEIGHBOUR_KEYS, {Command(names::kSecAggCommand)}, 1},
    {v1::PAYLOAD_TYPE_SHARE_KEYS, {Event(names::kSecAggEvent)}, 1},
    {v1::PAYLOAD_TYPE_FORWARDED_SHARES, {Command(names::kSecAggCommand)}, 1},
    {v1::PAYLOAD_TYPE_MASKED_INPUT, {Event(names::kSecAggEvent)}, 1},
    {v1::PAYLOAD_TYPE_CONSISTENCY_CHECK_REQUEST, {Command(names::kSecAggCommand)}, 1},
    {v1::PAYLOAD_TYPE_CONSISTENCY_CHECK_RESPONSE, {Event(names::kSecAggEvent)}, 1},
    {v1::PAYLOAD_TYPE_UNMASK_REQUEST, {Command(names::kSecAggCommand)}, 1},
    {v1::PAYLOAD_TYPE_UNMASK_RESPONSE, {Event(names::kSecAggEvent)}, 1},
    {v1::PAYLOAD_TYPE_AGGREGATE_RESULT, {Command(names::kRoundCommand)}, 1},
    {v1::PAYLOAD_TYPE_ROUND_ABORT, {Command(names::kRoundCommand), Event(names::kRoundEvent)}, 2},
    {v1::PAYLOAD_TYPE_TRAINING_METRICS, {Event(names::kRoundEvent)}, 1},
    {v1::PAYLOAD_TYPE_UPDATE_HINT, {Command(names::kOtaCommand)}, 1},
    {v1::PAYLOAD_TYPE_OTA_REPORT, {Event(names::kOtaReportEvent)}, 1},
};

template <typename Msg>
std::unique_ptr<google::protobuf::Message> Make() {
  return std::make_unique<Msg>();
}

}  // namespace

std::unique_ptr<google::protobuf::Message> NewPayloadMessage(PayloadType type) {
  switch (type) {
    case v1::PAYLOAD_TYPE_ENROLMENT_REQUEST: return Make<v1::EnrolmentRequest>();
    case v1::PAYLOAD_TYPE_ENROLMENT_RESPONSE: return Make<v1::EnrolmentResponse>();
    case v1::PAYLOAD_TYPE_PRESENCE: return Make<v1::Presence>();
    case v1::PAYLOAD_TYPE_REPORTED_STATE: return Make<v1::ReportedState>();
    case v1::PAYLOAD_TYPE_TELEMETRY: return Make<v1::Telemetry>();
    case v1::PAYLOAD_TYPE_DESIRED_STATE: return Make<v1::DesiredState>();
    case v1::PAYLOAD_TYPE_ROUND_ANNOUNCEMENT: return Make<v1::RoundAnnouncement>();
    case v1::PAYLOAD_TYPE_ROUND_CHECK_IN: return Make<v1::RoundCheckIn>();
    case v1::PAYLOAD_TYPE_ROUND_INVITATION: return Make<v1::RoundInvitation>();
    case v1::PAYLOAD_TYPE_ROUND_RESPONSE: return Make<v1::RoundResponse>();
    case v1::PAYLOAD_TYPE_ADVERTISE_KEYS: return Make<v1::AdvertiseKeys>();
    case v1::PAYLOAD_TYPE_NEIGHBOUR_KEYS: return Make<v1::NeighbourKeys>();
    case v1::PAYLOAD_TYPE_SHARE_KEYS: return Make<v1::ShareKeys>();
    case v1::PAYLOAD_TYPE_FORWARDED_SHARES: return Make<v1::ForwardedShares>();
    case v1::PAYLOAD_TYPE_MASKED_INPUT: return Make<v1::MaskedInput>();
    case v1::PAYLOAD_TYPE_CONSISTENCY_CHECK_REQUEST: return Make<v1::ConsistencyCheckRequest>();
    case v1::PAYLOAD_TYPE_CONSISTENCY_CHECK_RESPONSE: return Make<v1::ConsistencyCheckResponse>();
    case v1::PAYLOAD_TYPE_UNMASK_REQUEST: return Make<v1::UnmaskRequest>();
    case v1::PAYLOAD_TYPE_UNMASK_RESPONSE: return Make<v1::UnmaskResponse>();
    case v1::PAYLOAD_TYPE_AGGREGATE_RESULT: return Make<v1::AggregateResult>();
    case v1::PAYLOAD_TYPE_ROUND_ABORT: return Make<v1::RoundAbort>();
    case v1::PAYLOAD_TYPE_TRAINING_METRICS: return Make<v1::TrainingMetrics>();
    case v1::PAYLOAD_TYPE_UPDATE_HINT: return Make<v1::UpdateHint>();
    case v1::PAYLOAD_TYPE_OTA_REPORT: return Make<v1::OtaReport>();
    default: return nullptr;
  }
}

std::span<const PayloadRoute> RoutesFor(PayloadType type) {
  for (const RouteRow& row : kRoutes) {
    if (row.type == type) return std::span<const PayloadRoute>(row.routes.data(), row.count);
  }
  return {};
}

Result<Bytes> PackPayload(const google::protobuf::MessageLite& msg, size_t max_bytes) {
  const size_t size = msg.ByteSizeLong();
  if (size > max_bytes) {
    return ResourceExhaustedError(msg.GetTypeName() + " is " + std::to_string(size) + " bytes, over the limit of " +
                                  std::to_string(max_bytes));
  }
  Bytes out(size);
  if (!msg.SerializeToArray(out.data(), static_cast<int>(out.size()))) {
    return InternalError("cannot serialize " + msg.GetTypeName());
  }
  return out;
}

Status ParsePayload(std::string_view bytes, google::protobuf::MessageLite& out, size_t max_bytes) {
  out.Clear();
  if (bytes.size() > max_bytes || bytes.size() > static_cast<size_t>(INT_MAX)) {
    return ResourceExhaustedError(out.GetTypeName() + " payload is " + std::to_string(bytes.size()) +
                                  " bytes, over the limit of " + std::to_string(max_bytes));
  }
  // ParseFromArray never throws; it returns false on malformed input (including
  // invalid UTF-8 in proto3 strings) and bounds recursion depth.
  if (!out.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    out.Clear();
    return InvalidArgumentError("payload is not a valid " + out.GetTypeName() + " (" + std::to_string(bytes.size()) +
                                " bytes)");
  }
  return Status::Ok();
}

Status ValidatePayload(PayloadType type, std::string_view bytes, size_t max_bytes) {
  std::unique_ptr<google::protobuf::Message> msg = NewPayloadMessage(type);
  if (msg == nullptr) return UnimplementedError("unknown payload type " + std::to_string(static_cast<int>(type)));
  return ParsePayload(bytes, *msg, max_bytes);
}

}  // namespace flotilla::protocol
