// Pure rollout rules (no I/O), shared by RolloutManager and its unit tests.
#pragma once

#include <cstdint>
#include <string>

#include "flotilla/coordinator/rollout.h"

namespace flotilla::coordinator::internal {

// "canary", or the percentage ("10%", "2.5%").
std::string DefaultPhaseName(const PhaseSpec& phase);

// Non-canary devices a percentage phase assigns in total: ceil(percent% of eligible).
uint64_t PercentQuota(double percent, uint64_t eligible_non_canary);

struct PhaseProgress {
  uint64_t eligible = 0;       // all devices the rollout has seen
  uint64_t failed = 0;         // whole rollout
  uint64_t finished = 0;       // whole rollout: succeeded + failed
  uint64_t phase_members = 0;  // assigned in this phase
  uint64_t phase_succeeded = 0;
  bool quota_filled = false;  // every device the phase may assign is assigned
};

enum class PhaseVerdict { kContinue, kHalt, kAdvance };

// Error thresholds first (a crossed threshold halts even when the phase also succeeded),
// then the success threshold. `reason` says which rule decided.
PhaseVerdict EvaluatePhase(const PhaseSpec& phase, const PhaseProgress& progress, std::string* reason);

}  // namespace flotilla::coordinator::internal
