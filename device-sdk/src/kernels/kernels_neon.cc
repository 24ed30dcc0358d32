// ARMv8-A NEON kernels (compiled with -march=armv8-a; see kernels.cmake).
#define FLT_DOTPROD 0
#define FLT_FILL_FN FillNeonKernels
#include "kernels_neon.inc"
