// Envelopes signed and verified with real ECDSA P-256 keys (security/identity.h).
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "flotilla/core/testing/fake_clock.h"
#include "flotilla/protocol/envelope.h"
#include "flotilla/protocol/payload.h"
#include "flotilla/protocol/replay_window.h"
#include "flotilla/security/identity.h"

namespace flotilla {
namespace {

using protocol::OpenedEnvelope;
using protocol::OpenOptions;

class EnvelopeEcdsaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto device_key = security::EcdsaPrivateKey::Generate();
    auto coordinator_key = security::EcdsaPrivateKey::Generate();
    auto other_key = security::EcdsaPrivateKey::Generate();
    ASSERT_TRUE(device_key.ok() && coordinator_key.ok() && other_key.ok());
    device_key_ = std::make_shared<const security::EcdsaPrivateKey>(std::move(*device_key));
    coordinator_key_ = std::make_shared<const security::EcdsaPrivateKey>(std::move(*coordinator_key));
    other_key_ = std::make_shared<const security::EcdsaPrivateKey>(std::move(*other_key));
    keyring_.Add("dev-1", device_key_->public_key());
    keyring_.Add(std::string(protocol::kCoordinatorId), coordinator_key_->public_key());
    options_.recipients = {std::string(protocol::kCoordinatorId)};
  }

  Result<Bytes> SealMasked(const security::EcdsaSigner& signer) {
    v1::MaskedInput input;
    input.set_round_id("r-7");
    input.set_index(3);
    input.mutable_claim()->set_url("https://coordinator.local/upload/abc");
    input.mutable_claim()->set_sha256(std::string(32, '\x11'));
    input.mutable_claim()->set_size(12'345'678);
    return protocol::SealMessage(signer, input, protocol::kCoordinatorId, clock_, OsRandom());
  }

  testing::FakeClock clock_;
  std::shared_ptr<const security::EcdsaPrivateKey> device_key_, coordinator_key_, other_key_;
  security::KeyRing keyring_;
  OpenOptions options_;
};

TEST_F(EnvelopeEcdsaTest, CorrectlySignedEnvelopeOpens) {
  security::EcdsaSigner signer("dev-1", device_key_);
  Result<Bytes> wire = SealMasked(signer);
  ASSERT_TRUE(wire.ok()) << wire.status().ToString();
  EXPECT_LE(wire->size(), protocol::kTargetEnvelopeBytes);
  Result<OpenedEnvelope> opened = protocol::Open(*wire, keyring_, clock_, options_);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  EXPECT_EQ(opened->sender_id, "dev-1");
  Result<v1::MaskedInput> input = protocol::UnpackPayload<v1::MaskedInput>(*opened);
  ASSERT_TRUE(input.ok());
  EXPECT_EQ(input->claim().size(), 12'345'678u);
  EXPECT_TRUE(protocol::CheckTopicBinding(protocol::Topic::Event("dev-1", "secagg"), *opened).ok());
  // Delivered twice (QoS 1) or replayed: handled once.
  protocol::ReplayWindow window;
  EXPECT_TRUE(window.Check(*opened, clock_).ok());
  EXPECT_EQ(window.Check(*protocol::Open(*wire, keyring_, clock_, options_), clock_).code(),
            StatusCode::kAlreadyExists);
}

TEST_F(EnvelopeEcdsaTest, EnvelopeSignedByAnotherKeyIsRefused) {
  // Claims to be dev-1 but holds another key.
  security::EcdsaSigner impostor("dev-1", other_key_);
  Result<Bytes> wire = SealMasked(impostor);
  ASSERT_TRUE(wire.ok());
  Result<OpenedEnvelope> opened = protocol::Open(*wire, keyring_, clock_, options_);
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.status().code(), StatusCode::kUnauthenticated) << opened.status().ToString();

  // The coordinator's key does not pass for a device either.
  security::EcdsaSigner coordinator_as_device("dev-1", coordinator_key_);
  Result<Bytes> wire2 = SealMasked(coordinator_as_device);
  ASSERT_TRUE(wire2.ok());
  EXPECT_EQ(protocol::Open(*wire2, keyring_, clock_, options_).status().code(), StatusCode::kUnauthenticated);
}

TEST_F(EnvelopeEcdsaTest, UnknownIdentityIsRefused) {
  security::EcdsaSigner stranger("dev-9", other_key_);
  Result<Bytes> wire = SealMasked(stranger);
  ASSERT_TRUE(wire.ok());
  EXPECT_EQ(protocol::Open(*wire, keyring_, clock_, options_).status().code(), StatusCode::kNotFound);
}

TEST_F(EnvelopeEcdsaTest, TamperingWithBodyOrSignatureIsRefused) {
  security::EcdsaSigner signer("dev-1", device_key_);
  Result<Bytes> wire = SealMasked(signer);
  ASSERT_TRUE(wire.ok());
  // Walk the whole envelope: body bytes, signature bytes and framing.
  for (size_t i = 0; i < wire->size(); i += 7) {
    Bytes bad = *wire;
    bad[i] ^= 0x04;
    EXPECT_FALSE(protocol::Open(bad, keyring_, clock_, options_).ok()) << "flip at " << i;
  }
}

}  // namespace
}  // namespace flotilla
