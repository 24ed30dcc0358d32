// Role key files: plain and passphrase-encrypted PEM, 0600, init/load/rotate.
#include "flotilla/ota/keys.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "flotilla/core/file.h"
#include "flotilla/ota/metadata.h"
#include "flotilla/ota/testing/test_repository.h"

namespace flotilla::ota {
namespace {

using testing::TestRepository;
namespace fs = std::filesystem;

constexpr uint32_t kFastIterations = 1000;  // tests only; the default is 600,000

unsigned Mode(const fs::path& p) {
  struct stat st {};
  EXPECT_EQ(::stat(p.c_str(), &st), 0);
  return st.st_mode & 0777;
}

TEST(KeysTest, PlainAndEncryptedKeyFilesRoundTrip) {
  auto dir = TestRepository::Must(TempDir::Create("flotilla-keys"));
  auto key = TestRepository::Must(security::EcdsaPrivateKey::Generate());
  ASSERT_TRUE(WriteKeyFile(dir.path() / "plain.pem", key, "").ok());
  ASSERT_TRUE(WriteKeyFile(dir.path() / "enc.pem", key, "correct horse", kFastIterations).ok());
  EXPECT_EQ(Mode(dir.path() / "plain.pem"), 0600u);
  EXPECT_EQ(Mode(dir.path() / "enc.pem"), 0600u);
  auto text = TestRepository::Must(ReadFileString(dir.path() / "enc.pem"));
  EXPECT_NE(text.find("FLOTILLA ENCRYPTED PRIVATE KEY"), std::string::npos);
  EXPECT_EQ(text.find("BEGIN PRIVATE KEY"), std::string::npos);
  EXPECT_EQ(text.find("BEGIN EC PRIVATE KEY"), std::string::npos);

  auto plain = TestRepository::Must(ReadKeyFile(dir.path() / "plain.pem", ""));
  auto enc = TestRepository::Must(ReadKeyFile(dir.path() / "enc.pem", "correct horse"));
  EXPECT_EQ(plain.public_key().KeyId(), key.public_key().KeyId());
  EXPECT_EQ(enc.public_key().KeyId(), key.public_key().KeyId());
  EXPECT_EQ(ReadKeyFile(dir.path() / "enc.pem", "wrong").status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(ReadKeyFile(dir.path() / "enc.pem", "").status().code(), StatusCode::kFailedPrecondition);
  // Any flipped character in the sealed blob is detected.
  std::string tampered = text;
  tampered[text.find('\n') + 20] = tampered[text.find('\n') + 20] == 'A' ? 'B' : 'A';
  ASSERT_TRUE(WriteFileAtomic(dir.path() / "bad.pem", tampered, 0600).ok());
  EXPECT_FALSE(ReadKeyFile(dir.path() / "bad.pem", "correct horse").ok());
}

TEST(KeysTest, InitLoadAndRotate) {
  auto tmp = TestRepository::Must(TempDir::Create("flotilla-keys"));
  const fs::path dir = tmp.path() / "keys";
  KeyInitOptions o;
  o.passphrase = "pw";
  o.pbkdf2_iterations = kFastIterations;
  auto keys = TestRepository::Must(InitKeyDirectory(dir, o));
  EXPECT_EQ(keys.Signers(v1::ROLE_TYPE_ROOT).size(), 3u);
  EXPECT_EQ(keys.Threshold(v1::ROLE_TYPE_ROOT), 2u);
  for (auto r : {v1::ROLE_TYPE_TARGETS, v1::ROLE_TYPE_SNAPSHOT, v1::ROLE_TYPE_TIMESTAMP, v1::ROLE_TYPE_DIRECTOR}) {
    EXPECT_EQ(keys.Signers(r).size(), 1u);
  }
  EXPECT_EQ(Mode(dir / "root-1.pem"), 0600u);
  EXPECT_EQ(Mode(dir), 0700u);
  EXPECT_EQ(InitKeyDirectory(dir, o).status().code(), StatusCode::kAlreadyExists);
  EXPECT_FALSE(LoadKeyDirectory(dir, "nope").ok());

  const std::string old_id = keys.Signers(v1::ROLE_TYPE_TIMESTAMP)[0]->public_key().KeyId();
  auto new_id = TestRepository::Must(RotateKey(dir, v1::ROLE_TYPE_TIMESTAMP, "pw", kFastIterations));
  EXPECT_NE(new_id, old_id);
  EXPECT_TRUE(fs::exists(dir / "retired" / "timestamp-1.pem"));
  auto reloaded = TestRepository::Must(LoadKeyDirectory(dir, "pw"));
  ASSERT_EQ(reloaded.Signers(v1::ROLE_TYPE_TIMESTAMP).size(), 1u);
  EXPECT_EQ(reloaded.Signers(v1::ROLE_TYPE_TIMESTAMP)[0]->public_key().KeyId(), new_id);
  EXPECT_EQ(RotateKey(dir, v1::ROLE_TYPE_TIMESTAMP, "bad", kFastIterations).status().code(),
            StatusCode::kUnauthenticated);
  EXPECT_EQ(ParseRoleName("snapshot").value_or(v1::ROLE_TYPE_UNSPECIFIED), v1::ROLE_TYPE_SNAPSHOT);
  EXPECT_FALSE(ParseRoleName("admin").ok());
}

TEST(KeysTest, RepositoryFromKeyDirectorySignsVerifiableRoot) {
  auto tmp = TestRepository::Must(TempDir::Create("flotilla-keys"));
  KeyInitOptions o;
  auto keys = TestRepository::Must(InitKeyDirectory(tmp.path() / "keys", o));
  ::flotilla::testing::FakeClock clock;
  auto repo = TestRepository::Must(Repository::Open(tmp.path() / "repo", keys, clock));
  ASSERT_TRUE(repo->InitRoot().ok());
  Bytes root = TestRepository::Must(repo->CurrentRoot());
  auto body = TestRepository::Must(ParseTrustedMetadata(root, v1::ROLE_TYPE_ROOT));
  auto sm = TestRepository::Must(ParseSignedMetadata(root, v1::ROLE_TYPE_ROOT));
  EXPECT_TRUE(CheckThreshold(sm, body.root(), v1::ROLE_TYPE_ROOT).ok());
  EXPECT_EQ(body.root().keys_size(), 7);
}

}  // namespace
}  // namespace flotilla::ota
