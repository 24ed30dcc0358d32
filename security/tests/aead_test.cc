#include "flotilla/security/aead.h"

#include <gtest/gtest.h>

#include "test_util.h"

namespace flotilla::security {
namespace {

using testing::Hex;

struct GcmCase {
  const char* name;
  const char* key;
  const char* nonce;
  const char* plaintext;
  const char* aad;
  const char* ciphertext_and_tag;
};

constexpr char kK[] = "feffe9928665731c6d6a8f9467308308";
constexpr char kK256[] = "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308";
constexpr char kIv[] = "cafebabefacedbaddecaf888";
constexpr char kP64[] =
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657b"
    "a637b391aafd255";
constexpr char kP60[] =
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657b"
    "a637b39";
constexpr char kAad[] = "feedfacedeadbeeffeedfacedeadbeefabaddad2";

// McGrew & Viega, "The Galois/Counter Mode of Operation", test cases 1-4 and 13-16.
const GcmCase kCases[] = {
    {"tc1", "00000000000000000000000000000000", "000000000000000000000000", "", "",
     "58e2fccefa7e3061367f1d57a4e7455a"},
    {"tc2", "00000000000000000000000000000000", "000000000000000000000000", "00000000000000000000000000000000", "",
     "0388dace60b6a392f328c2b971b2fe78ab6e47d42cec13bdf53a67b21257bddf"},
    {"tc3", kK, kIv, kP64, "",
     "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac9"
     "73d58e091473f59854d5c2af327cd64a62cf35abd2ba6fab4"},
    {"tc4", kK, kIv, kP60, kAad,
     "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac9"
     "73d58e0915bc94fbc3221a5db94fae95ae7121a47"},
    {"tc13", "0000000000000000000000000000000000000000000000000000000000000000", "000000000000000000000000", "", "",
     "530f8afbc74536b9a963b4f1c4cb738b"},
    {"tc14", "0000000000000000000000000000000000000000000000000000000000000000", "000000000000000000000000",
     "00000000000000000000000000000000", "", "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919"},
    {"tc15", kK256, kIv, kP64, "",
     "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0"
     "abcc9f662898015adb094dac5d93471bdec1a502270e3cc6c"},
    {"tc16", kK256, kIv, kP60, kAad,
     "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0"
     "abcc9f66276fc6ece0f4e1768cddf8853bb2d551b"},
};

TEST(AesGcmTest, GcmSpecVectorsSealAndOpen) {
  for (const GcmCase& c : kCases) {
    SCOPED_TRACE(c.name);
    const Bytes key = Hex(c.key), nonce = Hex(c.nonce), pt = Hex(c.plaintext), aad = Hex(c.aad);
    Result<Bytes> sealed = AesGcmSeal(key, nonce, pt, aad);
    FLT_ASSERT_OK(sealed);
    EXPECT_EQ(ToHex(*sealed), c.ciphertext_and_tag);
    Result<Bytes> opened = AesGcmOpen(key, nonce, *sealed, aad);
    FLT_ASSERT_OK(opened);
    EXPECT_EQ(*opened, pt);
  }
}

TEST(AesGcmTest, RejectsAnyFlippedBit) {
  for (const GcmCase& c : kCases) {
    SCOPED_TRACE(c.name);
    const Bytes key = Hex(c.key), nonce = Hex(c.nonce), aad = Hex(c.aad);
    const Bytes sealed = Hex(c.ciphertext_and_tag);
    // Every bit of ciphertext and tag.
    for (size_t i = 0; i < sealed.size() * 8; ++i) {
      Bytes bad = sealed;
      bad[i / 8] ^= static_cast<uint8_t>(1u << (i % 8));
      Result<Bytes> r = AesGcmOpen(key, nonce, bad, aad);
      ASSERT_EQ(r.status().code(), StatusCode::kUnauthenticated) << "bit " << i;
    }
    // AAD: flip a bit, drop a byte, add a byte.
    if (!aad.empty()) {
      Bytes flipped = aad;
      flipped[aad.size() / 2] ^= 0x10;
      EXPECT_EQ(AesGcmOpen(key, nonce, sealed, flipped).status().code(), StatusCode::kUnauthenticated);
      const ByteSpan shorter = ByteSpan(aad).first(aad.size() - 1);
      EXPECT_EQ(AesGcmOpen(key, nonce, sealed, shorter).status().code(), StatusCode::kUnauthenticated);
    }
    Bytes longer(aad.size() + 1, 0);
    std::copy(aad.begin(), aad.end(), longer.begin());
    EXPECT_EQ(AesGcmOpen(key, nonce, sealed, longer).status().code(), StatusCode::kUnauthenticated);
    // Nonce and key.
    Bytes bad_nonce = nonce;
    bad_nonce[0] ^= 1;
    EXPECT_EQ(AesGcmOpen(key, bad_nonce, sealed, aad).status().code(), StatusCode::kUnauthenticated);
    Bytes bad_key = key;
    bad_key.back() ^= 0x80;
    EXPECT_EQ(AesGcmOpen(bad_key, nonce, sealed, aad).status().code(), StatusCode::kUnauthenticated);
    // Truncation.
    Bytes truncated(sealed.begin(), sealed.end() - 1);
    EXPECT_FALSE(AesGcmOpen(key, nonce, truncated, aad).ok());
  }
}

TEST(AesGcmTest, RejectsBadSizes) {
  const Bytes k16(16), k24(24), n12(12), n8(8);
  EXPECT_EQ(AesGcmSeal(k24, n12, {}, {}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(AesGcmSeal(k16, n8, {}, {}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(AesGcmOpen(k16, n12, Bytes(15), {}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(AesGcmOpen(k16, n8, Bytes(16), {}).status().code(), StatusCode::kInvalidArgument);
}

TEST(AesGcmTest, LargeMessageRoundTrip) {
  Bytes pt(1 << 20);
  for (size_t i = 0; i < pt.size(); ++i) pt[i] = static_cast<uint8_t>(i * 31 + 7);
  const Bytes key(32, 0x42), nonce(12, 0x24), aad = ToBytes("header");
  Result<Bytes> sealed = AesGcmSeal(key, nonce, pt, aad);
  FLT_ASSERT_OK(sealed);
  ASSERT_EQ(sealed->size(), pt.size() + kAesGcmTagSize);
  Result<Bytes> opened = AesGcmOpen(key, nonce, *sealed, aad);
  FLT_ASSERT_OK(opened);
  EXPECT_EQ(*opened, pt);
}

}  // namespace
}  // namespace flotilla::security
