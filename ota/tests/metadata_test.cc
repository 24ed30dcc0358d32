// Metadata signing and the device-side TUF/Uptane checks (reference/ota.md 6.5, tests 2-5).
#include "flotilla/ota/metadata.h"

#include <gtest/gtest.h>

#include "flotilla/core/file.h"
#include "flotilla/ota/repository_layout.h"
#include "flotilla/ota/testing/test_repository.h"
#include "flotilla/ota/update_check.h"
#include "flotilla/ota/verifier.h"
#include "flotilla/security/hash.h"

namespace flotilla::ota {
namespace {

using namespace std::chrono_literals;
using testing::MakeKeys;
using testing::TestRepository;

const DeviceIdentity kDevice{"dev-1", {"canary"}, "test-soc"};

Bytes Content(size_t n, uint8_t seed) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(seed + i * 7 + (i >> 9));
  return b;
}

class MetadataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    repo_ = std::make_unique<TestRepository>();
    base_ = repo_->AddTarget("models/tiny/base", Content(10000, 1), 3, {1000, 5000});
    ASSERT_TRUE(repo_->repo().Publish().ok());
    repo_->AssignDevice("dev-1", {"models/tiny/base"});
  }

  Result<std::optional<VerifiedAssignment>> Check(UpdateVerifier& v, int64_t at_ms = 0) {
    DirectoryMetadataSource src(repo_->dir());
    return RunUpdateCheck(v, src, kDevice, at_ms ? at_ms : repo_->clock().NowUnixMillis());
  }
  UpdateVerifier NewVerifier() { return TestRepository::Must(UpdateVerifier::Create(repo_->ProvisionedState())); }
  Bytes Read(const std::string& rel) { return TestRepository::Must(ReadFileBytes(repo_->dir() / rel)); }
  void Write(const std::string& rel, ByteSpan b) { ASSERT_TRUE(WriteFileAtomic(repo_->dir() / rel, b).ok()); }
  v1::Metadata Body(const std::string& rel, v1::RoleType role) {
    return TestRepository::Must(ParseTrustedMetadata(Read(rel), role));
  }

  std::unique_ptr<TestRepository> repo_;
  v1::TargetInfo base_;
};

TEST_F(MetadataTest, ValidRepositoryVerifiesEndToEnd) {
  UpdateVerifier v = NewVerifier();
  auto r = Check(v);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_TRUE(r->has_value());
  ASSERT_EQ((*r)->targets.size(), 1u);
  EXPECT_EQ((*r)->targets[0].sha256(), base_.sha256());
  EXPECT_EQ((*r)->deployment_id, "dep-1");
  EXPECT_EQ(ReleaseCounter(v.state(), "models/tiny/base"), 3u);
  // Chunks cut at the caller's boundaries and sub-split at 4096.
  std::vector<uint64_t> offsets;
  for (const auto& c : base_.chunks()) offsets.push_back(c.offset());
  EXPECT_EQ(offsets, (std::vector<uint64_t>{0, 1000, 5000, 9096}));
  EXPECT_EQ(ToHex(AsBytes(base_.sha256())), ToHex(security::Sha256(Content(10000, 1))));
}

TEST_F(MetadataTest, NoAssignmentMeansNothingToDo) {
  UpdateVerifier v = NewVerifier();
  DirectoryMetadataSource src(repo_->dir());
  auto r = RunUpdateCheck(v, src, DeviceIdentity{"dev-2", {}, "test-soc"}, repo_->clock().NowUnixMillis());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(r->has_value());
}

TEST_F(MetadataTest, BadSignatureRejected) {
  Bytes ts = Read(TimestampMetadataPath());
  auto sm = TestRepository::Must(ParseSignedMetadata(ts, v1::ROLE_TYPE_TIMESTAMP));
  std::string sig = sm.signatures(0).signature();
  sig[sig.size() / 2] ^= 0x01;
  sm.mutable_signatures(0)->set_signature(sig);
  Write(TimestampMetadataPath(), AsBytes(sm.SerializeAsString()));
  UpdateVerifier v = NewVerifier();
  auto r = Check(v);
  EXPECT_EQ(r.status().code(), StatusCode::kUnauthenticated) << r.status().ToString();
  EXPECT_TRUE(v.state().timestamp().empty());
}

TEST_F(MetadataTest, TamperedSignedBytesRejected) {
  Bytes ts = Read(TimestampMetadataPath());
  auto sm = TestRepository::Must(ParseSignedMetadata(ts, v1::ROLE_TYPE_TIMESTAMP));
  v1::Metadata body = TestRepository::Must(ParseMetadataBody(sm.signed_(), v1::ROLE_TYPE_TIMESTAMP));
  body.set_expires_ms(body.expires_ms() + 1);
  sm.set_signed_(body.SerializeAsString());
  Write(TimestampMetadataPath(), AsBytes(sm.SerializeAsString()));
  UpdateVerifier v = NewVerifier();
  EXPECT_EQ(Check(v).status().code(), StatusCode::kUnauthenticated);
}

TEST_F(MetadataTest, UnsignedAndWrongRoleSignaturesRejected) {
  v1::Metadata body = Body(TimestampMetadataPath(), v1::ROLE_TYPE_TIMESTAMP);
  v1::SignedMetadata unsigned_md;
  unsigned_md.set_signed_(body.SerializeAsString());
  Write(TimestampMetadataPath(), AsBytes(unsigned_md.SerializeAsString()));
  UpdateVerifier v = NewVerifier();
  auto r = Check(v);
  EXPECT_EQ(r.status().code(), StatusCode::kUnauthenticated) << r.status().ToString();
  EXPECT_NE(r.status().message().find("unsigned"), std::string::npos);

  // Signed, but by the snapshot key: a valid signature from the wrong role does not count.
  Bytes wrong = TestRepository::Must(SignMetadata(body, repo_->keys().Signers(v1::ROLE_TYPE_SNAPSHOT)));
  Write(TimestampMetadataPath(), wrong);
  UpdateVerifier v2 = NewVerifier();
  EXPECT_EQ(Check(v2).status().code(), StatusCode::kUnauthenticated);
}

TEST_F(MetadataTest, DuplicateKeyIdCountsOnce) {
  // Root threshold is 2 of 3: one root key signing twice must not reach it.
  v1::Metadata root_body = Body(RootMetadataPath(1), v1::ROLE_TYPE_ROOT);
  const auto* k = repo_->keys().Signers(v1::ROLE_TYPE_ROOT)[0];
  auto sm = TestRepository::Must(ParseSignedMetadata(TestRepository::Must(SignMetadata(root_body, {k})),
                                                     v1::ROLE_TYPE_ROOT));
  *sm.add_signatures() = sm.signatures(0);
  ASSERT_EQ(sm.signatures_size(), 2);
  Status s = CheckThreshold(sm, root_body.root(), v1::ROLE_TYPE_ROOT);
  EXPECT_EQ(s.code(), StatusCode::kUnauthenticated);
  EXPECT_NE(s.message().find("1 valid signature"), std::string::npos) << s.message();
  // Two distinct keys do reach it.
  auto two = TestRepository::Must(ParseSignedMetadata(
      TestRepository::Must(SignMetadata(root_body, {k, repo_->keys().Signers(v1::ROLE_TYPE_ROOT)[1]})),
      v1::ROLE_TYPE_ROOT));
  EXPECT_TRUE(CheckThreshold(two, root_body.root(), v1::ROLE_TYPE_ROOT).ok());
}

TEST_F(MetadataTest, UnknownKeyTypeRejected) {
  v1::Metadata root_body = Body(RootMetadataPath(1), v1::ROLE_TYPE_ROOT);
  v1::RootMetadata weird = root_body.root();
  weird.mutable_keys(0)->set_key_type(static_cast<v1::KeyType>(7));
  Status s = ValidateRoot(weird);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("unknown key type"), std::string::npos);
}

TEST_F(MetadataTest, UnknownKeyTypeSignatureDoesNotCount) {
  v1::Metadata root_body = Body(RootMetadataPath(1), v1::ROLE_TYPE_ROOT);
  v1::RootMetadata weird = root_body.root();
  const auto* ts_key = repo_->keys().Signers(v1::ROLE_TYPE_TIMESTAMP)[0];
  for (auto& k : *weird.mutable_keys()) {
    if (k.key_id() == ts_key->public_key().KeyId()) k.set_key_type(static_cast<v1::KeyType>(9));
  }
  auto sm = TestRepository::Must(ParseSignedMetadata(Read(TimestampMetadataPath()), v1::ROLE_TYPE_TIMESTAMP));
  EXPECT_TRUE(CheckThreshold(sm, root_body.root(), v1::ROLE_TYPE_TIMESTAMP).ok());
  EXPECT_EQ(CheckThreshold(sm, weird, v1::ROLE_TYPE_TIMESTAMP).code(), StatusCode::kUnauthenticated);
}

TEST_F(MetadataTest, OversizedAndGarbageMetadataGetClearErrors) {
  Bytes big(MaxMetadataBytes(v1::ROLE_TYPE_TIMESTAMP) + 1, 0x41);
  auto r = ParseSignedMetadata(big, v1::ROLE_TYPE_TIMESTAMP);
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(r.status().message().find("timestamp metadata"), std::string::npos);
  Bytes garbage = {0xff, 0xff, 0xff, 0x01};
  EXPECT_EQ(ParseSignedMetadata(garbage, v1::ROLE_TYPE_SNAPSHOT).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseSignedMetadata({}, v1::ROLE_TYPE_SNAPSHOT).status().code(), StatusCode::kInvalidArgument);
  // A body whose role differs from the one expected.
  v1::Metadata body = Body(TimestampMetadataPath(), v1::ROLE_TYPE_TIMESTAMP);
  EXPECT_EQ(ParseMetadataBody(body.SerializeAsString(), v1::ROLE_TYPE_SNAPSHOT).status().code(),
            StatusCode::kInvalidArgument);
}

TEST_F(MetadataTest, DirectorMustAgreeWithTargets) {
  UpdateVerifier v = NewVerifier();
  ASSERT_TRUE(Check(v).ok());
  auto assign = [&](auto mutate) {
    v1::DirectorAssignment a;
    a.set_device_id("dev-1");
    a.set_deployment_id("dep-x");
    *a.add_targets() = testing::AssignedFrom(base_);
    mutate(a);
    return TestRepository::Must(repo_->repo().Assign(a));
  };
  struct Case {
    const char* what;
    std::function<void(v1::DirectorAssignment&)> mutate;
  };
  const std::vector<Case> cases = {
      {"SHA-256", [](auto& a) { a.mutable_targets(0)->mutable_sha256()->at(0) ^= 1; }},
      {"length", [](auto& a) { a.mutable_targets(0)->set_length(a.targets(0).length() + 1); }},
      {"release counter", [](auto& a) { a.mutable_targets(0)->set_release_counter(99); }},
      {"not in the signed targets", [](auto& a) { a.mutable_targets(0)->set_name("models/other"); }},
      {"another device", [](auto& a) { a.set_device_id("dev-2"); }},
  };
  for (const auto& c : cases) {
    Bytes wire = assign(c.mutate);
    auto r = v.VerifyDirector(wire, kDevice);
    EXPECT_FALSE(r.ok()) << c.what;
    EXPECT_NE(r.status().message().find(c.what), std::string::npos) << c.what << ": " << r.status().ToString();
  }
  // Hardware compatibility: this device's class is not listed.
  Bytes ok = assign([](auto&) {});
  auto r = v.VerifyDirector(ok, DeviceIdentity{"dev-1", {}, "other-soc"});
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("hardware class"), std::string::npos);
  EXPECT_TRUE(v.VerifyDirector(ok, kDevice).ok());
  // Signed by a key that is not the director's.
  auto body = TestRepository::Must(ParseTrustedMetadata(ok, v1::ROLE_TYPE_DIRECTOR));
  Bytes forged = TestRepository::Must(SignMetadata(body, repo_->keys().Signers(v1::ROLE_TYPE_TIMESTAMP)));
  EXPECT_EQ(v.VerifyDirector(forged, kDevice).status().code(), StatusCode::kUnauthenticated);
}

TEST_F(MetadataTest, CohortAssignmentApplies) {
  v1::DirectorAssignment a;
  a.set_cohort("canary");
  *a.add_targets() = testing::AssignedFrom(base_);
  ASSERT_TRUE(repo_->repo().Assign(a).ok());
  UpdateVerifier v = NewVerifier();
  DirectoryMetadataSource src(repo_->dir());
  auto r = RunUpdateCheck(v, src, DeviceIdentity{"dev-9", {"canary"}, "test-soc"}, repo_->clock().NowUnixMillis());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_TRUE(r->has_value());
  auto r2 = RunUpdateCheck(v, src, DeviceIdentity{"dev-9", {"beta"}, "test-soc"}, repo_->clock().NowUnixMillis());
  ASSERT_TRUE(r2.ok());
  EXPECT_FALSE(r2->has_value());
}

TEST_F(MetadataTest, AdapterBaseMismatchRefused) {
  auto adapter = repo_->AddTarget("adapters/chat", Content(3000, 9), 1, {}, 4096, v1::TARGET_KIND_ADAPTER,
                                  Bytes(base_.sha256().begin(), base_.sha256().end()));
  EXPECT_TRUE(CheckBaseCompatibility(adapter, AsBytes(base_.sha256())).ok());
  auto other = security::Sha256(Content(5, 5));
  Status s = CheckBaseCompatibility(adapter, other);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("installed base"), std::string::npos);
  EXPECT_TRUE(CheckBaseCompatibility(base_, other).ok());
  // An adapter without a base hash cannot even be registered.
  TargetSpec spec;
  spec.file = repo_->scratch() / "src-0";
  spec.name = "adapters/bad";
  spec.kind = v1::TARGET_KIND_ADAPTER;
  EXPECT_EQ(repo_->repo().AddTarget(spec).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(MetadataTest, ExpiredMetadataAbortsTheCycle) {
  const int64_t now = repo_->clock().NowUnixMillis();
  struct Case {
    const char* role;
    int64_t at;
  };
  // Timestamp expires after 1 day, snapshot 7 d, director 7 d, targets 90 d, root 365 d.
  const std::vector<Case> cases = {{"timestamp", now + 25 * 3600'000LL},
                                   {"root", now + 366LL * 24 * 3600'000}};
  for (const auto& c : cases) {
    UpdateVerifier v = NewVerifier();
    auto r = Check(v, c.at);
    EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded) << c.role << ": " << r.status().ToString();
    EXPECT_NE(r.status().message().find(c.role), std::string::npos) << r.status().ToString();
  }
  // Snapshot and targets expiry: keep a fresh timestamp, move time past them.
  repo_->clock().Advance(8 * 24h);
  ASSERT_TRUE(TestRepository::Must(repo_->repo().RefreshTimestamp(0ms, true)));
  UpdateVerifier v = NewVerifier();
  auto r = Check(v);
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(r.status().message().find("snapshot"), std::string::npos) << r.status().ToString();
}

TEST_F(MetadataTest, ClockMovedBackwardsAborts) {
  UpdateVerifier v = NewVerifier();
  const int64_t now = repo_->clock().NowUnixMillis();
  ASSERT_TRUE(Check(v, now + 1000).ok());
  auto r = Check(v, now);
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("clock moved backwards"), std::string::npos);
}

TEST_F(MetadataTest, TimestampRefreshedBeforeExpiry) {
  const uint64_t v0 = repo_->repo().timestamp_version();
  EXPECT_FALSE(TestRepository::Must(repo_->repo().RefreshTimestamp(1h)));
  repo_->clock().Advance(23h + 30min);
  EXPECT_TRUE(TestRepository::Must(repo_->repo().RefreshTimestamp(1h)));
  EXPECT_EQ(repo_->repo().timestamp_version(), v0 + 1);
  UpdateVerifier v = NewVerifier();
  EXPECT_TRUE(Check(v, repo_->clock().NowUnixMillis() + 2 * 3600'000).ok());
}

TEST_F(MetadataTest, LowerVersionsAndReleaseCountersRejected) {
  UpdateVerifier v = NewVerifier();
  const Bytes old_ts = Read(TimestampMetadataPath());
  ASSERT_TRUE(Check(v).ok());
  repo_->AddTarget("models/tiny/base", Content(10000, 2), 4);
  ASSERT_TRUE(repo_->repo().Publish().ok());
  repo_->AssignDevice("dev-1", {"models/tiny/base"}, "dep-2");
  ASSERT_TRUE(Check(v).ok());
  EXPECT_EQ(ReleaseCounter(v.state(), "models/tiny/base"), 4u);
  // Replay the old timestamp (and with it the old snapshot/targets): rollback attack.
  Write(TimestampMetadataPath(), old_ts);
  auto r = Check(v);
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("lower than trusted"), std::string::npos) << r.status().ToString();

  // The repository itself refuses a lower release counter...
  TargetSpec spec;
  spec.file = repo_->scratch() / "src-0";
  spec.name = "models/tiny/base";
  spec.kind = v1::TARGET_KIND_BASE_MODEL;
  spec.release_counter = 2;
  EXPECT_EQ(repo_->repo().AddTarget(spec).status().code(), StatusCode::kInvalidArgument);
  // ...and a device that has installed counter 7 refuses counter 4 even from a valid
  // director + targets pair (director compromise).
  v1::OtaTrustedState st = v.state();
  st.mutable_release_counters(0)->set_counter(7);
  ASSERT_TRUE(st.SerializeAsString().size() > 0);
  UpdateVerifier v2 = TestRepository::Must(UpdateVerifier::Create(st));
  ASSERT_TRUE(v2.BeginCycle(repo_->clock().NowUnixMillis() + 10).ok());
  Bytes director = Read(DeviceDirectorPath("dev-1"));
  auto d = v2.VerifyDirector(director, kDevice);
  EXPECT_EQ(d.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(d.status().message().find("lower than installed"), std::string::npos);
  // Director versions never go back either.
  const Bytes dir_v2 = Read(DeviceDirectorPath("dev-1"));
  repo_->AssignDevice("dev-1", {"models/tiny/base"}, "dep-3");
  ASSERT_TRUE(v.BeginCycle(repo_->clock().NowUnixMillis() + 20).ok());
  ASSERT_TRUE(v.VerifyDirector(Read(DeviceDirectorPath("dev-1")), kDevice).ok());
  EXPECT_EQ(v.VerifyDirector(dir_v2, kDevice).status().code(), StatusCode::kFailedPrecondition);
}

TEST_F(MetadataTest, MixAndMatchRejected) {
  UpdateVerifier v = NewVerifier();
  ASSERT_TRUE(Check(v).ok());
  const Bytes targets_v1 = Read(TargetsMetadataPath(1));
  repo_->AddTarget("models/tiny/base", Content(10000, 3), 5);
  ASSERT_TRUE(repo_->repo().Publish().ok());
  // A mirror serves the old targets file under the new snapshot.
  Write(TargetsMetadataPath(2), targets_v1);
  auto r = Check(v);
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << r.status().ToString();
  // Even with a matching hash, an older targets version than the snapshot names is refused.
  UpdateVerifier v2 = NewVerifier();
  ASSERT_TRUE(v2.BeginCycle(repo_->clock().NowUnixMillis()).ok());
  ASSERT_TRUE(v2.UpdateTimestamp(Read(TimestampMetadataPath())).ok());
  ASSERT_TRUE(v2.UpdateSnapshot(Read(SnapshotMetadataPath(2))).ok());
  EXPECT_FALSE(v2.UpdateTargets(targets_v1).ok());
}

TEST_F(MetadataTest, RootRotationV1ToV3WithMixedThresholds) {
  UpdateVerifier v = NewVerifier();
  ASSERT_TRUE(Check(v).ok());
  // v2: replace root key 0 (2-of-3); v3: two new keys and threshold 3 of 4.
  RepositoryKeys k2 = repo_->keys();
  k2.keys[v1::ROLE_TYPE_ROOT][0] = testing::NewKey();
  ASSERT_TRUE(repo_->repo().RotateRoot(k2).ok());
  RepositoryKeys k3 = k2;
  k3.keys[v1::ROLE_TYPE_ROOT][1] = testing::NewKey();
  k3.keys[v1::ROLE_TYPE_ROOT].push_back(testing::NewKey());
  k3.thresholds[v1::ROLE_TYPE_ROOT] = 3;
  ASSERT_TRUE(repo_->repo().RotateRoot(k3).ok());
  ASSERT_TRUE(repo_->repo().RefreshTimestamp(0ms, true).ok());
  auto r = Check(v);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(v.RootVersion(), 3u);

  // A v4 signed only by the new keys (not the v3 threshold) is refused.
  v1::Metadata body = Body(RootMetadataPath(3), v1::ROLE_TYPE_ROOT);
  body.set_version(4);
  RepositoryKeys k4 = MakeKeys(3, 2);
  Bytes only_new = TestRepository::Must(SignMetadata(body, k4.Signers(v1::ROLE_TYPE_ROOT)));
  EXPECT_EQ(v.UpdateRoot(only_new).code(), StatusCode::kUnauthenticated);
  // Signed by the old threshold but with a skipped version.
  v1::Metadata b5 = body;
  b5.set_version(5);
  Bytes skipped = TestRepository::Must(SignMetadata(b5, k3.Signers(v1::ROLE_TYPE_ROOT)));
  EXPECT_EQ(v.UpdateRoot(skipped).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(v.RootVersion(), 3u);
}

TEST_F(MetadataTest, NewRootMustAlsoMeetItsOwnThreshold) {
  UpdateVerifier v = NewVerifier();
  ASSERT_TRUE(Check(v).ok());
  // v2 lists three fresh root keys but is signed only by the old ones.
  v1::Metadata body = Body(RootMetadataPath(1), v1::ROLE_TYPE_ROOT);
  body.set_version(2);
  RepositoryKeys fresh = MakeKeys(3, 2);
  v1::RootMetadata& root = *body.mutable_root();
  for (auto& rk : *root.mutable_roles()) {
    if (rk.role() != v1::ROLE_TYPE_ROOT) continue;
    rk.clear_key_ids();
    for (const auto* k : fresh.Signers(v1::ROLE_TYPE_ROOT)) {
      rk.add_key_ids(k->public_key().KeyId());
      *root.add_keys() = ToPublicKeyProto(k->public_key());
    }
  }
  ASSERT_TRUE(ValidateRoot(root).ok());
  Bytes old_only = TestRepository::Must(SignMetadata(body, repo_->keys().Signers(v1::ROLE_TYPE_ROOT)));
  Status s = v.UpdateRoot(old_only);
  EXPECT_EQ(s.code(), StatusCode::kUnauthenticated);
  EXPECT_NE(s.ToString().find("root N+1"), std::string::npos) << s.ToString();
}

TEST_F(MetadataTest, TimestampKeyRotationRecoversFromFastForward) {
  UpdateVerifier v = NewVerifier();
  ASSERT_TRUE(Check(v).ok());
  // The online timestamp key leaks; the attacker signs timestamp version 1000.
  v1::Metadata ts = Body(TimestampMetadataPath(), v1::ROLE_TYPE_TIMESTAMP);
  ts.set_version(1000);
  Bytes evil = TestRepository::Must(SignMetadata(ts, repo_->keys().Signers(v1::ROLE_TYPE_TIMESTAMP)));
  const Bytes good = Read(TimestampMetadataPath());
  Write(TimestampMetadataPath(), evil);
  ASSERT_TRUE(Check(v).ok());
  Write(TimestampMetadataPath(), good);
  EXPECT_EQ(Check(v).status().code(), StatusCode::kFailedPrecondition);  // pinned at 1000

  // Recovery: root v2 with a new timestamp key; the trusted timestamp is dropped.
  RepositoryKeys k2 = repo_->keys();
  k2.keys[v1::ROLE_TYPE_TIMESTAMP] = {testing::NewKey()};
  ASSERT_TRUE(repo_->repo().RotateRoot(k2).ok());
  ASSERT_TRUE(repo_->repo().RefreshTimestamp(0ms, true).ok());
  auto r = Check(v);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_LT(TestRepository::Must(ParseTrustedMetadata(AsBytes(v.state().timestamp()), v1::ROLE_TYPE_TIMESTAMP))
                .version(),
            1000u);
  // The leaked key no longer signs anything the device accepts.
  Write(TimestampMetadataPath(), evil);
  EXPECT_EQ(Check(v).status().code(), StatusCode::kUnauthenticated);
}

TEST_F(MetadataTest, TrustedStateSurvivesSerialization) {
  UpdateVerifier v = NewVerifier();
  ASSERT_TRUE(Check(v).ok());
  std::string bytes = v.state().SerializeAsString();
  v1::OtaTrustedState back;
  ASSERT_TRUE(back.ParseFromString(bytes));
  UpdateVerifier v2 = TestRepository::Must(UpdateVerifier::Create(back));
  ASSERT_NE(v2.trusted_targets(), nullptr);
  EXPECT_EQ(v2.trusted_targets()->version(), 1u);
  EXPECT_TRUE(Check(v2).ok());
}

}  // namespace
}  // namespace flotilla::ota
