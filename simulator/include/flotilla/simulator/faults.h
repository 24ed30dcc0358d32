// Fault injection for the fleet simulator: per-stage dropouts (a device silently stops
// right before it would send that stage's message, through the agent's test_drop_before
// hook) and MQTT disconnects (a device's link goes down for a while in the middle of a
// round, then it reconnects).
//
// Decisions are a pure function of (seed, device, round, stage), so a run is
// reproducible and a device that dropped at one stage is not asked again at the next.
// The generator is SplitMix64 over the inputs: simulation choices, not secrets.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "flotilla/core/status.h"
#include "flotilla/device/agent.h"

namespace flotilla::simulator {

inline constexpr size_t kAgentStageCount = 7;  // device::AgentStage::kCheckIn .. kUnmask

struct FaultOptions {
  // Probability, per cohort member and round, of dropping right before each stage's
  // message (index = static_cast<size_t>(device::AgentStage)). 0 = never.
  std::array<double, kAgentStageCount> dropout{};
  // Probability, per device and round, that its MQTT link is cut (clean disconnect, so
  // no Will) at a uniformly random time in [0, disconnect_window) after the round starts,
  // for `disconnect_duration`.
  double disconnect_rate = 0;
  std::chrono::milliseconds disconnect_window{std::chrono::seconds(5)};
  std::chrono::milliseconds disconnect_duration{std::chrono::seconds(2)};
  uint64_t seed = 1;
};

// "advertise_keys=0.05,masked_input=0.02" (stage names as device::ToString(AgentStage):
// check_in, response, advertise_keys, share_keys, masked_input, consistency_check,
// unmask; "all=p" sets every stage). InvalidArgument naming the bad entry.
Result<std::array<double, kAgentStageCount>> ParseDropouts(std::string_view spec);
std::string FormatDropouts(const std::array<double, kAgentStageCount>& dropout);

// The drops and disconnects of one run. Thread-safe (the drop hook runs on agent threads).
class FaultPlan {
 public:
  explicit FaultPlan(FaultOptions options) : options_(options) {}

  // Whether `device_index` drops before `stage` of `round_id` (counts the drop).
  bool DropBefore(uint64_t device_index, std::string_view round_id, device::AgentStage stage);
  // Whether `device_index` is cut during round `round_number`; when it is, *offset is
  // the time after the round's start.
  bool Disconnects(uint64_t device_index, uint32_t round_number, std::chrono::milliseconds* offset) const;

  // Drops injected so far per stage name (only stages with drops).
  std::map<std::string, uint64_t> drops() const;
  const FaultOptions& options() const { return options_; }

 private:
  FaultOptions options_;
  std::array<std::atomic<uint64_t>, kAgentStageCount> drops_{};
};

}  // namespace flotilla::simulator
