// Reference (scalar, bit-exact with llama.cpp's *_ref functions) quantization and
// dequantization of ggml block types. These define the formats: the optimized kernels
// are tested against them, and model files are written with them.
//
// Row functions take `n` = number of elements, which must be a multiple of the type's
// block size (FLT_CHECK: callers validate lengths with RowSize first). All functions are
// pure and thread-safe. Non-finite inputs give unspecified (but memory-safe) blocks.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "flotilla/core/bytes.h"
#include "flotilla/core/status.h"
#include "flotilla/model/ggml_type.h"
#include "flotilla/model/quant_blocks.h"

namespace flotilla::model {

// Q8_0 (quantize_row_q8_0_ref): d = amax/127, q = roundf(x * (1/d)).
void QuantizeRowQ8_0(const float* x, BlockQ8_0* y, int64_t n);
// Q4_0 (quantize_row_q4_0_ref): signed max-magnitude element m, d = m/-8,
// q = min(15, (int8)(x * (1/d) + 8.5)); low nibble = element j, high = element j+16.
void QuantizeRowQ4_0(const float* x, BlockQ4_0* y, int64_t n);
// Q4_K (quantize_row_q4_K_ref, no importance matrix): make_qkx2_quants per 32-block,
// 6-bit scales/mins relative to the super-block maxima.
void QuantizeRowQ4_K(const float* x, BlockQ4_K* y, int64_t n);
// Q6_K (quantize_row_q6_K_ref): make_qx_quants(nmax 32, rmse_type 1) per 16-block,
// int8 scales relative to the largest-magnitude scale.
void QuantizeRowQ6_K(const float* x, BlockQ6_K* y, int64_t n);

void DequantizeRowQ8_0(const BlockQ8_0* x, float* y, int64_t n);
void DequantizeRowQ4_0(const BlockQ4_0* x, float* y, int64_t n);
void DequantizeRowQ4_K(const BlockQ4_K* x, float* y, int64_t n);
void DequantizeRowQ6_K(const BlockQ6_K* x, float* y, int64_t n);

// Q4_K 6-bit scale/min of sub-block j (0..7) from the packed scales[12] (get_scale_min_k4).
void GetScaleMinK4(int j, const uint8_t* scales, uint8_t* scale, uint8_t* min);

// Type-generic forms. `src`/`dst` are raw bytes of whole blocks (may be unaligned).
// InvalidArgument if the type cannot be (de)quantized here or the sizes do not match
// RowSize(type, n).
Status Quantize(GgmlType type, std::span<const float> src, std::span<uint8_t> dst);
Status Dequantize(GgmlType type, ByteSpan src, std::span<float> dst);
Result<Bytes> QuantizeToBytes(GgmlType type, std::span<const float> src);
Result<std::vector<float>> DequantizeToFloats(GgmlType type, ByteSpan src, int64_t n);

}  // namespace flotilla::model
