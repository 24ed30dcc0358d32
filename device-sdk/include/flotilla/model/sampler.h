// Token sampling from logits: repetition penalty, then greedy (temperature <= 0) or
// top-k → top-p → temperature → a draw from the seeded generator, in llama.cpp's
// default chain order (top-p sees the untempered distribution, as in llama.cpp).
//
// The generator is xoshiro256** seeded through SplitMix64: reproducible for a given
// seed, fast, and NOT cryptographic — sampling text needs no secrecy. When no seed is
// given, the seed itself comes from the OS CSPRNG.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "flotilla/core/status.h"

namespace flotilla::model {

struct SamplerParams {
  float temperature = 0.8f;     // <= 0: greedy (argmax after the repetition penalty)
  int32_t top_k = 40;           // <= 0 or >= vocab: off
  float top_p = 0.95f;          // >= 1: off; keeps the smallest prefix with mass >= top_p
  float repeat_penalty = 1.0f;  // 1: off; > 1 discourages tokens seen in the last N
  int32_t repeat_last_n = 64;   // N (0: off)
  std::optional<uint64_t> seed; // unset: a seed from the OS CSPRNG
};

// Holds preallocated candidate buffers and the recent-token window: Sample() allocates
// nothing. Not thread-safe (one per generation).
class Sampler {
 public:
  // InvalidArgument for vocab_size < 1, a negative or non-finite temperature/top_p,
  // repeat_penalty <= 0 or repeat_last_n < 0.
  static Result<std::unique_ptr<Sampler>> Create(const SamplerParams& params, int64_t vocab_size);

  // Picks a token from logits[vocab_size] (FLT_CHECK on the size). Does not record it:
  // call Accept() with whatever token is actually used.
  int32_t Sample(std::span<const float> logits);
  // Adds `token` to the repetition-penalty window (the prompt's tokens too, if wanted).
  void Accept(int32_t token);
  // Empties the window and re-seeds with the original seed.
  void Reset();

  const SamplerParams& params() const { return params_; }
  uint64_t seed() const { return seed_; }
  bool greedy() const { return params_.temperature <= 0.0f; }

  // Uniform in [0, 1) with 53 random bits (exposed for tests).
  double NextUniform();

 private:
  struct Candidate {
    float logit;
    int32_t id;
  };
  Sampler(const SamplerParams& params, int64_t vocab_size, uint64_t seed);
  void Seed(uint64_t seed);
  uint64_t NextU64();

  SamplerParams params_;
  int64_t vocab_size_;
  uint64_t seed_;
  uint64_t state_[4] = {};
  std::vector<Candidate> candidates_;
  std::vector<double> probs_;
  std::vector<int32_t> recent_;  // ring buffer of the last repeat_last_n accepted tokens
  size_t recent_next_ = 0;
  size_t recent_count_ = 0;
  std::vector<uint8_t> penalized_;  // per-token scratch flag (one penalty per distinct token)
};

}  // namespace flotilla::model
