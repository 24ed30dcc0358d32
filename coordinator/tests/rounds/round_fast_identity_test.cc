#include "flotilla/coordinator/round_fast_identity.h"

#include <gtest/gtest.h>

#include "flotilla/security/identity.h"
#include "flotilla/security/x509.h"

namespace flotilla::rounds {
namespace {

// The OpenSSL path must accept exactly what the mbedTLS path accepts, both ways.
TEST(FastIdentityTest, InteroperatesWithTheMbedTlsIdentityBothWays) {
  for (int k = 0; k < 5; ++k) {
    auto key = security::EcdsaPrivateKey::Generate();
    ASSERT_TRUE(key.ok());
    const std::string msg = "flotilla envelope body " + std::to_string(k);
    auto fast = OpenSslEcdsaSigner::FromPem("dev", key->ToPem());
    ASSERT_TRUE(fast.ok()) << fast.status().ToString();
    OpenSslKeyRing ring;
    ASSERT_TRUE(ring.AddDer("dev", key->public_key().der()).ok());
    security::KeyRing slow_ring;
    slow_ring.Add("dev", key->public_key());

    auto slow_sig = key->Sign(AsBytes(msg));
    ASSERT_TRUE(slow_sig.ok());
    EXPECT_TRUE(ring.Verify("dev", AsBytes(msg), *slow_sig).ok());  // mbedTLS -> OpenSSL
    auto fast_sig = (*fast)->Sign(AsBytes(msg));
    ASSERT_TRUE(fast_sig.ok());
    EXPECT_TRUE(slow_ring.Verify("dev", AsBytes(msg), *fast_sig).ok());  // OpenSSL -> mbedTLS
    EXPECT_TRUE(ring.Verify("dev", AsBytes(msg), *fast_sig).ok());

    // Every single-bit flip of message or signature is refused by both.
    for (size_t bit = 0; bit < msg.size() * 8; bit += 7) {
      std::string bad = msg;
      bad[bit / 8] = static_cast<char>(bad[bit / 8] ^ (1 << (bit % 8)));
      EXPECT_EQ(ring.Verify("dev", AsBytes(bad), *fast_sig).code(), StatusCode::kUnauthenticated);
      EXPECT_FALSE(slow_ring.Verify("dev", AsBytes(bad), *fast_sig).ok());
    }
    for (size_t byte = 0; byte < fast_sig->size(); byte += 5) {
      Bytes bad = *fast_sig;
      bad[byte] ^= 0x01;
      EXPECT_FALSE(ring.Verify("dev", AsBytes(msg), bad).ok());
      EXPECT_FALSE(slow_ring.Verify("dev", AsBytes(msg), bad).ok());
    }
  }
}

TEST(FastIdentityTest, UnknownIdentitiesAndBadKeysAreRefused) {
  OpenSslKeyRing ring;
  EXPECT_EQ(ring.Verify("nobody", AsBytes(std::string_view("m")), Bytes{1}).code(), StatusCode::kNotFound);
  EXPECT_FALSE(ring.AddDer("x", Bytes{0x30, 0x00}).ok());
  EXPECT_FALSE(ring.AddCertificatePem("x", "not a certificate").ok());
  EXPECT_FALSE(OpenSslEcdsaSigner::FromPem("x", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").ok());
  auto ca = security::CreateCertificateAuthority("test CA");
  ASSERT_TRUE(ca.ok());
  auto key = security::EcdsaPrivateKey::FromPem(ca->key_pem);
  ASSERT_TRUE(key.ok());
  ASSERT_TRUE(ring.AddCertificatePem("ca", ca->cert_pem).ok());
  auto sig = key->Sign(AsBytes(std::string_view("hello")));
  ASSERT_TRUE(sig.ok());
  EXPECT_TRUE(ring.Verify("ca", AsBytes(std::string_view("hello")), *sig).ok());
  ring.Remove("ca");
  EXPECT_EQ(ring.Verify("ca", AsBytes(std::string_view("hello")), *sig).code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace flotilla::rounds
