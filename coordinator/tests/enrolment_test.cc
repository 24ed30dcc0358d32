// Enrolment: certificate path, token path, and every refusal (real certificates,
// real ECDSA signatures, a real SQLite store).
#include "flotilla/coordinator/enrolment.h"

#include <gtest/gtest.h>

#include "pki_test_util.h"

namespace flotilla::coordinator {
namespace {

using testutil::Must;
using testutil::TestFleet;

class EnrolmentTest : public testutil::StoreFixture {
 protected:
  EnrolmentTest() : enrolment_(*store_, fleet_.ca_pem(), {}, RealClock()) {}
  Bytes Wire(const testutil::TestDevice& d, const v1::EnrolmentRequest& r) {
    return TestFleet::Seal(*d.signer, r, RealClock());
  }
  TestFleet fleet_;
  Enrolment enrolment_;
};

TEST_F(EnrolmentTest, CertificateEnrolmentRecordsKeyCertificateAndHardware) {
  auto& d = fleet_.Device("dev-1");
  DeviceRecord rec = Must(enrolment_.HandleEnvelope("dev-1", Wire(d, TestFleet::RequestFor(d))));
  EXPECT_EQ(rec.identity_public_key, d.key->public_key().der());
  EXPECT_EQ(rec.certificate_pem, d.cert_pem);
  EXPECT_EQ(rec.firmware_version, "fw-1");
  v1::HardwareInfo hw;
  ASSERT_TRUE(hw.ParseFromArray(rec.hardware.data(), static_cast<int>(rec.hardware.size())));
  EXPECT_EQ(hw.model(), "raspberrypi-5");
  // Redelivery: accepted again.
  EXPECT_TRUE(enrolment_.HandleEnvelope("dev-1", Wire(d, TestFleet::RequestFor(d))).ok());
  auto resp = Enrolment::ResponseFor("dev-1", store_->GetDevice("dev-1"));
  EXPECT_TRUE(resp.accepted());
  EXPECT_EQ(resp.coordinator_id(), "coordinator");
}

TEST_F(EnrolmentTest, RefusesMismatchesForgeriesAndRevokedDevices) {
  auto& d1 = fleet_.Device("dev-1");
  auto& d2 = fleet_.Device("dev-2");
  // Arrived on another device's topic.
  EXPECT_EQ(enrolment_.HandleEnvelope("dev-2", Wire(d1, TestFleet::RequestFor(d1))).status().code(),
            StatusCode::kPermissionDenied);
  // dev-2's certificate presented with dev-1's id and key.
  v1::EnrolmentRequest wrong_cert = TestFleet::RequestFor(d1);
  wrong_cert.set_certificate_pem(d2.cert_pem);
  EXPECT_EQ(enrolment_.HandleEnvelope("dev-1", Wire(d1, wrong_cert)).status().code(), StatusCode::kPermissionDenied);
  // Claims dev-2's key but signs with dev-1's: the signature does not verify.
  v1::EnrolmentRequest stolen = TestFleet::RequestFor(d2);
  stolen.set_device_id("dev-1");
  stolen.set_certificate_pem("");
  stolen.set_enrolment_token("fle_0000000000000000_" + std::string(64, '0'));
  EXPECT_FALSE(enrolment_.HandleEnvelope("dev-1", Wire(d1, stolen)).ok());
  // A certificate from another fleet.
  TestFleet other;
  auto& foreign = other.Device("dev-3");
  EXPECT_EQ(enrolment_.HandleEnvelope("dev-3", Wire(foreign, TestFleet::RequestFor(foreign))).status().code(),
            StatusCode::kUnauthenticated);
  // Neither certificate nor token.
  v1::EnrolmentRequest bare = TestFleet::RequestFor(d1);
  bare.clear_certificate_pem();
  EXPECT_EQ(enrolment_.HandleEnvelope("dev-1", Wire(d1, bare)).status().code(), StatusCode::kPermissionDenied);
  // Garbage.
  EXPECT_EQ(enrolment_.HandleEnvelope("dev-1", AsBytes("not an envelope")).status().code(),
            StatusCode::kInvalidArgument);
  // Revoked.
  ASSERT_TRUE(enrolment_.HandleEnvelope("dev-1", Wire(d1, TestFleet::RequestFor(d1))).ok());
  ASSERT_TRUE(store_->RevokeDevice("dev-1", "lost", "cli").ok());
  auto revoked = enrolment_.HandleEnvelope("dev-1", Wire(d1, TestFleet::RequestFor(d1)));
  EXPECT_EQ(revoked.status().code(), StatusCode::kPermissionDenied);
  auto resp = Enrolment::ResponseFor("dev-1", revoked);
  EXPECT_FALSE(resp.accepted());
  EXPECT_NE(resp.reason().find("revoked"), std::string::npos);
  EXPECT_EQ(Must(store_->CountDevices(std::nullopt, DeviceStatus::kActive)), 0);
}

TEST_F(EnrolmentTest, TokenEnrolmentWorksWithoutACertificateAndOnlyOnce) {
  const std::vector<std::string> groups = {"field"};
  auto token = Must(store_->CreateEnrolmentToken("", groups, std::chrono::hours(1), "cli"));
  auto key = std::make_shared<const security::EcdsaPrivateKey>(Must(security::EcdsaPrivateKey::Generate()));
  security::EcdsaSigner signer("dev-9", key);
  v1::EnrolmentRequest r;
  r.set_device_id("dev-9");
  r.set_identity_public_key(std::string(key->public_key().der().begin(), key->public_key().der().end()));
  r.set_enrolment_token(token.token);
  DeviceRecord rec = Must(enrolment_.HandleEnvelope("dev-9", TestFleet::Seal(signer, r, RealClock())));
  EXPECT_TRUE(rec.certificate_pem.empty());
  EXPECT_EQ(rec.groups, groups);
  // The same token for another new device: used.
  auto key2 = std::make_shared<const security::EcdsaPrivateKey>(Must(security::EcdsaPrivateKey::Generate()));
  security::EcdsaSigner signer2("dev-10", key2);
  r.set_device_id("dev-10");
  r.set_identity_public_key(std::string(key2->public_key().der().begin(), key2->public_key().der().end()));
  EXPECT_EQ(enrolment_.HandleEnvelope("dev-10", TestFleet::Seal(signer2, r, RealClock())).status().code(),
            StatusCode::kPermissionDenied);
}

TEST_F(EnrolmentTest, PolicyCanRequireATokenOnTopOfTheCertificate) {
  Enrolment strict(*store_, fleet_.ca_pem(), {true}, RealClock());
  auto& d = fleet_.Device("dev-1");
  EXPECT_EQ(strict.HandleEnvelope("dev-1", Wire(d, TestFleet::RequestFor(d))).status().code(),
            StatusCode::kPermissionDenied);
  auto token = Must(store_->CreateEnrolmentToken("dev-1", {}, std::chrono::hours(1), "cli"));
  v1::EnrolmentRequest r = TestFleet::RequestFor(d);
  r.set_enrolment_token(token.token);
  EXPECT_TRUE(strict.HandleEnvelope("dev-1", Wire(d, r)).ok());
}

TEST(PeekEnrolmentRequestTest, RefusesOtherPayloadsAndMismatchedSenders) {
  TestFleet fleet;
  auto& d = fleet.Device("dev-1");
  v1::Presence p;
  p.set_state(v1::PRESENCE_STATE_ONLINE);
  EXPECT_EQ(PeekEnrolmentRequest(TestFleet::Seal(*d.signer, p, RealClock())).status().code(),
            StatusCode::kInvalidArgument);
  v1::EnrolmentRequest r = TestFleet::RequestFor(d);
  r.set_device_id("dev-2");
  EXPECT_EQ(PeekEnrolmentRequest(TestFleet::Seal(*d.signer, r, RealClock())).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_TRUE(PeekEnrolmentRequest(TestFleet::Seal(*d.signer, TestFleet::RequestFor(d), RealClock())).ok());
  Bytes huge(protocol::kMaxEnvelopeBytes + 1, 0);
  EXPECT_FALSE(PeekEnrolmentRequest(huge).ok());
}

}  // namespace
}  // namespace flotilla::coordinator
