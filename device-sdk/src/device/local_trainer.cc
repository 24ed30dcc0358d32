#include "flotilla/device/local_trainer.h"

#include <algorithm>

namespace flotilla::device {
namespace {

uint64_t SplitMix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace

Result<LocalTrainingResult> SeededLocalTrainer::Train(std::string_view round_id, const v1::TrainingConfig& config,
                                                      std::span<const float> global) {
  if (examples_ == 0) return FailedPreconditionError("SeededLocalTrainer: no local data");
  uint64_t h = SplitMix(seed_);
  for (char c : round_id) h = SplitMix(h ^ static_cast<uint8_t>(c));
  LocalTrainingResult r;
  r.delta.resize(global.size());
  for (size_t i = 0; i < r.delta.size(); ++i) {
    const uint64_t v = SplitMix(h ^ (i * 0xd1342543de82ef95ULL));
    // 24 random bits -> [-1, 1) -> [-scale, scale).
    const double unit = static_cast<double>(v >> 40) / static_cast<double>(uint64_t{1} << 23) - 1.0;
    r.delta[i] = static_cast<float>(unit * static_cast<double>(scale_));
  }
  r.examples = config.max_examples() > 0 ? std::min<uint64_t>(examples_, config.max_examples()) : examples_;
  r.steps = config.local_steps();
  r.loss_before = 2.0f;
  r.loss_after = 1.5f;
  return r;
}

}  // namespace flotilla::device
