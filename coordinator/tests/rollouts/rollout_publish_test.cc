#include "flotilla/coordinator/rollout_publish.h"

#include <gtest/gtest.h>

#include "flotilla/core/file.h"
#include "flotilla/model/gguf.h"
#include "flotilla/model/model_file.h"
#include "flotilla/ota/repository_layout.h"
#include "flotilla/ota/testing/test_repository.h"
#include "flotilla/security/hash.h"

namespace flotilla::coordinator {
namespace {

using ota::testing::TestRepository;

class PublishTest : public ::testing::Test {
 protected:
  PublishTest() {
    model_ = repo_.scratch() / "tiny.gguf";
    auto cfg = TestRepository::Must(model::NamedConfig("tiny"));
    EXPECT_TRUE(model::WriteRandomModel(cfg, {}, model_).ok());
  }
  TestRepository repo_;
  std::filesystem::path model_;
};

TEST_F(PublishTest, ChunksStartAtEveryTensorAndStayUnderTheCap) {
  PublishRequest req;
  req.file = model_;
  req.name = "models/tiny/base";
  req.release_counter = 3;
  req.hardware_compat = {"pi5"};
  req.max_chunk_bytes = 8192;  // small, to exercise sub-splitting
  auto t = PublishArtifact(repo_.repo(), req);
  ASSERT_TRUE(t.ok()) << t.status().ToString();

  auto gguf = TestRepository::Must(model::GgufFile::Open(model_));
  std::set<uint64_t> starts;
  uint64_t expect_offset = 0;
  Bytes file = TestRepository::Must(ReadFileBytes(model_));
  for (const auto& c : t->chunks()) {
    EXPECT_EQ(c.offset(), expect_offset) << "chunks cover the file contiguously";
    EXPECT_LE(c.length(), req.max_chunk_bytes);
    EXPECT_GT(c.length(), 0u);
    auto d = security::Sha256(ByteSpan(file.data() + c.offset(), c.length()));
    EXPECT_EQ(AsStringView(d), c.sha256());
    starts.insert(c.offset());
    expect_offset += c.length();
  }
  EXPECT_EQ(expect_offset, file.size());
  EXPECT_TRUE(starts.count(gguf->data_offset())) << "the header is its own chunk";
  for (const auto& tensor : gguf->tensors()) {
    EXPECT_TRUE(starts.count(gguf->data_offset() + tensor.offset)) << tensor.name << " does not start a chunk";
  }
  // Published: signed targets carry it, the artifact is stored content-addressed.
  EXPECT_EQ(repo_.repo().targets().at("models/tiny/base").sha256(), t->sha256());
  EXPECT_EQ(repo_.repo().targets_version(), 1u);
  EXPECT_TRUE(std::filesystem::exists(repo_.dir() / ota::ArtifactPath(AsBytes(t->sha256()))));
  EXPECT_EQ(t->release_counter(), 3u);
}

TEST_F(PublishTest, AdapterBaseHashComesFromTheFileOrTheFlag) {
  model::GgufWriter w;
  w.SetString("general.architecture", "llama");
  w.SetString("general.type", "adapter");
  const std::string base_hex(64, 'a');
  w.SetString("flotilla.adapter.base_sha256", base_hex);
  std::vector<float> vals(64, 0.5f);
  const int64_t ne[] = {64};
  ASSERT_TRUE(w.AddTensorFromF32("blk.0.attn_q.weight.lora_a", model::GgmlType::kF32, ne, vals).ok());
  const auto adapter = repo_.scratch() / "adapter.gguf";
  ASSERT_TRUE(w.WriteFile(adapter).ok());

  PublishRequest req;
  req.file = adapter;
  req.name = "adapters/tiny/chat";
  req.kind = v1::TARGET_KIND_ADAPTER;
  req.release_counter = 1;
  auto t = PublishArtifact(repo_.repo(), req);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(ToHex(AsBytes(t->base_model_sha256())), base_hex);

  req.base_sha256_hex = std::string(64, 'b');
  req.release_counter = 2;
  t = PublishArtifact(repo_.repo(), req);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(ToHex(AsBytes(t->base_model_sha256())), req.base_sha256_hex);

  req.base_sha256_hex = "xyz";
  EXPECT_EQ(PublishArtifact(repo_.repo(), req).status().code(), StatusCode::kInvalidArgument);
  req.base_sha256_hex.clear();
  req.kind = v1::TARGET_KIND_BASE_MODEL;
  req.base_sha256_hex = base_hex;
  EXPECT_EQ(PublishArtifact(repo_.repo(), req).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(PublishTest, RefusesNonGgufLowerCountersAndCarriesGoldenPrompts) {
  const auto junk = repo_.scratch() / "junk.bin";
  ASSERT_TRUE(WriteFileAtomic(junk, std::string_view("not a model")).ok());
  PublishRequest req;
  req.file = junk;
  req.name = "models/tiny/base";
  EXPECT_EQ(PublishArtifact(repo_.repo(), req).status().code(), StatusCode::kInvalidArgument);

  const auto prompts = repo_.scratch() / "golden.json";
  ASSERT_TRUE(WriteFileAtomic(prompts, std::string_view(R"([{"prompt":"hi","expect":"hello"}])")).ok());
  req.file = model_;
  req.release_counter = 5;
  req.golden_prompts = prompts;
  auto t = PublishArtifact(repo_.repo(), req);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->custom(), R"([{"prompt":"hi","expect":"hello"}])");
  req.release_counter = 4;
  EXPECT_EQ(PublishArtifact(repo_.repo(), req).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(repo_.repo().targets_version(), 1u) << "nothing signed for a refused publish";
}

TEST_F(PublishTest, TimestampRefreshSignsOnlyWhenDue) {
  PublishRequest req;
  req.file = model_;
  req.name = "models/tiny/base";
  ASSERT_TRUE(PublishArtifact(repo_.repo(), req).ok());
  const uint64_t v = repo_.repo().timestamp_version();
  EXPECT_FALSE(*RefreshTimestamp(repo_.repo()));
  repo_.clock().Advance(std::chrono::hours(19));  // 1 day expiry, 6 h margin
  EXPECT_TRUE(*RefreshTimestamp(repo_.repo()));
  EXPECT_EQ(repo_.repo().timestamp_version(), v + 1);
  EXPECT_TRUE(*RefreshTimestamp(repo_.repo(), std::chrono::hours(1), /*force=*/true));
}

}  // namespace
}  // namespace flotilla::coordinator
