# secagg_bench: SecAgg+ at n = 1,000, m = 100,000, b = 32 (issue 5's figures): server
# collection + unmasking on one core, client time per round, server peak memory, and
# mask expansion GB/s on 1 and 2 threads. Plain executable printing medians.
if(FLOTILLA_BUILD_BENCH)
  add_executable(secagg_bench ${CMAKE_CURRENT_LIST_DIR}/secagg_bench.cc)
  target_link_libraries(secagg_bench PRIVATE flotilla_aggregation flotilla_aggregation_testing flotilla_warnings)
endif()
