#include "rollout_logic.h"

#include <gtest/gtest.h>

#include <cmath>

#include "flotilla/coordinator/rollout.h"
#include "rollout_json.h"

namespace flotilla::coordinator {
namespace {

using internal::EvaluatePhase;
using internal::PercentQuota;
using internal::PhaseProgress;
using internal::PhaseVerdict;

constexpr RolloutState kStates[] = {RolloutState::kActive,    RolloutState::kPaused,  RolloutState::kHalted,
                                    RolloutState::kCompleted, RolloutState::kAborted, RolloutState::kRollingBack,
                                    RolloutState::kRolledBack};
constexpr RolloutEvent kEvents[] = {RolloutEvent::kPause,       RolloutEvent::kResume, RolloutEvent::kHalt,
                                    RolloutEvent::kComplete,    RolloutEvent::kAbort,  RolloutEvent::kRollback,
                                    RolloutEvent::kRollbackDone};

TEST(RolloutLogicTest, TransitionTableMatchesTheLifecycle) {
  int allowed = 0;
  for (auto s : kStates) {
    EXPECT_EQ(*ParseRolloutState(ToString(s)), s);
    for (auto e : kEvents) allowed += NextRolloutState(s, e).has_value();
  }
  EXPECT_EQ(allowed, 16);
  EXPECT_EQ(NextRolloutState(RolloutState::kActive, RolloutEvent::kHalt), RolloutState::kHalted);
  EXPECT_EQ(NextRolloutState(RolloutState::kHalted, RolloutEvent::kResume), RolloutState::kActive);
  EXPECT_EQ(NextRolloutState(RolloutState::kAborted, RolloutEvent::kResume), std::nullopt);
  EXPECT_EQ(NextRolloutState(RolloutState::kRolledBack, RolloutEvent::kRollback), std::nullopt);
  EXPECT_EQ(NextRolloutState(RolloutState::kPaused, RolloutEvent::kPause), std::nullopt);
  for (auto s : kStates) {
    if (s != RolloutState::kRollingBack && s != RolloutState::kRolledBack) {
      EXPECT_EQ(NextRolloutState(s, RolloutEvent::kRollback), RolloutState::kRollingBack) << ToString(s);
    }
  }
  EXPECT_FALSE(ParseRolloutState("bogus").ok());
  EXPECT_EQ(*ParseDeviceRolloutStatus("reverting"), DeviceRolloutStatus::kReverting);
}

TEST(RolloutLogicTest, PercentQuotaIsTheCeilingOfTheShare) {
  for (uint64_t n : {0ull, 1ull, 7ull, 98ull, 100ull, 995ull, 1000ull, 123457ull}) {
    for (double p : {0.1, 1.0, 2.5, 5.0, 10.0, 33.3, 50.0, 99.9, 100.0}) {
      // Reference in exact integer arithmetic on tenths of a percent.
      const auto tenths = static_cast<uint64_t>(std::llround(p * 10));
      const uint64_t want = (n * tenths + 999) / 1000;
      EXPECT_EQ(PercentQuota(p, n), want) << p << "% of " << n;
    }
  }
}

TEST(RolloutLogicTest, EvaluatePhaseChecksErrorsBeforeSuccess) {
  PhaseSpec phase;
  phase.name = "10%";
  phase.success_percent = 90;
  phase.max_failures = 5;
  phase.max_failure_percent = 10;
  phase.min_finished = 20;
  std::string why;
  PhaseProgress p{
      .eligible = 100, .failed = 0, .finished = 0, .phase_members = 10, .phase_succeeded = 9, .quota_filled = true};
  EXPECT_EQ(EvaluatePhase(phase, p, &why), PhaseVerdict::kAdvance);
  p.quota_filled = false;
  EXPECT_EQ(EvaluatePhase(phase, p, &why), PhaseVerdict::kContinue);
  p.quota_filled = true;
  p.phase_succeeded = 8;
  EXPECT_EQ(EvaluatePhase(phase, p, &why), PhaseVerdict::kContinue);
  p.failed = 2;
  p.finished = 10;  // 20% but under the minimum
  EXPECT_EQ(EvaluatePhase(phase, p, &why), PhaseVerdict::kContinue);
  p.finished = 20;  // 10% of 20: at the threshold
  EXPECT_EQ(EvaluatePhase(phase, p, &why), PhaseVerdict::kHalt);
  p.failed = 5;
  p.finished = 1000;
  p.phase_succeeded = 10;
  EXPECT_EQ(EvaluatePhase(phase, p, &why), PhaseVerdict::kHalt) << "count threshold even when the phase succeeded";
  p = PhaseProgress{.eligible = 0, .quota_filled = true};
  EXPECT_EQ(EvaluatePhase(phase, p, &why), PhaseVerdict::kContinue) << "an empty fleet never advances";
}

TEST(RolloutLogicTest, SpecValidation) {
  PhaseSpec t;
  auto ok = MakeRolloutSpec("r", {"models/a"}, {"dev-1"}, {1, 10, 50, 100}, t);
  EXPECT_TRUE(ValidateRolloutSpec(ok).ok());
  ASSERT_EQ(ok.phases.size(), 5u);
  EXPECT_TRUE(ok.phases[0].canary);
  EXPECT_EQ(ok.phases[2].name, "10%");
  auto bad = ok;
  bad.phases.back().percent = 90;
  EXPECT_FALSE(ValidateRolloutSpec(bad).ok());
  bad = ok;
  std::swap(bad.phases[1], bad.phases[2]);
  EXPECT_FALSE(ValidateRolloutSpec(bad).ok());
  bad = ok;
  bad.canary_devices = {"dev/../x"};
  EXPECT_FALSE(ValidateRolloutSpec(bad).ok());
  bad = ok;
  bad.canary_devices.clear();
  EXPECT_FALSE(ValidateRolloutSpec(bad).ok()) << "canary phase without canaries";
  bad = ok;
  bad.targets = {"models/a", "models/a"};
  EXPECT_FALSE(ValidateRolloutSpec(bad).ok());
  bad = ok;
  bad.phases[1].success_percent = NAN;
  EXPECT_FALSE(ValidateRolloutSpec(bad).ok());
  EXPECT_FALSE(ValidateRolloutSpec(RolloutSpec{}).ok());
}

TEST(RolloutLogicTest, SpecJsonRoundTripsAndRejectsBadFields) {
  PhaseSpec t;
  t.success_percent = 95;
  t.max_failures = 3;
  t.max_failure_percent = 5;
  t.min_finished = 40;
  t.pause_after = true;
  auto spec = MakeRolloutSpec("r", {"models/a", "models/b"}, {"dev-1"}, {1, 100}, t);
  spec.max_assignments_per_minute = 600;
  spec.repository_url = "https://ota.example/repo";
  auto back = internal::SpecFromJsonText(internal::SpecToJson(spec).dump());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(internal::SpecToJson(*back), internal::SpecToJson(spec));
  EXPECT_FALSE(internal::SpecFromJsonText("{").ok());
  EXPECT_FALSE(internal::SpecFromJsonText("[]").ok());
  EXPECT_FALSE(internal::SpecFromJsonText(R"({"targets": "models/a"})").ok());
  EXPECT_FALSE(internal::SpecFromJsonText(R"({"phases": [{"percent": "ten"}]})").ok());
  EXPECT_FALSE(internal::SpecFromJsonText(R"({"phases": 3})").ok());
}

}  // namespace
}  // namespace flotilla::coordinator
