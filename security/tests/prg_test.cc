#include "flotilla/security/prg.h"

#include <gtest/gtest.h>

#include <vector>

#include "flotilla/core/testing/seeded_random.h"
#include "test_util.h"

namespace flotilla::security {
namespace {

using testing::Hex;

const AesCtrBackend* const kBackends[] = {&MbedTlsAesCtr(), &OpenSslAesCtr()};

AesCtrCounterBlock Counter(std::string_view hex) {
  const Bytes b = Hex(hex);
  AesCtrCounterBlock c{};
  FLT_CHECK(b.size() == c.size());
  std::copy(b.begin(), b.end(), c.begin());
  return c;
}

// Plain reference for the word encoding: little-endian uint32 from raw keystream bytes.
std::vector<uint32_t> WordsFromBytes(ByteSpan bytes) {
  std::vector<uint32_t> out(bytes.size() / 4);
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<uint32_t>(bytes[4 * i]) | static_cast<uint32_t>(bytes[4 * i + 1]) << 8 |
             static_cast<uint32_t>(bytes[4 * i + 2]) << 16 | static_cast<uint32_t>(bytes[4 * i + 3]) << 24;
  }
  return out;
}

PrgSeed RandomSeed(Random& rng) {
  PrgSeed s;
  rng.Fill(s);
  return s;
}

std::vector<uint32_t> Expand(const AesCtrBackend& b, const PrgSeed& seed, uint64_t offset, size_t n) {
  std::vector<uint32_t> out(n, 0xdeadbeef);
  Status s = ExpandPrg(b, seed, offset, out);
  EXPECT_TRUE(s.ok()) << b.name() << ": " << s.ToString();
  return out;
}

constexpr char kSp80038aPlain[] =
    "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b1"
    "7ad2b417be66c3710";

TEST(AesCtrTest, Sp80038aF51Aes128) {
  const Bytes key = Hex("2b7e151628aed2a6abf7158809cf4f3c");
  const AesCtrCounterBlock iv = Counter("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff");
  const Bytes pt = Hex(kSp80038aPlain);
  const std::string ct =
      "874d6191b620e3261bef6864990db6ce9806f66b7970fdff8617187bb9fffdff5ae4df3edbd5d35e5b4f09020db03eab1e031dda2fbe0"
      "3d1792170a0f3009cee";
  for (const AesCtrBackend* b : kBackends) {
    SCOPED_TRACE(b->name());
    Bytes out(pt.size());
    FLT_ASSERT_OK(b->Xor(key, iv, pt, out));
    EXPECT_EQ(ToHex(out), ct);
    // F.5.2 (decryption) is the same operation; in place.
    FLT_ASSERT_OK(b->Xor(key, iv, out, out));
    EXPECT_EQ(out, pt);
  }
}

TEST(AesCtrTest, Sp80038aF55Aes256) {
  const Bytes key = Hex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4");
  const AesCtrCounterBlock iv = Counter("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff");
  const Bytes pt = Hex(kSp80038aPlain);
  for (const AesCtrBackend* b : kBackends) {
    SCOPED_TRACE(b->name());
    Bytes out(pt.size());
    FLT_ASSERT_OK(b->Xor(key, iv, pt, out));
    EXPECT_EQ(ToHex(out),
              "601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c52b0930daa23de94ce87017ba2d84988ddfc9c58"
              "db67aada613c2dd08457941a6");
  }
}

TEST(AesCtrTest, KeystreamEqualsXorOfZeros) {
  flotilla::testing::SeededRandom rng(1);
  for (const AesCtrBackend* b : kBackends) {
    for (size_t len : {0u, 1u, 15u, 16u, 17u, 100u, 16385u, 70000u}) {
      Bytes key(len % 2 ? 32 : 16);
      rng.Fill(key);
      AesCtrCounterBlock iv;
      rng.Fill(iv);
      Bytes zeros(len), a(len), k(len, 0x5a);
      FLT_ASSERT_OK(b->Xor(key, iv, zeros, a));
      FLT_ASSERT_OK(b->Keystream(key, iv, k));
      EXPECT_EQ(a, k) << b->name() << " len " << len;
    }
  }
}

TEST(AesCtrTest, BackendsAgreeIncludingCounterWrap) {
  flotilla::testing::SeededRandom rng(2);
  // Counters whose increments carry across 32/64-bit limbs and wrap 2^128 -> 0.
  const AesCtrCounterBlock ivs[] = {Counter("00000000000000000000000000000000"),
                                    Counter("000000000000000000000000fffffffe"),
                                    Counter("0000000000000000fffffffffffffffd"),
                                    Counter("fffffffffffffffffffffffffffffffe")};
  for (const AesCtrCounterBlock& iv : ivs) {
    for (size_t len : {1u, 33u, 64u, 1000u, 65537u}) {
      Bytes key(16), in(len), a(len), b(len);
      rng.Fill(key);
      rng.Fill(in);
      FLT_ASSERT_OK(MbedTlsAesCtr().Xor(key, iv, in, a));
      FLT_ASSERT_OK(OpenSslAesCtr().Xor(key, iv, in, b));
      ASSERT_EQ(a, b) << "iv " << ToHex(iv) << " len " << len;
      Bytes ka(len), kb(len);
      FLT_ASSERT_OK(MbedTlsAesCtr().Keystream(key, iv, ka));
      FLT_ASSERT_OK(OpenSslAesCtr().Keystream(key, iv, kb));
      ASSERT_EQ(ka, kb) << "iv " << ToHex(iv) << " len " << len;
    }
  }
}

TEST(AesCtrTest, RejectsBadArguments) {
  for (const AesCtrBackend* b : kBackends) {
    Bytes out(4);
    EXPECT_EQ(b->Xor(Bytes(24), {}, Bytes(4), out).code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(b->Xor(Bytes(16), {}, Bytes(5), out).code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(b->Keystream(Bytes(0), {}, out).code(), StatusCode::kInvalidArgument);
  }
}

TEST(MaskPrgTest, KnownAnswerForZeroSeed) {
  // AES-128(0^16, counter 0, 1, 2): FIPS-197 zero-key block, and E(K, Y0) / E(K, Y1) from
  // GCM spec test cases 1 and 2 (whose J0 counters are 0...01 and 0...02).
  const std::vector<uint32_t> expected =
      WordsFromBytes(Hex("66e94bd4ef8a2c3b884cfa59ca342b2e58e2fccefa7e3061367f1d57a4e7455a0388dace60b6a392f328c2b9"
                         "71b2fe78"));
  ASSERT_EQ(expected[0], 0xd44be966u);  // the little-endian word reading itself
  for (const AesCtrBackend* b : kBackends) EXPECT_EQ(Expand(*b, PrgSeed{}, 0, 12), expected) << b->name();
}

TEST(MaskPrgTest, MatchesRawAesCtrConstruction) {
  flotilla::testing::SeededRandom rng(3);
  for (int trial = 0; trial < 4; ++trial) {
    const PrgSeed seed = RandomSeed(rng);
    Bytes stream(4096);
    // The construction in prg.h, built from the raw KAT-checked primitive.
    FLT_ASSERT_OK(MbedTlsAesCtr().Xor(seed, AesCtrCounterBlock{}, Bytes(stream.size()), stream));
    const std::vector<uint32_t> expected = WordsFromBytes(stream);
    for (const AesCtrBackend* b : kBackends) EXPECT_EQ(Expand(*b, seed, 0, expected.size()), expected) << b->name();
  }
}

TEST(MaskPrgTest, OffsetExpansionEqualsSlicingTheFullStream) {
  flotilla::testing::SeededRandom rng(4);
  const PrgSeed seed = RandomSeed(rng);
  constexpr size_t kFull = 20000;
  for (const AesCtrBackend* b : kBackends) {
    SCOPED_TRACE(b->name());
    const std::vector<uint32_t> full = Expand(*b, seed, 0, kFull);
    for (uint64_t off = 0; off < 40; ++off) {
      for (size_t len : {0u, 1u, 2u, 3u, 4u, 5u, 7u, 8u, 9u, 63u, 1025u}) {
        const std::vector<uint32_t> part = Expand(*b, seed, off, len);
        ASSERT_TRUE(std::equal(part.begin(), part.end(), full.begin() + static_cast<ptrdiff_t>(off)))
            << "offset " << off << " len " << len;
      }
    }
    // Random ranges, as threads would split one stream.
    for (int i = 0; i < 200; ++i) {
      const uint64_t off = rng.Uniform(kFull);
      const size_t len = static_cast<size_t>(rng.Uniform(kFull - off + 1));
      const std::vector<uint32_t> part = Expand(*b, seed, off, len);
      ASSERT_TRUE(std::equal(part.begin(), part.end(), full.begin() + static_cast<ptrdiff_t>(off)));
    }
  }
}

TEST(MaskPrgTest, BackendsBitIdenticalOnManyLengthsAndOffsets) {
  flotilla::testing::SeededRandom rng(5);
  for (int trial = 0; trial < 300; ++trial) {
    const PrgSeed seed = RandomSeed(rng);
    const uint64_t off = trial % 3 == 0 ? rng.Uniform(kPrgMaxWords - 5000) : rng.Uniform(100);
    const size_t len = static_cast<size_t>(rng.Uniform(3000));
    ASSERT_EQ(Expand(MbedTlsAesCtr(), seed, off, len), Expand(OpenSslAesCtr(), seed, off, len))
        << "offset " << off << " len " << len;
  }
  // Counter carries across bytes (block 2^8, 2^24) and up to the per-seed limit (block 2^32 - 1).
  const PrgSeed seed = RandomSeed(rng);
  for (uint64_t off : {uint64_t{4 * 256 - 7}, (uint64_t{4} << 24) - 7, kPrgMaxWords - 1000, kPrgMaxWords - 3}) {
    const uint64_t len = std::min<uint64_t>(1000, kPrgMaxWords - off);
    EXPECT_EQ(Expand(MbedTlsAesCtr(), seed, off, len), Expand(OpenSslAesCtr(), seed, off, len));
  }
}

TEST(MaskPrgTest, LongStreamsBitIdentical) {
  flotilla::testing::SeededRandom rng(6);
  const PrgSeed seed = RandomSeed(rng);
  constexpr size_t kWords = 4 << 20;  // 16 MiB
  const std::vector<uint32_t> a = Expand(MbedTlsAesCtr(), seed, 3, kWords);
  const std::vector<uint32_t> b = Expand(OpenSslAesCtr(), seed, 3, kWords);
  EXPECT_TRUE(a == b);
  // Not trivially equal: the stream is not constant.
  EXPECT_NE(a[0], a[1]);
}

TEST(MaskPrgTest, AddPrgMaskMatchesPlainReference) {
  flotilla::testing::SeededRandom rng(8);
  for (const AesCtrBackend* b : kBackends) {
    for (size_t len : {0u, 1u, 5u, 4096u, 16384u, 16385u, 40000u}) {
      const PrgSeed seed = RandomSeed(rng);
      const uint64_t off = rng.Uniform(50);
      std::vector<uint32_t> acc(len);
      for (uint32_t& v : acc) v = rng.NextU32();
      const std::vector<uint32_t> before = acc;
      const std::vector<uint32_t> stream = Expand(*b, seed, off, len);
      FLT_ASSERT_OK(AddPrgMask(*b, seed, off, /*subtract=*/false, acc));
      for (size_t i = 0; i < len; ++i) ASSERT_EQ(acc[i], static_cast<uint32_t>(before[i] + stream[i])) << i;
      // Unmasking with the same seed restores the input exactly (mod 2^32).
      FLT_ASSERT_OK(AddPrgMask(*b, seed, off, /*subtract=*/true, acc));
      ASSERT_EQ(acc, before);
    }
  }
  std::vector<uint32_t> acc(2);
  EXPECT_EQ(AddPrgMask(OpenSslAesCtr(), PrgSeed{}, kPrgMaxWords - 1, false, acc).code(), StatusCode::kOutOfRange);
}

TEST(MaskPrgTest, EnforcesPerSeedLimit) {
  std::vector<uint32_t> two(2);
  EXPECT_EQ(ExpandPrg(OpenSslAesCtr(), PrgSeed{}, kPrgMaxWords - 1, two).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(ExpandPrg(OpenSslAesCtr(), PrgSeed{}, kPrgMaxWords + 5, std::span(two).first(1)).code(),
            StatusCode::kOutOfRange);
  FLT_EXPECT_OK(ExpandPrg(OpenSslAesCtr(), PrgSeed{}, kPrgMaxWords - 1, std::span(two).first(1)));
  FLT_EXPECT_OK(ExpandPrg(OpenSslAesCtr(), PrgSeed{}, kPrgMaxWords, std::span(two).first(0)));
}

TEST(MaskPrgTest, CounterBlockIsBigEndian) {
  EXPECT_EQ(ToHex(PrgCounterBlock(0x0102030405060708ULL)), "00000000000000000102030405060708");
}

}  // namespace
}  // namespace flotilla::security
