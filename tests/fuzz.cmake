# libFuzzer targets (FLOTILLA_FUZZ=ON with clang; flotilla_add_fuzzer is a no-op otherwise).
# Run: <build>/tests/envelope_fuzzer -max_total_time=30 [corpus-dir]
flotilla_add_fuzzer(NAME envelope_fuzzer
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/envelope_fuzzer.cc
  LIBS flotilla_protocol flotilla_protocol_testing flotilla_core_testing flotilla_warnings)
