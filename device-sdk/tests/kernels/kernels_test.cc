// Differential tests: every optimized path against the scalar kernels, and the scalar
// kernels against plain double-precision references. Tolerances (docs/kernels.md):
//   quantizers, dequantizers, add/scale/axpy, MatMulTransposed: bit-exact across paths;
//   integer dot products: bit-exact with unit scales (the integer math itself);
//   float-scaled dots/GEMM: |a - b| <= 2e-5 * sum|terms| across paths and vs double;
//   rms_norm, softmax, silu, swiglu: 1e-5 relative (+ tiny absolute) across paths;
//   within one path: GEMM == dot == matvec and any thread count, bit for bit.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "flotilla/model/kernels.h"
#include "kernel_test_util.h"

// The references deliberately mix float inputs into double arithmetic.
#pragma GCC diagnostic ignored "-Wdouble-promotion"

namespace flotilla::model {
namespace {

using testing::ColsFor;
using testing::DequantizeActRef;
using testing::DequantizeRef;
using testing::kMatTypes;
using testing::OptimizedTables;
using testing::RandomFloats;
using testing::RandomWeights;
using testing::ScalarTable;
using testing::TypeName;

constexpr double kDotRelTol = 2e-5;

std::string PathName(const KernelTable& k) { return std::string(ToString(k.path)); }

TEST(KernelsTest, ScalarAndBestPathTablesExist) {
  ASSERT_NE(GetKernelTable(CpuPath::kScalar), nullptr);
  EXPECT_EQ(GetKernelTable(CpuPath::kScalar)->path, CpuPath::kScalar);
  EXPECT_EQ(ActiveKernels().path, ActiveCpuPath());
  for (CpuPath p : SupportedCpuPaths()) {
    const KernelTable* k = GetKernelTable(p);
    ASSERT_NE(k, nullptr) << ToString(p);
    EXPECT_EQ(k->path, p);
  }
#if defined(__x86_64__)
  EXPECT_EQ(GetKernelTable(CpuPath::kNeon), nullptr);
#endif
}

// ---- Activation quantizers

TEST(KernelsTest, QuantizeQ8_0ScalarMatchesFormula) {
  std::mt19937 rng(1);
  for (int64_t n : {32, 64, 320}) {
    std::vector<float> x = RandomFloats(rng, static_cast<size_t>(n), -3.0f, 3.0f);
    std::vector<BlockQ8_0> q(static_cast<size_t>(n / 32));
    ScalarTable().quantize_row_q8_0(x.data(), q.data(), n);
    for (int64_t b = 0; b < n / 32; ++b) {
      float amax = 0;
      for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
      const float d = amax / 127.0f;
      EXPECT_EQ(q[b].d, FloatToHalf(d));
      for (int j = 0; j < 32; ++j) {
        EXPECT_EQ(q[b].qs[j], static_cast<int8_t>(std::round(x[b * 32 + j] * (1.0f / d))));
        // Reconstruction error is at most half a step (+ the fp16 rounding of d).
        const double rec = static_cast<double>(HalfToFloat(q[b].d)) * q[b].qs[j];
        EXPECT_LE(std::fabs(rec - x[b * 32 + j]), 0.5 * d + 127.0 * std::fabs(HalfToFloat(q[b].d) - d) + 1e-7);
      }
    }
  }
}

// Edge rows: zeros, exact .5 ties (roundf rounds away from zero), tiny and huge values.
std::vector<std::vector<float>> EdgeRows() {
  std::vector<std::vector<float>> rows;
  rows.push_back(std::vector<float>(32, 0.0f));
  std::vector<float> ties(32, 0.0f);
  ties[0] = 127.0f;  // d = 1, so x/d = x exactly
  const float tv[] = {0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 126.5f, -126.5f, 0.49999997f, -0.49999997f, 3.5f};
  for (size_t i = 0; i < std::size(tv); ++i) ties[1 + i] = tv[i];
  rows.push_back(ties);
  std::vector<float> tiny(32, 1e-30f);
  tiny[3] = -2e-30f;
  rows.push_back(tiny);
  std::vector<float> huge(32, 60000.0f);
  huge[5] = -70000.0f;
  rows.push_back(huge);
  return rows;
}

TEST(KernelsTest, QuantizeQ8_0TiesRoundAwayFromZero) {
  std::vector<float> x = EdgeRows()[1];
  BlockQ8_0 q;
  ScalarTable().quantize_row_q8_0(x.data(), &q, 32);
  EXPECT_EQ(q.d, FloatToHalf(1.0f));
  const int expected[] = {127, 1, 2, 3, -1, -2, -3, 127, -127, 0, 0, 4};
  for (size_t i = 0; i < std::size(expected); ++i) EXPECT_EQ(q.qs[i], expected[i]) << i;
}

TEST(KernelsTest, QuantizeQ8_0PathsBitExact) {
  std::mt19937 rng(2);
  std::vector<std::vector<float>> rows = EdgeRows();
  for (int64_t n : {32, 96, 2048}) rows.push_back(RandomFloats(rng, static_cast<size_t>(n), -5.0f, 5.0f));
  for (const KernelTable* k : OptimizedTables()) {
    for (const std::vector<float>& x : rows) {
      const int64_t n = static_cast<int64_t>(x.size());
      std::vector<BlockQ8_0> a(static_cast<size_t>(n / 32)), b(static_cast<size_t>(n / 32));
      ScalarTable().quantize_row_q8_0(x.data(), a.data(), n);
      k->quantize_row_q8_0(x.data(), b.data(), n);
      EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(BlockQ8_0))) << PathName(*k) << " n=" << n;
    }
  }
}

TEST(KernelsTest, QuantizeQ8_KMatchesFormulaAndPaths) {
  std::mt19937 rng(3);
  std::vector<float> x = RandomFloats(rng, 512, -2.0f, 2.0f);
  x[300] = 7.0f;  // the block max is positive here: d = 7 / -127
  std::vector<BlockQ8_K> q(2);
  ScalarTable().quantize_row_q8_k(x.data(), q.data(), 512);
  for (int b = 0; b < 2; ++b) {
    float max = 0, amax = 0;
    for (int j = 0; j < 256; ++j) {
      if (std::fabs(x[b * 256 + j]) > amax) {
        amax = std::fabs(x[b * 256 + j]);
        max = x[b * 256 + j];
      }
    }
    const float iscale = -127.0f / max;
    EXPECT_EQ(q[b].d, 1.0f / iscale);
    for (int j = 0; j < 256; ++j) {
      const float v = iscale * x[b * 256 + j];
      EXPECT_EQ(q[b].qs[j], std::min(127, static_cast<int>(std::nearbyint(v)))) << j;
    }
    for (int g = 0; g < 16; ++g) {
      int s = 0;
      for (int l = 0; l < 16; ++l) s += q[b].qs[g * 16 + l];
      EXPECT_EQ(q[b].bsums[g], s);
    }
  }
  std::vector<float> zeros(256, 0.0f);
  BlockQ8_K z;
  ScalarTable().quantize_row_q8_k(zeros.data(), &z, 256);
  EXPECT_EQ(z.d, 0.0f);
  for (const KernelTable* k : OptimizedTables()) {
    std::vector<BlockQ8_K> p(2);
    k->quantize_row_q8_k(x.data(), p.data(), 512);
    EXPECT_EQ(0, std::memcmp(q.data(), p.data(), 2 * sizeof(BlockQ8_K))) << PathName(*k);
  }
}

// ---- Dot products

// Quantized activations of random floats (or unit-scale random codes) for weight type t.
std::vector<unsigned char> RandomActivations(std::mt19937& rng, GgmlType t, int64_t cols, bool unit_scales) {
  const KernelTable& s = ScalarTable();
  if (BlockSize(t) == 1) {
    std::vector<float> x = RandomFloats(rng, static_cast<size_t>(cols));
    std::vector<unsigned char> out(x.size() * sizeof(float));
    std::memcpy(out.data(), x.data(), out.size());
    return out;
  }
  if (BlockSize(t) == 32) {
    std::vector<BlockQ8_0> q(static_cast<size_t>(cols / 32));
    if (unit_scales) {
      for (BlockQ8_0& b : q) {
        b.d = FloatToHalf(1.0f);
        for (int8_t& v : b.qs) v = static_cast<int8_t>(static_cast<int>(rng() % 255) - 127);
      }
    } else {
      std::vector<float> x = RandomFloats(rng, static_cast<size_t>(cols));
      s.quantize_row_q8_0(x.data(), q.data(), cols);
    }
    std::vector<unsigned char> out(q.size() * sizeof(BlockQ8_0));
    std::memcpy(out.data(), q.data(), out.size());
    return out;
  }
  std::vector<BlockQ8_K> q(static_cast<size_t>(cols / 256));
  if (unit_scales) {
    for (BlockQ8_K& b : q) {
      b.d = 1.0f;
      // Small codes so that sub-block scale * code * code sums stay below 2^24.
      for (int8_t& v : b.qs) v = static_cast<int8_t>(static_cast<int>(rng() % 31) - 15);
      for (int g = 0; g < 16; ++g) {
        int sum = 0;
        for (int l = 0; l < 16; ++l) sum += b.qs[g * 16 + l];
        b.bsums[g] = static_cast<int16_t>(sum);
      }
    }
  } else {
    std::vector<float> x = RandomFloats(rng, static_cast<size_t>(cols));
    s.quantize_row_q8_k(x.data(), q.data(), cols);
  }
  std::vector<unsigned char> out(q.size() * sizeof(BlockQ8_K));
  std::memcpy(out.data(), q.data(), out.size());
  return out;
}

float CallDot(const KernelTable& k, GgmlType t, const void* w, const void* x, int64_t n) {
  switch (t) {
    case GgmlType::kF32: return k.dot_f32(static_cast<const float*>(w), static_cast<const float*>(x), n);
    case GgmlType::kF16: return k.dot_f16_f32(static_cast<const Half*>(w), static_cast<const float*>(x), n);
    case GgmlType::kQ8_0:
      return k.dot_q8_0_q8_0(static_cast<const BlockQ8_0*>(w), static_cast<const BlockQ8_0*>(x), n);
    case GgmlType::kQ4_0:
      return k.dot_q4_0_q8_0(static_cast<const BlockQ4_0*>(w), static_cast<const BlockQ8_0*>(x), n);
    case GgmlType::kQ4_K:
      return k.dot_q4_k_q8_k(static_cast<const BlockQ4_K*>(w), static_cast<const BlockQ8_K*>(x), n);
    case GgmlType::kQ6_K:
      return k.dot_q6_k_q8_k(static_cast<const BlockQ6_K*>(w), static_cast<const BlockQ8_K*>(x), n);
    default: return std::numeric_limits<float>::quiet_NaN();
  }
}

struct RefDot {
  double value;
  double abs_sum;  // sum of |terms|: the scale of rounding errors
};

RefDot ReferenceDot(GgmlType t, const void* w, const void* x, int64_t n) {
  const std::vector<double> wd = DequantizeRef(t, w, n);
  const std::vector<double> xd = DequantizeActRef(t, x, n);
  RefDot r{0, 0};
  for (int64_t i = 0; i < n; ++i) {
    r.value += wd[i] * xd[i];
    r.abs_sum += std::fabs(wd[i] * xd[i]);
  }
  return r;
}

TEST(KernelsTest, ScalarDotsMatchDoubleReference) {
  std::mt19937 rng(4);
  for (GgmlType t : kMatTypes) {
    for (int64_t n : ColsFor(t)) {
      for (int rep = 0; rep < 3; ++rep) {
        auto w = RandomWeights(rng, t, 1, n);
        auto x = RandomActivations(rng, t, n, false);
        const RefDot ref = ReferenceDot(t, w.data(), x.data(), n);
        const float got = CallDot(ScalarTable(), t, w.data(), x.data(), n);
        EXPECT_NEAR(got, ref.value, kDotRelTol * ref.abs_sum + 1e-30) << TypeName(t) << " n=" << n;
      }
    }
  }
}

TEST(KernelsTest, IntegerDotsBitExactWithUnitScales) {
  // With every scale 1.0 the results are integers below 2^24, so any correct integer
  // pipeline gives exactly the reference value.
  std::mt19937 rng(5);
  for (GgmlType t : {GgmlType::kQ8_0, GgmlType::kQ4_0, GgmlType::kQ4_K, GgmlType::kQ6_K}) {
    for (int64_t n : ColsFor(t)) {
      // K-quant sub-block scales multiply the sums: one block keeps them below 2^24.
      if (BlockSize(t) == kQK_K && n > kQK_K) continue;
      auto w = RandomWeights(rng, t, 1, n, /*unit_scales=*/true);
      auto x = RandomActivations(rng, t, n, /*unit_scales=*/true);
      const RefDot ref = ReferenceDot(t, w.data(), x.data(), n);
      ASSERT_LT(ref.abs_sum, 16777216.0);
      EXPECT_EQ(CallDot(ScalarTable(), t, w.data(), x.data(), n), static_cast<float>(ref.value)) << TypeName(t);
      for (const KernelTable* k : OptimizedTables()) {
        EXPECT_EQ(CallDot(*k, t, w.data(), x.data(), n), static_cast<float>(ref.value))
            << PathName(*k) << " " << TypeName(t) << " n=" << n;
      }
    }
  }
}

TEST(KernelsTest, OptimizedDotsMatchScalar) {
  std::mt19937 rng(6);
  for (const KernelTable* k : OptimizedTables()) {
    for (GgmlType t : kMatTypes) {
      for (int64_t n : ColsFor(t)) {
        for (int rep = 0; rep < 4; ++rep) {
          auto w = RandomWeights(rng, t, 1, n);
          auto x = RandomActivations(rng, t, n, false);
          const RefDot ref = ReferenceDot(t, w.data(), x.data(), n);
          const float s = CallDot(ScalarTable(), t, w.data(), x.data(), n);
          const float o = CallDot(*k, t, w.data(), x.data(), n);
          EXPECT_NEAR(o, s, kDotRelTol * ref.abs_sum + 1e-30) << PathName(*k) << " " << TypeName(t) << " n=" << n;
        }
      }
    }
  }
}

// ---- Matrix products

std::vector<const KernelTable*> AllTables() {
  std::vector<const KernelTable*> all = {&ScalarTable()};
  for (const KernelTable* k : OptimizedTables()) all.push_back(k);
  return all;
}

TEST(KernelsTest, MatMulMatchesScalarAndIsTileInvariant) {
  std::mt19937 rng(7);
  auto pool2 = ThreadPool::Create(2);
  ASSERT_TRUE(pool2.ok());
  for (GgmlType t : kMatTypes) {
    const int64_t cols = ColsFor(t)[1];
    for (int64_t rows : {1, 7, 16, 37}) {
      for (int64_t n : {1, 2, 5, 9}) {
        auto wbytes = RandomWeights(rng, t, rows, cols);
        WeightMatrix w{t, wbytes.data(), rows, cols};
        std::vector<float> x = RandomFloats(rng, static_cast<size_t>(n * cols));
        std::vector<float> ys(static_cast<size_t>(n * rows));
        MatMul(w, x.data(), n, ys.data(), ComputeContext{&ScalarTable(), nullptr});
        for (const KernelTable* k : AllTables()) {
          SCOPED_TRACE(PathName(*k) + " " + TypeName(t) + " rows=" + std::to_string(rows) + " n=" + std::to_string(n));
          std::vector<float> y1(ys.size()), y2(ys.size());
          MatMul(w, x.data(), n, y1.data(), ComputeContext{k, nullptr});
          MatMul(w, x.data(), n, y2.data(), ComputeContext{k, pool2->get()});
          EXPECT_EQ(0, std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(float))) << "thread count changed output";
          QuantizedActivations xq;
          xq.Quantize(t, x.data(), n, cols, ComputeContext{k, nullptr});
          for (int64_t tok = 0; tok < n; ++tok) {
            // One token at a time (decode) gives the same bits as the batch (prefill).
            std::vector<float> yv(static_cast<size_t>(rows));
            MatVec(w, x.data() + tok * cols, yv.data(), ComputeContext{k, nullptr});
            for (int64_t r = 0; r < rows; ++r) {
              const float yb = y1[tok * rows + r];
              ASSERT_EQ(yb, yv[r]) << "matvec differs from batch at token " << tok << " row " << r;
              const unsigned char* wr = wbytes.data() + r * RowBytes(t, cols);
              const auto* xr = static_cast<const unsigned char*>(xq.data()) + tok * xq.row_bytes();
              ASSERT_EQ(yb, CallDot(*k, t, wr, xr, cols)) << "dot differs from GEMM";
              const RefDot ref = ReferenceDot(t, wr, xr, cols);
              EXPECT_NEAR(yb, ys[tok * rows + r], kDotRelTol * ref.abs_sum + 1e-30);
            }
          }
        }
      }
    }
  }
}

TEST(KernelsTest, MatMulHonoursOutputStride) {
  std::mt19937 rng(8);
  const int64_t rows = 5, cols = 64, n = 3, ldy = 9;
  auto wbytes = RandomWeights(rng, GgmlType::kQ8_0, rows, cols);
  WeightMatrix w{GgmlType::kQ8_0, wbytes.data(), rows, cols};
  std::vector<float> x = RandomFloats(rng, n * cols);
  std::vector<float> dense(n * rows), strided(n * ldy, -7.0f);
  MatMul(w, x.data(), n, dense.data());
  MatMul(w, x.data(), n, strided.data(), {}, ldy);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t r = 0; r < ldy; ++r) {
      if (r < rows) {
        EXPECT_EQ(strided[t * ldy + r], dense[t * rows + r]);
      } else {
        EXPECT_EQ(strided[t * ldy + r], -7.0f);  // padding untouched
      }
    }
  }
}

TEST(KernelsTest, MatMulTransposedMatchesReferenceOnAllPaths) {
  std::mt19937 rng(9);
  auto pool3 = ThreadPool::Create(3);
  ASSERT_TRUE(pool3.ok());
  for (GgmlType t : kMatTypes) {
    for (int64_t cols : {ColsFor(t)[0], ColsFor(t)[2]}) {
      const int64_t rows = 13, n = 3;
      auto wbytes = RandomWeights(rng, t, rows, cols);
      WeightMatrix w{t, wbytes.data(), rows, cols};
      std::vector<float> dy = RandomFloats(rng, n * rows);
      std::vector<float> ref(static_cast<size_t>(n * cols));
      MatMulTransposed(w, dy.data(), n, ref.data(), ComputeContext{&ScalarTable(), nullptr});
      // Scalar vs double: dX[t][c] = sum_r dY[t][r] * W[r][c].
      for (int64_t c = 0; c < cols; ++c) {
        for (int64_t tok = 0; tok < n; ++tok) {
          double sum = 0, abs_sum = 0;
          for (int64_t r = 0; r < rows; ++r) {
            const double wv = DequantizeRef(t, wbytes.data() + r * RowBytes(t, cols), cols)[c];
            sum += dy[tok * rows + r] * wv;
            abs_sum += std::fabs(dy[tok * rows + r] * wv);
          }
          ASSERT_NEAR(ref[tok * cols + c], sum, 1e-6 * abs_sum + 1e-30) << TypeName(t) << " c=" << c;
        }
      }
      for (const KernelTable* k : AllTables()) {
        std::vector<float> out(ref.size(), 123.0f);
        MatMulTransposed(w, dy.data(), n, out.data(), ComputeContext{k, pool3->get()});
        EXPECT_EQ(0, std::memcmp(out.data(), ref.data(), ref.size() * sizeof(float)))
            << PathName(*k) << " " << TypeName(t) << " cols=" << cols;
      }
    }
  }
}

TEST(KernelsTest, DequantizeAndConvertBitExactAcrossPaths) {
  std::mt19937 rng(10);
  for (GgmlType t : {GgmlType::kF16, GgmlType::kQ8_0, GgmlType::kQ4_0, GgmlType::kQ4_K, GgmlType::kQ6_K}) {
    const int64_t cols = t == GgmlType::kF16 ? 77 : ColsFor(t).back();
    auto wbytes = RandomWeights(rng, t, 1, cols);
    const std::vector<double> ref = DequantizeRef(t, wbytes.data(), cols);
    for (const KernelTable* k : AllTables()) {
      std::vector<float> y(static_cast<size_t>(cols));
      switch (t) {
        case GgmlType::kF16: k->convert_f16_f32(reinterpret_cast<const Half*>(wbytes.data()), y.data(), cols); break;
        case GgmlType::kQ8_0:
          k->dequantize_row_q8_0(reinterpret_cast<const BlockQ8_0*>(wbytes.data()), y.data(), cols);
          break;
        case GgmlType::kQ4_0:
          k->dequantize_row_q4_0(reinterpret_cast<const BlockQ4_0*>(wbytes.data()), y.data(), cols);
          break;
        case GgmlType::kQ4_K:
          k->dequantize_row_q4_k(reinterpret_cast<const BlockQ4_K*>(wbytes.data()), y.data(), cols);
          break;
        default: k->dequantize_row_q6_k(reinterpret_cast<const BlockQ6_K*>(wbytes.data()), y.data(), cols); break;
      }
      double max_abs = 0;
      for (double v : ref) max_abs = std::max(max_abs, std::fabs(v));
      for (int64_t i = 0; i < cols; ++i) {
        // A few float roundings of products (Q4_K: d*sc*q - dmin*m); the reference is exact.
        ASSERT_NEAR(y[i], ref[i], max_abs * 1e-6) << PathName(*k) << " " << TypeName(t) << " " << i;
      }
      // Every path dequantizes to the same floats as the scalar reference.
      std::vector<float> ys(static_cast<size_t>(cols));
      const float one = 1.0f;
      MatMulTransposed(WeightMatrix{t, wbytes.data(), 1, cols}, &one, 1, ys.data(),
                       ComputeContext{&ScalarTable(), nullptr});
      for (int64_t i = 0; i < cols; ++i) ASSERT_EQ(ys[i], y[i]) << PathName(*k) << " " << TypeName(t) << " " << i;
    }
  }
}

// ---- Element-wise kernels

void ExpectClose(const std::vector<float>& got, const std::vector<double>& want, double rel, double abs,
                 const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], rel * std::fabs(want[i]) + abs) << what << " at " << i;
  }
}


TEST(KernelsTest, RmsNormMatchesReference) {
  std::mt19937 rng(11);
  for (int64_t n : {1, 7, 64, 288, 1001}) {
    std::vector<float> x = RandomFloats(rng, n, -3.0f, 3.0f);
    std::vector<float> w = RandomFloats(rng, n, 0.5f, 1.5f);
    const float eps = 1e-5f;
    double ss = 0;
    for (float v : x) ss += static_cast<double>(v) * v;
    const double scale = 1.0 / std::sqrt(ss / static_cast<double>(n) + eps);
    std::vector<double> ref(n), ref_nw(n);
    for (int64_t i = 0; i < n; ++i) {
      ref[i] = x[i] * scale * w[i];
      ref_nw[i] = x[i] * scale;
    }
    for (const KernelTable* k : AllTables()) {
      const double tol = k->path == CpuPath::kScalar ? 1e-6 : 1e-5;
      std::vector<float> y(n);
      k->rms_norm(x.data(), w.data(), y.data(), n, eps);
      ExpectClose(y, ref, tol, 1e-7, PathName(*k));
      std::vector<float> inplace = x;
      k->rms_norm(inplace.data(), nullptr, inplace.data(), n, eps);
      ExpectClose(inplace, ref_nw, tol, 1e-7, PathName(*k) + " in place");
    }
  }
}

TEST(KernelsTest, SoftmaxSumsToOneAndIsStable) {
  std::mt19937 rng(12);
  std::vector<std::vector<float>> inputs;
  for (int64_t n : {1, 3, 8, 17, 256, 1000}) inputs.push_back(RandomFloats(rng, n, -8.0f, 8.0f));
  inputs.push_back(RandomFloats(rng, 33, 5000.0f, 10000.0f));    // exp would overflow without the max shift
  inputs.push_back(RandomFloats(rng, 20, -10000.0f, -5000.0f));  // and underflow
  std::vector<float> masked = RandomFloats(rng, 12);
  masked[2] = masked[7] = -std::numeric_limits<float>::infinity();  // causal-mask entries
  inputs.push_back(masked);
  for (const std::vector<float>& in : inputs) {
    float mx = in[0];
    for (float v : in) mx = std::max(mx, v);
    double sum = 0;
    std::vector<double> ref(in.size());
    for (size_t i = 0; i < in.size(); ++i) sum += ref[i] = std::exp(static_cast<double>(in[i]) - mx);
    for (double& v : ref) v /= sum;
    for (const KernelTable* k : AllTables()) {
      std::vector<float> x = in;
      k->softmax(x.data(), static_cast<int64_t>(x.size()));
      double total = 0;
      for (float v : x) {
        ASSERT_TRUE(std::isfinite(v));
        ASSERT_GE(v, 0.0f);
        total += v;
      }
      EXPECT_NEAR(total, 1.0, 1e-5) << PathName(*k) << " n=" << in.size();
      ExpectClose(x, ref, 1e-5, 1e-7, PathName(*k));
      if (in.size() == masked.size() && in[2] < -1e30f) {
        EXPECT_EQ(x[2], 0.0f);
      }
    }
  }
}

TEST(KernelsTest, SiluAndSwiGluMatchReference) {
  std::mt19937 rng(13);
  for (int64_t n : {1, 5, 8, 64, 131}) {
    std::vector<float> g = RandomFloats(rng, n, -20.0f, 20.0f);
    if (n > 3) {
      g[0] = 100.0f;
      g[1] = -100.0f;
      g[2] = 0.0f;
    }
    std::vector<float> u = RandomFloats(rng, n, -2.0f, 2.0f);
    std::vector<double> silu(n), swiglu(n);
    for (int64_t i = 0; i < n; ++i) {
      silu[i] = g[i] / (1.0 + std::exp(-static_cast<double>(g[i])));
      swiglu[i] = silu[i] * u[i];
    }
    for (const KernelTable* k : AllTables()) {
      std::vector<float> y(n);
      k->silu(g.data(), y.data(), n);
      ExpectClose(y, silu, 1e-6, 1e-30, PathName(*k) + " silu");
      k->swiglu(g.data(), u.data(), y.data(), n);
      ExpectClose(y, swiglu, 1e-6, 1e-30, PathName(*k) + " swiglu");
      std::vector<float> alias = g;
      k->swiglu(alias.data(), u.data(), alias.data(), n);
      ExpectClose(alias, swiglu, 1e-6, 1e-30, PathName(*k) + " swiglu in place");
    }
  }
}

TEST(KernelsTest, AddScaleAxpyExactOnAllPaths) {
  std::mt19937 rng(14);
  for (int64_t n : {1, 7, 8, 100}) {
    std::vector<float> a = RandomFloats(rng, n), b = RandomFloats(rng, n);
    for (const KernelTable* k : AllTables()) {
      std::vector<float> y(n);
      k->add(a.data(), b.data(), y.data(), n);
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(y[i], a[i] + b[i]);
      k->scale(a.data(), 0.37f, y.data(), n);
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(y[i], 0.37f * a[i]);
      y = b;
      k->axpy(-1.25f, a.data(), y.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        // volatile: keep the compiler from fusing the reference into an FMA (aarch64).
        const volatile float prod = -1.25f * a[i];
        const volatile float sum = b[i] + prod;
        ASSERT_EQ(y[i], sum) << PathName(*k);
      }
    }
  }
}

TEST(KernelsTest, RopeMatchesDirectFormula) {
  std::mt19937 rng(15);
  const int64_t n_tokens = 4, n_heads = 3, head_dim = 16, pos0 = 250;
  const float base = 10000.0f;
  std::vector<float> x = RandomFloats(rng, n_tokens * n_heads * head_dim);
  for (const KernelTable* k : AllTables()) {
    std::vector<float> y = x;
    k->rope(y.data(), n_tokens, n_heads, head_dim, pos0, base);
    for (int64_t t = 0; t < n_tokens; ++t) {
      for (int64_t h = 0; h < n_heads; ++h) {
        for (int64_t i = 0; i < head_dim / 2; ++i) {
          const double theta = static_cast<double>(pos0 + t) * std::pow(10000.0, -2.0 * i / head_dim);
          const size_t o = static_cast<size_t>((t * n_heads + h) * head_dim + 2 * i);
          const double x0 = x[o], x1 = x[o + 1];
          EXPECT_NEAR(y[o], x0 * std::cos(theta) - x1 * std::sin(theta), 2e-6);
          EXPECT_NEAR(y[o + 1], x0 * std::sin(theta) + x1 * std::cos(theta), 2e-6);
        }
      }
    }
    // Position offset: rotating token t alone at pos0 + t gives the same values.
    for (int64_t t = 0; t < n_tokens; ++t) {
      std::vector<float> one(x.begin() + t * n_heads * head_dim, x.begin() + (t + 1) * n_heads * head_dim);
      k->rope(one.data(), 1, n_heads, head_dim, pos0 + t, base);
      EXPECT_EQ(0, std::memcmp(one.data(), y.data() + t * n_heads * head_dim, one.size() * sizeof(float)));
    }
  }
  // Position 0 is the identity.
  std::vector<float> z = x;
  ScalarTable().rope(z.data(), 1, n_heads, head_dim, 0, base);
  for (int64_t i = 0; i < n_heads * head_dim; ++i) EXPECT_EQ(z[i], x[i]);
}

// ---- Shapes

TEST(KernelsTest, RowBytesAndValidation) {
  EXPECT_EQ(RowBytes(GgmlType::kF32, 7), 28u);
  EXPECT_EQ(RowBytes(GgmlType::kF16, 7), 14u);
  EXPECT_EQ(RowBytes(GgmlType::kQ8_0, 64), 68u);
  EXPECT_EQ(RowBytes(GgmlType::kQ4_0, 64), 36u);
  EXPECT_EQ(RowBytes(GgmlType::kQ4_K, 512), 288u);
  EXPECT_EQ(RowBytes(GgmlType::kQ6_K, 256), 210u);
  EXPECT_EQ(RowBytes(GgmlType::kQ8_0, 48), 0u);
  EXPECT_EQ(RowBytes(GgmlType::kQ5_0, 64), 0u);
  const float dummy = 0;
  EXPECT_TRUE(ValidateWeight({GgmlType::kQ8_0, &dummy, 4, 64}).ok());
  EXPECT_FALSE(ValidateWeight({GgmlType::kQ8_0, &dummy, 4, 48}).ok());
  EXPECT_FALSE(ValidateWeight({GgmlType::kQ4_K, &dummy, 4, 288}).ok());
  EXPECT_FALSE(ValidateWeight({GgmlType::kBF16, &dummy, 4, 64}).ok());
  EXPECT_FALSE(ValidateWeight({GgmlType::kF32, &dummy, 0, 64}).ok());
  EXPECT_FALSE(ValidateWeight({GgmlType::kF32, nullptr, 4, 64}).ok());
  const Status s = ValidateWeight({GgmlType::kQ8_0, &dummy, 4, 48});
  EXPECT_NE(s.ToString().find("48"), std::string::npos) << s.ToString();
}

}  // namespace
}  // namespace flotilla::model
