// Repository side: chunking, publishing, reopening, content-addressed layout.
#include "flotilla/ota/repository.h"

#include <gtest/gtest.h>

#include "flotilla/core/file.h"
#include "flotilla/ota/repository_layout.h"
#include "flotilla/ota/testing/test_repository.h"
#include "flotilla/security/hash.h"

namespace flotilla::ota {
namespace {

using testing::TestRepository;

// Plain reference: cut at every boundary, then every max bytes.
std::vector<std::pair<uint64_t, uint64_t>> ReferenceChunks(uint64_t size, std::vector<uint64_t> b, uint64_t max) {
  std::vector<bool> cut(size + 1, false);
  cut[0] = true;
  for (uint64_t x : b) {
    if (x <= size) cut[x] = true;
  }
  std::vector<std::pair<uint64_t, uint64_t>> out;
  uint64_t start = 0;
  for (uint64_t i = 1; i <= size; ++i) {
    if (cut[i] || i - start == max || i == size) {
      out.emplace_back(start, i - start);
      start = i;
    }
  }
  return out;
}

TEST(RepositoryTest, ChunksMatchPlainReference) {
  EXPECT_TRUE(ComputeChunks(0, {}, 10).empty());
  struct Case {
    uint64_t size;
    std::vector<uint64_t> boundaries;
    uint64_t max;
  };
  const std::vector<Case> cases = {{100, {}, 30}, {100, {5, 5, 50, 0, 100}, 30}, {1, {}, 4},
                                   {4096 * 3, {4096, 8000}, 4096}, {77, {76, 3, 40}, 7}};
  for (const auto& c : cases) {
    auto got = ComputeChunks(c.size, c.boundaries, c.max);
    EXPECT_EQ(got, ReferenceChunks(c.size, c.boundaries, c.max)) << c.size << "/" << c.max;
    uint64_t off = 0;
    for (auto [o, l] : got) {
      EXPECT_EQ(o, off);
      EXPECT_LE(l, c.max);
      off += l;
    }
    EXPECT_EQ(off, c.size);
  }
}

TEST(RepositoryTest, PublishesContentAddressedArtifactsAndReopens) {
  TestRepository repo;
  Bytes content(50000);
  for (size_t i = 0; i < content.size(); ++i) content[i] = static_cast<uint8_t>(i * 13);
  auto t = repo.AddTarget("models/m", content, 4, {1234}, 8192);
  ASSERT_TRUE(repo.repo().Publish().ok());
  const auto artifact = repo.dir() / ArtifactPath(AsBytes(t.sha256()));
  EXPECT_EQ(TestRepository::Must(ReadFileBytes(artifact)), content);
  EXPECT_EQ(t.chunks(0).length(), 1234u);
  for (const auto& c : t.chunks()) {
    EXPECT_EQ(ToHex(AsBytes(c.sha256())),
              ToHex(security::Sha256(ByteSpan(content).subspan(c.offset(), c.length()))));
  }
  EXPECT_EQ(repo.repo().targets_version(), 1u);
  EXPECT_EQ(repo.repo().timestamp_version(), 1u);

  // A second process (the CLI, a restarted coordinator) sees the same state.
  auto again = TestRepository::Must(Repository::Open(repo.dir(), repo.keys(), repo.clock()));
  EXPECT_EQ(again->root_version(), 1u);
  EXPECT_EQ(again->targets_version(), 1u);
  EXPECT_EQ(again->snapshot_version(), 1u);
  ASSERT_EQ(again->targets().count("models/m"), 1u);
  EXPECT_EQ(again->targets().at("models/m").sha256(), t.sha256());
  ASSERT_TRUE(again->Publish().ok());
  EXPECT_EQ(again->targets_version(), 2u);
  EXPECT_EQ(again->InitRoot().code(), StatusCode::kAlreadyExists);
}

TEST(RepositoryTest, RejectsBadTargetSpecs) {
  TestRepository repo;
  TargetSpec spec;
  spec.name = "models/m";
  spec.kind = v1::TARGET_KIND_BASE_MODEL;
  spec.file = repo.scratch() / "missing";
  EXPECT_EQ(repo.repo().AddTarget(spec).status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(WriteFileAtomic(repo.scratch() / "f", Bytes(10, 1)).ok());
  spec.file = repo.scratch() / "f";
  spec.max_chunk_bytes = (uint64_t{4} << 20) + 1;
  EXPECT_EQ(repo.repo().AddTarget(spec).status().code(), StatusCode::kInvalidArgument);
  spec.max_chunk_bytes = 4;
  spec.chunk_boundaries = {11};
  EXPECT_EQ(repo.repo().AddTarget(spec).status().code(), StatusCode::kInvalidArgument);
  spec.chunk_boundaries = {};
  spec.kind = v1::TARGET_KIND_UNSPECIFIED;
  EXPECT_EQ(repo.repo().AddTarget(spec).status().code(), StatusCode::kInvalidArgument);
  v1::DirectorAssignment a;
  EXPECT_EQ(repo.repo().Assign(a).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace flotilla::ota
