// Test support for the training engine tests: models (shared with the inference tests),
// adapters with non-zero B, a double-precision reference loss (the inference tests'
// reference forward plus LoRA terms), and finite-difference helpers.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "flotilla/core/check.h"
// (after check.h: the inference helpers use its macros)
#include "../model/inference_test_util.h"
#include "../model/lora_test_util.h"
#include "flotilla/core/testing/seeded_random.h"
#include "flotilla/model/llama_model.h"
#include "flotilla/model/lora.h"
#include "flotilla/model/train.h"

namespace flotilla::model::testing {

inline std::unique_ptr<LlamaModel> OpenTestModel(const std::string& config, const std::string& recipe,
                                                 bool tied = true) {
  Result<std::unique_ptr<LlamaModel>> m = LlamaModel::Open(ModelPath(config, recipe, 7, tied));
  FLT_CHECK_OK(m.status());
  return std::move(*m);
}

// An adapter whose B is random too (B = 0 would make every gradient of A vanish and
// hide mistakes in the B·A products).
inline LoraAdapter TestAdapter(const ModelConfig& c, std::vector<Projection> targets, bool frozen_a, int64_t rank = 4,
                               uint64_t seed = 3, float b_scale = 0.05f) {
  LoraConfig lc;
  lc.rank = rank;
  lc.alpha = 2.0f * static_cast<float>(rank);
  lc.targets = std::move(targets);
  lc.frozen_a = frozen_a;
  lc.a_seed = seed;
  flotilla::testing::SeededRandom rng(seed);
  Result<LoraAdapter> a = LoraAdapter::Create(c, lc, &rng);
  FLT_CHECK_OK(a.status());
  ::flotilla::model::testing::FillRandomB(*a, seed * 77 + 1, b_scale);
  return std::move(*a);
}

inline TrainEngineOptions EngineOptions(int threads, int64_t max_seq, uint64_t budget = 0) {
  TrainEngineOptions o;
  o.n_threads = threads;
  o.max_seq_len = max_seq;
  o.memory_budget_bytes = budget;
  return o;
}

// Next-token targets for `tokens` (the last position predicts `last`).
inline std::vector<int32_t> ShiftedTargets(const std::vector<int32_t>& tokens, int32_t last) {
  std::vector<int32_t> t(tokens.begin() + 1, tokens.end());
  t.push_back(last);
  return t;
}

// All gradients of an engine, concatenated in params() order.
inline std::vector<float> AllGrads(const TrainEngine& e) {
  std::vector<float> g;
  for (const ParamTensor& p : e.params()) g.insert(g.end(), p.grad, p.grad + p.size);
  return g;
}

// Σ_t (logsumexp(z_t) − z_t[target_t]) in double over the reference forward's logits,
// with each adapter matrix adding s · B (A x) to its projection.
inline double RefLoss(const RefModel& m, const std::vector<int32_t>& tokens, const std::vector<int32_t>& targets,
                      const LoraAdapter* adapter = nullptr) {
  RefExtra extra;
  if (adapter != nullptr) {
    extra = [adapter](int64_t layer, int which, const DVec& x, DVec& y) {
      const LoraMatrix* lm = adapter->Find(layer, static_cast<Projection>(which));
      if (lm == nullptr) return;
      const double s = adapter->scale();
      DVec ax(static_cast<size_t>(lm->rank), 0.0);
      for (int64_t j = 0; j < lm->rank; ++j) {
        for (int64_t i = 0; i < lm->in_dim; ++i) ax[static_cast<size_t>(j)] += static_cast<double>(lm->a[static_cast<size_t>(j * lm->in_dim + i)]) * x[static_cast<size_t>(i)];
      }
      for (int64_t o = 0; o < lm->out_dim; ++o) {
        double v = 0;
        for (int64_t j = 0; j < lm->rank; ++j) v += static_cast<double>(lm->b[static_cast<size_t>(o * lm->rank + j)]) * ax[static_cast<size_t>(j)];
        y[static_cast<size_t>(o)] += s * v;
      }
    };
  }
  const std::vector<DVec> logits = RefForward(m, tokens, extra);
  double loss = 0;
  for (size_t t = 0; t < tokens.size(); ++t) {
    if (targets[t] < 0) continue;
    double mx = -1e300;
    for (double z : logits[t]) mx = std::max(mx, z);
    double sum = 0;
    for (double z : logits[t]) sum += std::exp(z - mx);
    loss += std::log(sum) + mx - logits[t][static_cast<size_t>(targets[t])];
  }
  return loss;
}

// The reference model of dense (full-training) weights.
inline RefModel RefFromDense(const DenseLlamaWeights& w) {
  auto t = [&](std::string_view name) {
    std::span<const float> v = w.Tensor(name);
    FLT_CHECK(v.data() != nullptr);
    return std::vector<float>(v.begin(), v.end());
  };
  RefModel m;
  m.c = w.config();
  m.embd = t(kTokenEmbdName);
  m.out_norm = t(kOutputNormName);
  m.output = m.c.tied_output ? m.embd : t(kOutputName);
  for (int64_t l = 0; l < m.c.n_layers; ++l) {
    RefLayer L;
    L.attn_norm = t(LayerTensorName(l, LlamaTensor::kAttnNorm));
    L.wq = t(LayerTensorName(l, LlamaTensor::kAttnQ));
    L.wk = t(LayerTensorName(l, LlamaTensor::kAttnK));
    L.wv = t(LayerTensorName(l, LlamaTensor::kAttnV));
    L.wo = t(LayerTensorName(l, LlamaTensor::kAttnOutput));
    L.ffn_norm = t(LayerTensorName(l, LlamaTensor::kFfnNorm));
    L.gate = t(LayerTensorName(l, LlamaTensor::kFfnGate));
    L.up = t(LayerTensorName(l, LlamaTensor::kFfnUp));
    L.down = t(LayerTensorName(l, LlamaTensor::kFfnDown));
    m.layers.push_back(std::move(L));
  }
  return m;
}

// Central difference (f(x+h) − f(x−h)) / 2h of `f` with respect to *v.
template <typename F>
double CentralDifference(float* v, double h, const F& f) {
  const float saved = *v;
  *v = static_cast<float>(static_cast<double>(saved) + h);
  const double hp = static_cast<double>(*v) - static_cast<double>(saved);  // the step really taken
  const double fp = f();
  *v = static_cast<float>(static_cast<double>(saved) - h);
  const double hm = static_cast<double>(saved) - static_cast<double>(*v);
  const double fm = f();
  *v = saved;
  return (fp - fm) / (hp + hm);
}

}  // namespace flotilla::model::testing
