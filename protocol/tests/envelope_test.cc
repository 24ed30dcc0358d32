#include "flotilla/protocol/envelope.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <set>
#include <string>

#include "flotilla/core/testing/fake_clock.h"
#include "flotilla/core/testing/seeded_random.h"
#include "flotilla/protocol/payload.h"
#include "flotilla/protocol/testing/fake_signer.h"

namespace flotilla::protocol {
namespace {

using flotilla::testing::FakeClock;
using flotilla::testing::SeededRandom;
using testing::FakeSignature;
using testing::FakeSigner;
using testing::FakeVerifier;

constexpr uint64_t kDeviceKey = 11;
constexpr uint64_t kCoordinatorKey = 99;

// Counts calls, to prove which inputs never reach signature verification.
class CountingVerifier final : public SignatureVerifier {
 public:
  explicit CountingVerifier(const SignatureVerifier& inner) : inner_(inner) {}
  Status Verify(std::string_view identity, ByteSpan message, ByteSpan signature) const override {
    calls_.fetch_add(1);
    return inner_.Verify(identity, message, signature);
  }
  int calls() const { return calls_.load(); }

 private:
  const SignatureVerifier& inner_;
  mutable std::atomic<int> calls_{0};
};

class EnvelopeTest : public ::testing::Test {
 protected:
  EnvelopeTest() : device_("dev-1", kDeviceKey), coordinator_(std::string(kCoordinatorId), kCoordinatorKey), random_(7) {
    verifier_.Add("dev-1", kDeviceKey);
    verifier_.Add(std::string(kCoordinatorId), kCoordinatorKey);
    options_.recipients = {std::string(kCoordinatorId)};
  }

  Bytes SealPresence() {
    v1::Presence p;
    p.set_state(v1::PRESENCE_STATE_ONLINE);
    p.set_session_id("s-1");
    Result<Bytes> wire = SealMessage(device_, p, kCoordinatorId, clock_, random_);
    EXPECT_TRUE(wire.ok()) << wire.status().ToString();
    return wire.ok() ? *wire : Bytes{};
  }

  // A body the test controls entirely, signed the way Seal signs.
  v1::EnvelopeBody ValidBody() {
    v1::EnvelopeBody body;
    body.set_protocol_version(kProtocolVersion);
    body.set_sender_id("dev-1");
    body.set_message_id(std::string(kMessageIdBytes, 'm'));
    body.set_timestamp_ms(clock_.NowUnixMillis());
    body.set_payload_type(v1::PAYLOAD_TYPE_TELEMETRY);
    body.set_payload("");
    body.set_recipient(std::string(kCoordinatorId));
    return body;
  }
  static Bytes SignedWire(const v1::EnvelopeBody& body, uint64_t key) {
    const std::string body_bytes = body.SerializeAsString();
    Bytes msg(kEnvelopeSignatureContext.begin(), kEnvelopeSignatureContext.end());
    msg.insert(msg.end(), body_bytes.begin(), body_bytes.end());
    v1::Envelope env;
    env.set_body(body_bytes);
    const Bytes sig = FakeSignature(key, msg);
    env.set_signature(sig.data(), sig.size());
    const std::string wire = env.SerializeAsString();
    return Bytes(wire.begin(), wire.end());
  }

  Result<OpenedEnvelope> OpenWire(ByteSpan wire) { return Open(wire, verifier_, clock_, options_); }

  FakeClock clock_;
  FakeSigner device_;
  FakeSigner coordinator_;
  FakeVerifier verifier_;
  SeededRandom random_;
  OpenOptions options_;
};

void ExpectError(const Result<OpenedEnvelope>& r, StatusCode code, std::string_view text) {
  ASSERT_FALSE(r.ok()) << "expected " << ToString(code) << " containing '" << text << "'";
  EXPECT_EQ(r.status().code(), code) << r.status().ToString();
  EXPECT_NE(r.status().message().find(text), std::string::npos) << r.status().ToString();
  EXPECT_EQ(r.status().message().rfind("envelope: ", 0), 0u) << r.status().ToString();
}

TEST_F(EnvelopeTest, SealThenOpenRoundTrips) {
  v1::RoundResponse resp;
  resp.set_round_id("r-1");
  resp.set_accepted(false);
  resp.set_reason(v1::DECLINE_REASON_BUSY);
  Result<Bytes> wire = SealMessage(device_, resp, kCoordinatorId, clock_, random_);
  ASSERT_TRUE(wire.ok()) << wire.status().ToString();
  Result<OpenedEnvelope> opened = OpenWire(*wire);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  EXPECT_EQ(opened->protocol_version, kProtocolVersion);
  EXPECT_EQ(opened->sender_id, "dev-1");
  EXPECT_EQ(opened->recipient, kCoordinatorId);
  EXPECT_EQ(opened->message_id.size(), kMessageIdBytes);
  EXPECT_EQ(opened->timestamp_ms, clock_.NowUnixMillis());
  EXPECT_EQ(opened->payload_type, v1::PAYLOAD_TYPE_ROUND_RESPONSE);
  Result<v1::RoundResponse> back = UnpackPayload<v1::RoundResponse>(*opened);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->round_id(), "r-1");
  EXPECT_EQ(back->reason(), v1::DECLINE_REASON_BUSY);
}

TEST_F(EnvelopeTest, MessageIdsComeFromTheRandomSourceAndDiffer) {
  std::set<std::string> ids;
  for (int i = 0; i < 100; ++i) {
    Result<OpenedEnvelope> opened = OpenWire(SealPresence());
    ASSERT_TRUE(opened.ok());
    ids.insert(opened->message_id);
  }
  EXPECT_EQ(ids.size(), 100u);
  // The same seed gives the same ids: the id is drawn from the Random seam only.
  SeededRandom a(5), b(5);
  Result<Bytes> wa = Seal(device_, v1::PAYLOAD_TYPE_TELEMETRY, {}, kCoordinatorId, clock_, a);
  Result<Bytes> wb = Seal(device_, v1::PAYLOAD_TYPE_TELEMETRY, {}, kCoordinatorId, clock_, b);
  ASSERT_TRUE(wa.ok() && wb.ok());
  EXPECT_EQ(*wa, *wb);
}

TEST_F(EnvelopeTest, TruncationAtEveryLengthIsRejected) {
  const Bytes wire = SealPresence();
  ASSERT_GT(wire.size(), 40u);
  for (size_t len = 0; len < wire.size(); ++len) {
    Result<OpenedEnvelope> r = OpenWire(ByteSpan(wire.data(), len));
    ASSERT_FALSE(r.ok()) << "accepted a prefix of " << len << " bytes";
    // Cut inside a field: truncated. Cut exactly after the body: the signature is missing.
    const StatusCode c = r.status().code();
    EXPECT_TRUE(c == StatusCode::kOutOfRange || c == StatusCode::kUnauthenticated) << len << ": " << r.status().ToString();
  }
  ExpectError(OpenWire(ByteSpan(wire.data(), 0)), StatusCode::kOutOfRange, "truncated");
  ExpectError(OpenWire(ByteSpan(wire.data(), wire.size() - 1)), StatusCode::kOutOfRange, "truncated");
  ASSERT_TRUE(OpenWire(wire).ok());
}

TEST_F(EnvelopeTest, RandomGarbageIsRejected) {
  SeededRandom rng(1234);
  CountingVerifier counting(verifier_);
  for (int i = 0; i < 5000; ++i) {
    Bytes junk(1 + rng.Uniform(300));
    rng.Fill(junk);
    Result<OpenedEnvelope> r = Open(junk, counting, clock_, options_);
    ASSERT_FALSE(r.ok()) << "garbage accepted: " << ToHex(junk);
    EXPECT_EQ(r.status().message().rfind("envelope: ", 0), 0u) << r.status().ToString();
  }
  // Almost all garbage dies in the framing, before any signature check is attempted.
  EXPECT_LT(counting.calls(), 50);
}

TEST_F(EnvelopeTest, GarbageAndTruncationHaveDistinctErrors) {
  ExpectError(OpenWire(Bytes{0xff, 0xff, 0xff}), StatusCode::kOutOfRange, "truncated");  // unfinished varint
  ExpectError(OpenWire(Bytes{0x0a, 0x05, 0x01}), StatusCode::kOutOfRange, "declares 5 bytes");
  ExpectError(OpenWire(Bytes{0x0f, 0x00}), StatusCode::kInvalidArgument, "garbage");  // wire type 7
  ExpectError(OpenWire(Bytes{0x00, 0x00}), StatusCode::kInvalidArgument, "garbage");  // field number 0
  ExpectError(OpenWire(Bytes{0x08, 0x01}), StatusCode::kInvalidArgument, "garbage");  // body as a varint
  ExpectError(OpenWire(Bytes{0x18, 0x01}), StatusCode::kInvalidArgument, "no body");
  Bytes overlong(12, 0x80);
  overlong.push_back(0x01);
  ExpectError(OpenWire(overlong), StatusCode::kInvalidArgument, "overlong");
}

TEST_F(EnvelopeTest, FlippedByteAnywhereIsRejected) {
  const Bytes wire = SealPresence();
  for (size_t i = 0; i < wire.size(); ++i) {
    for (uint8_t mask : {0x01, 0x80}) {
      Bytes bad = wire;
      bad[i] ^= mask;
      Result<OpenedEnvelope> r = OpenWire(bad);
      EXPECT_FALSE(r.ok()) << "flip 0x" << std::hex << int{mask} << " at " << std::dec << i << " accepted";
    }
  }
}

TEST_F(EnvelopeTest, FlippedBodyByteFailsTheSignature) {
  v1::EnvelopeBody body = ValidBody();
  Bytes wire = SignedWire(body, kDeviceKey);
  ASSERT_TRUE(OpenWire(wire).ok());
  // Flip a byte of the message id (inside the body, away from the sender id).
  const std::string id(kMessageIdBytes, 'm');
  auto pos = std::search(wire.begin(), wire.end(), id.begin(), id.end());
  ASSERT_NE(pos, wire.end());
  *pos ^= 0x20;
  ExpectError(OpenWire(wire), StatusCode::kUnauthenticated, "signature");
}

TEST_F(EnvelopeTest, UnsignedIsRejected) {
  v1::Envelope env;
  env.set_body(ValidBody().SerializeAsString());
  const std::string wire = env.SerializeAsString();
  ExpectError(OpenWire(AsBytes(wire)), StatusCode::kUnauthenticated, "unsigned");
  env.set_signature("");
  ExpectError(OpenWire(AsBytes(env.SerializeAsString())), StatusCode::kUnauthenticated, "unsigned");
}

TEST_F(EnvelopeTest, SignedByAnotherKeyIsRejected) {
  FakeSigner impostor("dev-1", 12345);
  Result<Bytes> wire = Seal(impostor, v1::PAYLOAD_TYPE_TELEMETRY, {}, kCoordinatorId, clock_, random_);
  ASSERT_TRUE(wire.ok());
  ExpectError(OpenWire(*wire), StatusCode::kUnauthenticated, "signature by 'dev-1' refused");
}

TEST_F(EnvelopeTest, UnknownSenderIsRejected) {
  FakeSigner stranger("dev-404", kDeviceKey);
  Result<Bytes> wire = Seal(stranger, v1::PAYLOAD_TYPE_TELEMETRY, {}, kCoordinatorId, clock_, random_);
  ASSERT_TRUE(wire.ok());
  ExpectError(OpenWire(*wire), StatusCode::kNotFound, "dev-404");
}

TEST_F(EnvelopeTest, SenderIdIsValidatedBeforeTheVerifierSeesIt) {
  v1::EnvelopeBody body = ValidBody();
  body.set_sender_id("dev/1");
  CountingVerifier counting(verifier_);
  Result<OpenedEnvelope> r = Open(SignedWire(body, kDeviceKey), counting, clock_, options_);
  ExpectError(r, StatusCode::kInvalidArgument, "sender id");
  EXPECT_EQ(counting.calls(), 0);
  body.clear_sender_id();
  ExpectError(OpenWire(SignedWire(body, kDeviceKey)), StatusCode::kInvalidArgument, "no sender id");
}

TEST_F(EnvelopeTest, WrongProtocolVersionIsRejected) {
  for (uint32_t version : {0u, kProtocolVersion + 1}) {
    v1::EnvelopeBody body = ValidBody();
    body.set_protocol_version(version);
    ExpectError(OpenWire(SignedWire(body, kDeviceKey)), StatusCode::kFailedPrecondition,
                "protocol version " + std::to_string(version));
  }
}

TEST_F(EnvelopeTest, UnknownPayloadTypeIsRejected) {
  for (int type : {0, 7, 999}) {
    v1::EnvelopeBody body = ValidBody();
    body.set_payload_type(static_cast<PayloadType>(type));
    ExpectError(OpenWire(SignedWire(body, kDeviceKey)), StatusCode::kUnimplemented,
                "unknown payload type " + std::to_string(type));
  }
}

TEST_F(EnvelopeTest, BadMessageIdIsRejected) {
  v1::EnvelopeBody body = ValidBody();
  body.set_message_id("short");
  ExpectError(OpenWire(SignedWire(body, kDeviceKey)), StatusCode::kInvalidArgument, "message id");
}

TEST_F(EnvelopeTest, StaleAndFutureTimestampsAreRejected) {
  const Bytes wire = SealPresence();
  clock_.Advance(options_.max_age);
  EXPECT_TRUE(OpenWire(wire).ok());  // exactly max_age old is still fine
  clock_.Advance(std::chrono::milliseconds(1));
  ExpectError(OpenWire(wire), StatusCode::kDeadlineExceeded, "stale");

  v1::EnvelopeBody body = ValidBody();
  body.set_timestamp_ms(clock_.NowUnixMillis() + options_.max_future_skew.count() + 1);
  ExpectError(OpenWire(SignedWire(body, kDeviceKey)), StatusCode::kDeadlineExceeded, "future");
  body.set_timestamp_ms(clock_.NowUnixMillis() + options_.max_future_skew.count());
  EXPECT_TRUE(OpenWire(SignedWire(body, kDeviceKey)).ok());
  // Extreme timestamps do not overflow the window arithmetic.
  for (int64_t ts : {INT64_MIN, INT64_MAX}) {
    body.set_timestamp_ms(ts);
    EXPECT_EQ(OpenWire(SignedWire(body, kDeviceKey)).status().code(), StatusCode::kDeadlineExceeded);
  }
}

TEST_F(EnvelopeTest, WrongRecipientIsRejected) {
  v1::Presence p;
  Result<Bytes> wire = SealMessage(device_, p, "dev-2", clock_, random_);
  ASSERT_TRUE(wire.ok());
  ExpectError(OpenWire(*wire), StatusCode::kPermissionDenied, "addressed to 'dev-2'");
  options_.recipients.clear();  // a receiver that names no recipient accepts nothing
  ExpectError(OpenWire(SealPresence()), StatusCode::kPermissionDenied, "not to this receiver");
  options_.recipients = {"dev-2"};
  EXPECT_TRUE(OpenWire(*wire).ok());
}

TEST_F(EnvelopeTest, OversizeIsRejectedBeforeParsing) {
  CountingVerifier counting(verifier_);
  Bytes wire = SealPresence();
  options_.max_envelope_bytes = wire.size() - 1;
  Result<OpenedEnvelope> r = Open(wire, counting, clock_, options_);
  ExpectError(r, StatusCode::kResourceExhausted, "oversized");
  // Garbage over the limit gets the size error, not a parse error: nothing was parsed.
  Bytes junk(kMaxEnvelopeBytes + 1, 0xff);
  options_.max_envelope_bytes = kMaxEnvelopeBytes;
  ExpectError(Open(junk, counting, clock_, options_), StatusCode::kResourceExhausted, "oversized");
  EXPECT_EQ(counting.calls(), 0);
}

TEST_F(EnvelopeTest, DuplicateOuterFieldsAreRejected) {
  Bytes wire = SealPresence();
  Bytes doubled = wire;
  doubled.insert(doubled.end(), wire.begin(), wire.end());  // concatenation = repeated fields
  ExpectError(OpenWire(doubled), StatusCode::kInvalidArgument, "repeated");
}

TEST_F(EnvelopeTest, UnknownOuterFieldsAreSkipped) {
  Bytes wire = SealPresence();
  const Bytes original = wire;
  wire.push_back(0x18);  // field 3, varint: a future, unsigned extension
  wire.push_back(0x01);
  Result<OpenedEnvelope> a = OpenWire(original);
  Result<OpenedEnvelope> b = OpenWire(wire);
  ASSERT_TRUE(a.ok() && b.ok()) << b.status().ToString();
  EXPECT_EQ(a->message_id, b->message_id);
  EXPECT_EQ(a->payload, b->payload);
}

TEST_F(EnvelopeTest, SealRefusesWhatReceiversWouldRefuse) {
  EXPECT_EQ(Seal(device_, v1::PAYLOAD_TYPE_UNSPECIFIED, {}, kCoordinatorId, clock_, random_).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(Seal(device_, static_cast<PayloadType>(999), {}, kCoordinatorId, clock_, random_).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(Seal(device_, v1::PAYLOAD_TYPE_TELEMETRY, {}, "", clock_, random_).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(Seal(device_, v1::PAYLOAD_TYPE_TELEMETRY, {}, "a/b", clock_, random_).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(Seal(device_, v1::PAYLOAD_TYPE_TELEMETRY, {}, "group:", clock_, random_).status().code(),
            StatusCode::kInvalidArgument);
  FakeSigner bad_identity("dev#1", 1);
  EXPECT_EQ(Seal(bad_identity, v1::PAYLOAD_TYPE_TELEMETRY, {}, kCoordinatorId, clock_, random_).status().code(),
            StatusCode::kInvalidArgument);
  const Bytes big(kMaxEnvelopeBytes, 0x55);
  Result<Bytes> too_big = Seal(device_, v1::PAYLOAD_TYPE_TELEMETRY, big, kCoordinatorId, clock_, random_);
  EXPECT_EQ(too_big.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(too_big.status().message().find("claim check"), std::string::npos);
}

TEST_F(EnvelopeTest, MaxPayloadAlwaysFitsWithLongestIds) {
  const std::string long_id(kMaxNameLength, 'x');
  FakeSigner signer(long_id, 3);
  verifier_.Add(long_id, 3);
  const std::string recipient = GroupRecipient(std::string(kMaxNameLength, 'g'));
  options_.recipients = {recipient};
  const Bytes payload(kMaxPayloadBytes, 0xa5);
  Result<Bytes> wire = Seal(signer, v1::PAYLOAD_TYPE_ROUND_ANNOUNCEMENT, payload, recipient, clock_, random_);
  ASSERT_TRUE(wire.ok()) << wire.status().ToString();
  EXPECT_LE(wire->size(), kMaxEnvelopeBytes);
  Result<OpenedEnvelope> opened = OpenWire(*wire);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  EXPECT_EQ(opened->payload.size(), kMaxPayloadBytes);
}

TEST_F(EnvelopeTest, SignatureIsDomainSeparated) {
  // A signature over the bare body (e.g. made for another purpose) does not verify.
  v1::EnvelopeBody body = ValidBody();
  const std::string body_bytes = body.SerializeAsString();
  v1::Envelope env;
  env.set_body(body_bytes);
  const Bytes sig = FakeSignature(kDeviceKey, AsBytes(body_bytes));
  env.set_signature(sig.data(), sig.size());
  ExpectError(OpenWire(AsBytes(env.SerializeAsString())), StatusCode::kUnauthenticated, "signature");
}

TEST_F(EnvelopeTest, TopicBindingChecksSenderRecipientAndRoute) {
  auto opened_from = [&](const Signer& signer, auto msg, std::string recipient) {
    Result<Bytes> wire = SealMessage(signer, msg, recipient, clock_, random_);
    EXPECT_TRUE(wire.ok());
    OpenOptions o = options_;
    o.recipients = {recipient};
    Result<OpenedEnvelope> r = Open(*wire, verifier_, clock_, o);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return *r;
  };
  const OpenedEnvelope presence = opened_from(device_, v1::Presence{}, std::string(kCoordinatorId));
  EXPECT_TRUE(CheckTopicBinding(Topic::Presence("dev-1"), presence).ok());
  EXPECT_EQ(CheckTopicBinding(Topic::Presence("dev-2"), presence).code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(CheckTopicBinding(Topic::Reported("dev-1"), presence).code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(CheckTopicBinding(Topic::Event("dev-1", "round"), presence).code(), StatusCode::kPermissionDenied);

  const OpenedEnvelope masked = opened_from(device_, v1::MaskedInput{}, std::string(kCoordinatorId));
  EXPECT_TRUE(CheckTopicBinding(Topic::Event("dev-1", std::string(topic_names::kSecAggEvent)), masked).ok());
  EXPECT_FALSE(CheckTopicBinding(Topic::Event("dev-1", "round"), masked).ok());

  const OpenedEnvelope invite = opened_from(coordinator_, v1::RoundInvitation{}, "dev-1");
  EXPECT_TRUE(CheckTopicBinding(Topic::Command("dev-1", "round"), invite).ok());
  EXPECT_FALSE(CheckTopicBinding(Topic::Command("dev-2", "round"), invite).ok());
  EXPECT_FALSE(CheckTopicBinding(Topic::Command("dev-1", "ota"), invite).ok());

  const OpenedEnvelope announce = opened_from(coordinator_, v1::RoundAnnouncement{}, GroupRecipient("lab"));
  EXPECT_TRUE(CheckTopicBinding(Topic::GroupRound("lab"), announce).ok());
  EXPECT_FALSE(CheckTopicBinding(Topic::GroupRound("other"), announce).ok());

  // A device may not speak for the coordinator on a group or downlink topic.
  const OpenedEnvelope forged = opened_from(device_, v1::RoundAnnouncement{}, GroupRecipient("lab"));
  EXPECT_EQ(CheckTopicBinding(Topic::GroupRound("lab"), forged).code(), StatusCode::kPermissionDenied);

  // Either side may abort a round.
  const OpenedEnvelope abort_up = opened_from(device_, v1::RoundAbort{}, std::string(kCoordinatorId));
  EXPECT_TRUE(CheckTopicBinding(Topic::Event("dev-1", "round"), abort_up).ok());
  const OpenedEnvelope abort_dn = opened_from(coordinator_, v1::RoundAbort{}, "dev-1");
  EXPECT_TRUE(CheckTopicBinding(Topic::Command("dev-1", "round"), abort_dn).ok());
}

TEST_F(EnvelopeTest, PayloadTypeNames) {
  EXPECT_EQ(PayloadTypeName(v1::PAYLOAD_TYPE_MASKED_INPUT), "MASKED_INPUT");
  EXPECT_EQ(PayloadTypeName(static_cast<PayloadType>(999)), "PAYLOAD_TYPE_999");
}

}  // namespace
}  // namespace flotilla::protocol
