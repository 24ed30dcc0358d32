// OtaClient against a real repository over loopback HTTP (reference/ota.md 6.5: tests 1,
// 3, 7 and 8 at the device level). Real SQLite journal, real files, temp dirs.
#include <gtest/gtest.h>

#include "flotilla/core/file.h"
#include "flotilla/ota/repository_layout.h"
#include "flotilla/protocol/envelope.h"
#include "flotilla/protocol/payload.h"
#include "flotilla/security/hash.h"
#include "ota_test_support.h"

namespace flotilla::ota::testing {
namespace {

using namespace std::chrono_literals;

constexpr size_t kSize = 8 * kChunk + 1000;  // 9 chunks, the last one short

std::string Hex(const std::string& raw) { return ToHex(AsBytes(raw)); }

class OtaClientTest : public ::testing::Test {
 protected:
  void InstallV1() {
    v1_ = h_.Release(ModelBytes(kSize), 1, "dep-1");
    auto client = h_.NewClient();
    auto r = client->RunCycle();
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_EQ(r->outcome, v1::OTA_OUTCOME_SUCCESS) << r->error;
    ASSERT_EQ(OtaHarness::CurrentSha(h_.device_dir()), Hex(v1_.sha256()));
    h_.server().ResetStats();
    h_.reports().delivered.clear();
  }
  CycleResult Run(bool allow_full_restart = true) {
    auto client = h_.NewClient(h_.device_dir(), nullptr, allow_full_restart);
    auto r = client->RunCycle();
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : CycleResult{};
  }
  void FlipBit(const v1::TargetInfo& t, uint64_t offset) {
    Bytes b = TestRepository::Must(ReadFileBytes(h_.ArtifactFile(t)));
    b[offset] ^= 0x10;
    ASSERT_TRUE(WriteFileAtomic(h_.ArtifactFile(t), b).ok());
  }

  OtaHarness h_;
  v1::TargetInfo v1_;
};

TEST_F(OtaClientTest, FirstInstallCommitsAndSendsSignedReport) {
  v1_ = h_.Release(ModelBytes(kSize), 1, "dep-1");
  auto client = h_.NewClient();
  auto r = client->RunCycle();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->outcome, v1::OTA_OUTCOME_SUCCESS) << r->error;
  EXPECT_TRUE(r->report_delivered);
  EXPECT_EQ(r->bytes_downloaded, kSize);
  EXPECT_EQ(OtaHarness::CurrentSha(h_.device_dir()), Hex(v1_.sha256()));
  EXPECT_EQ(client->state(), OtaState::kIdle);
  ASSERT_EQ(h_.reports().delivered.size(), 1u);
  const v1::OtaReport& rep = h_.reports().delivered[0];
  EXPECT_EQ(rep.outcome(), v1::OTA_OUTCOME_SUCCESS);
  EXPECT_EQ(rep.deployment_id(), "dep-1");
  EXPECT_EQ(rep.nonce(), "nonce-dep-1");
  EXPECT_EQ(rep.health().attempts(), 1u);
  // The coordinator opens the envelope with the device's public key.
  security::KeyRing ring;
  ring.Add(kDeviceId, h_.device_key().public_key());
  protocol::OpenOptions oo;
  oo.recipients = {"coordinator"};
  oo.max_age = std::chrono::hours(24 * 365 * 100);
  oo.max_future_skew = std::chrono::hours(24 * 365 * 100);
  auto opened = protocol::Open(h_.reports().envelopes[0], ring, h_.repo().clock(), oo);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  EXPECT_EQ(opened->sender_id, kDeviceId);
  // Idempotent: a second cycle finds the target installed and does nothing.
  h_.server().ResetStats();
  auto again = client->RunCycle();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->outcome, v1::OTA_OUTCOME_UNSPECIFIED);
  EXPECT_EQ(h_.server().stats().partial_responses + h_.server().stats().full_responses, 0u);
  auto history = TestRepository::Must(client->journal().History());
  EXPECT_NE(std::find(history.begin(), history.end(), "SWITCH:staged"), history.end());
}

TEST_F(OtaClientTest, NewVersionGoesToOtherSlotAndFetchesOnlyChangedChunks) {
  InstallV1();
  auto v2 = h_.Release(ModelBytes(kSize, 3, {2, 6}), 2, "dep-2");
  CycleResult r = Run();
  ASSERT_EQ(r.outcome, v1::OTA_OUTCOME_SUCCESS) << r.error;
  EXPECT_EQ(OtaHarness::CurrentSha(h_.device_dir()), Hex(v2.sha256()));
  // Two changed chunks were downloaded; seven were reused from slot A.
  EXPECT_EQ(r.bytes_downloaded, 2 * kChunk);
  EXPECT_EQ(h_.server().stats().body_bytes, 2 * kChunk);
  EXPECT_EQ(std::filesystem::read_symlink(h_.device_dir() / "models/current"), "B");
  // The previous version stays in slot A.
  auto a = TestRepository::Must(ReadFileBytes(h_.device_dir() / "models/A/artifact"));
  EXPECT_EQ(ToHex(security::Sha256(a)), Hex(v1_.sha256()));
}

TEST_F(OtaClientTest, BitFlipInAnyChunkRejectedBeforeSwitch) {
  InstallV1();
  for (uint64_t offset : {uint64_t{5}, 4 * kChunk + 17, kSize - 1}) {
    SCOPED_TRACE("flip at " + std::to_string(offset));
    auto v = h_.Release(ModelBytes(kSize, static_cast<int>(offset % 200) + 1, {0, 4, 8}), 2 + offset, "dep-f");
    FlipBit(v, offset);
    CycleResult r = Run();
    EXPECT_EQ(r.outcome, v1::OTA_OUTCOME_FAILURE);
    EXPECT_NE(r.error.find("does not match its SHA-256"), std::string::npos) << r.error;
    EXPECT_EQ(OtaHarness::CurrentSha(h_.device_dir()), Hex(v1_.sha256()));
    ASSERT_FALSE(h_.reports().delivered.empty());
    EXPECT_EQ(h_.reports().delivered.back().outcome(), v1::OTA_OUTCOME_FAILURE);
    EXPECT_EQ(h_.reports().delivered.back().state(), v1::OTA_STATE_DOWNLOAD);
  }
}

TEST_F(OtaClientTest, TruncatedArtifactRejected) {
  InstallV1();
  auto v2 = h_.Release(ModelBytes(kSize, 5, {0, 1, 2, 3, 4, 5, 6, 7, 8}), 2, "dep-2");
  std::filesystem::resize_file(h_.ArtifactFile(v2), kSize - 3000);
  CycleResult r = Run();
  EXPECT_EQ(r.outcome, v1::OTA_OUTCOME_FAILURE);
  EXPECT_EQ(OtaHarness::CurrentSha(h_.device_dir()), Hex(v1_.sha256()));
}

TEST_F(OtaClientTest, OverLengthStreamRejected) {
  InstallV1();
  auto v2 = h_.Release(ModelBytes(kSize, 5, {0, 1, 2, 3, 4, 5, 6, 7, 8}), 2, "dep-2");
  ArtifactServerFaults f;
  f.path_prefix = "artifacts/";
  f.ignore_range = true;         // 200 with the whole body...
  f.extra_bytes = 1 << 20;       // ...and a megabyte more than the target length
  h_.server().SetFaults(f);
  CycleResult r = Run();
  EXPECT_EQ(r.outcome, v1::OTA_OUTCOME_FAILURE);
  EXPECT_NE(r.error.find("longer than"), std::string::npos) << r.error;
  EXPECT_LE(r.bytes_downloaded, kSize);  // the endless-data cap
  EXPECT_EQ(OtaHarness::CurrentSha(h_.device_dir()), Hex(v1_.sha256()));
}

TEST_F(OtaClientTest, InterruptedDownloadResumesRefetchingAtMostOneChunk) {
  InstallV1();
  auto v2 = h_.Release(ModelBytes(kSize, 7, {0, 1, 2, 3, 4, 5, 6, 7, 8}), 2, "dep-2");
  for (uint64_t drop : {uint64_t{2 * kChunk + 100}, uint64_t{kChunk - 1}, uint64_t{3 * kChunk + 4000}}) {
    h_.server().ResetStats();
    ArtifactServerFaults f;
    f.path_prefix = "artifacts/";
    f.drop_after_bytes = drop;
    f.drop_count = 2;  // two interrupted responses
    h_.server().SetFaults(f);
    auto dir = TestRepository::Must(TempDir::Create("flotilla-ota-resume"));
    // Device with v1 installed: copy the installed state.
    std::filesystem::copy(h_.device_dir(), dir.path(), std::filesystem::copy_options::recursive |
                                                          std::filesystem::copy_options::copy_symlinks);
    auto client = h_.NewClient(dir.path());
    auto r = client->RunCycle();
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r->outcome, v1::OTA_OUTCOME_SUCCESS) << r->error;
    EXPECT_EQ(OtaHarness::CurrentSha(dir.path()), Hex(v2.sha256()));
    // Each interruption costs at most the partial chunk in flight.
    const uint64_t served = h_.server().stats().body_bytes;
    EXPECT_LE(served, kSize + 2 * kChunk) << "drop at " << drop;
    EXPECT_EQ(h_.server().stats().partial_responses, 3u);
    EXPECT_EQ(h_.sleeps().size() % 2, 0u);
  }
}

TEST_F(OtaClientTest, EtagChangeRestartsTheDownload) {
  InstallV1();
  auto v2 = h_.Release(ModelBytes(kSize, 9, {0, 1, 2, 3, 4, 5, 6, 7, 8}), 2, "dep-2");
  ArtifactServerFaults f;
  f.path_prefix = "artifacts/";
  f.drop_after_bytes = 5 * kChunk + 10;
  f.drop_count = 1;
  h_.server().SetFaults(f);
  // After the drop the representation "changes" (new ETag): If-Range makes it a 200.
  ArtifactServerFaults changed;
  changed.path_prefix = "artifacts/";
  changed.etag_override = "\"another-representation\"";
  h_.sleeps().clear();
  // The first attempt is interrupted; the crash-point hook switches the ETag before the retry.
  bool armed = true;
  auto client2 = h_.NewClient(h_.device_dir(), [&](std::string_view p) {
    if (armed && p == "journal:DOWNLOAD:failure:after") {
      armed = false;
      h_.server().SetFaults(changed);
    }
  });
  auto r = client2->RunCycle();
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->outcome, v1::OTA_OUTCOME_SUCCESS) << r->error;
  EXPECT_FALSE(armed);
  EXPECT_EQ(h_.server().stats().full_responses, 1u);  // the restart
  EXPECT_EQ(OtaHarness::CurrentSha(h_.device_dir()), Hex(v2.sha256()));
  EXPECT_GE(h_.server().stats().body_bytes, kSize + 5 * kChunk);
}

TEST_F(OtaClientTest, ServerWithoutRangeRestartsOrFailsByPolicy) {
  InstallV1();
  auto v2 = h_.Release(ModelBytes(kSize, 11, {0, 1, 2, 3, 4, 5, 6, 7, 8}), 2, "dep-2");
  for (bool allow : {false, true}) {
    SCOPED_TRACE(allow ? "full restart allowed" : "metered: no full restart");
    auto dir = TestRepository::Must(TempDir::Create("flotilla-ota-norange"));
    std::filesystem::copy(h_.device_dir(), dir.path(), std::filesystem::copy_options::recursive |
                                                          std::filesystem::copy_options::copy_symlinks);
    ArtifactServerFaults f;
    f.path_prefix = "artifacts/";
    f.drop_after_bytes = 3 * kChunk + 5;
    f.drop_count = 1;
    f.ignore_range = true;
    h_.server().SetFaults(f);
    h_.server().ResetStats();
    auto client = h_.NewClient(dir.path(), nullptr, allow);
    auto r = client->RunCycle();
    ASSERT_TRUE(r.ok());
    if (allow) {
      EXPECT_EQ(r->outcome, v1::OTA_OUTCOME_SUCCESS) << r->error;
      EXPECT_EQ(OtaHarness::CurrentSha(dir.path()), Hex(v2.sha256()));
      EXPECT_EQ(h_.server().stats().full_responses, 2u);
    } else {
      EXPECT_EQ(r->outcome, v1::OTA_OUTCOME_FAILURE);
      EXPECT_NE(r->error.find("policy forbids a full restart"), std::string::npos) << r->error;
      EXPECT_EQ(OtaHarness::CurrentSha(dir.path()), Hex(v1_.sha256()));
      EXPECT_EQ(h_.server().stats().full_responses, 2u);  // the dropped one and the refused one
    }
  }
}

TEST_F(OtaClientTest, NotFoundIsFatalWithoutRetries) {
  InstallV1();
  auto v2 = h_.Release(ModelBytes(kSize, 13, {1}), 2, "dep-2");
  std::filesystem::remove(h_.ArtifactFile(v2));
  h_.sleeps().clear();
  CycleResult r = Run();
  EXPECT_EQ(r.outcome, v1::OTA_OUTCOME_FAILURE);
  EXPECT_NE(r.error.find("HTTP 404"), std::string::npos) << r.error;
  EXPECT_TRUE(h_.sleeps().empty());
  EXPECT_EQ(h_.reports().delivered.back().outcome(), v1::OTA_OUTCOME_FAILURE);
}

TEST_F(OtaClientTest, ServerErrorStormBacksOffThenReportsFailure) {
  InstallV1();
  auto v2 = h_.Release(ModelBytes(kSize, 15, {1}), 2, "dep-2");
  ArtifactServerFaults f;
  f.path_prefix = "artifacts/";
  f.error_status = 503;
  f.error_count = -1;
  h_.server().SetFaults(f);
  h_.sleeps().clear();
  h_.server().ResetStats();
  CycleResult r = Run();
  EXPECT_EQ(r.outcome, v1::OTA_OUTCOME_FAILURE);
  EXPECT_NE(r.error.find("HTTP 503"), std::string::npos) << r.error;
  EXPECT_NE(r.error.find("giving up after 4 attempts"), std::string::npos) << r.error;
  // 4 attempts, 3 back-offs in [d/2, d] for d = 8, 16, 32 ms.
  ASSERT_EQ(h_.sleeps().size(), 3u);
  const int64_t caps[] = {8, 16, 32};
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_GE(h_.sleeps()[i].count(), caps[i] / 2);
    EXPECT_LE(h_.sleeps()[i].count(), caps[i]);
  }
  EXPECT_EQ(h_.server().stats().error_responses, 4u);
  EXPECT_EQ(OtaHarness::CurrentSha(h_.device_dir()), Hex(v1_.sha256()));
  EXPECT_EQ(h_.reports().delivered.back().outcome(), v1::OTA_OUTCOME_FAILURE);
}

TEST_F(OtaClientTest, SlowRetrievalIsAbortedThenReported) {
  InstallV1();
  auto v2 = h_.Release(ModelBytes(kSize, 25, {0, 1, 2, 3, 4, 5, 6, 7, 8}), 2, "dep-2");
  ArtifactServerFaults f;
  f.path_prefix = "artifacts/";
  f.bytes_per_second = 8 * 1024;  // a trickle
  h_.server().SetFaults(f);
  h_.fetcher_options().min_bytes_per_second = 64 * 1024;
  h_.fetcher_options().min_speed_grace = std::chrono::milliseconds(150);
  const auto start = std::chrono::steady_clock::now();
  CycleResult r = Run();
  EXPECT_EQ(r.outcome, v1::OTA_OUTCOME_FAILURE);
  EXPECT_NE(r.error.find("slower than 65536 B/s"), std::string::npos) << r.error;
  EXPECT_LT(r.bytes_downloaded, kSize / 2);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  EXPECT_EQ(OtaHarness::CurrentSha(h_.device_dir()), Hex(v1_.sha256()));
  (void)v2;
}

TEST_F(OtaClientTest, HealthFailureRollsBackWithinBoundedTries) {
  InstallV1();
  auto v2 = h_.Release(ModelBytes(kSize, 17, {3}), 2, "dep-2");
  h_.health().fail_first = -1;
  h_.health().checked_files.clear();
  CycleResult r = Run();
  EXPECT_EQ(r.outcome, v1::OTA_OUTCOME_ROLLED_BACK);
  EXPECT_EQ(h_.health().checked_files.size(), 3u);
  EXPECT_EQ(OtaHarness::CurrentSha(h_.device_dir()), Hex(v1_.sha256()));
  ASSERT_FALSE(h_.reports().delivered.empty());
  EXPECT_EQ(h_.reports().delivered.back().outcome(), v1::OTA_OUTCOME_ROLLED_BACK);
  EXPECT_EQ(h_.reports().delivered.back().health().attempts(), 3u);
  // The rolled-back target is not retried automatically by the next cycle.
  h_.health().fail_first = 0;
  CycleResult again = Run();
  EXPECT_EQ(again.outcome, v1::OTA_OUTCOME_UNSPECIFIED);
  EXPECT_EQ(OtaHarness::CurrentSha(h_.device_dir()), Hex(v1_.sha256()));
  (void)v2;
}

TEST_F(OtaClientTest, HealthPassingOnALaterTryCommits) {
  InstallV1();
  auto v2 = h_.Release(ModelBytes(kSize, 19, {3}), 2, "dep-2");
  h_.health().fail_first = 2;
  CycleResult r = Run();
  EXPECT_EQ(r.outcome, v1::OTA_OUTCOME_SUCCESS) << r.error;
  EXPECT_EQ(h_.reports().delivered.back().health().attempts(), 3u);
  EXPECT_EQ(OtaHarness::CurrentSha(h_.device_dir()), Hex(v2.sha256()));
}

TEST_F(OtaClientTest, FailedReportDoesNotRollBack) {
  InstallV1();
  auto v2 = h_.Release(ModelBytes(kSize, 21, {3}), 2, "dep-2");
  h_.reports().fail_next = 2;
  CycleResult r = Run();
  EXPECT_EQ(r.outcome, v1::OTA_OUTCOME_SUCCESS) << r.error;
  EXPECT_FALSE(r.report_delivered);
  EXPECT_EQ(OtaHarness::CurrentSha(h_.device_dir()), Hex(v2.sha256()));
  // Next cycle: delivery fails again, still no rollback, nothing re-downloaded.
  CycleResult r2 = Run();
  EXPECT_FALSE(r2.report_delivered);
  EXPECT_EQ(OtaHarness::CurrentSha(h_.device_dir()), Hex(v2.sha256()));
  // Third cycle: the pending report goes out, byte-identical to the first attempt's.
  CycleResult r3 = Run();
  EXPECT_TRUE(r3.report_delivered);
  ASSERT_EQ(h_.reports().delivered.size(), 1u);
  EXPECT_EQ(h_.reports().delivered[0].outcome(), v1::OTA_OUTCOME_SUCCESS);
  EXPECT_EQ(h_.reports().refused, 2);
  EXPECT_EQ(OtaHarness::CurrentSha(h_.device_dir()), Hex(v2.sha256()));
}

TEST_F(OtaClientTest, ExpiredMetadataAbortsTheCycle) {
  InstallV1();
  h_.Release(ModelBytes(kSize, 23, {3}), 2, "dep-2");
  h_.repo().clock().Advance(std::chrono::hours(25));  // timestamp (1 day) expired
  CycleResult r = Run();
  EXPECT_EQ(r.outcome, v1::OTA_OUTCOME_UNSPECIFIED);
  EXPECT_NE(r.error.find("expired"), std::string::npos) << r.error;
  EXPECT_EQ(h_.server().stats().partial_responses, 0u);
  EXPECT_EQ(OtaHarness::CurrentSha(h_.device_dir()), Hex(v1_.sha256()));
  // The repository re-signs the timestamp: the update proceeds.
  ASSERT_TRUE(h_.repo().repo().RefreshTimestamp(std::chrono::hours(1)).ok());
  CycleResult r2 = Run();
  EXPECT_EQ(r2.outcome, v1::OTA_OUTCOME_SUCCESS) << r2.error;
}

TEST_F(OtaClientTest, AdapterForAnotherBaseIsRefused) {
  InstallV1();
  // Register an adapter target (kind adapter, base = some other model).
  Bytes other_base = ToBytes(std::string(32, 'x'));
  auto t = h_.repo().AddTarget(kTargetName, ModelBytes(3000, 1, {0}), 2, {}, kChunk, v1::TARGET_KIND_ADAPTER,
                               other_base);
  ASSERT_TRUE(h_.repo().repo().Publish().ok());
  h_.repo().AssignDevice(kDeviceId, {kTargetName}, "dep-ad");
  CycleResult r = Run();
  EXPECT_EQ(r.outcome, v1::OTA_OUTCOME_FAILURE);
  EXPECT_NE(r.error.find("installed base"), std::string::npos) << r.error;
  EXPECT_EQ(h_.reports().delivered.back().state(), v1::OTA_STATE_CHECK);
  EXPECT_EQ(OtaHarness::CurrentSha(h_.device_dir()), Hex(v1_.sha256()));
  (void)t;
}

TEST(OtaStateMachineTest, TransitionTableIsClosedAndNamed) {
  const OtaState all[] = {OtaState::kIdle,   OtaState::kCheck,  OtaState::kDownload, OtaState::kVerify,
                          OtaState::kStage,  OtaState::kSwitch, OtaState::kHealth,   OtaState::kCommit,
                          OtaState::kRollback, OtaState::kReport};
  for (OtaState s : all) EXPECT_NE(ToString(s), "?");
  EXPECT_EQ(NextState(OtaState::kIdle, OtaEvent::kStart), OtaState::kCheck);
  EXPECT_EQ(NextState(OtaState::kHealth, OtaEvent::kUnhealthy), OtaState::kRollback);
  EXPECT_EQ(NextState(OtaState::kSwitch, OtaEvent::kFail), std::nullopt);  // no failing after the switch
  EXPECT_EQ(NextState(OtaState::kReport, OtaEvent::kReportDone), OtaState::kIdle);
  EXPECT_EQ(NextState(OtaState::kCommit, OtaEvent::kRolledBack), std::nullopt);
}

}  // namespace
}  // namespace flotilla::ota::testing
