# SecAgg+ message-handler fuzzers (FLOTILLA_FUZZ=ON with clang). The same entry points
# run over deterministic mutations in aggregation_test (secagg_fuzz_test.cc).
# Run: <build>/tests/secagg_server_fuzzer -max_total_time=60
foreach(_side server client)
  flotilla_add_fuzzer(NAME secagg_${_side}_fuzzer
    SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/secagg_${_side}_fuzzer.cc
    LIBS flotilla_aggregation_testing flotilla_warnings)
  if(TARGET secagg_${_side}_fuzzer)
    target_compile_definitions(secagg_${_side}_fuzzer PRIVATE FLOTILLA_FUZZER_ENTRY=1)
  endif()
endforeach()
