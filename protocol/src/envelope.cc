#include "flotilla/protocol/envelope.h"

#include <algorithm>
#include <cstdint>
#include <string>

#include "flotilla/protocol/payload.h"
#include "saturating.h"

namespace flotilla::protocol {
namespace {

using ::flotilla::v1::Envelope;
using ::flotilla::v1::EnvelopeBody;
using internal::SaturatingAdd;
using internal::SaturatingSub;

// A minimal protobuf wire-format reader. Open() uses it instead of the generated parser
// for the two things it must read from untrusted, not yet authenticated bytes: the outer
// framing (so truncation and garbage get distinct errors, and the signed body is a view
// into the input, never a copy or a re-serialization) and the body's sender id (needed
// to pick the verification key before the body is parsed).
class WireReader {
 public:
  enum class Error { kNone, kTruncated, kMalformed };
  struct Field {
    uint32_t number = 0;
    uint32_t wire_type = 0;
    ByteSpan data;  // the payload of a length-delimited field
  };

  explicit WireReader(ByteSpan in) : in_(in) {}

  bool done() const { return pos_ == in_.size(); }
  Error error() const { return error_; }
  const std::string& what() const { return what_; }

  // Reads the next field; false with error() set on failure.
  bool Next(Field& f) {
    const size_t start = pos_;
    uint64_t tag = 0;
    if (!ReadVarint(tag)) return Fail("field tag", start);
    const uint64_t number = tag >> 3;
    if (number == 0 || number > kMaxFieldNumber) return Fail(Error::kMalformed, "invalid field number", start);
    f.number = static_cast<uint32_t>(number);
    f.wire_type = static_cast<uint32_t>(tag & 7);
    f.data = {};
    switch (f.wire_type) {
      case 0: {  // varint
        uint64_t ignored = 0;
        if (!ReadVarint(ignored)) return Fail("varint value", start);
        return true;
      }
      case 1: return Skip(8, start);  // fixed64
      case 5: return Skip(4, start);  // fixed32
      case 2: {                       // length-delimited
        uint64_t len = 0;
        if (!ReadVarint(len)) return Fail("length prefix", start);
        if (len > in_.size() - pos_) {
          return Fail(Error::kTruncated,
                      "field " + std::to_string(f.number) + " declares " + std::to_string(len) + " bytes, " +
                          std::to_string(in_.size() - pos_) + " remain",
                      start);
        }
        f.data = in_.subspan(pos_, static_cast<size_t>(len));
        pos_ += static_cast<size_t>(len);
        return true;
      }
      default:  // 3/4 (groups, never used by proto3) and 6/7 (invalid)
        return Fail(Error::kMalformed, "wire type " + std::to_string(f.wire_type), start);
    }
  }

 private:
  static constexpr uint64_t kMaxFieldNumber = (uint64_t{1} << 29) - 1;

  bool ReadVarint(uint64_t& v) {
    v = 0;
    for (int i = 0; i < 10; ++i) {
      if (pos_ == in_.size()) {
        error_ = Error::kTruncated;
        return false;
      }
      const uint8_t b = in_[pos_++];
      if (i == 9 && b > 1) break;  // more than 64 bits
      v |= static_cast<uint64_t>(b & 0x7f) << (7 * i);
      if ((b & 0x80) == 0) return true;
    }
    error_ = Error::kMalformed;
    return false;
  }
  bool Skip(size_t n, size_t start) {
    if (n > in_.size() - pos_) return Fail(Error::kTruncated, "fixed-size field", start);
    pos_ += n;
    return true;
  }
  // For a failed ReadVarint, which already set error_.
  bool Fail(const char* what, size_t start) {
    return Fail(error_, std::string(error_ == Error::kTruncated ? "truncated " : "overlong ") + what, start);
  }
  bool Fail(Error e, std::string what, size_t start) {
    error_ = e;
    what_ = std::move(what) + " at offset " + std::to_string(start);
    return false;
  }

  ByteSpan in_;
  size_t pos_ = 0;
  Error error_ = Error::kNone;
  std::string what_;
};

Status ScanError(const WireReader& r, std::string_view where) {
  if (r.error() == WireReader::Error::kTruncated) {
    return OutOfRangeError("envelope: truncated " + std::string(where) + " (" + r.what() + ")");
  }
  return InvalidArgumentError("envelope: garbage " + std::string(where) + " (" + r.what() + ")");
}

struct OuterFields {
  ByteSpan body;
  ByteSpan signature;
  bool has_body = false;
  bool has_signature = false;
};

// Reads Envelope{body=1, signature=2}. Unknown fields are skipped (forward compatible);
// a repeated body or signature is refused so no two parties can read different bodies.
Status ScanOuter(ByteSpan wire, OuterFields& out) {
  WireReader r(wire);
  WireReader::Field f;
  while (!r.done()) {
    if (!r.Next(f)) return ScanError(r, "framing");
    if (f.number != Envelope::kBodyFieldNumber && f.number != Envelope::kSignatureFieldNumber) continue;
    if (f.wire_type != 2) {
      return InvalidArgumentError("envelope: garbage framing (field " + std::to_string(f.number) +
                                  " has wire type " + std::to_string(f.wire_type) + ")");
    }
    bool& seen = f.number == Envelope::kBodyFieldNumber ? out.has_body : out.has_signature;
    if (seen) return InvalidArgumentError("envelope: garbage framing (field " + std::to_string(f.number) + " repeated)");
    seen = true;
    (f.number == Envelope::kBodyFieldNumber ? out.body : out.signature) = f.data;
  }
  return Status::Ok();
}

// The sender id inside a not yet verified body (last occurrence wins, as in protobuf).
Result<std::string_view> PeekSenderId(ByteSpan body) {
  WireReader r(body);
  WireReader::Field f;
  std::string_view sender;
  bool found = false;
  while (!r.done()) {
    if (!r.Next(f)) return ScanError(r, "body");
    if (f.number == EnvelopeBody::kSenderIdFieldNumber && f.wire_type == 2) {
      sender = AsStringView(f.data);
      found = true;
    }
  }
  if (!found) return InvalidArgumentError("envelope: body has no sender id");
  return sender;
}

Bytes SignedMessage(ByteSpan body) {
  Bytes msg;
  msg.reserve(kEnvelopeSignatureContext.size() + body.size());
  msg.insert(msg.end(), kEnvelopeSignatureContext.begin(), kEnvelopeSignatureContext.end());
  msg.insert(msg.end(), body.begin(), body.end());
  return msg;
}

constexpr std::string_view kGroupRecipientPrefix = "group:";

Status ValidateRecipient(std::string_view recipient) {
  if (recipient.starts_with(kGroupRecipientPrefix)) {
    return ValidateName("recipient group", recipient.substr(kGroupRecipientPrefix.size()));
  }
  return ValidateName("recipient", recipient);
}

}  // namespace

bool IsKnownPayloadType(int value) {
  return value != ::flotilla::v1::PAYLOAD_TYPE_UNSPECIFIED && ::flotilla::v1::PayloadType_IsValid(value);
}

std::string PayloadTypeName(PayloadType type) {
  if (!::flotilla::v1::PayloadType_IsValid(type)) return "PAYLOAD_TYPE_" + std::to_string(static_cast<int>(type));
  constexpr std::string_view kPrefix = "PAYLOAD_TYPE_";
  std::string_view name = ::flotilla::v1::PayloadType_Name(type);
  if (name.starts_with(kPrefix)) name.remove_prefix(kPrefix.size());
  return std::string(name);
}

std::string GroupRecipient(std::string_view group) { return std::string(kGroupRecipientPrefix) + std::string(group); }

Result<Bytes> Seal(const Signer& signer, PayloadType type, ByteSpan payload, std::string_view recipient,
                   const Clock& clock, Random& random, const SealOptions& options) {
  FLT_RETURN_IF_ERROR(ValidateName("sender id", signer.identity()));
  FLT_RETURN_IF_ERROR(ValidateRecipient(recipient));
  if (!IsKnownPayloadType(type)) {
    return InvalidArgumentError("envelope: cannot seal unknown payload type " + std::to_string(static_cast<int>(type)));
  }
  const auto too_big = [&](size_t size) {
    return ResourceExhaustedError("envelope: " + PayloadTypeName(type) + " envelope would be " + std::to_string(size) +
                                  " bytes, over the limit of " + std::to_string(options.max_envelope_bytes) +
                                  " (send large data by claim check)");
  };
  // Checked before signing so an oversized payload costs no signature.
  if (payload.size() > options.max_envelope_bytes) return too_big(payload.size());

  EnvelopeBody body;
  body.set_protocol_version(kProtocolVersion);
  body.set_sender_id(signer.identity());
  std::string message_id(kMessageIdBytes, '\0');
  random.Fill(std::span<uint8_t>(reinterpret_cast<uint8_t*>(message_id.data()), message_id.size()));
  body.set_message_id(std::move(message_id));
  body.set_timestamp_ms(clock.NowUnixMillis());
  body.set_payload_type(type);
  body.set_payload(payload.data(), payload.size());
  body.set_recipient(std::string(recipient));
  std::string body_bytes;
  if (!body.SerializeToString(&body_bytes)) return InternalError("envelope: cannot serialize body");

  FLT_ASSIGN_OR_RETURN(Bytes signature, signer.Sign(SignedMessage(AsBytes(body_bytes))));
  if (signature.empty()) return InternalError("envelope: signer returned an empty signature");

  Envelope env;
  env.set_body(std::move(body_bytes));
  env.set_signature(signature.data(), signature.size());
  const size_t size = env.ByteSizeLong();
  if (size > options.max_envelope_bytes) return too_big(size);
  Bytes wire(size);
  if (!env.SerializeToArray(wire.data(), static_cast<int>(wire.size()))) {
    return InternalError("envelope: cannot serialize");
  }
  return wire;
}

Result<OpenedEnvelope> Open(ByteSpan wire, const SignatureVerifier& verifier, const Clock& clock,
                            const OpenOptions& options) {
  // 1. Size, before any parsing.
  if (wire.size() > options.max_envelope_bytes) {
    return ResourceExhaustedError("envelope: oversized (" + std::to_string(wire.size()) + " bytes, limit " +
                                  std::to_string(options.max_envelope_bytes) + ")");
  }
  if (wire.empty()) return OutOfRangeError("envelope: truncated (empty input)");

  // 2. Outer framing.
  OuterFields outer;
  FLT_RETURN_IF_ERROR(ScanOuter(wire, outer));
  if (!outer.has_body || outer.body.empty()) return InvalidArgumentError("envelope: garbage (no body)");
  if (!outer.has_signature || outer.signature.empty()) return UnauthenticatedError("envelope: unsigned");

  // 3. Signature over the exact body bytes, with the key of the sender the body names.
  FLT_ASSIGN_OR_RETURN(std::string_view sender, PeekSenderId(outer.body));
  if (!IsValidName(sender)) {
    Status s = ValidateName("sender id", sender);
    return InvalidArgumentError("envelope: " + s.message());
  }
  Status verified = verifier.Verify(sender, SignedMessage(outer.body), outer.signature);
  if (!verified.ok()) {
    return Status(verified.code(), "envelope: signature by '" + std::string(sender) +
                                       "' refused: " + verified.message());
  }

  // 4. Body. From here on the bytes are authentic, but still checked: keys get stolen.
  EnvelopeBody body;
  if (!body.ParseFromArray(outer.body.data(), static_cast<int>(outer.body.size()))) {
    return InvalidArgumentError("envelope: signed body is not a valid EnvelopeBody");
  }
  if (body.sender_id() != sender) return InvalidArgumentError("envelope: ambiguous sender id");

  // 5. Semantics.
  if (body.protocol_version() != kProtocolVersion) {
    return FailedPreconditionError("envelope: protocol version " + std::to_string(body.protocol_version()) +
                                   " not supported (this build speaks " + std::to_string(kProtocolVersion) + ")");
  }
  if (!IsKnownPayloadType(body.payload_type())) {
    return UnimplementedError("envelope: unknown payload type " + std::to_string(body.payload_type()));
  }
  if (body.message_id().size() != kMessageIdBytes) {
    return InvalidArgumentError("envelope: message id is " + std::to_string(body.message_id().size()) +
                                " bytes, want " + std::to_string(kMessageIdBytes));
  }
  if (std::find(options.recipients.begin(), options.recipients.end(), body.recipient()) ==
      options.recipients.end()) {
    Status s = ValidateRecipient(body.recipient());
    return PermissionDeniedError("envelope: addressed to " +
                                 (s.ok() ? "'" + body.recipient() + "'" : std::string("an invalid recipient")) +
                                 ", not to this receiver");
  }
  const int64_t now = clock.NowUnixMillis();
  const int64_t ts = body.timestamp_ms();
  if (ts < SaturatingSub(now, options.max_age.count())) {
    return DeadlineExceededError("envelope: stale (timestamp " + std::to_string(ts) + " ms, now " +
                                 std::to_string(now) + " ms, max age " + std::to_string(options.max_age.count()) +
                                 " ms)");
  }
  if (ts > SaturatingAdd(now, options.max_future_skew.count())) {
    return DeadlineExceededError("envelope: from the future (timestamp " + std::to_string(ts) + " ms, now " +
                                 std::to_string(now) + " ms, max skew " +
                                 std::to_string(options.max_future_skew.count()) + " ms)");
  }

  OpenedEnvelope out;
  out.protocol_version = body.protocol_version();
  out.sender_id = std::move(*body.mutable_sender_id());
  out.message_id = std::move(*body.mutable_message_id());
  out.timestamp_ms = ts;
  out.payload_type = body.payload_type();
  out.payload = std::move(*body.mutable_payload());
  out.recipient = std::move(*body.mutable_recipient());
  return out;
}

Status CheckTopicBinding(const Topic& topic, const OpenedEnvelope& envelope) {
  const auto deny = [&](std::string why) {
    return PermissionDeniedError("envelope " + PayloadTypeName(envelope.payload_type) + " from '" +
                                 envelope.sender_id + "' on " + std::string(ToString(topic.kind)) + " topic: " + why);
  };
  if (topic.kind == TopicKind::kGroupRound) {
    if (envelope.sender_id != kCoordinatorId) return deny("group topics carry only the coordinator's messages");
    if (envelope.recipient != GroupRecipient(topic.group)) return deny("addressed to '" + envelope.recipient + "'");
  } else if (IsUplink(topic.kind)) {
    if (envelope.sender_id != topic.device_id) return deny("sender is not the topic's device '" + topic.device_id + "'");
    if (envelope.recipient != kCoordinatorId) return deny("uplink must be addressed to the coordinator");
  } else {
    if (envelope.sender_id != kCoordinatorId) return deny("downlink carries only the coordinator's messages");
    if (envelope.recipient != topic.device_id) return deny("addressed to '" + envelope.recipient + "'");
  }
  for (const PayloadRoute& route : RoutesFor(envelope.payload_type)) {
    if (route.kind == topic.kind && route.name == topic.name) return Status::Ok();
  }
  return deny("this payload type is not published there");
}

}  // namespace flotilla::protocol
