// Trainer: schedule, AdamW and clipping against a double-precision reference, window
// order, accumulation, cancellation, checkpoint/resume and evaluation. The loop runs over
// an exactly differentiable bigram model (train_internal::GradientSource) so these tests
// pin the optimizer independently of the transformer engine; TrainerEngineTest runs the
// same guarantees through the real TrainEngine on a small llama model.
#include "flotilla/model/trainer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <numeric>

#include "train/trainer_internal.h"
#include "flotilla/core/file.h"
#include "flotilla/model/model_config.h"
#include "flotilla/model/model_file.h"
#include "flotilla/model/train.h"

namespace flotilla::model {
namespace {

using train_internal::GradientSource;

// next-token model p(t | s) = softmax(W[s] + b): exact gradients, convex, tiny.
class BigramSource final : public GradientSource {
 public:
  BigramSource(int64_t vocab, int64_t max_seq, uint64_t seed = 7)
      : vocab_(vocab), max_seq_(max_seq), w_(static_cast<size_t>(vocab * vocab)), b_(static_cast<size_t>(vocab)),
        gw_(w_.size()), gb_(b_.size()) {
    SplitMix64 rng(seed);
    for (float& x : w_) x = 0.1f * rng.NextSymmetric();
    for (float& x : b_) x = 0.1f * rng.NextSymmetric();
    params_.push_back({"w", w_.data(), gw_.data(), static_cast<int64_t>(w_.size()), true});
    params_.push_back({"b", b_.data(), gb_.data(), static_cast<int64_t>(b_.size()), false});
  }

  Result<LossSum> ForwardBackward(std::span<const int32_t> tokens, std::span<const int32_t> targets) override {
    ++calls_;
    if (fail_at_call_ == calls_) return InternalError("injected failure");
    if (cancel_after_calls_ > 0 && calls_ == cancel_after_calls_) cancel_flag_->store(true);
    return Run(tokens, targets, true);
  }
  Result<LossSum> Forward(std::span<const int32_t> tokens, std::span<const int32_t> targets) override {
    return Run(tokens, targets, false);
  }
  std::span<const ParamTensor> params() const override { return params_; }
  void ZeroGrad() override {
    std::fill(gw_.begin(), gw_.end(), 0.0f);
    std::fill(gb_.begin(), gb_.end(), 0.0f);
  }
  int64_t max_seq_len() const override { return max_seq_; }

  std::vector<float>& w() { return w_; }
  std::vector<float>& b() { return b_; }
  int calls_ = 0;
  int fail_at_call_ = -1;
  int cancel_after_calls_ = 0;
  std::atomic<bool>* cancel_flag_ = nullptr;

 private:
  Result<LossSum> Run(std::span<const int32_t> tokens, std::span<const int32_t> targets, bool grad) {
    if (tokens.size() != targets.size() || static_cast<int64_t>(tokens.size()) > max_seq_) {
      return InvalidArgumentError("bad sequence length");
    }
    LossSum out;
    std::vector<double> z(static_cast<size_t>(vocab_));
    for (size_t i = 0; i < tokens.size(); ++i) {
      const int32_t s = tokens[i], t = targets[i];
      if (s < 0 || s >= vocab_ || t >= vocab_) return InvalidArgumentError("token id out of range");
      if (t < 0) continue;
      double mx = -1e300;
      for (int64_t j = 0; j < vocab_; ++j) {
        z[static_cast<size_t>(j)] = static_cast<double>(w_[static_cast<size_t>(s * vocab_ + j)]) +
                                    static_cast<double>(b_[static_cast<size_t>(j)]);
        mx = std::max(mx, z[static_cast<size_t>(j)]);
      }
      double sum = 0;
      for (double& v : z) sum += std::exp(v - mx);
      out.loss_sum += std::log(sum) + mx - z[static_cast<size_t>(t)];
      out.n_tokens += 1;
      if (!grad) continue;
      for (int64_t j = 0; j < vocab_; ++j) {
        const double p = std::exp(z[static_cast<size_t>(j)] - mx) / sum;
        const auto d = static_cast<float>(p - (j == t ? 1.0 : 0.0));
        gw_[static_cast<size_t>(s * vocab_ + j)] += d;
        gb_[static_cast<size_t>(j)] += d;
      }
    }
    return out;
  }

  int64_t vocab_, max_seq_;
  std::vector<float> w_, b_, gw_, gb_;
  std::vector<ParamTensor> params_;
};

constexpr int64_t kVocab = 12;

// A stream with structure (mostly t+1 mod V, sometimes a jump) so the loss can drop.
TokenDataset MakeData(int64_t n, uint64_t seed = 3) {
  SplitMix64 rng(seed);
  std::vector<int32_t> tokens(static_cast<size_t>(n));
  int32_t t = 0;
  for (auto& x : tokens) {
    x = t;
    t = (rng.Next() % 5 == 0) ? static_cast<int32_t>(rng.Next() % kVocab) : (t + 1) % static_cast<int32_t>(kVocab);
  }
  return TokenDataset(std::move(tokens));
}

TrainerOptions BaseOptions() {
  TrainerOptions o;
  o.adamw.learning_rate = 0.05f;
  o.adamw.weight_decay = 0.1f;
  o.steps = 6;
  o.warmup_steps = 2;
  o.min_lr_ratio = 0.1f;
  o.grad_clip = 1.0f;
  o.seq_len = 8;
  o.micro_batch = 2;
  o.accumulation = 2;
  o.seed = 11;
  return o;
}

struct Rig {
  std::unique_ptr<Trainer> trainer;
  BigramSource* source;  // owned by the trainer
};

Rig MakeTrainer(const TrainerOptions& o, uint64_t init_seed = 7) {
  auto src = std::make_unique<BigramSource>(kVocab, 16, init_seed);
  BigramSource* raw = src.get();
  Result<std::unique_ptr<Trainer>> t = train_internal::CreateTrainer(std::move(src), o);
  FLT_CHECK_OK(t.status());
  return {std::move(*t), raw};
}

std::filesystem::path TestPath(const std::string& name) {
  static TempDir dir = std::move(TempDir::Create("trainer_test").value());
  return dir.path() / name;
}

// ---- schedule and optimizer maths ---------------------------------------------------------

TEST(TrainerScheduleTest, WarmupThenCosineToTheFloor) {
  TrainerOptions o;
  o.adamw.learning_rate = 1e-3f;
  o.steps = 110;
  o.warmup_steps = 10;
  o.min_lr_ratio = 0.1f;
  const double peak = static_cast<double>(o.adamw.learning_rate);
  const double floor = peak * static_cast<double>(o.min_lr_ratio);
  EXPECT_DOUBLE_EQ(train_internal::LearningRate(o, 0), peak * 0.1);
  EXPECT_DOUBLE_EQ(train_internal::LearningRate(o, 4), peak * 0.5);
  EXPECT_DOUBLE_EQ(train_internal::LearningRate(o, 9), peak);
  EXPECT_DOUBLE_EQ(train_internal::LearningRate(o, 10), peak);
  EXPECT_NEAR(train_internal::LearningRate(o, 35), floor + (peak - floor) * 0.5 * (1 + std::cos(M_PI / 4)), 1e-15);
  EXPECT_NEAR(train_internal::LearningRate(o, 60), floor + (peak - floor) * 0.5, 1e-15);
  EXPECT_NEAR(train_internal::LearningRate(o, 110), floor, 1e-15);
  EXPECT_NEAR(train_internal::LearningRate(o, 500), floor, 1e-15);  // past the end: stays at the floor
  for (int64_t s = 10; s < 110; ++s) {
    EXPECT_GE(train_internal::LearningRate(o, s), train_internal::LearningRate(o, s + 1)) << s;
  }
  o.warmup_steps = 0;
  EXPECT_DOUBLE_EQ(train_internal::LearningRate(o, 0), peak);
  Rig r = MakeTrainer(BaseOptions());
  EXPECT_DOUBLE_EQ(r.trainer->LearningRateAt(0), train_internal::LearningRate(BaseOptions(), 0));
  EXPECT_DOUBLE_EQ(r.trainer->LearningRateAt(3), train_internal::LearningRate(BaseOptions(), 3));
}

// Plain double-precision AdamW as in the paper (Loshchilov & Hutter) / torch.optim.AdamW.
struct RefAdamW {
  std::vector<double> p, m, v;
  void Step(const AdamWOptions& o, double lr, int64_t t, bool decay, const std::vector<double>& g) {
    const double b1 = o.beta1, b2 = o.beta2, eps = o.eps, wd = o.weight_decay;
    for (size_t i = 0; i < p.size(); ++i) {
      if (decay) p[i] -= lr * wd * p[i];
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
      const double mhat = m[i] / (1 - std::pow(b1, static_cast<double>(t)));
      const double vhat = v[i] / (1 - std::pow(b2, static_cast<double>(t)));
      p[i] -= lr * mhat / (std::sqrt(vhat) + eps);
    }
  }
};

TEST(TrainerAdamWTest, MatchesDoubleReferenceWithAndWithoutDecay) {
  for (bool decay : {true, false}) {
    AdamWOptions o;
    o.beta1 = 0.9f;
    o.beta2 = 0.95f;
    o.eps = 1e-8f;
    o.weight_decay = 0.3f;
    const size_t n = 37;  // not a multiple of the vector width
    SplitMix64 rng(5);
    std::vector<float> p(n), m(n, 0), v(n, 0), g(n);
    for (float& x : p) x = rng.NextSymmetric();
    RefAdamW ref{std::vector<double>(p.begin(), p.end()), std::vector<double>(n, 0), std::vector<double>(n, 0)};
    for (int64_t t = 1; t <= 6; ++t) {
      std::vector<double> gd(n);
      for (size_t i = 0; i < n; ++i) {
        g[i] = rng.NextSymmetric() * (i % 3 == 0 ? 1e-3f : 2.0f);  // mixed magnitudes
        gd[i] = static_cast<double>(g[i]) * 0.5;
      }
      const double lr = 0.01 * static_cast<double>(t);
      train_internal::AdamWUpdate(o, lr, t, decay, 0.5f, p, g, m, v);
      ref.Step(o, lr, t, decay, gd);
      for (size_t i = 0; i < n; ++i) {
        ASSERT_NEAR(static_cast<double>(p[i]), ref.p[i], 1e-6 * (1 + std::abs(ref.p[i]))) << t << " " << i;
        ASSERT_NEAR(static_cast<double>(m[i]), ref.m[i], 1e-6 * (1 + std::abs(ref.m[i]))) << t << " " << i;
      }
    }
  }
}

TEST(TrainerAdamWTest, FirstStepMovesEachWeightByAboutTheLearningRate) {
  // Bias correction: at t = 1 the update is lr · g/|g| (eps aside), whatever g's scale.
  AdamWOptions o;
  std::vector<float> p = {0.0f, 0.0f, 0.0f}, m(3, 0), v(3, 0);
  const std::vector<float> g = {1e-4f, -3.0f, 50.0f};
  train_internal::AdamWUpdate(o, 0.01, 1, false, 1.0f, p, g, m, v);
  EXPECT_NEAR(p[0], -0.01f, 1e-6f);
  EXPECT_NEAR(p[1], 0.01f, 1e-6f);
  EXPECT_NEAR(p[2], -0.01f, 1e-6f);
}

TEST(TrainerAdamWTest, GlobalNormIsTheL2NormOverAllTensors) {
  std::vector<float> a(10001), b(3), dummy(10001);
  double ref = 0;
  SplitMix64 rng(9);
  for (float& x : a) {
    x = rng.NextSymmetric();
    ref += static_cast<double>(x) * static_cast<double>(x);
  }
  for (float& x : b) {
    x = 100 * rng.NextSymmetric();
    ref += static_cast<double>(x) * static_cast<double>(x);
  }
  const std::vector<ParamTensor> params = {{"a", dummy.data(), a.data(), 10001, true},
                                           {"b", dummy.data(), b.data(), 3, false}};
  EXPECT_NEAR(train_internal::GlobalGradNorm(params), std::sqrt(ref), 1e-6 * std::sqrt(ref));
}

// ---- data ----------------------------------------------------------------------------------

TEST(TokenDatasetTest, WindowsOverlapByOneAndCoverEveryTarget) {
  TokenDataset d(std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});  // 9 targets
  EXPECT_EQ(d.NumWindows(4), 3);  // targets 1-4, 5-8, 9
  EXPECT_EQ(std::vector<int32_t>(d.Window(0, 4).begin(), d.Window(0, 4).end()), (std::vector<int32_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(std::vector<int32_t>(d.Window(1, 4).begin(), d.Window(1, 4).end()), (std::vector<int32_t>{4, 5, 6, 7, 8}));
  EXPECT_EQ(std::vector<int32_t>(d.Window(2, 4).begin(), d.Window(2, 4).end()), (std::vector<int32_t>{8, 9}));
  EXPECT_EQ(d.NumWindows(9), 1);
  EXPECT_EQ(d.NumWindows(3), 3);
  EXPECT_EQ(TokenDataset(std::vector<int32_t>{5}).NumWindows(4), 0);
  EXPECT_EQ(TokenDataset(std::vector<int32_t>{}).NumWindows(4), 0);
}

TEST(TokenDatasetTest, FromTextsPacksDocumentsWithBosAndEos) {
  Result<std::unique_ptr<Tokenizer>> tok = Tokenizer::Create(ByteVocabulary());
  ASSERT_TRUE(tok.ok());
  const std::vector<std::string> texts = {"hi", "", "abc"};
  const TokenDataset d = TokenDataset::FromTexts(**tok, texts);
  const int32_t bos = (*tok)->bos_id(), eos = (*tok)->eos_id();
  // Byte vocabulary: byte c is token c + 3. The empty document is skipped.
  const std::vector<int32_t> want = {bos, 'h' + 3, 'i' + 3, eos, bos, 'a' + 3, 'b' + 3, 'c' + 3, eos};
  EXPECT_EQ(d.tokens(), want);
}

TEST(TrainerWindowOrderTest, PermutationPerEpochDeterministic) {
  const std::vector<int64_t> a = train_internal::WindowOrder(1, 0, 100);
  std::vector<int64_t> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> iota(100);
  std::iota(iota.begin(), iota.end(), 0);
  EXPECT_EQ(sorted, iota);
  EXPECT_NE(a, iota);
  EXPECT_EQ(a, train_internal::WindowOrder(1, 0, 100));
  EXPECT_NE(a, train_internal::WindowOrder(1, 1, 100));
  EXPECT_NE(a, train_internal::WindowOrder(2, 0, 100));
  // Golden values (computed independently with a Python SplitMix64): the order is part of
  // the reproducibility contract, the same on every platform.
  EXPECT_EQ(train_internal::WindowOrder(42, 3, 10), (std::vector<int64_t>{4, 0, 5, 2, 7, 1, 8, 9, 6, 3}));
  EXPECT_TRUE(train_internal::WindowOrder(1, 0, 0).empty());
  EXPECT_EQ(train_internal::WindowOrder(1, 0, 1), (std::vector<int64_t>{0}));
}

// ---- the loop against a double-precision reference ----------------------------------------

// The whole Trainer step in double: token-mean gradient over the step's windows,
// global-norm clipping, AdamW with the schedule.
struct RefTrainer {
  int64_t vocab;
  std::vector<double> w, b;
  RefAdamW aw, ab;

  void Grad(std::span<const int32_t> win, std::vector<double>& gw, std::vector<double>& gb, double& loss,
            int64_t& n) const {
    for (size_t i = 0; i + 1 < win.size(); ++i) {
      const int32_t s = win[i], t = win[i + 1];
      std::vector<double> z(static_cast<size_t>(vocab));
      double mx = -1e300;
      for (int64_t j = 0; j < vocab; ++j) {
        z[static_cast<size_t>(j)] = w[static_cast<size_t>(s * vocab + j)] + b[static_cast<size_t>(j)];
        mx = std::max(mx, z[static_cast<size_t>(j)]);
      }
      double sum = 0;
      for (double v : z) sum += std::exp(v - mx);
      loss += std::log(sum) + mx - z[static_cast<size_t>(t)];
      ++n;
      for (int64_t j = 0; j < vocab; ++j) {
        const double d = std::exp(z[static_cast<size_t>(j)] - mx) / sum - (j == t ? 1.0 : 0.0);
        gw[static_cast<size_t>(s * vocab + j)] += d;
        gb[static_cast<size_t>(j)] += d;
      }
    }
  }
};

TEST(TrainerLoopTest, MatchesDoublePrecisionReference) {
  TrainerOptions o = BaseOptions();
  o.grad_clip = 0.2f;  // low enough to clip on most steps
  Rig r = MakeTrainer(o);
  RefTrainer ref{kVocab,
                 std::vector<double>(r.source->w().begin(), r.source->w().end()),
                 std::vector<double>(r.source->b().begin(), r.source->b().end()),
                 {},
                 {}};
  ref.aw = {ref.w, std::vector<double>(ref.w.size(), 0), std::vector<double>(ref.w.size(), 0)};
  ref.ab = {ref.b, std::vector<double>(ref.b.size(), 0), std::vector<double>(ref.b.size(), 0)};
  const TokenDataset data = MakeData(50);  // 7 windows of 8: epochs wrap inside the run
  std::vector<double> grad_norms;
  Result<TrainReport> rep = r.trainer->Run(data, [&](const TrainProgress& p) {
    grad_norms.push_back(p.grad_norm);
    return true;
  });
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();

  const int64_t nw = data.NumWindows(o.seq_len);
  int64_t consumed = 0, ref_tokens = 0;
  int clipped = 0;
  for (int64_t step = 0; step < o.steps; ++step) {
    std::vector<double> gw(ref.w.size(), 0), gb(ref.b.size(), 0);
    double loss = 0;
    int64_t n = 0;
    for (int64_t k = 0; k < o.micro_batch * o.accumulation; ++k, ++consumed) {
      const int64_t w = train_internal::WindowOrder(o.seed, consumed / nw, nw)[static_cast<size_t>(consumed % nw)];
      ref.Grad(data.Window(w, o.seq_len), gw, gb, loss, n);
    }
    double norm2 = 0;
    for (std::vector<double>* gv : {&gw, &gb}) {
      for (double& g : *gv) {
        g /= static_cast<double>(n);
        norm2 += g * g;
      }
    }
    const double norm = std::sqrt(norm2);
    ref_tokens += n;
    EXPECT_NEAR(grad_norms[static_cast<size_t>(step)], norm, 1e-5 * norm) << step;
    EXPECT_NEAR(rep->loss_curve[static_cast<size_t>(step)], loss / static_cast<double>(n), 1e-5) << step;
    if (norm > static_cast<double>(o.grad_clip)) {
      ++clipped;
      for (double& g : gw) g *= static_cast<double>(o.grad_clip) / norm;
      for (double& g : gb) g *= static_cast<double>(o.grad_clip) / norm;
    }
    const double lr = train_internal::LearningRate(o, step);
    ref.aw.Step(o.adamw, lr, step + 1, true, gw);
    ref.ab.Step(o.adamw, lr, step + 1, false, gb);
    ref.w = ref.aw.p;
    ref.b = ref.ab.p;
  }
  EXPECT_GT(clipped, 0);
  for (size_t i = 0; i < ref.w.size(); ++i) ASSERT_NEAR(r.source->w()[i], ref.w[i], 2e-5) << i;
  for (size_t i = 0; i < ref.b.size(); ++i) ASSERT_NEAR(r.source->b()[i], ref.b[i], 2e-5) << i;
  EXPECT_EQ(rep->steps, o.steps);
  EXPECT_EQ(rep->tokens, ref_tokens);
}

TEST(TrainerLoopTest, AccumulatingMicroBatchesEqualsOneBigBatch) {
  TrainerOptions o = BaseOptions();
  const TokenDataset data = MakeData(200);
  std::vector<std::vector<float>> results;
  for (auto [micro, acc] : {std::pair<int64_t, int64_t>{4, 1}, {1, 4}, {2, 2}}) {
    o.micro_batch = micro;
    o.accumulation = acc;
    Rig r = MakeTrainer(o);
    ASSERT_TRUE(r.trainer->Run(data).ok());
    results.push_back(r.source->w());
  }
  EXPECT_EQ(results[0], results[1]);
  EXPECT_EQ(results[0], results[2]);
}

TEST(TrainerLoopTest, LearnsTheDataAndIsDeterministic) {
  TrainerOptions o = BaseOptions();
  o.steps = 60;
  o.adamw.weight_decay = 0;
  const TokenDataset data = MakeData(400);
  Rig a = MakeTrainer(o);
  Result<EvalResult> before = train_internal::EvaluateSource(*a.source, data, 8, 0);
  ASSERT_TRUE(before.ok());
  Result<TrainReport> rep = a.trainer->Run(data);
  ASSERT_TRUE(rep.ok());
  Result<EvalResult> after = train_internal::EvaluateSource(*a.source, data, 8, 0);
  ASSERT_TRUE(after.ok());
  // 80% of transitions are deterministic: the entropy floor is far below log(12) ≈ 2.48.
  EXPECT_LT(after->mean_loss, 0.6 * before->mean_loss);
  EXPECT_LT(rep->loss_curve.back(), rep->loss_curve.front());
  Rig b = MakeTrainer(o);
  ASSERT_TRUE(b.trainer->Run(data).ok());
  EXPECT_EQ(a.source->w(), b.source->w());
  // A different data-order seed gives a different (but also trained) model.
  o.seed = 12;
  Rig c = MakeTrainer(o);
  ASSERT_TRUE(c.trainer->Run(data).ok());
  EXPECT_NE(a.source->w(), c.source->w());
}

TEST(TrainerLoopTest, ProgressReportsEveryStep) {
  TrainerOptions o = BaseOptions();
  Rig r = MakeTrainer(o);
  std::vector<TrainProgress> seen;
  // 96 targets: 12 full windows, so every step trains on 4 × 8 tokens.
  ASSERT_TRUE(r.trainer->Run(MakeData(97), [&](const TrainProgress& p) {
                  seen.push_back(p);
                  return true;
                }).ok());
  ASSERT_EQ(seen.size(), 6u);
  for (size_t i = 0; i < seen.size(); ++i) {
    EXPECT_EQ(seen[i].step, static_cast<int64_t>(i) + 1);
    EXPECT_EQ(seen[i].total_steps, 6);
    EXPECT_DOUBLE_EQ(seen[i].learning_rate, r.trainer->LearningRateAt(static_cast<int64_t>(i)));
    EXPECT_EQ(seen[i].tokens, static_cast<int64_t>(i + 1) * 4 * 8);
    EXPECT_GT(seen[i].loss, 0);
    EXPECT_GT(seen[i].grad_norm, 0);
    EXPECT_GE(seen[i].seconds, 0);
  }
  EXPECT_EQ(r.trainer->step(), 6);
  // Already done: Run again does nothing.
  Result<TrainReport> again = r.trainer->Run(MakeData(100));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->steps, 0);
}

// ---- cancellation and resume ------------------------------------------------------------

std::vector<float> Uninterrupted(const TrainerOptions& o, const TokenDataset& data, std::vector<double>* curve) {
  Rig r = MakeTrainer(o);
  Result<TrainReport> rep = r.trainer->Run(data);
  FLT_CHECK_OK(rep.status());
  if (curve) *curve = rep->loss_curve;
  return r.source->w();
}

TEST(TrainerCancelTest, FlagMidStepAbandonsTheStepAndRunContinuesToTheSameResult) {
  const TrainerOptions o = BaseOptions();
  const TokenDataset data = MakeData(100);
  std::vector<double> full_curve;
  const std::vector<float> full = Uninterrupted(o, data, &full_curve);

  Rig r = MakeTrainer(o);
  std::atomic<bool> cancel{false};
  r.source->cancel_flag_ = &cancel;
  r.source->cancel_after_calls_ = 4 * 2 + 1;  // during the first micro-batch of step 3
  Result<TrainReport> first = r.trainer->Run(data, {}, &cancel);
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(first.status().code(), StatusCode::kCancelled);
  EXPECT_EQ(r.trainer->step(), 2);
  cancel = false;
  Result<TrainReport> second = r.trainer->Run(data, {}, &cancel);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ(second->steps, 4);
  EXPECT_EQ(r.source->w(), full);
  EXPECT_EQ(second->loss_curve, full_curve);  // the curve covers every step, across Runs
}

TEST(TrainerCancelTest, ProgressCallbackStopsAfterTheCurrentStep) {
  const TrainerOptions o = BaseOptions();
  const TokenDataset data = MakeData(100);
  const std::vector<float> full = Uninterrupted(o, data, nullptr);
  Rig r = MakeTrainer(o);
  Result<TrainReport> first = r.trainer->Run(data, [](const TrainProgress& p) { return p.step < 4; });
  EXPECT_EQ(first.status().code(), StatusCode::kCancelled);
  EXPECT_EQ(r.trainer->step(), 4);
  ASSERT_TRUE(r.trainer->Run(data).ok());
  EXPECT_EQ(r.source->w(), full);
}

TEST(TrainerCancelTest, EngineErrorLeavesTheStepUndone) {
  const TrainerOptions o = BaseOptions();
  const TokenDataset data = MakeData(100);
  const std::vector<float> full = Uninterrupted(o, data, nullptr);
  Rig r = MakeTrainer(o);
  r.source->fail_at_call_ = 7;  // step 2, third window
  Result<TrainReport> first = r.trainer->Run(data);
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(first.status().code(), StatusCode::kInternal);
  EXPECT_NE(first.status().ToString().find("step 2"), std::string::npos) << first.status().ToString();
  EXPECT_EQ(r.trainer->step(), 1);
  ASSERT_TRUE(r.trainer->Run(data).ok());
  EXPECT_EQ(r.source->w(), full);
}

TEST(TrainerStateTest, ResumeFromSavedStateIsBitIdentical) {
  const TrainerOptions o = BaseOptions();
  const TokenDataset data = MakeData(100);
  std::vector<double> full_curve;
  const std::vector<float> full = Uninterrupted(o, data, &full_curve);

  const std::filesystem::path state = TestPath("resume.state");
  std::vector<float> w_saved, b_saved;
  {
    Rig r = MakeTrainer(o);
    EXPECT_EQ(r.trainer->Run(data, [](const TrainProgress& p) { return p.step < 3; }).status().code(),
              StatusCode::kCancelled);
    ASSERT_TRUE(r.trainer->SaveState(state).ok());
    w_saved = r.source->w();
    b_saved = r.source->b();
  }
  // A fresh process: parameters restored by their owner, optimizer state from the file.
  Rig r = MakeTrainer(o, /*init_seed=*/99);
  r.source->w() = w_saved;
  r.source->b() = b_saved;
  ASSERT_TRUE(r.trainer->LoadState(state).ok());
  EXPECT_EQ(r.trainer->step(), 3);
  Result<TrainReport> rep = r.trainer->Run(data);
  ASSERT_TRUE(rep.ok());
  EXPECT_EQ(rep->steps, 3);
  EXPECT_EQ(r.source->w(), full);
  EXPECT_EQ(rep->loss_curve, full_curve);
}

TEST(TrainerStateTest, RefusesStateForOtherShapesAndCorruptFiles) {
  const TrainerOptions o = BaseOptions();
  const std::filesystem::path state = TestPath("shapes.state");
  Rig r = MakeTrainer(o);
  ASSERT_TRUE(r.trainer->Run(MakeData(100), [](const TrainProgress& p) { return p.step < 2; }).status().code() ==
              StatusCode::kCancelled);
  ASSERT_TRUE(r.trainer->SaveState(state).ok());

  auto other = std::make_unique<BigramSource>(kVocab + 1, 16);
  std::unique_ptr<Trainer> t = std::move(train_internal::CreateTrainer(std::move(other), o).value());
  Status s = t->LoadState(state);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("'w'"), std::string::npos) << s.ToString();
  EXPECT_EQ(t->step(), 0);

  Bytes bytes = ReadFileBytes(state).value();
  Rig fresh = MakeTrainer(o);
  // Flipped bit anywhere: checksum.
  Bytes flipped = bytes;
  flipped[40] ^= 1;
  ASSERT_TRUE(WriteFileAtomic(TestPath("flipped.state"), flipped).ok());
  EXPECT_EQ(fresh.trainer->LoadState(TestPath("flipped.state")).code(), StatusCode::kDataLoss);
  // Truncated.
  Bytes cut(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(bytes.size() / 2));
  ASSERT_TRUE(WriteFileAtomic(TestPath("cut.state"), cut).ok());
  EXPECT_FALSE(fresh.trainer->LoadState(TestPath("cut.state")).ok());
  // Not a state file at all / missing.
  ASSERT_TRUE(WriteFileAtomic(TestPath("junk.state"), std::string_view("GGUF this is not a trainer state")).ok());
  EXPECT_EQ(fresh.trainer->LoadState(TestPath("junk.state")).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(fresh.trainer->LoadState(TestPath("absent.state")).code(), StatusCode::kNotFound);
  EXPECT_EQ(fresh.trainer->step(), 0);
  // And the good file still loads.
  ASSERT_TRUE(fresh.trainer->LoadState(state).ok());
  EXPECT_EQ(fresh.trainer->step(), 2);
}

// ---- validation and evaluation ------------------------------------------------------------

TEST(TrainerValidationTest, RefusesBadOptionsAndData) {
  auto create = [](const std::function<void(TrainerOptions&)>& edit) {
    TrainerOptions o = BaseOptions();
    edit(o);
    return train_internal::CreateTrainer(std::make_unique<BigramSource>(kVocab, 16), o).status().code();
  };
  EXPECT_EQ(create([](TrainerOptions&) {}), StatusCode::kOk);
  EXPECT_EQ(create([](TrainerOptions& o) { o.steps = 0; }), StatusCode::kInvalidArgument);
  EXPECT_EQ(create([](TrainerOptions& o) { o.seq_len = 17; }), StatusCode::kInvalidArgument);
  EXPECT_EQ(create([](TrainerOptions& o) { o.seq_len = 0; }), StatusCode::kInvalidArgument);
  EXPECT_EQ(create([](TrainerOptions& o) { o.micro_batch = 0; }), StatusCode::kInvalidArgument);
  EXPECT_EQ(create([](TrainerOptions& o) { o.accumulation = 0; }), StatusCode::kInvalidArgument);
  EXPECT_EQ(create([](TrainerOptions& o) { o.adamw.learning_rate = 0; }), StatusCode::kInvalidArgument);
  EXPECT_EQ(create([](TrainerOptions& o) { o.adamw.learning_rate = NAN; }), StatusCode::kInvalidArgument);
  EXPECT_EQ(create([](TrainerOptions& o) { o.adamw.beta2 = 1; }), StatusCode::kInvalidArgument);
  EXPECT_EQ(create([](TrainerOptions& o) { o.adamw.weight_decay = -1; }), StatusCode::kInvalidArgument);
  EXPECT_EQ(create([](TrainerOptions& o) { o.min_lr_ratio = 2; }), StatusCode::kInvalidArgument);

  Rig r = MakeTrainer(BaseOptions());
  Result<TrainReport> rep = r.trainer->Run(TokenDataset(std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(rep.status().code(), StatusCode::kInvalidArgument);
  // A bad token id is the engine's InvalidArgument, with where it happened.
  std::vector<int32_t> bad(17, 1);  // two windows, both in the first step
  bad[4] = 1000;
  bad[12] = 1000;
  rep = r.trainer->Run(TokenDataset(bad));
  EXPECT_EQ(rep.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.trainer->step(), 0);
}

TEST(TrainerEvalTest, MeanLossAndPerplexityOverAllOrSomeWindows) {
  BigramSource src(kVocab, 16);
  const TokenDataset data = MakeData(101);
  Result<EvalResult> all = train_internal::EvaluateSource(src, data, 8, 0);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->n_tokens, 100);
  // Direct: the bigram loss of every transition, whatever the windowing.
  Result<LossSum> direct = src.Forward(std::span(data.tokens()).first(16), std::span(data.tokens()).subspan(1, 16));
  ASSERT_TRUE(direct.ok());
  double total = 0;
  for (int64_t i = 0; i + 1 < data.size(); ++i) {
    total += src.Forward(std::span(data.tokens()).subspan(static_cast<size_t>(i), 1),
                         std::span(data.tokens()).subspan(static_cast<size_t>(i) + 1, 1))
                 ->loss_sum;
  }
  EXPECT_NEAR(all->mean_loss, total / 100, 1e-9);
  EXPECT_NEAR(all->perplexity, std::exp(all->mean_loss), 1e-9);
  Result<EvalResult> some = train_internal::EvaluateSource(src, data, 8, 3);
  ASSERT_TRUE(some.ok());
  EXPECT_EQ(some->n_tokens, 24);
  EXPECT_EQ(train_internal::EvaluateSource(src, TokenDataset(std::vector<int32_t>{1}), 8, 0).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(train_internal::EvaluateSource(src, data, 17, 0).status().code(), StatusCode::kInvalidArgument);
}


// ---- through the real TrainEngine -----------------------------------------------------------

namespace engine_tests {

ModelConfig TinyConfig() {
  ModelConfig c = NamedConfig("tiny").value();  // dim 64, 2 layers, GQA 4/2, byte vocabulary (259)
  return c;
}

TokenDataset ByteText(int copies) {
  std::unique_ptr<Tokenizer> tok = std::move(Tokenizer::Create(ByteVocabulary()).value());
  std::vector<std::string> texts;
  for (int i = 0; i < copies; ++i) {
    texts.push_back("the kettle in the kitchen is on. turn off the lights in room " + std::to_string(i % 7) + ".");
  }
  return TokenDataset::FromTexts(*tok, texts);
}

TrainerOptions EngineOptions() {
  TrainerOptions o;
  o.adamw.learning_rate = 1e-2f;
  o.adamw.weight_decay = 0.01f;
  o.steps = 8;
  o.warmup_steps = 2;
  o.seq_len = 32;
  o.micro_batch = 2;
  o.accumulation = 1;
  o.seed = 4;
  return o;
}

struct FullRig {
  std::unique_ptr<DenseLlamaWeights> weights;
  std::unique_ptr<TrainEngine> engine;
  std::unique_ptr<Trainer> trainer;
};

FullRig MakeFull(const TrainerOptions& o, int threads, std::unique_ptr<DenseLlamaWeights> weights = nullptr) {
  FullRig r;
  r.weights = weights ? std::move(weights) : std::move(DenseLlamaWeights::Init(TinyConfig(), 1).value());
  TrainEngineOptions eo;
  eo.n_threads = threads;
  eo.max_seq_len = o.seq_len;
  r.engine = std::move(TrainEngine::CreateFull(*r.weights, eo).value());
  r.trainer = std::move(Trainer::Create(*r.engine, o).value());
  return r;
}

bool SameWeights(const DenseLlamaWeights& a, const DenseLlamaWeights& b) {
  for (const std::string& name : a.names()) {
    const std::span<const float> x = a.Tensor(name), y = b.Tensor(name);
    if (x.size() != y.size() || std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) != 0) return false;
  }
  return true;
}

TEST(TrainerEngineTest, FullTrainingLowersTheLossDeterministicallyForAnyThreadCount) {
  const TrainerOptions o = EngineOptions();
  const TokenDataset data = ByteText(40);
  FullRig a = MakeFull(o, 1);
  const EvalResult before = Evaluate(*a.engine, data, o.seq_len, 8).value();
  Result<TrainReport> rep = a.trainer->Run(data);
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  const EvalResult after = Evaluate(*a.engine, data, o.seq_len, 8).value();
  EXPECT_LT(after.mean_loss, before.mean_loss - 1.0) << before.mean_loss << " -> " << after.mean_loss;
  EXPECT_NEAR(before.mean_loss, std::log(259.0), 0.25);  // std 0.02 init: nearly uniform
  FullRig b = MakeFull(o, 2);
  ASSERT_TRUE(b.trainer->Run(data).ok());
  EXPECT_TRUE(SameWeights(*a.weights, *b.weights));
}

TEST(TrainerEngineTest, CheckpointResumeThroughTheModelFileIsBitIdentical) {
  const TrainerOptions o = EngineOptions();
  const TokenDataset data = ByteText(40);
  FullRig full = MakeFull(o, 2);
  std::vector<double> curve = full.trainer->Run(data).value().loss_curve;

  const std::filesystem::path model = TestPath("ckpt.gguf"), state = TestPath("ckpt.state");
  {
    FullRig first = MakeFull(o, 2);
    std::atomic<bool> cancel{false};
    Result<TrainReport> r = first.trainer->Run(data, [&](const TrainProgress& p) { return p.step < 3; }, &cancel);
    ASSERT_EQ(r.status().code(), StatusCode::kCancelled);
    ASSERT_TRUE(first.weights->Save(model, ByteVocabulary(), "ckpt").ok());
    ASSERT_TRUE(first.trainer->SaveState(state).ok());
  }
  auto loaded = std::move(LlamaModel::Open(model).value());
  FullRig resumed = MakeFull(o, 2, std::move(DenseLlamaWeights::FromModel(*loaded).value()));
  ASSERT_TRUE(resumed.trainer->LoadState(state).ok());
  Result<TrainReport> rest = resumed.trainer->Run(data);
  ASSERT_TRUE(rest.ok());
  EXPECT_EQ(rest->steps, o.steps - 3);
  EXPECT_EQ(rest->loss_curve, curve);
  EXPECT_TRUE(SameWeights(*full.weights, *resumed.weights));
}

TEST(TrainerEngineTest, EngineAndInferencePathAgreeOnTheLoss) {
  const TrainerOptions o = EngineOptions();
  const TokenDataset data = ByteText(20);
  FullRig r = MakeFull(o, 2);
  ASSERT_TRUE(r.trainer->Run(data).ok());
  ASSERT_TRUE(r.weights->Save(TestPath("eval.gguf"), ByteVocabulary(), "eval").ok());
  auto model = std::move(LlamaModel::Open(TestPath("eval.gguf")).value());
  const EvalResult engine = Evaluate(*r.engine, data, o.seq_len).value();
  const EvalResult inference = Evaluate(*model, nullptr, data, o.seq_len, 0, 2).value();
  EXPECT_EQ(engine.n_tokens, inference.n_tokens);
  EXPECT_NEAR(engine.mean_loss, inference.mean_loss, 1e-3);
}

TEST(TrainerEngineTest, LoraOnAQuantizedBaseTrainsOnlyB) {
  RandomModelOptions ro;
  ro.weight_type = GgmlType::kQ8_0;
  ASSERT_TRUE(WriteRandomModel(TinyConfig(), ro, TestPath("q8.gguf")).ok());
  auto base = std::move(LlamaModel::Open(TestPath("q8.gguf")).value());
  LoraConfig lc;
  lc.a_seed = 3;
  LoraAdapter adapter = LoraAdapter::Create(base->config(), lc).value();
  const LoraAdapter initial = adapter;
  TrainEngineOptions eo;
  eo.n_threads = 2;
  eo.max_seq_len = 32;
  auto engine = std::move(TrainEngine::CreateLora(*base, adapter, eo).value());
  TrainerOptions o = EngineOptions();
  o.adamw.weight_decay = 0;
  o.steps = 12;
  auto trainer = std::move(Trainer::Create(*engine, o).value());
  const TokenDataset data = ByteText(30);
  const EvalResult before = Evaluate(*engine, data, o.seq_len).value();
  ASSERT_TRUE(trainer->Run(data).ok());
  const EvalResult after = Evaluate(*engine, data, o.seq_len).value();
  EXPECT_LT(after.mean_loss, before.mean_loss);
  for (size_t i = 0; i < adapter.matrices().size(); ++i) {
    EXPECT_EQ(adapter.matrices()[i].a, initial.matrices()[i].a);
    EXPECT_NE(adapter.matrices()[i].b, initial.matrices()[i].b);
  }
}

}  // namespace engine_tests

}  // namespace
}  // namespace flotilla::model

namespace flotilla::model {
namespace {

TEST(SplitNonEmptyLinesTest, SkipsEmptyLinesAndKeepsOrder) {
  EXPECT_EQ(SplitNonEmptyLines("a b\n\nc\n"), (std::vector<std::string>{"a b", "c"}));
  EXPECT_EQ(SplitNonEmptyLines("\n\nlast"), (std::vector<std::string>{"last"}));
  EXPECT_TRUE(SplitNonEmptyLines("").empty());
}

}  // namespace
}  // namespace flotilla::model
