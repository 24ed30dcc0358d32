// GemmAccumulate / gemm_acc_f32 and MatMulTransposedAccumulate (training kernels): every
// path against the scalar reference (bit-exact: one FMA chain per element is part of the
// contract), the scalar reference against double precision, and thread-count
// independence.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "flotilla/model/kernels.h"
#include "kernel_test_util.h"

#pragma GCC diagnostic ignored "-Wdouble-promotion"

namespace flotilla::model {
namespace {

using testing::ColsFor;
using testing::DequantizeRef;
using testing::kMatTypes;
using testing::RandomFloats;
using testing::RandomWeights;
using testing::TypeName;

std::vector<const KernelTable*> Tables() {
  std::vector<const KernelTable*> out;
  for (CpuPath p : SupportedCpuPaths()) out.push_back(GetKernelTable(p));
  return out;
}

const KernelTable& Scalar() { return *GetKernelTable(CpuPath::kScalar); }

struct Shape {
  int64_t m, n, k;
  bool transposed_a;
};

TEST(GemmAccumulateTest, AllPathsAndThreadCountsMatchScalarBitForBit) {
  std::mt19937 rng(21);
  auto pool = ThreadPool::Create(3);
  ASSERT_TRUE(pool.ok());
  const Shape shapes[] = {{1, 1, 1, false},   {5, 7, 3, false},   {6, 64, 17, true},  {13, 150, 40, false},
                          {31, 33, 300, true}, {50, 200, 9, false}, {7, 16, 0, false}, {97, 129, 65, true}};
  for (const Shape& s : shapes) {
    // A stored [m x k] (a_si = k) or as a transposed view of a [k x m] array (a_si = 1).
    const std::vector<float> a = RandomFloats(rng, static_cast<size_t>(s.m * s.k + 1));
    const int64_t ldb = s.n + 3;  // padded rows
    const std::vector<float> b = RandomFloats(rng, static_cast<size_t>(s.k * ldb + 1));
    const int64_t ldc = s.n + 5;
    const std::vector<float> c0 = RandomFloats(rng, static_cast<size_t>(s.m * ldc));
    GemmAccArgs g{a.data(), s.transposed_a ? 1 : s.k, s.transposed_a ? s.m : 1, b.data(), ldb, nullptr, ldc,
                  s.m, s.n, s.k};

    std::vector<float> ref = c0;
    g.c = ref.data();
    Scalar().gemm_acc_f32(g);
    // Scalar vs double: |err| <= k ulp-ish of sum |terms|.
    for (int64_t i = 0; i < s.m; ++i) {
      for (int64_t j = 0; j < s.n; ++j) {
        double sum = c0[static_cast<size_t>(i * ldc + j)], abs_sum = std::fabs(sum);
        for (int64_t p = 0; p < s.k; ++p) {
          const double term = static_cast<double>(a[static_cast<size_t>(i * g.a_si + p * g.a_sk)]) *
                              b[static_cast<size_t>(p * ldb + j)];
          sum += term;
          abs_sum += std::fabs(term);
        }
        ASSERT_NEAR(ref[static_cast<size_t>(i * ldc + j)], sum, 1e-6 * abs_sum * static_cast<double>(s.k + 1))
            << "m=" << s.m << " n=" << s.n << " k=" << s.k << " at " << i << "," << j;
      }
    }
    // Padding columns between rows are never written.
    for (int64_t i = 0; i < s.m; ++i) {
      for (int64_t j = s.n; j < ldc; ++j) ASSERT_EQ(ref[static_cast<size_t>(i * ldc + j)], c0[static_cast<size_t>(i * ldc + j)]);
    }
    for (const KernelTable* k : Tables()) {
      for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), pool->get()}) {
        std::vector<float> out = c0;
        g.c = out.data();
        GemmAccumulate(g, ComputeContext{k, p});
        EXPECT_EQ(0, std::memcmp(out.data(), ref.data(), ref.size() * sizeof(float)))
            << ToString(k->path) << " m=" << s.m << " n=" << s.n << " k=" << s.k << " pool=" << (p != nullptr);
        // The raw micro-kernel over the whole problem gives the same bits as the tiled driver.
        std::vector<float> raw = c0;
        g.c = raw.data();
        k->gemm_acc_f32(g);
        EXPECT_EQ(0, std::memcmp(raw.data(), ref.data(), ref.size() * sizeof(float))) << ToString(k->path);
      }
    }
  }
}

TEST(GemmAccumulateTest, MatMulTransposedAccumulateAddsToExistingValues) {
  std::mt19937 rng(22);
  auto pool = ThreadPool::Create(2);
  ASSERT_TRUE(pool.ok());
  for (GgmlType t : kMatTypes) {
    const int64_t cols = ColsFor(t)[2];
    for (int64_t n : {1, 7, 40}) {
      const int64_t rows = 150;  // several dequantization passes of some widths
      auto wbytes = RandomWeights(rng, t, rows, cols);
      const WeightMatrix w{t, wbytes.data(), rows, cols};
      const std::vector<float> dy = RandomFloats(rng, static_cast<size_t>(n * rows));
      const std::vector<float> init = RandomFloats(rng, static_cast<size_t>(n * cols));
      std::vector<std::vector<double>> wref;
      for (int64_t r = 0; r < rows; ++r) wref.push_back(DequantizeRef(t, wbytes.data() + r * RowBytes(t, cols), cols));
      std::vector<float> ref = init;
      MatMulTransposedAccumulate(w, dy.data(), n, ref.data(), ComputeContext{&Scalar(), nullptr});
      for (int64_t tok = 0; tok < n; ++tok) {
        for (int64_t c = 0; c < cols; c += 7) {
          double sum = init[static_cast<size_t>(tok * cols + c)], abs_sum = std::fabs(sum);
          for (int64_t r = 0; r < rows; ++r) {
            const double term = dy[static_cast<size_t>(tok * rows + r)] * wref[static_cast<size_t>(r)][static_cast<size_t>(c)];
            sum += term;
            abs_sum += std::fabs(term);
          }
          ASSERT_NEAR(ref[static_cast<size_t>(tok * cols + c)], sum, 1e-6 * abs_sum) << TypeName(t);
        }
      }
      for (const KernelTable* k : Tables()) {
        std::vector<float> out = init;
        MatMulTransposedAccumulate(w, dy.data(), n, out.data(), ComputeContext{k, pool->get()});
        EXPECT_EQ(0, std::memcmp(out.data(), ref.data(), ref.size() * sizeof(float)))
            << ToString(k->path) << " " << TypeName(t) << " n=" << n;
        // Overwriting form == accumulate onto zeros.
        std::vector<float> zeros(init.size(), 0.0f), over(init.size(), 5.0f);
        MatMulTransposedAccumulate(w, dy.data(), n, zeros.data(), ComputeContext{k, nullptr});
        MatMulTransposed(w, dy.data(), n, over.data(), ComputeContext{k, pool->get()});
        EXPECT_EQ(0, std::memcmp(over.data(), zeros.data(), zeros.size() * sizeof(float))) << ToString(k->path);
      }
    }
  }
}

}  // namespace
}  // namespace flotilla::model
