# OTA metadata fuzz target (FLOTILLA_FUZZ=ON with clang). Run e.g.
#   ./ota_metadata_fuzzer -max_total_time=60 -max_len=70000 <corpus dir>
# The entry point also runs in ota_metadata_test (deterministic mutations) on every build.
if(TARGET flotilla_ota)
  flotilla_add_fuzzer(NAME ota_metadata_fuzzer
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/fuzz/ota_metadata_fuzzer.cc
    LIBS flotilla_ota_testing flotilla_warnings)
endif()
