#include "flotilla/simulator/faults.h"

#include <cmath>
#include <cstdlib>
#include <string>

#include "flotilla/simulator/synthetic_text.h"

namespace flotilla::simulator {
namespace {

constexpr device::AgentStage kStages[kAgentStageCount] = {
    device::AgentStage::kCheckIn,      device::AgentStage::kResponse,          device::AgentStage::kAdvertiseKeys,
    device::AgentStage::kShareKeys,    device::AgentStage::kMaskedInput,       device::AgentStage::kConsistencyCheck,
    device::AgentStage::kUnmask};

uint64_t Fnv1a(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (char c : s) {
    h ^= static_cast<uint8_t>(c);
    h *= 1099511628211ull;
  }
  return h;
}

// A uniform double in [0, 1) from the decision's coordinates.
double Draw(uint64_t seed, uint64_t device, uint64_t round, uint64_t what) {
  SplitMix64 rng(seed ^ (device * 0x9E3779B97F4A7C15ull) ^ (round * 0xC2B2AE3D27D4EB4Full) ^
                 (what * 0x165667B19E3779F9ull));
  rng.Next();
  return rng.UniformDouble();
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

}  // namespace

Result<std::array<double, kAgentStageCount>> ParseDropouts(std::string_view spec) {
  std::array<double, kAgentStageCount> out{};
  size_t pos = 0;
  while (pos <= spec.size()) {
    size_t end = spec.find(',', pos);
    if (end == std::string_view::npos) end = spec.size();
    const std::string_view entry = Trim(spec.substr(pos, end - pos));
    pos = end + 1;
    if (entry.empty()) continue;
    const size_t eq = entry.find('=');
    if (eq == std::string_view::npos) {
      return InvalidArgumentError("dropouts: \"" + std::string(entry) + "\" is not stage=probability");
    }
    const std::string name(Trim(entry.substr(0, eq)));
    const std::string value(Trim(entry.substr(eq + 1)));
    char* value_end = nullptr;
    const double p = std::strtod(value.c_str(), &value_end);
    if (value.empty() || value_end != value.c_str() + value.size() || !std::isfinite(p) || p < 0 || p > 1) {
      return InvalidArgumentError("dropouts: probability \"" + value + "\" of " + name + " is not in [0, 1]");
    }
    bool known = false;
    for (size_t i = 0; i < kAgentStageCount; ++i) {
      if (name == "all" || name == device::ToString(kStages[i])) {
        out[i] = p;
        known = true;
      }
    }
    if (!known) return InvalidArgumentError("dropouts: unknown stage \"" + name + "\"");
  }
  return out;
}

std::string FormatDropouts(const std::array<double, kAgentStageCount>& dropout) {
  std::string out;
  for (size_t i = 0; i < kAgentStageCount; ++i) {
    if (dropout[i] <= 0) continue;
    if (!out.empty()) out += ",";
    out += std::string(device::ToString(kStages[i])) + "=" + std::to_string(dropout[i]);
  }
  return out;
}

bool FaultPlan::DropBefore(uint64_t device_index, std::string_view round_id, device::AgentStage stage) {
  const size_t s = static_cast<size_t>(stage);
  if (s >= kAgentStageCount || options_.dropout[s] <= 0) return false;
  if (Draw(options_.seed, device_index, Fnv1a(round_id), s + 1) >= options_.dropout[s]) return false;
  drops_[s].fetch_add(1, std::memory_order_relaxed);
  return true;
}

bool FaultPlan::Disconnects(uint64_t device_index, uint32_t round_number, std::chrono::milliseconds* offset) const {
  if (options_.disconnect_rate <= 0) return false;
  if (Draw(options_.seed, device_index, round_number, 100) >= options_.disconnect_rate) return false;
  if (offset != nullptr) {
    const double u = Draw(options_.seed, device_index, round_number, 101);
    *offset = std::chrono::milliseconds(static_cast<int64_t>(u * static_cast<double>(options_.disconnect_window.count())));
  }
  return true;
}

std::map<std::string, uint64_t> FaultPlan::drops() const {
  std::map<std::string, uint64_t> out;
  for (size_t i = 0; i < kAgentStageCount; ++i) {
    const uint64_t n = drops_[i].load(std::memory_order_relaxed);
    if (n > 0) out[std::string(device::ToString(kStages[i]))] = n;
  }
  return out;
}

}  // namespace flotilla::simulator
