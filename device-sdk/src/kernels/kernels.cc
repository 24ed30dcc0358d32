// Dispatch tables and the matrix drivers (row splitting, activation quantization).
#include "flotilla/model/kernels.h"

#include <algorithm>
#include <array>
#include <string>
#include <type_traits>

#include "flotilla/core/check.h"
#include "kernels_internal.h"

namespace flotilla::model {
namespace {

struct Tables {
  std::array<KernelTable, 5> table{};
  std::array<bool, 5> present{};
};

const Tables& AllTables() {
  static const Tables tables = [] {
    Tables t;
    for (CpuPath p : SupportedCpuPaths()) {
      KernelTable k{};
      internal::FillScalarKernels(&k);
      switch (p) {
        case CpuPath::kScalar: break;
#if defined(__x86_64__)
        case CpuPath::kAvx2: internal::FillAvx2Kernels(&k); break;
        case CpuPath::kAvx512Vnni: internal::FillAvx512VnniKernels(&k); break;
#elif defined(__aarch64__)
        case CpuPath::kNeon: internal::FillNeonKernels(&k); break;
        case CpuPath::kNeonDotprod: internal::FillNeonDotprodKernels(&k); break;
#endif
        default: continue;
      }
      k.path = p;
      t.table[static_cast<size_t>(p)] = k;
      t.present[static_cast<size_t>(p)] = true;
    }
    return t;
  }();
  return tables;
}

// Rows per parallel-for grain: a multiple of every GEMM row tile, so only the last
// chunk of a matrix has a partial tile.
constexpr int64_t kRowGrain = 16;


const KernelTable& Resolve(const ComputeContext& ctx) {
  return ctx.kernels != nullptr ? *ctx.kernels : ActiveKernels();
}

}  // namespace

const KernelTable* GetKernelTable(CpuPath path) {
  const Tables& t = AllTables();
  const auto i = static_cast<size_t>(path);
  return i < t.table.size() && t.present[i] ? &t.table[i] : nullptr;
}

const KernelTable& ActiveKernels() {
  const KernelTable* k = GetKernelTable(ActiveCpuPath());
  FLT_CHECK(k != nullptr);
  return *k;
}

bool IsMatMulWeightType(GgmlType type) { return BlockSize(type) != 0; }

int64_t BlockSize(GgmlType type) {
  switch (type) {
    case GgmlType::kF32:
    case GgmlType::kF16: return 1;
    case GgmlType::kQ8_0:
    case GgmlType::kQ4_0: return 32;
    case GgmlType::kQ4_K:
    case GgmlType::kQ6_K: return kQK_K;
    default: return 0;
  }
}

size_t RowBytes(GgmlType type, int64_t cols) {
  const int64_t bs = BlockSize(type);
  if (bs == 0 || cols <= 0 || cols % bs != 0) return 0;
  const auto blocks = static_cast<size_t>(cols / bs);
  switch (type) {
    case GgmlType::kF32: return blocks * sizeof(float);
    case GgmlType::kF16: return blocks * sizeof(Half);
    case GgmlType::kQ8_0: return blocks * sizeof(BlockQ8_0);
    case GgmlType::kQ4_0: return blocks * sizeof(BlockQ4_0);
    case GgmlType::kQ4_K: return blocks * sizeof(BlockQ4_K);
    case GgmlType::kQ6_K: return blocks * sizeof(BlockQ6_K);
    default: return 0;
  }
}

Status ValidateWeight(const WeightMatrix& w) {
  const int64_t bs = BlockSize(w.type);
  if (bs == 0) {
    return InvalidArgumentError("weight type " + std::to_string(static_cast<uint32_t>(w.type)) +
                                " is not supported by the matrix kernels (F32, F16, Q8_0, Q4_0, Q4_K, Q6_K)");
  }
  constexpr int64_t kMaxDim = int64_t{1} << 31;
  if (w.rows <= 0 || w.cols <= 0 || w.rows > kMaxDim || w.cols > kMaxDim) {
    return InvalidArgumentError("weight shape " + std::to_string(w.rows) + " x " + std::to_string(w.cols) +
                                " is out of range");
  }
  if (w.cols % bs != 0) {
    return InvalidArgumentError("weight row length " + std::to_string(w.cols) + " is not a multiple of the block size " +
                                std::to_string(bs));
  }
  if (w.data == nullptr) return InvalidArgumentError("weight data is null");
  return Status::Ok();
}

template <typename Block>
void QuantizedActivations::QuantizeRows(void (*quantize)(const float*, Block*, int64_t), const float* x, int64_t n,
                                        int64_t cols, ThreadPool* pool) {
  constexpr int64_t kElems = std::is_same_v<Block, BlockQ8_K> ? kQK_K : kQK8_0;
  row_bytes_ = static_cast<size_t>(cols / kElems) * sizeof(Block);
  if (buf_.size() < row_bytes_ * static_cast<size_t>(n)) buf_.resize(row_bytes_ * static_cast<size_t>(n));
  unsigned char* out = buf_.data();
  const size_t rb = row_bytes_;
  ParallelFor(pool, n, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) quantize(x + t * cols, reinterpret_cast<Block*>(out + static_cast<size_t>(t) * rb), cols);
  });
}

void QuantizedActivations::Quantize(GgmlType weight_type, const float* x, int64_t n, int64_t cols,
                                    const ComputeContext& ctx) {
  const int64_t bs = BlockSize(weight_type);
  FLT_CHECK_MSG(bs != 0 && cols > 0 && cols % bs == 0 && n >= 0, "QuantizedActivations: bad type or shape");
  weight_type_ = weight_type;
  n_ = n;
  cols_ = cols;
  float_rows_ = nullptr;
  const KernelTable& k = Resolve(ctx);
  switch (weight_type) {
    case GgmlType::kF32:
    case GgmlType::kF16:
      float_rows_ = x;
      row_bytes_ = static_cast<size_t>(cols) * sizeof(float);
      return;
    case GgmlType::kQ8_0:
    case GgmlType::kQ4_0:
      QuantizeRows<BlockQ8_0>(k.quantize_row_q8_0, x, n, cols, ctx.pool);
      return;
    default:  // K-quants
      QuantizeRows<BlockQ8_K>(k.quantize_row_q8_k, x, n, cols, ctx.pool);
      return;
  }
}

void MatMulQuantized(const WeightMatrix& w, const QuantizedActivations& xq, float* y, const ComputeContext& ctx,
                     int64_t ldy) {
  FLT_CHECK_OK(ValidateWeight(w));
  FLT_CHECK_MSG(xq.cols() == w.cols, "MatMul: activation length differs from weight row length");
  const bool float_w = w.type == GgmlType::kF32 || w.type == GgmlType::kF16;
  const bool float_x = xq.weight_type() == GgmlType::kF32 || xq.weight_type() == GgmlType::kF16;
  const bool k_w = BlockSize(w.type) == kQK_K;
  const bool k_x = BlockSize(xq.weight_type()) == kQK_K;
  FLT_CHECK_MSG(float_w == float_x && k_w == k_x, "MatMul: activations were quantized for another weight type");
  if (xq.n() == 0) return;
  const KernelTable& k = Resolve(ctx);
  GemmArgs a{};
  a.w = w.data;
  a.w_row_bytes = RowBytes(w.type, w.cols);
  a.x = xq.data();
  a.x_row_bytes = xq.row_bytes();
  a.cols = w.cols;
  a.n_tokens = xq.n();
  a.y = y;
  a.ldy = ldy == 0 ? w.rows : ldy;
  FLT_CHECK(a.ldy >= w.rows);
  const GemmFn fn = GemmKernelFor(k, w.type);
  ParallelFor(ctx.pool, w.rows, kRowGrain, [&](int64_t b, int64_t e) { RunGemmRows(fn, a, b, e); });
}

void MatMul(const WeightMatrix& w, const float* x, int64_t n, float* y, const ComputeContext& ctx, int64_t ldy) {
  FLT_CHECK_OK(ValidateWeight(w));
  thread_local QuantizedActivations xq;
  xq.Quantize(w.type, x, n, w.cols, ctx);
  MatMulQuantized(w, xq, y, ctx, ldy);
}

void MatMulShared(const float* x, int64_t n, std::span<const SharedMatMulOutput> outs, QuantizedActivations& xq8_0,
                  QuantizedActivations& xq8_k, const ComputeContext& ctx) {
  // Below this many tokens quantization stays on the calling thread: waking the pool
  // costs more than quantizing a few rows. Changes no result.
  constexpr int64_t kSerialQuantizeRows = 4;
  constexpr size_t kMaxOutputs = 4;
  FLT_CHECK(!outs.empty() && outs.size() <= kMaxOutputs);
  if (n <= 0) return;
  const KernelTable& k = Resolve(ctx);
  const int64_t cols = outs.front().w->cols;
  const ComputeContext qctx{&k, n < kSerialQuantizeRows ? nullptr : ctx.pool};
  bool quantized_8_0 = false;
  bool quantized_8_k = false;
  struct Job {
    GemmFn fn;
    GemmArgs a;
    int64_t row0;
    int64_t rows;
  };
  Job jobs[kMaxOutputs];
  size_t n_jobs = 0;
  int64_t total_rows = 0;
  for (const SharedMatMulOutput& o : outs) {
    const WeightMatrix& w = *o.w;
    FLT_CHECK_OK(ValidateWeight(w));
    FLT_CHECK(w.cols == cols && o.ldy >= w.rows);
    Job& j = jobs[n_jobs++];
    j.fn = GemmKernelFor(k, w.type);
    j.a = GemmArgs{};
    j.a.w = w.data;
    j.a.w_row_bytes = RowBytes(w.type, w.cols);
    j.a.cols = cols;
    j.a.n_tokens = n;
    j.a.y = o.y;
    j.a.ldy = o.ldy;
    auto use = [&](QuantizedActivations& q, bool& done, GgmlType family) {
      if (!done) q.Quantize(family, x, n, cols, qctx);
      done = true;
      j.a.x = q.data();
      j.a.x_row_bytes = q.row_bytes();
    };
    if (w.type == GgmlType::kF32 || w.type == GgmlType::kF16) {
      j.a.x = x;
      j.a.x_row_bytes = static_cast<size_t>(cols) * sizeof(float);
    } else if (BlockSize(w.type) == kQK_K) {
      use(xq8_k, quantized_8_k, GgmlType::kQ4_K);
    } else {
      use(xq8_0, quantized_8_0, GgmlType::kQ8_0);
    }
    j.row0 = total_rows;
    j.rows = w.rows;
    total_rows += w.rows;
  }
  ParallelFor(ctx.pool, total_rows, kRowGrain, [&](int64_t b, int64_t e) {
    for (size_t i = 0; i < n_jobs; ++i) {
      const Job& j = jobs[i];
      const int64_t lo = std::max(b, j.row0) - j.row0;
      const int64_t hi = std::min(e, j.row0 + j.rows) - j.row0;
      if (lo < hi) RunGemmRows(j.fn, j.a, lo, hi);
    }
  });
}

namespace {

// dX (+)= dY . W. Work items are (token range, column range) tiles of dX; an item walks
// the rows of W in passes of a few rows, dequantizing its column range of those rows
// into a small per-thread buffer that gemm_acc_f32 then multiplies with the matching
// columns of dY. Every dX element is one FMA chain over the rows of W in order (passes
// continue the chain), so tiling and thread count never change a result.
void MatMulTransposedImpl(const WeightMatrix& w, const float* dy, int64_t n, float* dx, const ComputeContext& ctx,
                          bool accumulate) {
  FLT_CHECK_OK(ValidateWeight(w));
  if (n <= 0) return;
  const KernelTable& k = Resolve(ctx);
  const int64_t bs = BlockSize(w.type);
  const size_t row_bytes = RowBytes(w.type, w.cols);
  const auto* wb = static_cast<const unsigned char*>(w.data);
  // Column ranges of whole blocks, 64 wide where the block allows (one AVX-512 tile
  // row); narrower, then also split over tokens, only when there would be fewer than two
  // items per thread (the pool hands items out dynamically). Each token range dequantizes
  // its columns again, so columns are split first.
  const int threads = ctx.pool != nullptr ? ctx.pool->num_threads() : 1;
  const int64_t want = 2 * static_cast<int64_t>(threads);
  int64_t width = std::max<int64_t>(bs, 64 / bs * bs);
  if (threads > 1 && (w.cols + width - 1) / width < want) width = std::max<int64_t>(bs, 32 / bs * bs);
  const int64_t col_chunks = (w.cols + width - 1) / width;
  int64_t tok_chunks = 1;
  if (threads > 1 && col_chunks < want) tok_chunks = std::clamp<int64_t>((want + col_chunks - 1) / col_chunks, 1, (n + 5) / 6);
  const int64_t tok_size = (n + tok_chunks - 1) / tok_chunks;
  // Rows per pass: the dequantized slice stays in L1 (32 KiB).
  const int64_t pass_rows = std::max<int64_t>(8, 8192 / width);
  ParallelFor(ctx.pool, col_chunks * tok_chunks, 1, [&](int64_t i0, int64_t i1) {
    thread_local std::vector<float> buf;
    if (w.type != GgmlType::kF32 && buf.size() < static_cast<size_t>(pass_rows * width)) {
      buf.resize(static_cast<size_t>(pass_rows * width));
    }
    for (int64_t item = i0; item < i1; ++item) {
      const int64_t c0 = item % col_chunks * width;
      const int64_t c1 = std::min(w.cols, c0 + width);
      const int64_t t0 = item / col_chunks * tok_size;
      const int64_t t1 = std::min(n, t0 + tok_size);
      if (t0 >= t1) continue;
      const int64_t cw = c1 - c0;
      if (!accumulate) {
        for (int64_t t = t0; t < t1; ++t) std::fill(dx + t * w.cols + c0, dx + t * w.cols + c1, 0.0f);
      }
      for (int64_t r0 = 0; r0 < w.rows; r0 += pass_rows) {
        const int64_t rr = std::min(pass_rows, w.rows - r0);
        const float* b = buf.data();
        int64_t ldb = width;
        for (int64_t q = 0; q < rr && w.type != GgmlType::kF32; ++q) {
          const unsigned char* wr = wb + static_cast<size_t>(r0 + q) * row_bytes;
          float* out = buf.data() + q * width;
          switch (w.type) {
            case GgmlType::kF16: k.convert_f16_f32(reinterpret_cast<const Half*>(wr) + c0, out, cw); break;
            case GgmlType::kQ8_0: k.dequantize_row_q8_0(reinterpret_cast<const BlockQ8_0*>(wr) + c0 / bs, out, cw); break;
            case GgmlType::kQ4_0: k.dequantize_row_q4_0(reinterpret_cast<const BlockQ4_0*>(wr) + c0 / bs, out, cw); break;
            case GgmlType::kQ4_K: k.dequantize_row_q4_k(reinterpret_cast<const BlockQ4_K*>(wr) + c0 / bs, out, cw); break;
            case GgmlType::kQ6_K: k.dequantize_row_q6_k(reinterpret_cast<const BlockQ6_K*>(wr) + c0 / bs, out, cw); break;
            default: FLT_CHECK(false);
          }
        }
        if (w.type == GgmlType::kF32) {
          b = reinterpret_cast<const float*>(wb + static_cast<size_t>(r0) * row_bytes) + c0;
          ldb = w.cols;
        }
        const GemmAccArgs g{dy + t0 * w.rows + r0, w.rows, 1, b, ldb, dx + t0 * w.cols + c0, w.cols, t1 - t0, cw, rr};
        k.gemm_acc_f32(g);
      }
    }
  });
}

}  // namespace

void MatMulTransposed(const WeightMatrix& w, const float* dy, int64_t n, float* dx, const ComputeContext& ctx) {
  MatMulTransposedImpl(w, dy, n, dx, ctx, /*accumulate=*/false);
}

void MatMulTransposedAccumulate(const WeightMatrix& w, const float* dy, int64_t n, float* dx,
                                const ComputeContext& ctx) {
  MatMulTransposedImpl(w, dy, n, dx, ctx, /*accumulate=*/true);
}

void GemmAccumulate(const GemmAccArgs& args, const ComputeContext& ctx) {
  FLT_CHECK(args.m >= 0 && args.n >= 0 && args.k >= 0);
  if (args.m == 0 || args.n == 0 || args.k == 0) return;
  const KernelTable& k = Resolve(ctx);
  // Tiles of C: 24 rows (a multiple of every path's row tile) x 128 columns; the k range
  // is walked in slices so the A and B panels of a tile stay in cache.
  constexpr int64_t kTileM = 24;
  constexpr int64_t kTileN = 128;
  constexpr int64_t kSliceK = 256;
  const int64_t tm = (args.m + kTileM - 1) / kTileM;
  const int64_t tn = (args.n + kTileN - 1) / kTileN;
  auto run = [&](int64_t b, int64_t e) {
    for (int64_t item = b; item < e; ++item) {
      const int64_t i0 = item / tn * kTileM;
      const int64_t j0 = item % tn * kTileN;
      for (int64_t p0 = 0; p0 < args.k; p0 += kSliceK) {
        GemmAccArgs g = args;
        g.a = args.a + i0 * args.a_si + p0 * args.a_sk;
        g.b = args.b + p0 * args.ldb + j0;
        g.c = args.c + i0 * args.ldc + j0;
        g.m = std::min(kTileM, args.m - i0);
        g.n = std::min(kTileN, args.n - j0);
        g.k = std::min(kSliceK, args.k - p0);
        k.gemm_acc_f32(g);
      }
    }
  };
  // Small products are not worth waking the pool.
  const bool small = args.m * args.n * args.k < (int64_t{1} << 15);
  ParallelFor(small ? nullptr : ctx.pool, tm * tn, 1, run);
}

void RunGemmRows(GemmFn fn, const GemmArgs& a, int64_t r0, int64_t r1) {
  // Decode streams each weight once from memory. The hardware prefetcher does not keep
  // up with the kernels' several-rows-in-lockstep reads (measured ~2x slower than a
  // prefetched stream on the dev VM), so fetch the next slice of rows while the kernel
  // works on this one. Slices are whole row tiles, so the results do not change.
  constexpr int64_t kPrefetchRows = 16;     // a multiple of every GEMM row tile
  constexpr int64_t kPrefetchMaxTokens = 2;  // beyond this the weights are reused, not streamed
  if (a.n_tokens > kPrefetchMaxTokens) {
    fn(a, r0, r1);
    return;
  }
  const auto* w = static_cast<const char*>(a.w);
  const size_t rb = a.w_row_bytes;
  auto prefetch = [&](int64_t from, int64_t to) {
    const char* p = w + static_cast<size_t>(from) * rb;
    const size_t n = static_cast<size_t>(to - from) * rb;
    for (size_t off = 0; off < n; off += 64) __builtin_prefetch(p + off, 0, 3);
  };
  prefetch(r0, std::min(r0 + kPrefetchRows, r1));
  for (int64_t r = r0; r < r1; r += kPrefetchRows) {
    const int64_t next = std::min(r + kPrefetchRows, r1);
    prefetch(next, std::min(next + kPrefetchRows, r1));
    fn(a, r, next);
  }
}

GemmFn GemmKernelFor(const KernelTable& k, GgmlType type) {
  switch (type) {
    case GgmlType::kF32: return k.gemm_f32;
    case GgmlType::kF16: return k.gemm_f16;
    case GgmlType::kQ8_0: return k.gemm_q8_0;
    case GgmlType::kQ4_0: return k.gemm_q4_0;
    case GgmlType::kQ4_K: return k.gemm_q4_k;
    case GgmlType::kQ6_K: return k.gemm_q6_k;
    default: return nullptr;
  }
}

}  // namespace flotilla::model
