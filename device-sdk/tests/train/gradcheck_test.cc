// Gradient checks of the training engine against central finite differences.
//
// 1. Every op's backward (train_ops.h) against central differences of a small
//    double-precision reference of its forward: L(x) = Σ dy ⊙ f(x) in double, step
//    h = 1e-3 (truncation O(h²·f''') ~1e-7 relative, rounding ~1e-13/h), so the only real
//    error is the engine's float arithmetic: tolerance 1e-4 relative to the gradient's
//    scale (a wrong formula is off by O(1)).
// 2. The whole model's adapter gradients (A and B of every target projection) and the
//    full-mode gradients (every tensor) against central differences, see the comments of
//    those tests for the step sizes and tolerances.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <ostream>
#include <string>
#include <random>
#include <vector>

#include "train/train_ops.h"
#include "flotilla/model/kernels.h"
#include "train_test_util.h"

// The references deliberately mix float inputs into double arithmetic.
#pragma GCC diagnostic ignored "-Wdouble-promotion"

namespace flotilla::model {
namespace {

using testing::CentralDifference;
using testing::DVec;

std::vector<float> Randoms(std::mt19937& rng, size_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

double Dot(const std::vector<float>& a, const DVec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

double MaxAbs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, std::fabs(static_cast<double>(x)));
  return m;
}

// Checks grad[i] == ∂/∂x[i] of loss() (a double function reading x) for every i (or a
// stride of them), |error| <= rel · max|grad| + 1e-9.
void ExpectGradient(std::vector<float>& x, const std::vector<float>& grad, const std::function<double()>& loss,
                    const std::string& what, double rel = 1e-4, size_t stride = 1) {
  ASSERT_EQ(x.size(), grad.size());
  const double scale = MaxAbs(grad);
  ASSERT_GT(scale, 0.0) << what << ": the gradient is zero, the check would be vacuous";
  for (size_t i = 0; i < x.size(); i += stride) {
    const double fd = CentralDifference(&x[i], 1e-3, loss);
    ASSERT_NEAR(grad[i], fd, rel * scale + 1e-9) << what << " at " << i;
  }
}

const KernelTable& K() { return ActiveKernels(); }

TEST(OpGradientTest, RmsNormBackward) {
  std::mt19937 rng(1);
  const int64_t n = 3, dim = 40;
  const float eps = 1e-5f;
  std::vector<float> x = Randoms(rng, n * dim, -2, 2), w = Randoms(rng, dim, 0.5f, 1.5f), dy = Randoms(rng, n * dim);
  auto forward = [&] {
    DVec y(static_cast<size_t>(n * dim));
    for (int64_t t = 0; t < n; ++t) {
      double ss = 0;
      for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(x[t * dim + i]) * x[t * dim + i];
      const double r = 1.0 / std::sqrt(ss / dim + eps);
      for (int64_t i = 0; i < dim; ++i) y[t * dim + i] = x[t * dim + i] * r * w[i];
    }
    return Dot(dy, y);
  };
  // dx accumulates: start from a known value and subtract it.
  std::vector<float> dx(x.size(), 0.5f), dw(w.size(), 0.25f);
  train_ops::RmsNormBackward(x.data(), w.data(), dy.data(), n, dim, eps, dx.data(), dw.data(), nullptr);
  for (float& v : dx) v -= 0.5f;
  for (float& v : dw) v -= 0.25f;
  ExpectGradient(x, dx, forward, "dx");
  ExpectGradient(w, dw, forward, "dw");
}

TEST(OpGradientTest, SwiGluBackward) {
  std::mt19937 rng(2);
  const int64_t n = 64;
  std::vector<float> g = Randoms(rng, n, -6, 6), u = Randoms(rng, n, -2, 2), da = Randoms(rng, n);
  auto forward = [&] {
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += da[i] * (g[i] / (1.0 + std::exp(-static_cast<double>(g[i])))) * u[i];
    return s;
  };
  std::vector<float> dg(n), du(n);
  train_ops::SwiGluBackward(g.data(), u.data(), da.data(), dg.data(), du.data(), n);
  ExpectGradient(g, dg, forward, "dg");
  ExpectGradient(u, du, forward, "du");
  // dg may alias da.
  std::vector<float> inplace = da;
  train_ops::SwiGluBackward(g.data(), u.data(), inplace.data(), inplace.data(), du.data(), n);
  EXPECT_EQ(inplace, dg);
}

TEST(OpGradientTest, RopeBackwardIsTheTransposeRotation) {
  std::mt19937 rng(3);
  const int64_t n = 9, heads = 3, hd = 8;
  const float theta = 10000.0f;
  std::vector<float> x = Randoms(rng, n * heads * hd), dy = Randoms(rng, n * heads * hd);
  auto forward = [&] {
    DVec all;
    for (int64_t t = 0; t < n; ++t) {
      DVec v(x.begin() + t * heads * hd, x.begin() + (t + 1) * heads * hd);
      testing::RefRope(v, heads, hd, t, theta);
      all.insert(all.end(), v.begin(), v.end());
    }
    return Dot(dy, all);
  };
  std::vector<float> dx = dy;
  train_ops::RopeBackward(K(), dx.data(), n, heads, hd, theta);
  ExpectGradient(x, dx, forward, "dx");
}

// Double reference of causal GQA attention at positions 0..n-1.
DVec RefAttention(const train_ops::AttentionShape& s, const std::vector<float>& q, const std::vector<float>& k,
                  const std::vector<float>& v) {
  const int64_t hd = s.head_dim, q_dim = s.n_heads * hd, kv = s.n_kv_heads * hd, group = s.n_heads / s.n_kv_heads;
  DVec out(static_cast<size_t>(s.n * q_dim), 0.0);
  for (int64_t t = 0; t < s.n; ++t) {
    for (int64_t h = 0; h < s.n_heads; ++h) {
      const int64_t off = (h / group) * hd;
      DVec sc(static_cast<size_t>(t + 1));
      double mx = -1e300;
      for (int64_t j = 0; j <= t; ++j) {
        double d = 0;
        for (int64_t i = 0; i < hd; ++i) d += static_cast<double>(q[t * q_dim + h * hd + i]) * k[j * kv + off + i];
        sc[j] = d / std::sqrt(static_cast<double>(hd));
        mx = std::max(mx, sc[j]);
      }
      double sum = 0;
      for (double& e : sc) sum += (e = std::exp(e - mx));
      for (int64_t j = 0; j <= t; ++j) {
        for (int64_t i = 0; i < hd; ++i) out[t * q_dim + h * hd + i] += sc[j] / sum * v[j * kv + off + i];
      }
    }
  }
  return out;
}

TEST(OpGradientTest, AttentionForwardAndBackward) {
  std::mt19937 rng(4);
  // 40 tokens: two query blocks of kAttnBlock; 4 heads sharing 2 KV heads (GQA).
  const train_ops::AttentionShape s{40, 4, 2, 8};
  const int64_t q_dim = 32, kv = 16, stride = train_ops::RoundUp8(s.n);
  std::vector<float> q = Randoms(rng, s.n * q_dim, -2, 2), k = Randoms(rng, s.n * kv, -2, 2),
                     v = Randoms(rng, s.n * kv), dout = Randoms(rng, s.n * q_dim);
  auto pool = ThreadPool::Create(2);
  ASSERT_TRUE(pool.ok());
  const ComputeContext ctx{&K(), pool->get()};
  // Forward against the double reference.
  std::vector<float> vt(static_cast<size_t>(kv * stride), 0.0f), out(static_cast<size_t>(s.n * q_dim));
  for (int64_t t = 0; t < s.n; ++t) {
    for (int64_t d = 0; d < kv; ++d) vt[d * stride + t] = v[t * kv + d];
  }
  const int64_t slots = 3;
  std::vector<float> scores(static_cast<size_t>(slots * train_ops::kAttnBlock * stride));
  train_ops::CausalAttention(s, q.data(), k.data(), vt.data(), stride, out.data(), scores.data(), slots, ctx);
  const DVec ref = RefAttention(s, q, k, v);
  for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], ref[i], 1e-5) << i;
  // Backward against finite differences of the reference.
  std::vector<float> dq(q.size()), dk(k.size()), dv(v.size());
  std::vector<float> scratch(2 * train_ops::AttentionBackwardScratchFloats(s.n));
  train_ops::AttentionBackward(s, q.data(), k.data(), v.data(), dout.data(), dq.data(), dk.data(), dv.data(),
                               scratch.data(), 2, ctx);
  auto loss = [&] { return Dot(dout, RefAttention(s, q, k, v)); };
  ExpectGradient(q, dq, loss, "dq", 1e-4, 3);
  ExpectGradient(k, dk, loss, "dk", 1e-4, 3);
  ExpectGradient(v, dv, loss, "dv", 1e-4, 3);
  // One slot, no pool: the same bits.
  std::vector<float> dq1(q.size()), dk1(k.size()), dv1(v.size());
  train_ops::AttentionBackward(s, q.data(), k.data(), v.data(), dout.data(), dq1.data(), dk1.data(), dv1.data(),
                               scratch.data(), 1, ComputeContext{&K(), nullptr});
  EXPECT_EQ(dq1, dq);
  EXPECT_EQ(dk1, dk);
  EXPECT_EQ(dv1, dv);
}

TEST(OpGradientTest, CrossEntropyRows) {
  std::mt19937 rng(5);
  const int64_t rows = 4, vocab = 50;
  std::vector<float> z = Randoms(rng, rows * vocab, -4, 4);
  const int32_t targets[rows] = {3, -1, 49, 0};
  auto loss = [&] {
    double l = 0;
    for (int64_t r = 0; r < rows; ++r) {
      if (targets[r] < 0) continue;
      double mx = -1e300, sum = 0;
      for (int64_t i = 0; i < vocab; ++i) mx = std::max(mx, static_cast<double>(z[r * vocab + i]));
      for (int64_t i = 0; i < vocab; ++i) sum += std::exp(z[r * vocab + i] - mx);
      l += std::log(sum) + mx - z[r * vocab + targets[r]];
    }
    return l;
  };
  std::vector<float> g = z;
  std::vector<double> row_loss(rows);
  int64_t count = 0;
  const double l = train_ops::CrossEntropyRows(K(), g.data(), rows, vocab, targets, true, &count, row_loss.data(), nullptr);
  EXPECT_EQ(count, 3);
  EXPECT_NEAR(l, loss(), 1e-5 * loss());
  for (int64_t i = 0; i < vocab; ++i) EXPECT_EQ(g[vocab + i], 0.0f);  // ignored row
  ExpectGradient(z, g, loss, "dlogits");
}

TEST(OpGradientTest, LoraBackward) {
  std::mt19937 rng(6);
  const int64_t n = 7, in = 32, out = 24, rank = 3;
  std::vector<float> a = Randoms(rng, rank * in), b = Randoms(rng, out * rank), x = Randoms(rng, n * in),
                     dy = Randoms(rng, n * out);
  const float s = 0.75f;
  auto loss = [&] {
    double l = 0;
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t o = 0; o < out; ++o) {
        double y = 0;
        for (int64_t j = 0; j < rank; ++j) {
          double ax = 0;
          for (int64_t i = 0; i < in; ++i) ax += static_cast<double>(a[j * in + i]) * x[t * in + i];
          y += static_cast<double>(b[o * rank + j]) * ax;
        }
        l += dy[t * out + o] * s * y;
      }
    }
    return l;
  };
  std::vector<float> ga(a.size(), 0.0f), gb(b.size(), 0.0f), dx(x.size(), 0.0f), sax(static_cast<size_t>(n * rank)),
      bax(static_cast<size_t>(n * out)), y(static_cast<size_t>(n * out), 0.0f), g(static_cast<size_t>(n * rank));
  const train_ops::LoraRef m{a.data(), b.data(), in, out, rank, s, ga.data(), gb.data()};
  const ComputeContext ctx{&K(), nullptr};
  train_ops::LoraForward(m, x.data(), n, y.data(), out, sax.data(), bax.data(), ctx);
  train_ops::LoraBackward(m, x.data(), sax.data(), dy.data(), out, n, dx.data(), in, g.data(), ctx);
  ExpectGradient(a, ga, loss, "dA");
  ExpectGradient(b, gb, loss, "dB");
  ExpectGradient(x, dx, loss, "dx");
}

TEST(OpGradientTest, WeightGradAccumulateIsDyTransposeX) {
  std::mt19937 rng(7);
  const int64_t n = 11, rows = 30, cols = 70;
  std::vector<float> dy = Randoms(rng, n * rows), x = Randoms(rng, n * cols), dw(static_cast<size_t>(rows * cols), 1.0f);
  auto pool = ThreadPool::Create(2);
  ASSERT_TRUE(pool.ok());
  train_ops::WeightGradAccumulate(dy.data(), rows, rows, x.data(), cols, cols, n, dw.data(),
                                  ComputeContext{&K(), pool->get()});
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      double s = 1.0;
      for (int64_t t = 0; t < n; ++t) s += static_cast<double>(dy[t * rows + r]) * x[t * cols + c];
      ASSERT_NEAR(dw[r * cols + c], s, 1e-5) << r << "," << c;
    }
  }
}

// ---- Whole model ---------------------------------------------------------------------------

struct Coord {
  std::string what;
  float* value;
  float grad;
};

// A few coordinates of every adapter matrix's A and B (spread over the rows).
std::vector<Coord> SampleLora(TrainEngine& e, LoraAdapter& adapter, int per_tensor) {
  std::vector<Coord> out;
  const std::span<const ParamTensor> params = e.params();
  size_t pi = 0;
  for (LoraMatrix& m : adapter.matrices()) {
    for (int which = adapter.config().frozen_a ? 1 : 0; which < 2; ++which) {
      std::vector<float>& v = which == 0 ? m.a : m.b;
      const ParamTensor& p = params[pi++];
      for (int i = 0; i < per_tensor; ++i) {
        const size_t idx = (static_cast<size_t>(i) * 7919u + 13u * static_cast<size_t>(m.layer)) % v.size();
        out.push_back({p.name + "[" + std::to_string(idx) + "]", &v[idx], p.grad[idx]});
      }
    }
  }
  return out;
}

struct Errors {
  double max_abs = 0;     // max |fd − grad|
  double max_grad = 0;    // max |grad|
  double cosine = 0;      // cos(fd, grad) over the sampled coordinates
};

Errors Compare(const std::vector<Coord>& coords, const std::vector<double>& fd) {
  Errors e;
  double dot = 0, n1 = 0, n2 = 0;
  for (size_t i = 0; i < coords.size(); ++i) {
    e.max_abs = std::max(e.max_abs, std::fabs(fd[i] - coords[i].grad));
    e.max_grad = std::max(e.max_grad, std::fabs(static_cast<double>(coords[i].grad)));
    dot += fd[i] * coords[i].grad;
    n1 += fd[i] * fd[i];
    n2 += static_cast<double>(coords[i].grad) * coords[i].grad;
  }
  e.cosine = dot / std::sqrt(n1 * n2);
  return e;
}

void ExpectClose(const std::vector<Coord>& coords, const std::vector<double>& fd, double rel, const std::string& what) {
  const Errors e = Compare(coords, fd);
  ASSERT_GT(e.max_grad, 0.0) << what;
  for (size_t i = 0; i < coords.size(); ++i) {
    EXPECT_NEAR(coords[i].grad, fd[i], rel * e.max_grad) << what << ": " << coords[i].what;
  }
}

struct LoraCase {
  std::string recipe;
  std::vector<Projection> targets;
  bool frozen_a;
};

void PrintTo(const LoraCase& c, std::ostream* os) {
  *os << c.recipe << " targets=" << FormatProjections(c.targets) << (c.frozen_a ? " frozen A" : " trained A");
}

class LoraModelGradientTest : public ::testing::TestWithParam<LoraCase> {};

// The adapter gradients of the whole model (A and B of every target, every layer).
//
// Against the double-precision reference forward over the same base weights (exactly
// dequantized), step 1e-3: FD error ~1e-9, so the difference is the engine's own float
// arithmetic. F32 base: tolerance 2e-5 of the largest gradient (measured ~2e-7). Q8_0 and
// Q4_0 bases: the engine quantizes every activation to 8 bits before a quantized matmul
// (as inference does), which the reference does not; the backward passes gradients
// straight through that rounding, so the two differ by the activation quantization
// noise: tolerance 2% of the largest gradient (measured ~0.3%), plus cosine > 0.9999.
// A wrong formula is off by O(1).
//
// Against central differences of the engine's own loss (F32 base only), step 1e-2: the
// loss is a float sum of ~n·log(vocab) ≈ 70 with rounding noise ~1e-5, so noise/h ~1e-3
// and truncation ~h²; tolerance 1e-3 of the largest gradient (measured ~1.5e-4). With a
// quantized base the engine's loss is piecewise constant in the activations (8-bit
// rounding), so its finite differences do not estimate any derivative (measured cosine
// ~0); that is why those bases are checked against the reference.
TEST_P(LoraModelGradientTest, MatchesFiniteDifferences) {
  const LoraCase& p = GetParam();
  auto model = testing::OpenTestModel("tiny", p.recipe);
  LoraAdapter adapter = testing::TestAdapter(model->config(), p.targets, p.frozen_a);
  auto engine = TrainEngine::CreateLora(*model, adapter, testing::EngineOptions(2, 12));
  ASSERT_TRUE(engine.ok());
  const std::vector<int32_t> tokens = testing::TestTokens(259, 12, 21);
  const std::vector<int32_t> targets = testing::ShiftedTargets(tokens, 5);
  ASSERT_TRUE((*engine)->ForwardBackward(tokens, targets).ok());
  const std::vector<Coord> coords = SampleLora(**engine, adapter, 3);

  auto gguf = GgufFile::Open(testing::ModelPath("tiny", p.recipe));
  ASSERT_TRUE(gguf.ok());
  const testing::RefModel ref = testing::LoadRef(**gguf);
  std::vector<double> fd_ref;
  for (const Coord& c : coords) {
    fd_ref.push_back(CentralDifference(c.value, 1e-3, [&] { return testing::RefLoss(ref, tokens, targets, &adapter); }));
  }
  const bool f32 = p.recipe == "f32";
  ExpectClose(coords, fd_ref, f32 ? 2e-5 : 2e-2, p.recipe + " vs reference");
  EXPECT_GT(Compare(coords, fd_ref).cosine, f32 ? 0.9999999 : 0.9999);
  if (f32) {
    std::vector<double> fd_engine;
    for (const Coord& c : coords) {
      fd_engine.push_back(CentralDifference(c.value, 1e-2, [&] { return (*engine)->Forward(tokens, targets)->loss_sum; }));
    }
    ExpectClose(coords, fd_engine, 1e-3, "f32 vs the engine's own loss");
  }
}

const std::vector<Projection> kAllProjections = {Projection::kQ,    Projection::kK,  Projection::kV,   Projection::kO,
                                                 Projection::kGate, Projection::kUp, Projection::kDown};

INSTANTIATE_TEST_SUITE_P(
    Bases, LoraModelGradientTest,
    ::testing::Values(LoraCase{"f32", kAllProjections, false}, LoraCase{"q8_0", kAllProjections, false},
                      LoraCase{"q4_0", kAllProjections, false},
                      // FFN-only adapters (the attention backward of layer 0 is skipped) and frozen A.
                      LoraCase{"f32", {Projection::kGate, Projection::kDown}, true},
                      LoraCase{"q4_0", {Projection::kQ, Projection::kV}, true}),
    [](const auto& c) {
      return c.param.recipe + "_" + (c.param.frozen_a ? "frozenA" : "trainA") + std::to_string(c.index);
    });

// Full F32 training on the tiny config: a few coordinates of every tensor (embedding,
// norms, every matrix, the tied output) against the double reference, step 1e-3;
// tolerance 1e-4 of each tensor's largest sampled gradient (measured below 1e-5).
TEST(ModelGradientTest, FullModeMatchesFiniteDifferences) {
  auto dense = DenseLlamaWeights::Init(*NamedConfig("tiny"), 4);
  ASSERT_TRUE(dense.ok());
  auto engine = TrainEngine::CreateFull(**dense, testing::EngineOptions(2, 10));
  ASSERT_TRUE(engine.ok());
  const std::vector<int32_t> tokens = testing::TestTokens(259, 10, 22);
  const std::vector<int32_t> targets = testing::ShiftedTargets(tokens, 6);
  ASSERT_TRUE((*engine)->ForwardBackward(tokens, targets).ok());
  for (const ParamTensor& p : (*engine)->params()) {
    std::vector<Coord> coords;
    if (p.name == kTokenEmbdName) {
      // Rows of tokens in the sequence (other rows only reach the loss through the tied
      // output projection).
      for (int i = 0; i < 3; ++i) {
        const int64_t idx = tokens[static_cast<size_t>(i)] * 64 + 5 * i;
        coords.push_back({p.name, p.value + idx, p.grad[idx]});
      }
    }
    for (int i = 0; i < 3; ++i) {
      const int64_t idx = (i * 7919 + 31) % p.size;
      coords.push_back({p.name, p.value + idx, p.grad[idx]});
    }
    std::vector<double> fd;
    for (const Coord& c : coords) {
      fd.push_back(CentralDifference(c.value, 1e-3, [&] {
        return testing::RefLoss(testing::RefFromDense(**dense), tokens, targets);
      }));
    }
    ExpectClose(coords, fd, 1e-4, p.name);
  }
}

}  // namespace
}  // namespace flotilla::model
