#include "flotilla/security/x25519.h"

#include <gtest/gtest.h>

#include "flotilla/core/testing/seeded_random.h"
#include "test_util.h"

namespace flotilla::security {
namespace {

X25519Key Key(std::string_view hex) {
  const Bytes b = testing::Hex(hex);
  X25519Key k;
  FLT_CHECK(b.size() == k.size());
  std::copy(b.begin(), b.end(), k.begin());
  return k;
}

std::string AgreeHex(const X25519Key& priv, const X25519Key& pub) {
  Result<X25519Key> r = X25519Agree(priv, pub);
  if (!r.ok()) return r.status().ToString();
  return ToHex(*r);
}

TEST(X25519Test, Rfc7748Section52Vectors) {
  EXPECT_EQ(AgreeHex(Key("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4"),
                     Key("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")),
            "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552");
  // The u-coordinate's top bit is set here and must be masked.
  EXPECT_EQ(AgreeHex(Key("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d"),
                     Key("e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493")),
            "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957");
}

TEST(X25519Test, Rfc7748IteratedVectors) {
  X25519Key k = Key("0900000000000000000000000000000000000000000000000000000000000000");
  X25519Key u = k;
  for (int i = 1; i <= 1000; ++i) {
    Result<X25519Key> r = X25519Agree(k, u);
    FLT_ASSERT_OK(r);
    u = k;
    k = *r;
    if (i == 1) {
      EXPECT_EQ(ToHex(k), "422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079");
    }
  }
  EXPECT_EQ(ToHex(k), "684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51");
}

TEST(X25519Test, Rfc7748Section61AliceAndBob) {
  const X25519Key alice = Key("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
  const X25519Key bob = Key("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
  Result<X25519Key> alice_pub = X25519PublicFromPrivate(alice);
  Result<X25519Key> bob_pub = X25519PublicFromPrivate(bob);
  FLT_ASSERT_OK(alice_pub);
  FLT_ASSERT_OK(bob_pub);
  EXPECT_EQ(ToHex(*alice_pub), "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
  EXPECT_EQ(ToHex(*bob_pub), "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
  const std::string shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";
  EXPECT_EQ(AgreeHex(alice, *bob_pub), shared);
  EXPECT_EQ(AgreeHex(bob, *alice_pub), shared);
}

TEST(X25519Test, RejectsLowOrderPoints) {
  const X25519Key priv = Key("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
  // Points of order 1, 2, 4, 8 on Curve25519 (and their non-canonical encodings).
  const char* low_order[] = {
      "0000000000000000000000000000000000000000000000000000000000000000",
      "0100000000000000000000000000000000000000000000000000000000000000",
      "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
      "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
      "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  // p - 1
      "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  // p (= 0)
      "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  // p + 1 (= 1)
      "0000000000000000000000000000000000000000000000000000000000000080",  // 0 with top bit
  };
  for (const char* u : low_order) {
    Result<X25519Key> r = X25519Agree(priv, Key(u));
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << u;
  }
}

TEST(X25519Test, GeneratedPairsAgree) {
  for (int i = 0; i < 3; ++i) {
    Result<X25519KeyPair> a = X25519GenerateKeyPair();
    Result<X25519KeyPair> b = X25519GenerateKeyPair();
    FLT_ASSERT_OK(a);
    FLT_ASSERT_OK(b);
    EXPECT_NE(a->private_key, b->private_key);
    EXPECT_NE(a->public_key, b->public_key);
    Result<X25519Key> ab = X25519Agree(a->private_key, b->public_key);
    Result<X25519Key> ba = X25519Agree(b->private_key, a->public_key);
    FLT_ASSERT_OK(ab);
    FLT_ASSERT_OK(ba);
    EXPECT_EQ(*ab, *ba);
  }
}

TEST(X25519Test, InjectedRandomIsDeterministic) {
  flotilla::testing::SeededRandom r1(7), r2(7);
  Result<X25519KeyPair> a = X25519GenerateKeyPair(r1);
  Result<X25519KeyPair> b = X25519GenerateKeyPair(r2);
  FLT_ASSERT_OK(a);
  FLT_ASSERT_OK(b);
  EXPECT_EQ(a->private_key, b->private_key);
  EXPECT_EQ(a->public_key, b->public_key);
}

}  // namespace
}  // namespace flotilla::security
