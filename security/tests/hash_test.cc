#include "flotilla/security/hash.h"

#include <gtest/gtest.h>

#include "test_util.h"

namespace flotilla::security {
namespace {

using testing::Hex;
using testing::Range;
using testing::Repeat;

std::string HexOf(const Sha256Digest& d) { return ToHex(d); }

TEST(Sha256Test, Fips180Vectors) {
  EXPECT_EQ(HexOf(Sha256(AsBytes("abc"))), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(HexOf(Sha256(AsBytes("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(HexOf(Sha256(Repeat('a', 1000000))), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  EXPECT_EQ(HexOf(Sha256({})), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Sha256Test, IncrementalMatchesOneShotForUnevenChunks) {
  const Bytes million = Repeat('a', 1000000);
  Sha256Hasher h;
  size_t pos = 0, step = 1;
  while (pos < million.size()) {
    const size_t n = std::min(step, million.size() - pos);
    h.Update(ByteSpan(million).subspan(pos, n));
    pos += n;
    step = step * 3 + 1;  // crosses the 64-byte block boundary at every alignment
  }
  EXPECT_EQ(HexOf(h.Finish()), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  // Finish() resets: the hasher is reusable.
  h.Update(AsBytes("ab")).Update(AsBytes("c"));
  EXPECT_EQ(HexOf(h.Finish()), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(HmacSha256Test, Rfc4231Vectors) {
  struct Case {
    Bytes key;
    Bytes data;
    const char* mac;
  };
  const Case cases[] = {
      {Repeat(0x0b, 20), ToBytes("Hi There"), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
      {ToBytes("Jefe"), ToBytes("what do ya want for nothing?"),
       "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
      {Repeat(0xaa, 20), Repeat(0xdd, 50), "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
      {Range(1, 26), Repeat(0xcd, 50), "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
      {Repeat(0xaa, 131), ToBytes("Test Using Larger Than Block-Size Key - Hash Key First"),
       "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
      {Repeat(0xaa, 131),
       ToBytes("This is a test using a larger than block-size key and a larger than block-size data. The key needs to "
               "be hashed before being used by the HMAC algorithm."),
       "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"},
  };
  for (const Case& c : cases) EXPECT_EQ(HexOf(HmacSha256(c.key, c.data)), c.mac);
}

TEST(HkdfTest, Rfc5869Vectors) {
  struct Case {
    Bytes ikm, salt, info;
    size_t length;
    const char* prk;
    const char* okm;
  };
  const Case cases[] = {
      {Repeat(0x0b, 22), Range(0x00, 0x0d), Range(0xf0, 0xfa), 42,
       "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
       "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"},
      {Range(0x00, 0x50), Range(0x60, 0xb0), Range(0xb0, 0x100), 82,
       "06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244",
       "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac7827271cb41c65e590e09da3275600c2f0"
       "9b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87"},
      {Repeat(0x0b, 22), {}, {}, 42, "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
       "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"},
  };
  for (const Case& c : cases) {
    const Sha256Digest prk = HkdfExtract(c.salt, c.ikm);
    EXPECT_EQ(HexOf(prk), c.prk);
    Result<Bytes> okm = HkdfExpand(prk, c.info, c.length);
    FLT_ASSERT_OK(okm);
    EXPECT_EQ(ToHex(*okm), c.okm);
    Result<Bytes> both = Hkdf(c.salt, c.ikm, c.info, c.length);
    FLT_ASSERT_OK(both);
    EXPECT_EQ(*both, *okm);
  }
}

TEST(HkdfTest, RejectsBadLengths) {
  const Sha256Digest prk = HkdfExtract({}, AsBytes("ikm"));
  EXPECT_EQ(HkdfExpand(prk, {}, 255 * 32 + 1).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(HkdfExpand(ByteSpan(prk).first(16), {}, 16).status().code(), StatusCode::kInvalidArgument);
  Result<Bytes> max = HkdfExpand(prk, {}, 255 * 32);
  FLT_ASSERT_OK(max);
  EXPECT_EQ(max->size(), 255u * 32);
  // A prefix of a longer output equals the shorter output (HKDF-Expand is a stream).
  Result<Bytes> small = HkdfExpand(prk, {}, 40);
  FLT_ASSERT_OK(small);
  EXPECT_TRUE(std::equal(small->begin(), small->end(), max->begin()));
}

}  // namespace
}  // namespace flotilla::security
