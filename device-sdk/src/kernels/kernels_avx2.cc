// AVX2 + FMA + F16C kernels (compiled with -mavx2 -mfma -mf16c; see kernels.cmake).
#define FLT_VNNI 0
#define FLT_FILL_FN FillAvx2Kernels
#include "kernels_x86.inc"
