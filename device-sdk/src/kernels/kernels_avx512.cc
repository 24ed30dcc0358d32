// AVX-512 VNNI kernels (compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni on
// top of the AVX2 flags; see kernels.cmake).
#define FLT_VNNI 1
#define FLT_FILL_FN FillAvx512VnniKernels
#include "kernels_x86.inc"
