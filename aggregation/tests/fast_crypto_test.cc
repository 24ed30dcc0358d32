// The coordinator's OpenSSL suite against the devices' mbedTLS suite: bit-identical mask
// streams, X25519 secrets and AES-GCM decisions; the multi-threaded expander against a
// single-threaded mbedTLS reference; wire packing and the sealed box.
#include <gtest/gtest.h>

#include "flotilla/aggregation/crypto_suite.h"
#include "flotilla/aggregation/mask_expander.h"
#include "flotilla/aggregation/masked_vector.h"
#include "flotilla/core/testing/seeded_random.h"
#include "flotilla/security/aead.h"

namespace flotilla::aggregation {
namespace {

using flotilla::testing::SeededRandom;
using security::X25519Key;

X25519Key Hex32(std::string_view hex) {
  X25519Key k{};
  const Bytes b = FromHex(hex).value();
  std::copy(b.begin(), b.end(), k.begin());
  return k;
}

TEST(FastCryptoTest, X25519Rfc7748VectorOnBothSuites) {
  const X25519Key alice = Hex32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
  const X25519Key bob_pub = Hex32("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
  const X25519Key alice_pub = Hex32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
  const X25519Key shared = Hex32("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
  for (const CryptoSuite* s : {&DeviceCryptoSuite(), &CoordinatorCryptoSuite()}) {
    EXPECT_EQ(s->PublicFromPrivate(alice).value(), alice_pub) << s->name();
    EXPECT_EQ(s->Agree(alice, bob_pub).value(), shared) << s->name();
  }
}

TEST(FastCryptoTest, X25519SuitesAgreeOnRandomKeysAndRejectLowOrderPoints) {
  SeededRandom rng(7);
  for (int i = 0; i < 50; ++i) {
    auto a = DeviceCryptoSuite().GenerateKeyPair(rng).value();
    auto b = CoordinatorCryptoSuite().GenerateKeyPair(rng).value();
    EXPECT_EQ(DeviceCryptoSuite().PublicFromPrivate(b.private_key).value(), b.public_key);
    X25519Key peer = b.public_key;
    if (i % 2) peer[31] |= 0x80;  // top bit ignored by both
    EXPECT_EQ(DeviceCryptoSuite().Agree(a.private_key, peer).value(),
              CoordinatorCryptoSuite().Agree(a.private_key, peer).value());
  }
  // The batched form (one private-key import) gives the same secrets on both suites.
  auto me = DeviceCryptoSuite().GenerateKeyPair(rng).value();
  std::vector<X25519Key> peers(7), dev(7), fast(7);
  for (auto& p : peers) p = CoordinatorCryptoSuite().GenerateKeyPair(rng).value().public_key;
  ASSERT_TRUE(DeviceCryptoSuite().AgreeMany(me.private_key, peers, dev).ok());
  ASSERT_TRUE(CoordinatorCryptoSuite().AgreeMany(me.private_key, peers, fast).ok());
  EXPECT_EQ(dev, fast);
  EXPECT_EQ(fast[3], DeviceCryptoSuite().Agree(me.private_key, peers[3]).value());
  peers[5] = X25519Key{};  // a low-order point in the batch fails the batch
  EXPECT_FALSE(CoordinatorCryptoSuite().AgreeMany(me.private_key, peers, fast).ok());
  const X25519Key zero{};
  X25519Key one{};
  one[0] = 1;
  auto k = DeviceCryptoSuite().GenerateKeyPair(rng).value();
  for (const CryptoSuite* s : {&DeviceCryptoSuite(), &CoordinatorCryptoSuite()}) {
    EXPECT_FALSE(s->Agree(k.private_key, zero).ok()) << s->name();
    EXPECT_FALSE(s->Agree(k.private_key, one).ok()) << s->name();
  }
}

TEST(FastCryptoTest, GcmOpenMatchesOnBothSuitesAndRejectsTampering) {
  SeededRandom rng(8);
  Bytes key(16), nonce(12), plain(1000), aad = ToBytes("aad");
  rng.Fill(key);
  rng.Fill(nonce);
  rng.Fill(plain);
  const Bytes ct = security::AesGcmSeal(key, nonce, plain, aad).value();
  for (const CryptoSuite* s : {&DeviceCryptoSuite(), &CoordinatorCryptoSuite()}) {
    Bytes out(plain.size());
    ASSERT_TRUE(s->GcmOpen(key, nonce, ct, aad, out).ok()) << s->name();
    EXPECT_EQ(out, plain);
    Bytes bad = ct;
    bad[500] ^= 1;
    EXPECT_EQ(s->GcmOpen(key, nonce, bad, aad, out).code(), StatusCode::kUnauthenticated) << s->name();
    bad = ct;
    bad.back() ^= 1;
    EXPECT_EQ(s->GcmOpen(key, nonce, bad, aad, out).code(), StatusCode::kUnauthenticated) << s->name();
    EXPECT_EQ(s->GcmOpen(key, nonce, ct, ToBytes("other"), out).code(), StatusCode::kUnauthenticated);
  }
}

TEST(FastCryptoTest, MaskPrgKnownAnswerOnBothSuites) {
  // All-zero seed: block 0 is FIPS-197's AES-128(0, 0) = 66e94bd4ef8a2c3b884cfa59ca342b2e.
  const security::PrgSeed seed{};
  for (const CryptoSuite* s : {&DeviceCryptoSuite(), &CoordinatorCryptoSuite()}) {
    std::vector<uint32_t> w(4);
    ASSERT_TRUE(security::ExpandPrg(s->prg(), seed, 0, w).ok());
    EXPECT_EQ(w[0], 0xd44be966u) << s->name();
    EXPECT_EQ(w[1], 0x3b2c8aefu) << s->name();
    EXPECT_EQ(w[3], 0x2e2b34cau) << s->name();
  }
}

TEST(FastCryptoTest, FastServerStreamIsIdenticalToTheDeviceStream) {
  SeededRandom rng(9);
  for (size_t len : {1u, 3u, 4u, 1000u, 16385u, 100003u}) {
    security::PrgSeed seed;
    rng.Fill(seed);
    std::vector<uint32_t> dev(len), fast(len);
    ASSERT_TRUE(security::ExpandPrg(DeviceCryptoSuite().prg(), seed, 0, dev).ok());
    ASSERT_TRUE(security::ExpandPrg(CoordinatorCryptoSuite().prg(), seed, 0, fast).ok());
    EXPECT_EQ(dev, fast) << len;
  }
}

TEST(FastCryptoTest, ThreadedExpansionEqualsSingleThreadedDeviceReference) {
  SeededRandom rng(10);
  for (size_t m : {37u, 4096u, 70001u}) {
    std::vector<MaskStream> streams(9);
    for (size_t i = 0; i < streams.size(); ++i) {
      rng.Fill(streams[i].seed);
      streams[i].subtract = i % 3 == 0;
    }
    std::vector<uint32_t> base(m);
    rng.Fill(std::span<uint8_t>(reinterpret_cast<uint8_t*>(base.data()), m * 4));
    // Reference: plain per-stream expansion with mbedTLS, one thread.
    std::vector<uint32_t> ref = base;
    for (const MaskStream& s : streams) {
      std::vector<uint32_t> w(m);
      ASSERT_TRUE(security::ExpandPrg(DeviceCryptoSuite().prg(), s.seed, 0, w).ok());
      for (size_t i = 0; i < m; ++i) ref[i] = s.subtract ? ref[i] - w[i] : ref[i] + w[i];
    }
    for (unsigned threads : {1u, 2u, 3u}) {
      std::vector<uint32_t> acc = base;
      ASSERT_TRUE(ApplyMaskStreams(CoordinatorCryptoSuite().prg(), streams, acc, threads).ok());
      EXPECT_EQ(acc, ref) << "m=" << m << " threads=" << threads;
    }
  }
}

TEST(FastCryptoTest, PackingRoundTripsAtEveryBitWidth) {
  SeededRandom rng(11);
  for (uint32_t b = 1; b <= 32; ++b) {
    std::vector<uint32_t> v(37);
    for (uint32_t& x : v) x = rng.NextU32() & (b == 32 ? 0xffffffffu : ((1u << b) - 1));
    const Bytes packed = PackRing(v, b);
    EXPECT_EQ(packed.size(), (37 * b + 7) / 8);
    std::vector<uint32_t> back(37);
    ASSERT_TRUE(UnpackRing(packed, b, back).ok());
    EXPECT_EQ(back, v) << b;
    std::vector<uint32_t> acc(37, 1);
    ASSERT_TRUE(AddPackedRing(packed, b, acc).ok());
    for (size_t i = 0; i < v.size(); ++i) EXPECT_EQ(acc[i], v[i] + 1);
    if ((37 * b) % 8 != 0) {
      Bytes bad = packed;
      bad.back() |= 0x80;  // a padding bit
      std::vector<uint32_t> untouched(37, 5);
      EXPECT_FALSE(AddPackedRing(bad, b, untouched).ok());
      EXPECT_EQ(untouched, std::vector<uint32_t>(37, 5));  // never half-added
    }
    EXPECT_FALSE(UnpackRing(Bytes(packed.size() + 1), b, back).ok());
  }
}

TEST(FastCryptoTest, SealedBoxOpensOnlyForItsRoundAndIndex) {
  SeededRandom rng(12);
  auto coord = CoordinatorCryptoSuite().GenerateKeyPair(rng).value();
  const Bytes msg = ToBytes("masked vector bytes");
  auto box = SealBox(msg, coord.public_key, "r1", 7, rng, DeviceCryptoSuite()).value();
  for (const CryptoSuite* s : {&DeviceCryptoSuite(), &CoordinatorCryptoSuite()}) {
    EXPECT_EQ(OpenBox(box, coord, "r1", 7, *s).value(), msg);
    EXPECT_EQ(OpenBox(box, coord, "r1", 8, *s).status().code(), StatusCode::kUnauthenticated);
    EXPECT_EQ(OpenBox(box, coord, "r2", 7, *s).status().code(), StatusCode::kUnauthenticated);
  }
  v1::SealedBox bad = box;
  bad.set_nonce("short");
  EXPECT_EQ(OpenBox(bad, coord, "r1", 7, CoordinatorCryptoSuite()).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace flotilla::aggregation
