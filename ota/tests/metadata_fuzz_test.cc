// Runs the libFuzzer entry point (tests/fuzz/ota_metadata_fuzzer.cc) on deterministic
// mutations of real signed metadata, so every build exercises it without clang.
#include <gtest/gtest.h>

#include "flotilla/core/file.h"
#include "flotilla/core/testing/seeded_random.h"
#include "flotilla/ota/repository_layout.h"
#include "flotilla/ota/testing/test_repository.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace flotilla::ota {
namespace {

TEST(MetadataFuzzTest, MutatedRealMetadataNeverCrashesOrVerifies) {
  testing::TestRepository repo;
  Bytes content(20000, 7);
  repo.AddTarget("models/x", content, 1, {100, 9000});
  ASSERT_TRUE(repo.repo().Publish().ok());
  repo.AssignDevice("dev-1", {"models/x"});
  std::vector<Bytes> seeds;
  for (const std::string& rel : {RootMetadataPath(1), TimestampMetadataPath(), SnapshotMetadataPath(1),
                                 TargetsMetadataPath(1), DeviceDirectorPath("dev-1")}) {
    seeds.push_back(testing::TestRepository::Must(ReadFileBytes(repo.dir() / rel)));
  }
  ::flotilla::testing::SeededRandom rng(42);
  int runs = 0;
  for (const Bytes& seed : seeds) {
    LLVMFuzzerTestOneInput(seed.data(), seed.size());
    for (int i = 0; i < 300; ++i) {
      Bytes m = seed;
      const int edits = 1 + static_cast<int>(rng.Uniform(4));
      for (int e = 0; e < edits && !m.empty(); ++e) {
        switch (rng.Uniform(4)) {
          case 0: m[rng.Uniform(m.size())] ^= static_cast<uint8_t>(1u << rng.Uniform(8)); break;
          case 1: m.resize(rng.Uniform(m.size() + 1)); break;
          case 2: m.insert(m.begin() + static_cast<std::ptrdiff_t>(rng.Uniform(m.size() + 1)),
                           static_cast<uint8_t>(rng.Uniform(256))); break;
          default: m[rng.Uniform(m.size())] = 0xff; break;
        }
      }
      LLVMFuzzerTestOneInput(m.data(), m.size());
      ++runs;
    }
  }
  EXPECT_EQ(runs, 1500);
}

}  // namespace
}  // namespace flotilla::ota
