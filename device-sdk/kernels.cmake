# Kernel sources of flotilla_model, with per-ISA compile flags (runtime dispatch).
# Only the ISA files get -m/-march flags; everything else stays baseline so the library
# runs on any CPU of the target architecture and picks a path at run time
# (see include/flotilla/model/cpu_features.h and docs/kernels.md).
set(_flt_kdir ${CMAKE_CURRENT_SOURCE_DIR}/src/kernels)
target_sources(flotilla_model PRIVATE
  ${_flt_kdir}/cpu_features.cc
  ${_flt_kdir}/thread_pool.cc
  ${_flt_kdir}/kernels.cc
  ${_flt_kdir}/kernels_scalar.cc)

if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
  target_sources(flotilla_model PRIVATE ${_flt_kdir}/kernels_avx2.cc ${_flt_kdir}/kernels_avx512.cc)
  set_source_files_properties(${_flt_kdir}/kernels_avx2.cc PROPERTIES
    COMPILE_OPTIONS "-mavx2;-mfma;-mf16c")
  set_source_files_properties(${_flt_kdir}/kernels_avx512.cc PROPERTIES
    COMPILE_OPTIONS "-mavx2;-mfma;-mf16c;-mavx512f;-mavx512bw;-mavx512vl;-mavx512vnni")
  set(FLOTILLA_KERNEL_ARCH x86_64)
elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "^(aarch64|arm64|ARM64)$")
  target_sources(flotilla_model PRIVATE ${_flt_kdir}/kernels_neon.cc ${_flt_kdir}/kernels_neon_dotprod.cc)
  set_source_files_properties(${_flt_kdir}/kernels_neon.cc PROPERTIES COMPILE_OPTIONS "-march=armv8-a")
  set_source_files_properties(${_flt_kdir}/kernels_neon_dotprod.cc PROPERTIES
    COMPILE_OPTIONS "-march=armv8.2-a+dotprod")
  set(FLOTILLA_KERNEL_ARCH aarch64)
else()
  set(FLOTILLA_KERNEL_ARCH generic)  # scalar kernels only
endif()
# The kernels are the hot loop of inference: optimise them even in Debug builds. No FP
# contraction: the compiler must not fuse a*b+c into FMA behind our back (GCC does so by
# default, even across intrinsics), because the paths promise exact results where the
# math is exact (axpy, dequantization) and the tests compare bits.
set_property(SOURCE ${_flt_kdir}/kernels_scalar.cc ${_flt_kdir}/kernels_avx2.cc ${_flt_kdir}/kernels_avx512.cc
  ${_flt_kdir}/kernels_neon.cc ${_flt_kdir}/kernels_neon_dotprod.cc ${_flt_kdir}/kernels.cc
  APPEND PROPERTY COMPILE_OPTIONS "-O3;-ffp-contract=off")
