#include "rollout_logic.h"

#include <cmath>
#include <cstdio>
#include <set>

#include "flotilla/protocol/topics.h"

namespace flotilla::coordinator {
namespace {

using RS = RolloutState;
using RE = RolloutEvent;

struct Transition {
  RolloutState from;
  RolloutEvent event;
  RolloutState to;
};

// The whole rollout lifecycle, top to bottom. Phase advances stay inside kActive.
constexpr Transition kTransitions[] = {
    {RS::kActive, RE::kPause, RS::kPaused},          {RS::kActive, RE::kHalt, RS::kHalted},
    {RS::kActive, RE::kComplete, RS::kCompleted},    {RS::kActive, RE::kAbort, RS::kAborted},
    {RS::kActive, RE::kRollback, RS::kRollingBack},  {RS::kPaused, RE::kResume, RS::kActive},
    {RS::kPaused, RE::kAbort, RS::kAborted},         {RS::kPaused, RE::kRollback, RS::kRollingBack},
    {RS::kHalted, RE::kResume, RS::kActive},  // re-evaluated at once: halts again if still over
    {RS::kHalted, RE::kAbort, RS::kAborted},         {RS::kHalted, RE::kRollback, RS::kRollingBack},
    {RS::kCompleted, RE::kHalt, RS::kHalted},  // late joiners failing
    {RS::kCompleted, RE::kAbort, RS::kAborted},      {RS::kCompleted, RE::kRollback, RS::kRollingBack},
    {RS::kAborted, RE::kRollback, RS::kRollingBack}, {RS::kRollingBack, RE::kRollbackDone, RS::kRolledBack},
};

constexpr std::pair<RolloutState, std::string_view> kStateNames[] = {
    {RS::kActive, "active"},          {RS::kPaused, "paused"},   {RS::kHalted, "halted"},
    {RS::kCompleted, "completed"},    {RS::kAborted, "aborted"}, {RS::kRollingBack, "rolling_back"},
    {RS::kRolledBack, "rolled_back"},
};

constexpr std::pair<DeviceRolloutStatus, std::string_view> kStatusNames[] = {
    {DeviceRolloutStatus::kPending, "pending"},     {DeviceRolloutStatus::kAssigned, "assigned"},
    {DeviceRolloutStatus::kSucceeded, "succeeded"}, {DeviceRolloutStatus::kFailed, "failed"},
    {DeviceRolloutStatus::kRetracted, "retracted"}, {DeviceRolloutStatus::kReverted, "reverted"},
    {DeviceRolloutStatus::kReverting, "reverting"},
};

bool Finite(double v) { return std::isfinite(v); }

}  // namespace

std::string_view ToString(RolloutState state) {
  for (const auto& [s, n] : kStateNames) {
    if (s == state) return n;
  }
  return "unknown";
}

std::string_view ToString(RolloutEvent event) {
  switch (event) {
    case RE::kPause:
      return "pause";
    case RE::kResume:
      return "resume";
    case RE::kHalt:
      return "halt";
    case RE::kComplete:
      return "complete";
    case RE::kAbort:
      return "abort";
    case RE::kRollback:
      return "rollback";
    case RE::kRollbackDone:
      return "rollback_done";
  }
  return "unknown";
}

Result<RolloutState> ParseRolloutState(std::string_view name) {
  for (const auto& [s, n] : kStateNames) {
    if (n == name) return s;
  }
  return InvalidArgumentError("unknown rollout state '" + std::string(name) + "'");
}

std::optional<RolloutState> NextRolloutState(RolloutState state, RolloutEvent event) {
  for (const auto& t : kTransitions) {
    if (t.from == state && t.event == event) return t.to;
  }
  return std::nullopt;
}

std::string_view ToString(DeviceRolloutStatus status) {
  for (const auto& [s, n] : kStatusNames) {
    if (s == status) return n;
  }
  return "unknown";
}

Result<DeviceRolloutStatus> ParseDeviceRolloutStatus(std::string_view name) {
  for (const auto& [s, n] : kStatusNames) {
    if (n == name) return s;
  }
  return InvalidArgumentError("unknown device rollout status '" + std::string(name) + "'");
}

RolloutSpec MakeRolloutSpec(std::string name, std::vector<std::string> targets, std::vector<std::string> canary,
                            const std::vector<double>& percents, const PhaseSpec& thresholds) {
  RolloutSpec spec;
  spec.name = std::move(name);
  spec.targets = std::move(targets);
  if (!canary.empty()) {
    PhaseSpec p = thresholds;
    p.name = "canary";
    p.canary = true;
    p.percent = 0;
    spec.phases.push_back(p);
  }
  spec.canary_devices = std::move(canary);
  for (double pct : percents) {
    PhaseSpec p = thresholds;
    p.canary = false;
    p.percent = pct;
    p.name = internal::DefaultPhaseName(p);
    spec.phases.push_back(p);
  }
  return spec;
}

Status ValidateRolloutSpec(const RolloutSpec& spec) {
  if (spec.name.empty() || spec.name.size() > 128)
    return InvalidArgumentError("rollout: name must be 1-128 characters");
  if (spec.targets.empty()) return InvalidArgumentError("rollout: no targets");
  std::set<std::string> names;
  for (const auto& t : spec.targets) {
    if (t.empty() || t.size() > 256) return InvalidArgumentError("rollout: empty or overlong target name");
    if (!names.insert(t).second) return InvalidArgumentError("rollout: target " + t + " listed twice");
  }
  std::set<std::string> canaries;
  for (const auto& d : spec.canary_devices) {
    FLT_RETURN_IF_ERROR(protocol::ValidateName("canary device id", d));
    if (!canaries.insert(d).second) return InvalidArgumentError("rollout: canary " + d + " listed twice");
  }
  if (spec.phases.empty()) return InvalidArgumentError("rollout: no phases");
  double prev = 0;
  for (size_t i = 0; i < spec.phases.size(); ++i) {
    const PhaseSpec& p = spec.phases[i];
    const std::string where = "rollout phase " + std::to_string(i) + " (" + p.name + "): ";
    if (p.canary) {
      if (i != 0) return InvalidArgumentError(where + "only the first phase may be the canary phase");
      if (spec.canary_devices.empty()) return InvalidArgumentError(where + "a canary phase needs canary devices");
    } else {
      if (!Finite(p.percent) || p.percent <= 0 || p.percent > 100) {
        return InvalidArgumentError(where + "percent must be in (0, 100]");
      }
      if (p.percent < prev) return InvalidArgumentError(where + "percentages must not decrease");
      prev = p.percent;
    }
    if (!Finite(p.success_percent) || p.success_percent < 0 || p.success_percent > 100) {
      return InvalidArgumentError(where + "success_percent must be in [0, 100]");
    }
    if (!Finite(p.max_failure_percent) || p.max_failure_percent < 0 || p.max_failure_percent > 100) {
      return InvalidArgumentError(where + "max_failure_percent must be in [0, 100]");
    }
  }
  if (spec.phases.back().canary || spec.phases.back().percent != 100) {
    return InvalidArgumentError("rollout: the last phase must cover 100% of the fleet");
  }
  if (spec.repository_url.size() > 2048) return InvalidArgumentError("rollout: repository URL too long");
  return Status::Ok();
}

namespace internal {

std::string DefaultPhaseName(const PhaseSpec& phase) {
  if (phase.canary) return "canary";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g%%", phase.percent);
  return buf;
}

uint64_t PercentQuota(double percent, uint64_t eligible_non_canary) {
  if (percent >= 100) return eligible_non_canary;
  // Exact for the percentages people type (1, 2.5, 10...): scale to parts per million.
  const auto ppm = static_cast<uint64_t>(std::llround(percent * 10000.0));
  return (eligible_non_canary * ppm + 999'999) / 1'000'000;
}

PhaseVerdict EvaluatePhase(const PhaseSpec& phase, const PhaseProgress& p, std::string* reason) {
  if (phase.max_failures > 0 && p.failed >= phase.max_failures) {
    *reason = std::to_string(p.failed) + " devices failed (threshold " + std::to_string(phase.max_failures) + ")";
    return PhaseVerdict::kHalt;
  }
  if (phase.max_failure_percent > 0 && p.finished > 0 && p.finished >= phase.min_finished &&
      static_cast<double>(p.failed) * 100.0 >= phase.max_failure_percent * static_cast<double>(p.finished)) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "%llu of %llu finished devices failed (%.1f%% >= %g%% after at least %u)",
                  static_cast<unsigned long long>(p.failed), static_cast<unsigned long long>(p.finished),
                  100.0 * static_cast<double>(p.failed) / static_cast<double>(p.finished), phase.max_failure_percent,
                  phase.min_finished);
    *reason = buf;
    return PhaseVerdict::kHalt;
  }
  // An empty fleet must not race through every phase.
  if (!p.quota_filled || p.eligible == 0) return PhaseVerdict::kContinue;
  const auto needed =
      static_cast<uint64_t>(std::ceil(phase.success_percent * static_cast<double>(p.phase_members) / 100.0 - 1e-9));
  if (p.phase_succeeded < needed) return PhaseVerdict::kContinue;
  *reason = "phase " + phase.name + ": " + std::to_string(p.phase_succeeded) + " of " +
            std::to_string(p.phase_members) + " members succeeded";
  return PhaseVerdict::kAdvance;
}

}  // namespace internal
}  // namespace flotilla::coordinator
