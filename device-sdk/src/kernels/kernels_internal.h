// Internal to the kernels: how the per-path tables are assembled, and helpers shared by
// the path implementations.
//
// The ISA-specific translation units (kernels_avx2.cc, kernels_avx512.cc,
// kernels_neon*.cc) are compiled with extra -m/-march flags. They must not instantiate
// inline functions or templates that other translation units also instantiate (the
// linker may keep the ISA-flagged copy and run it on a CPU without that ISA), so they
// include only this header, quant_blocks.h, kernels.h declarations and intrinsics, and
// keep their own helpers in an anonymous namespace.
#pragma once

#include <cstdint>

#include "flotilla/model/kernels.h"

namespace flotilla::model::internal {

// Fills every entry with the portable scalar reference.
void FillScalarKernels(KernelTable* t);
// Each overrides the entries its ISA accelerates (call after FillScalarKernels).
void FillAvx2Kernels(KernelTable* t);
void FillAvx512VnniKernels(KernelTable* t);
void FillNeonKernels(KernelTable* t);
void FillNeonDotprodKernels(KernelTable* t);

// Scalar implementations other paths fall back to.
void QuantizeRowQ8KScalar(const float* x, BlockQ8_K* y, int64_t n);
void RopeScalar(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t pos0, float theta_base);

}  // namespace flotilla::model::internal
