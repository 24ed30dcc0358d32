// Long-running rollouts: director assignments re-signed before they expire (so a device
// that checks late still verifies one), and abort / rollback that are not rate-capped.
#include <gtest/gtest.h>

#include "flotilla/ota/update_check.h"
#include "flotilla/ota/verifier.h"
#include "rollout_test_support.h"

namespace flotilla::coordinator::testing {
namespace {

using DS = DeviceRolloutStatus;
using std::chrono::hours;
constexpr auto kOk = v1::OTA_OUTCOME_SUCCESS;

class RolloutLifecycleTest : public RolloutFixture {
 protected:
  void SetUp() override {
    Release(1);
    target_ = Release(2);
  }

  // A device's full TUF + director check against the repository at the clock's time.
  Result<std::optional<ota::VerifiedAssignment>> DeviceCheck(const std::string& id) {
    FLT_ASSIGN_OR_RETURN(auto verifier, ota::UpdateVerifier::Create(repo_.ProvisionedState()));
    ota::DirectoryMetadataSource source(repo_.dir());
    return ota::RunUpdateCheck(verifier, source, ota::DeviceIdentity{id, {}, "test-soc"},
                               repo_.clock().NowUnixMillis());
  }

  int64_t DirectorExpiry(const std::string& id) {
    Bytes wire = TestRepository::Must(ReadFileBytes(repo_.dir() / ota::DeviceDirectorPath(id)));
    return TestRepository::Must(ota::ParseTrustedMetadata(wire, v1::ROLE_TYPE_DIRECTOR)).expires_ms();
  }

  // A report bound to an explicit deployment and nonce (the assignment the device acted on).
  Status ReportWithNonce(const std::string& id, const std::string& deployment, const std::string& nonce) {
    v1::OtaReport r;
    r.set_deployment_id(deployment);
    r.set_nonce(nonce);
    r.set_outcome(kOk);
    r.set_target_name(target_.name());
    r.set_target_sha256(target_.sha256());
    auto sealed = protocol::SealMessage(*signers_.at(id), r, "coordinator", repo_.clock(), *random_);
    if (!sealed.ok()) return sealed.status();
    return manager_->HandleReport(*sealed);
  }

  // Timestamp (1 day) and snapshot (7 days) expire too; the service re-signs them.
  void RefreshRepositoryMetadata() { ASSERT_TRUE(repo_.repo().Publish().ok()); }

  v1::TargetInfo target_;
};

TEST_F(RolloutLifecycleTest, DirectorAssignmentsAreReSignedBeforeTheyExpire) {
  options_.director_refresh_window = hours(48);
  Open();
  AddDevices(10);
  const auto r = Create({100}, Thresholds());
  Tick();
  const auto members = Assigned(r.id);
  ASSERT_EQ(members.size(), 10u);
  ReportAll({members.begin(), members.begin() + 4}, kOk);
  const std::string late = members[7];  // still installing when its assignment is renewed
  const auto original = Director(late);
  ASSERT_TRUE(original.has_value());
  const int64_t first_expiry = DirectorExpiry(late);
  EXPECT_EQ(first_expiry, repo_.clock().NowUnixMillis() + std::chrono::milliseconds(hours(24 * 7)).count());

  // 3 days left: outside the 2-day window, nothing happens.
  repo_.clock().Advance(hours(24 * 4));
  Tick();
  EXPECT_EQ(manager_->stats().assignments_refreshed, 0u);
  EXPECT_EQ(Director(late)->nonce(), original->nonce());

  // 47 h left: every assignment (finished devices too) is re-signed, without hints.
  repo_.clock().Advance(hours(25));
  hints_.clear();
  HintedDevices();
  hints_.clear();
  Tick();
  EXPECT_EQ(manager_->stats().assignments_refreshed, 10u);
  EXPECT_TRUE(HintedDevices().empty()) << "a renewed assignment is not news for the device";
  const auto renewed = Director(late);
  ASSERT_TRUE(renewed.has_value());
  EXPECT_NE(renewed->nonce(), original->nonce());
  EXPECT_EQ(renewed->deployment_id(), original->deployment_id());
  ASSERT_EQ(renewed->targets_size(), 1);
  EXPECT_EQ(renewed->targets(0).sha256(), target_.sha256());
  EXPECT_GT(DirectorExpiry(late), first_expiry);
  Tick();
  EXPECT_EQ(manager_->stats().assignments_refreshed, 10u) << "renewed once, not every tick";

  // Past the original expiry a device checking now verifies a valid assignment...
  repo_.clock().Advance(hours(24 * 3));
  ASSERT_GT(repo_.clock().NowUnixMillis(), first_expiry);
  RefreshRepositoryMetadata();
  Tick();
  for (const std::string& id : {late, members[0]}) {
    auto check = DeviceCheck(id);
    ASSERT_TRUE(check.ok()) << id << ": " << check.status().ToString();
    ASSERT_TRUE(check->has_value()) << id;
    ASSERT_EQ((*check)->targets.size(), 1u);
    EXPECT_EQ((*check)->targets[0].sha256(), target_.sha256());
  }
  // ...and a report bound to the replaced nonce (the device began before the renewal)
  // still counts, while an unrelated nonce does not.
  EXPECT_EQ(ReportWithNonce(late, r.deployment_id, "forged-nonce-xxx").code(), StatusCode::kPermissionDenied);
  ASSERT_TRUE(ReportWithNonce(late, r.deployment_id, original->nonce()).ok());
  EXPECT_EQ(Get(r.id).counts.succeeded, 5u);
}

TEST_F(RolloutLifecycleTest, WithoutReSigningALateDeviceFindsAnExpiredAssignment) {
  options_.director_refresh_window = std::chrono::milliseconds(0);
  Open();
  AddDevices(3);
  const auto r = Create({100}, Thresholds());
  Tick();
  ASSERT_EQ(Assigned(r.id).size(), 3u);
  repo_.clock().Advance(hours(24 * 8));
  RefreshRepositoryMetadata();
  Tick();
  EXPECT_EQ(manager_->stats().assignments_refreshed, 0u);
  auto check = DeviceCheck(DeviceName(0));
  ASSERT_FALSE(check.ok());
  EXPECT_NE(check.status().message().find("expired"), std::string::npos) << check.status().ToString();
}

TEST_F(RolloutLifecycleTest, ReSigningLeavesADeviceFileThatAnotherRolloutOwns) {
  options_.director_refresh_window = hours(48);
  Open();
  repo_.AddTarget("models/other", Bytes(5000, 3), 1);
  ASSERT_TRUE(repo_.repo().Publish().ok());
  AddDevices(4);
  const auto first = Create({100}, Thresholds());
  Tick();
  ReportAll(Assigned(first.id), kOk);
  // A second rollout (another target) takes over every device's director file.
  RolloutSpec spec = MakeRolloutSpec("other", {"models/other"}, {}, {100}, Thresholds());
  const auto second = TestRepository::Must(manager_->Create(spec));
  Tick();
  ASSERT_EQ(Assigned(second.id).size(), 4u);
  repo_.clock().Advance(hours(24 * 6));
  Tick();
  EXPECT_EQ(manager_->stats().assignments_refreshed, 4u) << "only the second rollout's assignments";
  for (int i = 0; i < 4; ++i) {
    auto a = Director(DeviceName(i));
    ASSERT_TRUE(a.has_value());
    EXPECT_EQ(a->deployment_id(), second.deployment_id) << DeviceName(i);
  }
  repo_.clock().Advance(hours(24 * 5 + 1));
  Tick();
  EXPECT_EQ(manager_->stats().assignments_refreshed, 8u) << "the first rollout stopped looking";
}

// The rate cap limits new assignments; taking the fleet back must not crawl.
TEST_F(RolloutLifecycleTest, RollbackReassignsTheWholeFleetInOneTickDespiteTheRateCap) {
  Open();
  AddDevices(100);
  const auto r = Create({100}, Thresholds(), {}, /*rate=*/1);
  for (size_t i = 1; i <= 100; ++i) {
    Tick();
    ASSERT_EQ(Assigned(r.id).size(), i) << "one new assignment per minute";
    repo_.clock().Advance(std::chrono::seconds(61));
  }
  const auto members = Assigned(r.id);
  ReportAll({members.begin(), members.begin() + 60}, kOk);  // 40 still installing
  ASSERT_TRUE(manager_->Rollback(r.id, "regression").ok());
  hints_.clear();
  Tick();  // inside the same minute as the last assignment
  const auto s = Get(r.id);
  EXPECT_EQ(s.state, RolloutState::kRolledBack);
  EXPECT_EQ(s.counts.reverting, 100u);
  EXPECT_EQ(HintedDevices().size(), 100u);
  const v1::TargetInfo& release = repo_.repo().targets().at(kTarget);
  for (const auto& d : members) {
    auto a = Director(d);
    ASSERT_TRUE(a.has_value()) << d;
    EXPECT_EQ(a->deployment_id(), r.deployment_id + "-rollback");
    ASSERT_EQ(a->targets_size(), 1);
    EXPECT_EQ(a->targets(0).release_counter(), release.release_counter());
  }
}

TEST_F(RolloutLifecycleTest, AbortRetractsEveryUnreportedAssignmentInOneTickDespiteTheRateCap) {
  Open();
  AddDevices(30);
  const auto r = Create({100}, Thresholds(), {}, /*rate=*/1);
  for (int i = 0; i < 30; ++i) {
    Tick();
    repo_.clock().Advance(std::chrono::seconds(61));
  }
  const auto members = Assigned(r.id);
  ASSERT_EQ(members.size(), 30u);
  ReportAll({members.begin(), members.begin() + 5}, kOk);
  ASSERT_TRUE(manager_->Abort(r.id).ok());
  Tick();
  const auto s = Get(r.id);
  EXPECT_EQ(s.counts.retracted, 25u);
  EXPECT_EQ(s.counts.succeeded, 5u);
  for (const auto& d : WithStatus(r.id, DS::kRetracted)) {
    auto a = Director(d);
    ASSERT_TRUE(a.has_value());
    EXPECT_EQ(a->targets_size(), 0) << d;
  }
}

}  // namespace
}  // namespace flotilla::coordinator::testing
