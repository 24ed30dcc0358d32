#include "flotilla/protocol/payload.h"

#include <gtest/gtest.h>

#include <string>

#include "flotilla/core/testing/fake_clock.h"
#include "flotilla/core/testing/seeded_random.h"
#include "flotilla/protocol/testing/fake_signer.h"

namespace flotilla::protocol {
namespace {

using flotilla::testing::FakeClock;
using flotilla::testing::SeededRandom;

TEST(PayloadTest, PackAndParseRoundTrip) {
  v1::AdvertiseKeys adv;
  adv.set_round_id("r-9");
  adv.set_index(3);
  adv.set_pk_c(std::string(32, '\x01'));
  adv.set_pk_s(std::string(32, '\x02'));
  Result<Bytes> packed = PackPayload(adv);
  ASSERT_TRUE(packed.ok());
  v1::AdvertiseKeys back;
  ASSERT_TRUE(ParsePayload(AsStringView(*packed), back).ok());
  EXPECT_EQ(back.round_id(), "r-9");
  EXPECT_EQ(back.pk_s(), std::string(32, '\x02'));
}

TEST(PayloadTest, PackRefusesOversizedMessages) {
  v1::ShareKeys shares;
  for (int i = 0; i < 10; ++i) shares.add_shares()->set_ciphertext(std::string(200, 'c'));
  Result<Bytes> packed = PackPayload(shares, 1000);
  EXPECT_EQ(packed.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(packed.status().message().find("flotilla.v1.ShareKeys"), std::string::npos) << packed.status().ToString();
  EXPECT_TRUE(PackPayload(shares, 5000).ok());
}

TEST(PayloadTest, ParseRefusesGarbageAndOversize) {
  v1::RoundInvitation inv;
  Status garbage = ParsePayload(std::string("\xff\xff\xff", 3), inv);
  EXPECT_EQ(garbage.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(garbage.message().find("flotilla.v1.RoundInvitation"), std::string::npos) << garbage.ToString();
  Status big = ParsePayload(std::string(100, '\0'), inv, 99);
  EXPECT_EQ(big.code(), StatusCode::kResourceExhausted);
  // Invalid UTF-8 in a proto3 string field is refused, not passed on.
  v1::RoundResponse resp;
  resp.set_detail("ok");
  std::string wire = resp.SerializeAsString();
  wire.back() = '\xff';
  v1::RoundResponse back;
  EXPECT_FALSE(ParsePayload(wire, back).ok());
}

TEST(PayloadTest, ParseClearsTheOutputFirstAndOnFailure) {
  v1::RoundAbort abort_msg;
  abort_msg.set_detail("old");
  v1::RoundAbort fresh;
  fresh.set_round_id("r");
  ASSERT_TRUE(ParsePayload(fresh.SerializeAsString(), abort_msg).ok());
  EXPECT_EQ(abort_msg.detail(), "");  // not merged
  EXPECT_FALSE(ParsePayload(std::string("\x0a\x10", 2), abort_msg).ok());
  EXPECT_EQ(abort_msg.round_id(), "");  // no partial state
}

TEST(PayloadTest, ValidatePayloadUsesTheDeclaredType) {
  v1::ConsistencyCheckRequest req;
  req.set_round_id("r");
  req.set_survivors_bitmap(std::string("\x07", 1));
  const std::string wire = req.SerializeAsString();
  EXPECT_TRUE(ValidatePayload(v1::PAYLOAD_TYPE_CONSISTENCY_CHECK_REQUEST, wire).ok());
  EXPECT_EQ(ValidatePayload(static_cast<PayloadType>(999), wire).code(), StatusCode::kUnimplemented);
  EXPECT_EQ(ValidatePayload(v1::PAYLOAD_TYPE_UNSPECIFIED, wire).code(), StatusCode::kUnimplemented);
}

TEST(PayloadTest, UnpackChecksTheDeclaredType) {
  FakeClock clock;
  SeededRandom random(3);
  testing::FakeSigner signer("dev-1", 5);
  testing::FakeVerifier verifier;
  verifier.Add("dev-1", 5);
  v1::OtaReport report;
  report.set_deployment_id("dep-1");
  report.set_outcome(v1::OTA_OUTCOME_ROLLED_BACK);
  Result<Bytes> wire = SealMessage(signer, report, kCoordinatorId, clock, random);
  ASSERT_TRUE(wire.ok());
  OpenOptions options;
  options.recipients = {std::string(kCoordinatorId)};
  Result<OpenedEnvelope> opened = Open(*wire, verifier, clock, options);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  EXPECT_EQ(opened->payload_type, v1::PAYLOAD_TYPE_OTA_REPORT);

  Result<v1::OtaReport> ok = UnpackPayload<v1::OtaReport>(*opened);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->outcome(), v1::OTA_OUTCOME_ROLLED_BACK);
  Result<v1::Telemetry> wrong = UnpackPayload<v1::Telemetry>(*opened);
  EXPECT_EQ(wrong.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(wrong.status().message().find("carries OTA_REPORT, expected TELEMETRY"), std::string::npos)
      << wrong.status().ToString();
}

TEST(PayloadTest, SealMessageRefusesOversizedMessages) {
  FakeClock clock;
  SeededRandom random(3);
  testing::FakeSigner signer("dev-1", 5);
  v1::MaskedInput input;
  input.mutable_inline_box()->set_ciphertext(std::string(kMaxEnvelopeBytes, 'x'));
  Result<Bytes> wire = SealMessage(signer, input, kCoordinatorId, clock, random);
  EXPECT_EQ(wire.status().code(), StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace flotilla::protocol
