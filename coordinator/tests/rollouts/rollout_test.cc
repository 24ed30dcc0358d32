#include <gtest/gtest.h>

#include <algorithm>

#include "rollout_test_support.h"

namespace flotilla::coordinator::testing {
namespace {

using DS = DeviceRolloutStatus;
constexpr auto kOk = v1::OTA_OUTCOME_SUCCESS;
constexpr auto kBad = v1::OTA_OUTCOME_ROLLED_BACK;

std::vector<std::string> Take(const std::vector<std::string>& v, size_t n) {
  return {v.begin(), v.begin() + static_cast<std::ptrdiff_t>(std::min(n, v.size()))};
}

class RolloutTest : public RolloutFixture {
 protected:
  void SetUp() override {
    Release(1);
    target_ = Release(2);
    Open();
  }
  v1::TargetInfo target_;
};

TEST_F(RolloutTest, CanaryThenPhasesAdvanceOnTheSuccessThreshold) {
  AddDevices(100);
  const auto r = Create({10, 50, 100}, Thresholds(90), {DeviceName(0), DeviceName(1)});
  Tick();
  EXPECT_EQ(Assigned(r.id), (std::vector<std::string>{DeviceName(0), DeviceName(1)}));
  auto a = Director(DeviceName(0));
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->deployment_id(), r.deployment_id);
  ASSERT_EQ(a->targets_size(), 1);
  EXPECT_EQ(a->targets(0).sha256(), target_.sha256());
  EXPECT_FALSE(Director(DeviceName(2)).has_value()) << "a device outside the phase got an assignment";

  ASSERT_TRUE(Report(DeviceName(0), kOk).ok());
  EXPECT_EQ(Get(r.id).phase, 0u);
  ASSERT_TRUE(Report(DeviceName(1), kOk).ok());
  EXPECT_EQ(Get(r.id).phase, 1u) << "both canaries succeeded";
  EXPECT_EQ(Assigned(r.id).size(), 2u) << "only Tick assigns";

  Tick();
  auto phase1 = WithStatus(r.id, DS::kAssigned);
  ASSERT_EQ(phase1.size(), 10u);  // ceil(10% of 98 non-canary devices)
  ReportAll(Take(phase1, 8), kOk);
  Tick();
  EXPECT_EQ(Get(r.id).phase, 1u) << "8 of 10 is below 90%";
  EXPECT_EQ(Assigned(r.id).size(), 12u);
  ReportAll({phase1[8]}, kOk);
  EXPECT_EQ(Get(r.id).phase, 2u);
  Tick();
  EXPECT_EQ(Assigned(r.id).size(), 2u + 49u);  // ceil(50% of 98)
  EXPECT_EQ(Get(r.id).state, RolloutState::kActive);
}

TEST_F(RolloutTest, LastPhaseCompletesAndLateJoinersStillGetIt) {
  AddDevices(10);
  const auto r = Create({100}, Thresholds(100));
  Tick();
  ReportAll(Assigned(r.id), kOk);
  EXPECT_EQ(Get(r.id).state, RolloutState::kCompleted);
  AddDevices(3);
  Tick();
  EXPECT_EQ(Assigned(r.id).size(), 13u);
}

TEST_F(RolloutTest, HaltsOnFailureCountAndAssignsNoMore) {
  AddDevices(40);
  const auto r = Create({10, 100}, Thresholds(100, /*max_failures=*/2));
  Tick();
  auto phase0 = Assigned(r.id);
  ASSERT_EQ(phase0.size(), 4u);
  ASSERT_TRUE(Report(phase0[0], kBad).ok());
  EXPECT_EQ(Get(r.id).state, RolloutState::kActive);
  ASSERT_TRUE(Report(phase0[1], v1::OTA_OUTCOME_FAILURE).ok());
  auto s = Get(r.id);
  EXPECT_EQ(s.state, RolloutState::kHalted);
  EXPECT_NE(s.reason.find("2 devices failed"), std::string::npos) << s.reason;
  ReportAll({phase0[2], phase0[3]}, kOk);
  Tick();
  EXPECT_EQ(Assigned(r.id).size(), 4u);
  EXPECT_EQ(Get(r.id).state, RolloutState::kHalted);
  // Resume re-judges at once: the failures still count, so it halts again.
  ASSERT_TRUE(manager_->Resume(r.id).ok());
  EXPECT_EQ(Get(r.id).state, RolloutState::kHalted);
}

TEST_F(RolloutTest, FailurePercentageHaltsOnlyAfterTheMinimum) {
  AddDevices(100);
  const auto r = Create({20, 100}, Thresholds(100, 0, /*max_pct=*/20, /*min=*/10));
  Tick();
  auto members = Assigned(r.id);
  ASSERT_EQ(members.size(), 20u);
  ReportAll(Take(members, 3), kBad);  // 3 of 3 failed, but only 3 finished
  EXPECT_EQ(Get(r.id).state, RolloutState::kActive);
  ReportAll({members.begin() + 3, members.begin() + 9}, kOk);  // 3 of 9
  EXPECT_EQ(Get(r.id).state, RolloutState::kActive);
  ReportAll({members[9]}, kOk);  // 3 of 10 = 30% >= 20%
  auto s = Get(r.id);
  EXPECT_EQ(s.state, RolloutState::kHalted);
  EXPECT_EQ(s.counts.failed, 3u);
  EXPECT_EQ(s.counts.succeeded, 7u);
  EXPECT_NE(s.reason.find("3 of 10"), std::string::npos) << s.reason;
}

TEST_F(RolloutTest, RateCapBoundsAssignmentsPerMinute) {
  AddDevices(30);
  const auto r = Create({100}, Thresholds(), {}, /*rate=*/8);
  Tick();
  EXPECT_EQ(Assigned(r.id).size(), 8u);
  Tick();
  EXPECT_EQ(Assigned(r.id).size(), 8u);
  repo_.clock().Advance(std::chrono::seconds(30));
  Tick();
  EXPECT_EQ(Assigned(r.id).size(), 8u) << "still inside the first minute";
  repo_.clock().Advance(std::chrono::seconds(31));
  Tick();
  EXPECT_EQ(Assigned(r.id).size(), 16u);
  repo_.clock().Advance(std::chrono::minutes(10));
  Tick();
  EXPECT_EQ(Assigned(r.id).size(), 24u) << "the cap is a sliding minute, not a backlog";
}

TEST_F(RolloutTest, MembershipIsRandomFromTheSeamAndStableAcrossRestarts) {
  AddDevices(200);
  const auto r = Create({10, 100}, Thresholds());
  Tick();
  const auto first = Assigned(r.id);
  ASSERT_EQ(first.size(), 20u);
  std::vector<std::string> by_name;
  for (int i = 0; i < 20; ++i) by_name.push_back(DeviceName(i));
  EXPECT_NE(first, by_name) << "membership must not follow enrolment order";
  // Spread over the fleet (a uniform draw puts about half in each half).
  const auto low = std::count_if(first.begin(), first.end(), [](const std::string& d) { return d < DeviceName(100); });
  EXPECT_GT(low, 2);
  EXPECT_LT(low, 18);

  Open(/*seed=*/999);  // restart with a different random stream
  Tick();
  EXPECT_EQ(Assigned(r.id), first) << "draws are recorded, never redrawn";

  // The draw really comes from the Random seam: another stream, another membership.
  ASSERT_TRUE(manager_->Abort(r.id).ok());
  Tick();
  const auto r2 = Create({10, 100}, Thresholds());
  Tick();
  const auto second = Assigned(r2.id);
  ASSERT_EQ(second.size(), 20u);
  EXPECT_NE(second, first);
}

TEST_F(RolloutTest, LateJoinersCountInTheCurrentPhase) {
  AddDevices(100);
  const auto r = Create({10, 100}, Thresholds());
  Tick();
  EXPECT_EQ(Assigned(r.id).size(), 10u);
  AddDevices(100);
  Tick();
  const auto s = Get(r.id);
  EXPECT_EQ(s.counts.eligible, 200u);
  EXPECT_EQ(s.phase_quota, 20u);
  EXPECT_EQ(Assigned(r.id).size(), 20u);
  for (const auto& row : TestRepository::Must(manager_->Devices(r.id, DS::kAssigned))) EXPECT_EQ(row.phase, 0);
  // Devices whose hardware the targets do not list never join.
  AddDevices(50, "other-soc");
  Tick();
  EXPECT_EQ(Get(r.id).counts.eligible, 200u);
}

TEST_F(RolloutTest, PauseResumeAndAbortRetractsUnreportedAssignments) {
  AddDevices(50);
  const auto r = Create({10, 100}, Thresholds());
  Tick();
  auto phase0 = Assigned(r.id);
  ASSERT_EQ(phase0.size(), 5u);
  ASSERT_TRUE(manager_->Pause(r.id).ok());
  EXPECT_EQ(manager_->Pause(r.id).code(), StatusCode::kFailedPrecondition);
  ReportAll(phase0, kOk);  // recorded while paused, but no advance
  Tick();
  EXPECT_EQ(Get(r.id).state, RolloutState::kPaused);
  EXPECT_EQ(Get(r.id).phase, 0u);
  EXPECT_EQ(Assigned(r.id).size(), 5u);
  ASSERT_TRUE(manager_->Resume(r.id).ok());
  EXPECT_EQ(Get(r.id).phase, 1u);
  Tick();
  EXPECT_EQ(Assigned(r.id).size(), 50u);
  auto in_flight = WithStatus(r.id, DS::kAssigned);
  ASSERT_EQ(in_flight.size(), 45u);

  ASSERT_TRUE(manager_->Abort(r.id, "bad build").ok());
  Tick();
  const auto s = Get(r.id);
  EXPECT_EQ(s.state, RolloutState::kAborted);
  EXPECT_EQ(s.counts.retracted, 45u);
  EXPECT_EQ(s.counts.succeeded, 5u);
  auto retracted = Director(in_flight[0]);
  ASSERT_TRUE(retracted.has_value());
  EXPECT_EQ(retracted->targets_size(), 0) << "a retraction is an empty signed assignment";
  EXPECT_EQ(manager_->Resume(r.id).code(), StatusCode::kFailedPrecondition);
}

TEST_F(RolloutTest, RollbackReReleasesThePreviousArtifactToAssignedDevices) {
  const v1::TargetInfo v1_target = [&] {
    Bytes root = TestRepository::Must(ReadFileBytes(repo_.dir() / ota::TargetsMetadataPath(1)));
    return TestRepository::Must(ota::ParseTrustedMetadata(root, v1::ROLE_TYPE_TARGETS)).targets().targets(0);
  }();
  AddDevices(20);
  const auto r = Create({50, 100}, Thresholds());
  Tick();
  auto members = Assigned(r.id);
  ASSERT_EQ(members.size(), 10u);
  ReportAll(Take(members, 6), kOk);
  ASSERT_TRUE(manager_->Rollback(r.id, "perplexity regression").ok());
  EXPECT_EQ(Get(r.id).state, RolloutState::kRollingBack);
  Tick();
  const auto s = Get(r.id);
  EXPECT_EQ(s.state, RolloutState::kRolledBack);
  EXPECT_EQ(s.counts.reverting, 10u);

  const v1::TargetInfo& now = repo_.repo().targets().at(kTarget);
  EXPECT_EQ(now.sha256(), v1_target.sha256()) << "the previous bytes are published again";
  EXPECT_EQ(now.release_counter(), target_.release_counter() + 1) << "with a counter devices accept";
  ASSERT_EQ(now.chunks_size(), v1_target.chunks_size());
  for (const auto& d : members) {
    auto a = Director(d);
    ASSERT_TRUE(a.has_value());
    EXPECT_EQ(a->deployment_id(), r.deployment_id + "-rollback");
    ASSERT_EQ(a->targets_size(), 1);
    EXPECT_EQ(a->targets(0).sha256(), v1_target.sha256());
    EXPECT_EQ(a->targets(0).release_counter(), now.release_counter());
  }
  for (const auto& row : TestRepository::Must(manager_->Devices(r.id, DS::kPending))) {
    EXPECT_FALSE(Director(row.device_id).has_value()) << row.device_id << " was never in the rollout";
  }
  ASSERT_TRUE(Report(members[0], kOk).ok());
  EXPECT_EQ(Get(r.id).counts.reverted, 1u);
}

TEST_F(RolloutTest, RollbackNeedsAPreviousRelease) {
  repo_.AddTarget("models/other", Bytes(100, 1), 1);
  ASSERT_TRUE(repo_.repo().Publish().ok());
  AddDevices(3);
  RolloutSpec spec = MakeRolloutSpec("first", {"models/other"}, {}, {100}, Thresholds());
  auto r = TestRepository::Must(manager_->Create(spec));
  EXPECT_EQ(manager_->Rollback(r.id).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(Get(r.id).state, RolloutState::kActive);
}

TEST_F(RolloutTest, ACrashBetweenCommitAndSignatureIsFinishedAfterRestart) {
  AddDevices(20);
  Open(1, [](std::string_view point) {
    return point == "assign:committed" ? UnavailableError("simulated crash") : Status::Ok();
  });
  const auto r = Create({25, 100}, Thresholds());
  EXPECT_FALSE(manager_->Tick().ok());
  auto committed = Assigned(r.id);
  ASSERT_EQ(committed.size(), 5u);
  for (const auto& d : committed) EXPECT_FALSE(Director(d).has_value());
  EXPECT_TRUE(HintedDevices().empty());

  Open(2);  // restart, no fault
  Tick();
  EXPECT_EQ(Assigned(r.id), committed) << "no new draws, no extra devices";
  for (const auto& d : committed) EXPECT_TRUE(Director(d).has_value()) << d;
  EXPECT_EQ(HintedDevices(), std::set<std::string>(committed.begin(), committed.end()));
  ReportAll(committed, kOk);
  EXPECT_EQ(Get(r.id).phase, 1u);
}

TEST_F(RolloutTest, RollbackInterruptedAfterPublishingResumes) {
  AddDevices(4);
  const auto r = Create({100}, Thresholds());
  Tick();
  Open(1, [](std::string_view point) {
    return point == "rollback:published" ? UnavailableError("simulated crash") : Status::Ok();
  });
  ASSERT_TRUE(manager_->Rollback(r.id).ok());
  EXPECT_FALSE(manager_->Tick().ok());
  Open(2);
  Tick();
  EXPECT_EQ(Get(r.id).state, RolloutState::kRolledBack);
  EXPECT_EQ(Get(r.id).counts.reverting, 4u);
  // Published twice (the first one was never recorded): still the old bytes, counter up.
  EXPECT_GT(repo_.repo().targets().at(kTarget).release_counter(), target_.release_counter());
}

TEST_F(RolloutTest, ReportsThatDoNotVerifyAreIgnored) {
  AddDevices(6);
  const auto r = Create({100}, Thresholds());
  Tick();
  const std::string d = DeviceName(0);
  // Signed by another device's key while claiming to be `d`.
  security::EcdsaSigner forger(d, ota::testing::NewKey());
  EXPECT_EQ(manager_->HandleReport(SealedReport(d, kOk, &forger)).code(), StatusCode::kUnauthenticated);
  // Right key, wrong nonce (a replay of another assignment).
  v1::OtaReport replay;
  replay.set_deployment_id(r.deployment_id);
  replay.set_nonce("0123456789abcdef");
  replay.set_outcome(kOk);
  Bytes sealed =
      TestRepository::Must(protocol::SealMessage(*signers_.at(d), replay, "coordinator", repo_.clock(), *random_));
  EXPECT_EQ(manager_->HandleReport(sealed).code(), StatusCode::kPermissionDenied);
  // Unknown deployment.
  replay.set_deployment_id("rollout-77-00000000");
  sealed = TestRepository::Must(protocol::SealMessage(*signers_.at(d), replay, "coordinator", repo_.clock(), *random_));
  EXPECT_EQ(manager_->HandleReport(sealed).code(), StatusCode::kNotFound);
  // Garbage.
  EXPECT_FALSE(manager_->HandleReport(AsBytes("not an envelope")).ok());
  // Over MQTT, on another device's topic.
  protocol::Message m;
  m.topic = "fl/v1/d/" + DeviceName(1) + "/up/event/ota-report";
  m.payload = SealedReport(d, kOk);
  manager_->HandleMessage(m);
  EXPECT_EQ(Get(r.id).counts.succeeded, 0u);
  EXPECT_EQ(manager_->stats().reports_rejected, 5u);

  m.topic = "fl/v1/d/" + d + "/up/event/ota-report";
  manager_->HandleMessage(m);
  EXPECT_EQ(Get(r.id).counts.succeeded, 1u);
  // A redelivered duplicate changes nothing.
  manager_->HandleMessage(m);
  EXPECT_EQ(Get(r.id).counts.succeeded, 1u);
  EXPECT_EQ(manager_->stats().reports_accepted, 1u);
}

TEST_F(RolloutTest, HintsGoOnlyToAssignedDevicesAndAreSignedByTheCoordinator) {
  AddDevices(40);
  const auto r = Create({10, 100}, Thresholds());
  Tick();
  const auto assigned = Assigned(r.id);
  EXPECT_EQ(HintedDevices(), std::set<std::string>(assigned.begin(), assigned.end()));
  ASSERT_FALSE(hints_.empty());
  protocol::OpenOptions oo;
  oo.recipients = {assigned[0]};
  for (const auto& h : hints_) {
    auto topic = TestRepository::Must(protocol::ParseTopic(h.topic));
    if (topic.device_id != assigned[0]) continue;
    auto env = TestRepository::Must(protocol::Open(h.payload, coordinator_keys_, repo_.clock(), oo));
    auto hint = TestRepository::Must(protocol::UnpackPayload<v1::UpdateHint>(env));
    EXPECT_EQ(hint.deployment_id(), r.deployment_id);
    EXPECT_EQ(hint.repository_url(), "http://repo.invalid");
    EXPECT_EQ(hint.timestamp_version(), repo_.repo().timestamp_version());
  }
  EXPECT_EQ(manager_->stats().hints_sent, assigned.size());
}

TEST_F(RolloutTest, OneUnfinishedRolloutPerTargetAndANewOneSupersedesACompletedOne) {
  AddDevices(5);
  const auto r1 = Create({100}, Thresholds());
  RolloutSpec spec = MakeRolloutSpec("again", {kTarget}, {}, {100}, Thresholds());
  EXPECT_EQ(manager_->Create(spec).status().code(), StatusCode::kFailedPrecondition);
  Tick();
  ReportAll(Assigned(r1.id), kOk);
  ASSERT_EQ(Get(r1.id).state, RolloutState::kCompleted);
  Release(3);
  auto r2 = TestRepository::Must(manager_->Create(spec));
  EXPECT_EQ(Get(r1.id).state, RolloutState::kAborted);
  EXPECT_NE(Get(r1.id).reason.find("superseded"), std::string::npos);
  EXPECT_EQ(manager_->List()->size(), 2u);
  Tick();
  EXPECT_EQ(Assigned(r2.id).size(), 5u);
  EXPECT_EQ(Director(DeviceName(0))->deployment_id(), r2.deployment_id);
}

TEST_F(RolloutTest, ARePublishedTargetHaltsInsteadOfSigningAMismatch) {
  AddDevices(10);
  const auto r = Create({50, 100}, Thresholds());
  Tick();
  Release(3);  // someone published another build under the same name mid-rollout
  ReportAll(Assigned(r.id), kOk);
  Tick();
  const auto s = Get(r.id);
  EXPECT_EQ(s.state, RolloutState::kHalted);
  EXPECT_NE(s.reason.find("re-published"), std::string::npos);
  EXPECT_EQ(Assigned(r.id).size(), 5u);
}

TEST_F(RolloutTest, CreateValidatesTheSpecAndTheTargets) {
  EXPECT_EQ(manager_->Create(MakeRolloutSpec("x", {"models/nope"}, {}, {100}, Thresholds())).status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(manager_->Create(MakeRolloutSpec("x", {kTarget}, {}, {10, 50}, Thresholds())).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(manager_->Get(42).status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace flotilla::coordinator::testing
