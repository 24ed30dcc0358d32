// LocalTrainer: the seam between the device agent and on-device training. The agent hands
// it a round's TrainingConfig and the global adapter's trainable vector (frozen-A mode:
// the B matrices, flattened) and gets back the update delta = trained - global, plus how
// many examples it saw. The real implementation sits on the engine's TrainEngine/Trainer
// (device-sdk/model); SeededLocalTrainer below is a deterministic stand-in for tests and
// the simulator's protocol-only runs.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flotilla/core/status.h"
#include "flotilla/v1/round.pb.h"

namespace flotilla::device {

struct LocalTrainingResult {
  std::vector<float> delta;  // same length as the global vector it was trained from
  uint64_t examples = 0;     // local examples used (the FedAvg weight before capping)
  float loss_before = 0.0f;
  float loss_after = 0.0f;
  uint32_t steps = 0;
};

class LocalTrainer {
 public:
  virtual ~LocalTrainer() = default;
  // False when there is nothing to train on (the agent declines with NO_DATA). Called on
  // the agent's thread; must be cheap.
  virtual bool HasData() const = 0;
  // Trains from `global` with `config`. Runs on the agent's worker (one call at a time per
  // agent, possibly concurrently with other agents' trainers). An error makes the agent
  // drop out of the round (it sends RoundAbort). `delta` must have global.size() elements.
  virtual Result<LocalTrainingResult> Train(std::string_view round_id, const v1::TrainingConfig& config,
                                            std::span<const float> global) = 0;
};

// Deterministic trainer for tests and protocol benchmarks: delta[i] is a pseudo-random
// value in [-scale, scale] derived from (seed, round id, i) by a SplitMix64 hash (not a
// CSPRNG: the values are test data), `examples` is fixed. No model is touched.
class SeededLocalTrainer final : public LocalTrainer {
 public:
  SeededLocalTrainer(uint64_t seed, uint64_t examples, float scale = 0.1f)
      : seed_(seed), examples_(examples), scale_(scale) {}
  bool HasData() const override { return examples_ > 0; }
  Result<LocalTrainingResult> Train(std::string_view round_id, const v1::TrainingConfig& config,
                                    std::span<const float> global) override;

 private:
  uint64_t seed_;
  uint64_t examples_;
  float scale_;
};

}  // namespace flotilla::device
