#include "flotilla/security/identity.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "flotilla/security/hash.h"
#include "test_util.h"

namespace flotilla::security {
namespace {

class IdentityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    Result<EcdsaPrivateKey> k = EcdsaPrivateKey::Generate();
    FLT_CHECK_OK(k.status());
    key_ = new EcdsaPrivateKey(std::move(k).value());
  }
  static void TearDownTestSuite() {
    delete key_;
    key_ = nullptr;
  }
  static EcdsaPrivateKey* key_;
};
EcdsaPrivateKey* IdentityTest::key_ = nullptr;

TEST_F(IdentityTest, SignVerifyAndRejectOneFlippedBit) {
  const Bytes msg = ToBytes("round 7 config");
  Result<Bytes> sig = key_->Sign(msg);
  FLT_ASSERT_OK(sig);
  FLT_EXPECT_OK(key_->public_key().Verify(msg, *sig));

  Bytes bad_msg = msg;
  bad_msg[3] ^= 0x01;
  EXPECT_EQ(key_->public_key().Verify(bad_msg, *sig).code(), StatusCode::kUnauthenticated);

  // Every bit of the DER signature: the result must never verify and never crash.
  for (size_t i = 0; i < sig->size() * 8; ++i) {
    Bytes bad = *sig;
    bad[i / 8] ^= static_cast<uint8_t>(1u << (i % 8));
    ASSERT_EQ(key_->public_key().Verify(msg, bad).code(), StatusCode::kUnauthenticated) << "bit " << i;
  }

  // A flipped bit in the public key's point: either no longer a valid key, or a different
  // key that does not verify.
  const Bytes& der = key_->public_key().der();
  for (size_t byte : {der.size() - 1, der.size() - 20, der.size() - 40}) {
    Bytes bad = der;
    bad[byte] ^= 0x04;
    Result<EcdsaPublicKey> other = EcdsaPublicKey::FromDer(bad);
    if (other.ok()) {
      EXPECT_EQ(other->Verify(msg, *sig).code(), StatusCode::kUnauthenticated);
    }
  }
}

TEST_F(IdentityTest, RejectsMalformedSignatures) {
  const Bytes msg = ToBytes("m");
  Result<Bytes> sig = key_->Sign(msg);
  FLT_ASSERT_OK(sig);
  const EcdsaPublicKey& pub = key_->public_key();
  EXPECT_EQ(pub.Verify(msg, {}).code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(pub.Verify(msg, Bytes(64, 0)).code(), StatusCode::kUnauthenticated);
  Bytes trailing = *sig;
  trailing.push_back(0);
  EXPECT_EQ(pub.Verify(msg, trailing).code(), StatusCode::kUnauthenticated);
  Bytes truncated(sig->begin(), sig->end() - 1);
  EXPECT_EQ(pub.Verify(msg, truncated).code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(pub.Verify(msg, testing::Hex("3006020100020100")).code(), StatusCode::kUnauthenticated);  // r = s = 0
}

TEST_F(IdentityTest, SignaturesAreRandomizedButBothVerify) {
  const Bytes msg = ToBytes("same message");
  Result<Bytes> a = key_->Sign(msg);
  Result<Bytes> b = key_->Sign(msg);
  FLT_ASSERT_OK(a);
  FLT_ASSERT_OK(b);
  FLT_EXPECT_OK(key_->public_key().Verify(msg, *a));
  FLT_EXPECT_OK(key_->public_key().Verify(msg, *b));
}

TEST_F(IdentityTest, PemAndDerRoundTrips) {
  const EcdsaPublicKey& pub = key_->public_key();
  EXPECT_EQ(pub.der().size(), 91u);  // P-256 SubjectPublicKeyInfo, uncompressed point
  Result<EcdsaPublicKey> from_der = EcdsaPublicKey::FromDer(pub.der());
  FLT_ASSERT_OK(from_der);
  EXPECT_EQ(*from_der, pub);
  const std::string pem = pub.ToPem();
  EXPECT_EQ(pem.rfind("-----BEGIN PUBLIC KEY-----\n", 0), 0u);
  Result<EcdsaPublicKey> from_pem = EcdsaPublicKey::FromPem(pem);
  FLT_ASSERT_OK(from_pem);
  EXPECT_EQ(*from_pem, pub);

  const std::string priv_pem = key_->ToPem();
  Result<EcdsaPrivateKey> reloaded = EcdsaPrivateKey::FromPem(priv_pem);
  FLT_ASSERT_OK(reloaded);
  EXPECT_EQ(reloaded->public_key(), pub);
  Result<Bytes> sig = reloaded->Sign(AsBytes("x"));
  FLT_ASSERT_OK(sig);
  FLT_EXPECT_OK(pub.Verify(AsBytes("x"), *sig));
}

TEST_F(IdentityTest, ParsesOpenSslStylePkcs8) {
  // Made by `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256` (PKCS#8);
  // a fixed test key, not a secret.
  const char* pkcs8 =
      "-----BEGIN PRIVATE KEY-----\n"
      "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgv6ScuvsICkjq3ZZb\n"
      "mc30azNp7P2V8kEo3uQa6aiEAAyhRANCAAQd1v10oj/img2SznTjby6Mxsqz+Upb\n"
      "l1A77oSqgi61DeT3VjJFqOPBhX5MblDKssM44UCELNc1qw75nqHEGmqE\n"
      "-----END PRIVATE KEY-----\n";
  Result<EcdsaPrivateKey> k = EcdsaPrivateKey::FromPem(pkcs8);
  FLT_ASSERT_OK(k);
  Result<Bytes> sig = k->Sign(AsBytes("pkcs8"));
  FLT_ASSERT_OK(sig);
  FLT_EXPECT_OK(k->public_key().Verify(AsBytes("pkcs8"), *sig));
  // `openssl pkey -pubout -outform DER | sha256sum` of the same key.
  EXPECT_EQ(k->public_key().KeyId(), "b77246402188ba9503db4d3d51c9fbd3ac6e562abe6ec623ab3f30bf10dbc0e0");
}

TEST(IdentityParseTest, RejectsGarbage) {
  EXPECT_EQ(EcdsaPublicKey::FromDer({}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(EcdsaPublicKey::FromDer(Bytes(91, 0x30)).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(EcdsaPublicKey::FromPem("not a pem").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(EcdsaPublicKey::FromPem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(EcdsaPrivateKey::FromPem("-----BEGIN EC PRIVATE KEY-----\n-----END EC PRIVATE KEY-----\n")
                .status()
                .code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(EcdsaPublicKey::FromCertificatePem("nope").status().code(), StatusCode::kInvalidArgument);
}

TEST_F(IdentityTest, KeyIdIsHexSha256OfSpki) {
  const EcdsaPublicKey& pub = key_->public_key();
  EXPECT_EQ(pub.KeyId(), ToHex(Sha256(pub.der())));
  EXPECT_EQ(pub.KeyId().size(), 64u);
}

TEST_F(IdentityTest, KeyRingVerifiesKnownIdentities) {
  KeyRing ring;
  ring.Add("dev-1", key_->public_key());
  const Bytes msg = ToBytes("envelope");
  auto signer_key = std::make_shared<const EcdsaPrivateKey>(std::move(EcdsaPrivateKey::FromPem(key_->ToPem())).value());
  EcdsaSigner signer("dev-1", signer_key);
  EXPECT_EQ(signer.identity(), "dev-1");
  Result<Bytes> sig = signer.Sign(msg);
  FLT_ASSERT_OK(sig);
  FLT_EXPECT_OK(ring.Verify("dev-1", msg, *sig));
  EXPECT_EQ(ring.Verify("dev-2", msg, *sig).code(), StatusCode::kNotFound);
  Bytes bad = *sig;
  bad.back() ^= 1;
  EXPECT_EQ(ring.Verify("dev-1", msg, bad).code(), StatusCode::kUnauthenticated);

  // Another identity's key does not verify dev-1's signature.
  Result<EcdsaPrivateKey> other = EcdsaPrivateKey::Generate();
  FLT_ASSERT_OK(other);
  ring.Add("dev-1", other->public_key());  // replaces
  EXPECT_EQ(ring.Verify("dev-1", msg, *sig).code(), StatusCode::kUnauthenticated);
  ring.Remove("dev-1");
  EXPECT_EQ(ring.Verify("dev-1", msg, *sig).code(), StatusCode::kNotFound);
}

TEST_F(IdentityTest, ConcurrentSignAndVerify) {
  KeyRing ring;
  ring.Add("c", key_->public_key());
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 5; ++i) {
        const std::string m = "msg " + std::to_string(t) + "/" + std::to_string(i);
        Result<Bytes> sig = key_->Sign(AsBytes(m));
        if (!sig.ok() || !ring.Verify("c", AsBytes(m), *sig).ok()) failures++;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
}

}  // namespace
}  // namespace flotilla::security
