// ArtifactStore: content addressing, streaming writer, size cap, integrity on read.
#include "flotilla/coordinator/artifact_store.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>

#include "flotilla/core/file.h"
#include "flotilla/security/hash.h"
#include "store_test_util.h"

namespace flotilla::coordinator {
namespace {

using testutil::Must;

class ArtifactStoreTest : public ::testing::Test {
 protected:
  ArtifactStoreTest() : dir_(Must(TempDir::Create("flotilla-art"))), store_(Must(ArtifactStore::Open(dir_.path()))) {}
  TempDir dir_;
  std::unique_ptr<ArtifactStore> store_;
};

TEST_F(ArtifactStoreTest, PutNamesContentBySha256AndReadsItBack) {
  const Bytes data = ToBytes("hello artifacts");
  ArtifactInfo info = Must(store_->Put(data));
  EXPECT_EQ(info.sha256, ToHex(security::Sha256(data)));
  EXPECT_EQ(info.size, data.size());
  EXPECT_EQ(info.relative_path, "sha256/" + info.sha256.substr(0, 2) + "/" + info.sha256.substr(2));
  EXPECT_TRUE(std::filesystem::exists(dir_.path() / info.relative_path));
  EXPECT_EQ(Must(store_->Read(info.sha256)), data);
  EXPECT_TRUE(store_->Verify(info.sha256).ok());
  EXPECT_TRUE(store_->Contains(info.sha256));
  // Same content again: same name, still fine.
  EXPECT_EQ(Must(store_->Put(data)).sha256, info.sha256);
  // No temp files left behind.
  EXPECT_TRUE(std::filesystem::is_empty(dir_.path() / "tmp"));
}

TEST_F(ArtifactStoreTest, StreamingWriterMatchesOneShotAndChecksExpectedHash) {
  Bytes data(300000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 131 + 7);
  auto w = Must(store_->NewWriter(data.size()));
  for (size_t off = 0; off < data.size(); off += 4096) {
    ASSERT_TRUE(w->Append(ByteSpan(data).subspan(off, std::min<size_t>(4096, data.size() - off))).ok());
  }
  ArtifactInfo info = Must(w->Commit(ToHex(security::Sha256(data))));
  EXPECT_EQ(info.sha256, ToHex(security::Sha256(data)));
  auto w2 = Must(store_->NewWriter(100));
  ASSERT_TRUE(w2->Append(AsBytes("abc")).ok());
  auto bad = w2->Commit(std::string(64, '0'));
  EXPECT_EQ(bad.status().code(), StatusCode::kDataLoss);
  EXPECT_FALSE(store_->Contains(ToHex(security::Sha256(AsBytes("abc")))));
}

TEST_F(ArtifactStoreTest, WriterRefusesMoreThanItsCapAndLeavesNothing) {
  {
    auto w = Must(store_->NewWriter(10));
    ASSERT_TRUE(w->Append(AsBytes("12345")).ok());
    EXPECT_EQ(w->Append(AsBytes("678901")).code(), StatusCode::kResourceExhausted);
    EXPECT_FALSE(w->Commit().ok());
  }
  EXPECT_TRUE(std::filesystem::is_empty(dir_.path() / "tmp"));
}

TEST_F(ArtifactStoreTest, TamperedFileIsDetectedOnRead) {
  ArtifactInfo info = Must(store_->Put(AsBytes("precious model bytes")));
  ASSERT_TRUE(store_->Verify(info.sha256).ok());
  const auto path = store_->PathFor(info.sha256);
  {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f << "tampered model bytes";
  }
  EXPECT_EQ(store_->Read(info.sha256).status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(store_->Verify(info.sha256).code(), StatusCode::kDataLoss);  // the cache keys on size/mtime/inode
}

TEST_F(ArtifactStoreTest, RejectsMalformedNames) {
  EXPECT_EQ(store_->Read("../../etc/passwd").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Read(std::string(64, 'A')).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Read(std::string(64, 'a')).status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(store_->Contains("zz"));
}

TEST_F(ArtifactStoreTest, OpenRemovesTempFilesOfACrashedWriter) {
  ASSERT_TRUE(WriteFileAtomic(dir_.path() / "tmp" / "dead.part", std::string_view("partial")).ok());
  store_ = Must(ArtifactStore::Open(dir_.path()));
  EXPECT_TRUE(std::filesystem::is_empty(dir_.path() / "tmp"));
}

}  // namespace
}  // namespace flotilla::coordinator
