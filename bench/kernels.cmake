# kernels_bench: matvec GB/s and prefill matmul GOP/s per weight type, CPU path and
# thread count (see bench/kernels_bench.cc and docs/kernels.md).
add_executable(kernels_bench ${CMAKE_CURRENT_SOURCE_DIR}/kernels_bench.cc)
target_link_libraries(kernels_bench PRIVATE flotilla_model flotilla_warnings)
