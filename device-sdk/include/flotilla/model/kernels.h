// CPU compute kernels of the model engine, with one dispatch table per CpuPath.
//
// Conventions: row-major matrices; a weight matrix W has `rows` rows of `cols` elements
// (ggml ne0 = cols); activations X have n_tokens rows of `cols` floats. Products:
//   MatMul:           Y[n x rows]  = X[n x cols] . W^T    (prefill; n = 1 is decode)
//   MatMulTransposed: dX[n x cols] = dY[n x rows] . W     (backprop through frozen W)
//   GemmAccumulate:   C[m x n] += A[m x k] . B[k x n]      (float; training gradients)
// Quantized weights use ggml's scheme: X is quantized per row to Q8_0 (for Q8_0/Q4_0 W)
// or Q8_K (for Q4_K/Q6_K W) and integer block dot products are scaled in float.
//
// Within one path, MatMul computes every output element with the same sequence of
// operations whatever n, the tile it falls in, or the thread count, so a batched
// prefill gives bit-identical outputs to n single-token calls. Paths differ from each
// other (and from the scalar reference) only by float summation order; see
// docs/kernels.md for the tolerances the tests enforce.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "flotilla/core/status.h"
#include "flotilla/model/cpu_features.h"
#include "flotilla/model/ggml_type.h"
#include "flotilla/model/quant_blocks.h"
#include "flotilla/model/thread_pool.h"

namespace flotilla::model {

// Arguments of a GEMM micro-kernel: rows [r0, r1) of W against all n_tokens rows of X.
// y[t * ldy + r] = dot(W row r, X row t). X is float for F32/F16 weights, else the
// quantized activation rows (BlockQ8_0 or BlockQ8_K) produced by the table's quantizer.
struct GemmArgs {
  const void* w;
  size_t w_row_bytes;
  const void* x;
  size_t x_row_bytes;
  int64_t cols;
  int64_t n_tokens;
  float* y;
  int64_t ldy;
};
using GemmFn = void (*)(const GemmArgs& args, int64_t r0, int64_t r1);

// Arguments of the accumulating float GEMM C[m x n] += A[m x k] . B[k x n]:
// A(i, p) = a[i * a_si + p * a_sk] (any strides, so A may be a transposed view),
// B(p, j) = b[p * ldb + j] (rows contiguous), C(i, j) = c[i * ldc + j].
struct GemmAccArgs {
  const float* a;
  int64_t a_si;
  int64_t a_sk;
  const float* b;
  int64_t ldb;
  float* c;
  int64_t ldc;
  int64_t m;
  int64_t n;
  int64_t k;
};

// One path's kernels. `n` counts elements and must be a multiple of the block size of
// the quantized type involved (32 for Q8_0/Q4_0, 256 for Q8_K/Q4_K/Q6_K). Pointers need
// no particular alignment. All functions are pure (thread-safe on disjoint outputs).
struct KernelTable {
  CpuPath path;

  // Activation quantizers, same algorithm as ggml: Q8_0 d = amax/127 (stored as fp16),
  // q = round(x/d); Q8_K d = max/-127 (float), q = min(127, nearest_int(x/d)), bsums.
  void (*quantize_row_q8_0)(const float* x, BlockQ8_0* y, int64_t n);
  void (*quantize_row_q8_k)(const float* x, BlockQ8_K* y, int64_t n);

  // Dot products of one weight row with one activation row.
  float (*dot_q8_0_q8_0)(const BlockQ8_0* w, const BlockQ8_0* x, int64_t n);
  float (*dot_q4_0_q8_0)(const BlockQ4_0* w, const BlockQ8_0* x, int64_t n);
  float (*dot_q4_k_q8_k)(const BlockQ4_K* w, const BlockQ8_K* x, int64_t n);
  float (*dot_q6_k_q8_k)(const BlockQ6_K* w, const BlockQ8_K* x, int64_t n);
  float (*dot_f32)(const float* w, const float* x, int64_t n);
  float (*dot_f16_f32)(const Half* w, const float* x, int64_t n);

  // GEMM micro-kernels per weight type (matvec is n_tokens = 1).
  GemmFn gemm_f32;
  GemmFn gemm_f16;
  GemmFn gemm_q8_0;
  GemmFn gemm_q4_0;
  GemmFn gemm_q4_k;
  GemmFn gemm_q6_k;

  // Dequantize n elements of a row to float (used by MatMulTransposed, one block row at
  // a time). Exact (ggml's dequantize_row_*): value = fp16 scale * integer code.
  void (*dequantize_row_q8_0)(const BlockQ8_0* x, float* y, int64_t n);
  void (*dequantize_row_q4_0)(const BlockQ4_0* x, float* y, int64_t n);
  void (*dequantize_row_q4_k)(const BlockQ4_K* x, float* y, int64_t n);
  void (*dequantize_row_q6_k)(const BlockQ6_K* x, float* y, int64_t n);
  void (*convert_f16_f32)(const Half* x, float* y, int64_t n);

  // y = x / sqrt(mean(x^2) + eps) * weight (weight may be null: no scaling). y may be x.
  void (*rms_norm)(const float* x, const float* weight, float* y, int64_t n, float eps);
  // In place, numerically stable (subtracts the max). n >= 1.
  void (*softmax)(float* x, int64_t n);
  void (*silu)(const float* x, float* y, int64_t n);  // x * sigmoid(x); y may be x
  // y = silu(gate) * up; y may alias gate or up.
  void (*swiglu)(const float* gate, const float* up, float* y, int64_t n);
  void (*add)(const float* a, const float* b, float* y, int64_t n);  // y = a + b
  void (*scale)(const float* x, float s, float* y, int64_t n);       // y = s * x
  void (*axpy)(float a, const float* x, float* y, int64_t n);        // y += a * x
  // llama RoPE (LLAMA_ROPE_TYPE_NORM) in place on x[n_tokens][n_heads][head_dim]:
  // token t at position pos0 + t rotates each adjacent pair (x[2i], x[2i+1]) of every
  // head by angle pos * theta_base^(-2i/head_dim). head_dim must be even.
  void (*rope)(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t pos0, float theta_base);

  // C += A . B over the whole of `args`. Every C element is updated by one fused
  // multiply-add chain c = fma(A(i,p), B(p,j), c) for p = 0..k-1 in order, so every path,
  // tile shape and row/column split gives the same bits.
  void (*gemm_acc_f32)(const GemmAccArgs& args);
};

// The table of `path`, or nullptr if this binary lacks it or the CPU cannot run it.
const KernelTable* GetKernelTable(CpuPath path);
// The table of ActiveCpuPath() (never null).
const KernelTable& ActiveKernels();

// The GEMM micro-kernel of `k` for weights of `type`, or nullptr if MatMul does not
// support the type.
GemmFn GemmKernelFor(const KernelTable& k, GgmlType type);

// fn(a, r0, r1), with software prefetch of the next weight rows when the call is
// decode-sized (n_tokens <= 2) and so streams the weights from memory. Same results as
// calling fn directly. MatMul uses it; callers of GEMM micro-kernels should too.
void RunGemmRows(GemmFn fn, const GemmArgs& a, int64_t r0, int64_t r1);

// ---- Matrices ----

// A weight matrix in memory (not owned): `rows` rows of `cols` elements of `type`, row r
// starting at data + r * RowBytes(type, cols).
struct WeightMatrix {
  GgmlType type = GgmlType::kF32;
  const void* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
};

// True for the weight types MatMul supports: F32, F16, Q8_0, Q4_0, Q4_K, Q6_K.
bool IsMatMulWeightType(GgmlType type);
// Elements per block (1 for F32/F16), 0 for unsupported types.
int64_t BlockSize(GgmlType type);
// Bytes of one row of `cols` elements; 0 if the type is unsupported or cols is not a
// multiple of its block size.
size_t RowBytes(GgmlType type, int64_t cols);
// OK if MatMul can use `w` (supported type, positive shape, block-aligned cols, data
// set); InvalidArgument naming the problem otherwise. Use on shapes read from files.
Status ValidateWeight(const WeightMatrix& w);

// Execution context of the matrix functions: the kernels (null = ActiveKernels()) and
// the pool that splits rows (null = run on the calling thread).
struct ComputeContext {
  const KernelTable* kernels = nullptr;
  ThreadPool* pool = nullptr;
};

// Activation rows quantized for one weight type, reusable across several matrices with
// the same cols and type family (e.g. Q, K, V projections of the same input).
// Grows its buffer on demand, never shrinks: steady-state calls allocate nothing.
class QuantizedActivations {
 public:
  // Quantizes x[n x cols] for weights of type `weight_type`. FLT_CHECKs that cols is a
  // multiple of the block size (validate shapes with ValidateWeight first). Splits the
  // rows over ctx.pool.
  void Quantize(GgmlType weight_type, const float* x, int64_t n, int64_t cols, const ComputeContext& ctx = {});

  GgmlType weight_type() const { return weight_type_; }
  int64_t n() const { return n_; }
  int64_t cols() const { return cols_; }
  size_t row_bytes() const { return row_bytes_; }
  // For F32/F16 weights: the float rows themselves (not copied; x must stay alive).
  const void* data() const { return float_rows_ != nullptr ? static_cast<const void*>(float_rows_) : buf_.data(); }

 private:
  template <typename Block>
  void QuantizeRows(void (*quantize)(const float*, Block*, int64_t), const float* x, int64_t n, int64_t cols,
                    ThreadPool* pool);

  GgmlType weight_type_ = GgmlType::kF32;
  int64_t n_ = 0;
  int64_t cols_ = 0;
  size_t row_bytes_ = 0;
  const float* float_rows_ = nullptr;
  std::vector<unsigned char> buf_;
};

// Y[n x rows] (row stride ldy >= rows; 0 means rows) = X[n x cols] . W^T.
// W must pass ValidateWeight (FLT_CHECK otherwise). Quantizes X into a thread-local
// buffer. Thread-safe for distinct outputs; one call per pool at a time.
void MatMul(const WeightMatrix& w, const float* x, int64_t n, float* y, const ComputeContext& ctx = {},
            int64_t ldy = 0);
// Same with activations already quantized for w.type (xq.cols() == w.cols).
void MatMulQuantized(const WeightMatrix& w, const QuantizedActivations& xq, float* y,
                     const ComputeContext& ctx = {}, int64_t ldy = 0);
// One matrix of MatMulShared: Y[n x w->rows] at row stride ldy.
struct SharedMatMulOutput {
  const WeightMatrix* w;
  float* y;
  int64_t ldy;
};
// Y_i = X[n x cols] . W_i^T for several matrices reading the same X (Q, K, V; gate, up):
// X is quantized once per activation format into xq8_0 / xq8_k (caller-owned, reused
// buffers; on the calling thread when n is small), and the rows of all matrices go
// through one parallel-for (fewer wake-ups, no idling at a matrix boundary). Results
// are bit-identical to one MatMul per matrix. Every W_i must pass ValidateWeight and
// have the same cols (FLT_CHECK).
void MatMulShared(const float* x, int64_t n, std::span<const SharedMatMulOutput> outs, QuantizedActivations& xq8_0,
                  QuantizedActivations& xq8_k, const ComputeContext& ctx = {});

// y[rows] = W . x[cols] (decode).
inline void MatVec(const WeightMatrix& w, const float* x, float* y, const ComputeContext& ctx = {}) {
  MatMul(w, x, 1, y, ctx);
}

// dX[n x cols] = dY[n x rows] . W (dX is overwritten), without materialising the
// dequantized W: each work item owns a block-aligned column range of a range of dX rows
// and walks the rows of W, dequantizing a few rows of its column range at a time into a
// small buffer (exact dequantization) that gemm_acc_f32 consumes. Each dX element is one
// fused multiply-add chain over the rows of W in order, so the result is bit-identical
// for any thread count and CPU path.
void MatMulTransposed(const WeightMatrix& w, const float* dy, int64_t n, float* dx, const ComputeContext& ctx = {});
// Same, adding into dX (the chain starts from dX's current value): dX += dY . W.
void MatMulTransposedAccumulate(const WeightMatrix& w, const float* dy, int64_t n, float* dx,
                                const ComputeContext& ctx = {});

// C += A . B (see GemmAccArgs), split over ctx.pool in tiles of C. C must not overlap A
// or B. Bit-identical for any thread count and CPU path (see KernelTable::gemm_acc_f32).
void GemmAccumulate(const GemmAccArgs& args, const ComputeContext& ctx = {});

}  // namespace flotilla::model
