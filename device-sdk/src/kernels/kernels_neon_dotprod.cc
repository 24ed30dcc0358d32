// ARMv8.2-A NEON dot-product kernels (compiled with -march=armv8.2-a+dotprod; see
// kernels.cmake).
#define FLT_DOTPROD 1
#define FLT_FILL_FN FillNeonDotprodKernels
#include "kernels_neon.inc"
