#include "flotilla/model/sampler.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "flotilla/core/check.h"
#include "flotilla/core/random.h"

namespace flotilla::model {
namespace {

uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t SplitMix(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace

Result<std::unique_ptr<Sampler>> Sampler::Create(const SamplerParams& p, int64_t vocab_size) {
  if (vocab_size < 1 || vocab_size > (int64_t{1} << 31) - 1) {
    return InvalidArgumentError("sampler vocab size " + std::to_string(vocab_size) + " is out of range");
  }
  if (!std::isfinite(p.temperature) || p.temperature < 0.0f) {
    return InvalidArgumentError("temperature must be finite and >= 0");
  }
  if (!std::isfinite(p.top_p) || p.top_p <= 0.0f) return InvalidArgumentError("top_p must be finite and > 0");
  if (!std::isfinite(p.repeat_penalty) || p.repeat_penalty <= 0.0f) {
    return InvalidArgumentError("repeat_penalty must be finite and > 0");
  }
  if (p.repeat_last_n < 0) return InvalidArgumentError("repeat_last_n must be >= 0");
  const uint64_t seed = p.seed.has_value() ? *p.seed : OsRandom().NextU64();
  return std::unique_ptr<Sampler>(new Sampler(p, vocab_size, seed));
}

Sampler::Sampler(const SamplerParams& params, int64_t vocab_size, uint64_t seed)
    : params_(params), vocab_size_(vocab_size), seed_(seed) {
  candidates_.resize(static_cast<size_t>(vocab_size));
  probs_.resize(static_cast<size_t>(vocab_size));
  recent_.resize(static_cast<size_t>(params.repeat_last_n));
  penalized_.assign(static_cast<size_t>(vocab_size), 0);
  Seed(seed);
}

void Sampler::Seed(uint64_t seed) {
  uint64_t s = seed;
  for (uint64_t& x : state_) x = SplitMix(s);
}

void Sampler::Reset() {
  recent_next_ = 0;
  recent_count_ = 0;
  Seed(seed_);
}

uint64_t Sampler::NextU64() {  // xoshiro256**
  const uint64_t result = Rotl(state_[1] * 5, 7) * 9;
  const uint64_t t = state_[1] << 17;
  state_[2] ^= state_[0];
  state_[3] ^= state_[1];
  state_[1] ^= state_[2];
  state_[0] ^= state_[3];
  state_[2] ^= t;
  state_[3] = Rotl(state_[3], 45);
  return result;
}

double Sampler::NextUniform() { return static_cast<double>(NextU64() >> 11) * 0x1.0p-53; }

void Sampler::Accept(int32_t token) {
  if (recent_.empty()) return;
  recent_[recent_next_] = token;
  recent_next_ = (recent_next_ + 1) % recent_.size();
  recent_count_ = std::min(recent_count_ + 1, recent_.size());
}

int32_t Sampler::Sample(std::span<const float> logits) {
  FLT_CHECK(static_cast<int64_t>(logits.size()) == vocab_size_);
  const auto n = static_cast<size_t>(vocab_size_);
  for (size_t i = 0; i < n; ++i) candidates_[i] = {logits[i], static_cast<int32_t>(i)};

  // Repetition penalty (llama.cpp's): once per distinct recent token, positive logits are
  // divided by the penalty and negative ones multiplied, so both move down.
  if (params_.repeat_penalty != 1.0f && recent_count_ > 0) {
    for (size_t i = 0; i < recent_count_; ++i) {
      const int32_t t = recent_[i];
      if (t < 0 || t >= vocab_size_ || penalized_[static_cast<size_t>(t)] != 0) continue;
      penalized_[static_cast<size_t>(t)] = 1;
      float& l = candidates_[static_cast<size_t>(t)].logit;
      l = l > 0.0f ? l / params_.repeat_penalty : l * params_.repeat_penalty;
    }
    for (size_t i = 0; i < recent_count_; ++i) {
      const int32_t t = recent_[i];
      if (t >= 0 && t < vocab_size_) penalized_[static_cast<size_t>(t)] = 0;
    }
  }

  // Higher logit first; ties by lower id so results never depend on the sort algorithm.
  auto better = [](const Candidate& a, const Candidate& b) {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
  };
  if (greedy()) {
    return std::min_element(candidates_.begin(), candidates_.end(), better)->id;
  }

  size_t k = n;
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < n) k = static_cast<size_t>(params_.top_k);
  const auto kk = static_cast<std::ptrdiff_t>(k);
  if (k < n) std::nth_element(candidates_.begin(), candidates_.begin() + kk - 1, candidates_.end(), better);
  // top-p needs the kept candidates in order; a full sort only when top-k is off.
  const bool need_order = params_.top_p < 1.0f;
  if (need_order) std::sort(candidates_.begin(), candidates_.begin() + kk, better);

  if (need_order) {
    // Softmax at temperature 1 over the k candidates, then the smallest prefix whose mass
    // reaches top_p (at least one token).
    const float max = candidates_[0].logit;
    double sum = 0.0;
    for (size_t i = 0; i < k; ++i) {
      probs_[i] = std::exp(static_cast<double>(candidates_[i].logit - max));
      sum += probs_[i];
    }
    double cum = 0.0;
    size_t keep = k;
    for (size_t i = 0; i < k; ++i) {
      cum += probs_[i] / sum;
      if (cum >= static_cast<double>(params_.top_p)) {
        keep = i + 1;
        break;
      }
    }
    k = keep;
  }

  // Temperature, then draw.
  float max = candidates_[0].logit;
  for (size_t i = 1; i < k; ++i) max = std::max(max, candidates_[i].logit);
  const float inv_t = 1.0f / params_.temperature;
  double sum = 0.0;
  for (size_t i = 0; i < k; ++i) {
    probs_[i] = std::exp(static_cast<double>((candidates_[i].logit - max) * inv_t));
    sum += probs_[i];
  }
  const double r = NextUniform() * sum;
  double cum = 0.0;
  for (size_t i = 0; i < k; ++i) {
    cum += probs_[i];
    if (r < cum) return candidates_[i].id;
  }
  return candidates_[k - 1].id;  // r rounded up to sum
}

}  // namespace flotilla::model
