// SealedBoxScanner against protobuf, and the fuzz entry point on seeded mutations.
#include "flotilla/coordinator/sealed_box_scanner.h"

#include <google/protobuf/stubs/logging.h>
#include <gtest/gtest.h>

#include "flotilla/core/testing/seeded_random.h"
#include "flotilla/v1/round.pb.h"
#include "pki_test_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace flotilla::coordinator {
namespace {

Bytes Box(size_t key, size_t nonce, size_t ct) {
  v1::SealedBox b;
  b.set_ephemeral_public_key(std::string(key, 'k'));
  b.set_nonce(std::string(nonce, 'n'));
  b.set_ciphertext(std::string(ct, 'c'));
  return ToBytes(b.SerializeAsString());
}

Status Scan(ByteSpan bytes, size_t chunk) {
  SealedBoxScanner s;
  for (size_t off = 0; off < bytes.size(); off += chunk) {
    FLT_RETURN_IF_ERROR(s.Feed(bytes.subspan(off, std::min(chunk, bytes.size() - off))));
  }
  return s.Finish();
}

TEST(SealedBoxScannerTest, AcceptsWellFormedBoxesInAnyChunking) {
  for (size_t ct : {16u, 17u, 300u, 70000u}) {
    Bytes b = Box(32, 12, ct);
    for (size_t chunk : {1u, 3u, 4096u, 1u << 20}) EXPECT_TRUE(Scan(b, chunk).ok()) << ct << "/" << chunk;
  }
  SealedBoxScanner s;
  Bytes b = Box(32, 12, 1000);
  ASSERT_TRUE(s.Feed(b).ok());
  ASSERT_TRUE(s.Finish().ok());
  EXPECT_EQ(s.ciphertext_bytes(), 1000u);
}

TEST(SealedBoxScannerTest, RefusesWrongSizesTruncationAndJunk) {
  EXPECT_FALSE(Scan(Box(31, 12, 100), 7).ok());
  EXPECT_FALSE(Scan(Box(32, 11, 100), 7).ok());
  EXPECT_FALSE(Scan(Box(32, 12, 15), 7).ok());
  Bytes b = Box(32, 12, 100);
  b.pop_back();
  Status s = Scan(b, 7);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("truncated"), std::string::npos);
  EXPECT_FALSE(Scan(AsBytes("{\"json\": true}"), 3).ok());
  EXPECT_FALSE(Scan(Bytes(), 1).ok());
  // Unknown fields are skipped, as protobuf does.
  Bytes extra = Box(32, 12, 100);
  for (uint8_t x : {0x20, 0x05, 0x2a, 0x01, 0x00}) extra.push_back(x);  // field 4 varint 5, field 5 bytes "\0"
  EXPECT_TRUE(Scan(extra, 2).ok());
}

TEST(SealedBoxScannerTest, FuzzEntryPointSurvivesSeededMutations) {
  google::protobuf::LogSilencer quiet;  // mutated strings make protobuf log UTF-8 complaints
  ::flotilla::testing::SeededRandom rng(7);
  std::vector<Bytes> seeds = {Box(32, 12, 40), Box(32, 12, 16), Box(1, 2, 3)};
  testutil::TestFleet fleet;
  auto& d = fleet.Device("dev-1");
  seeds.push_back(testutil::TestFleet::Seal(*d.signer, testutil::TestFleet::RequestFor(d), RealClock()));
  int runs = 0;
  for (const Bytes& seed : seeds) {
    LLVMFuzzerTestOneInput(seed.data(), seed.size());
    for (int i = 0; i < 400; ++i) {
      Bytes m = seed;
      const int edits = 1 + static_cast<int>(rng.Uniform(4));
      for (int e = 0; e < edits && !m.empty(); ++e) {
        const size_t pos = rng.Uniform(m.size());
        switch (rng.Uniform(3)) {
          case 0: m[pos] = static_cast<uint8_t>(rng.NextU32()); break;
          case 1: m.erase(m.begin() + static_cast<std::ptrdiff_t>(pos)); break;
          default: m.insert(m.begin() + static_cast<std::ptrdiff_t>(pos), static_cast<uint8_t>(rng.NextU32())); break;
        }
      }
      LLVMFuzzerTestOneInput(m.data(), m.size());
      ++runs;
    }
  }
  EXPECT_EQ(runs, 1600);
}

}  // namespace
}  // namespace flotilla::coordinator
