# Rollout fuzz target (FLOTILLA_FUZZ=ON with clang): rollout spec JSON, the REST routes'
# parsers and device report envelopes/payloads (tests/fuzz/rollout_fuzzer.cc). Run e.g.
#   ./rollout_fuzzer -max_total_time=60 <corpus dir>
# The entry point also runs in rollout_test (deterministic mutations) on every build.
if(TARGET flotilla_rollouts)
  flotilla_add_fuzzer(NAME rollout_fuzzer
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/fuzz/rollout_fuzzer.cc
    LIBS flotilla_rollouts flotilla_ota_testing flotilla_warnings)
  if(TARGET rollout_fuzzer)
    target_include_directories(rollout_fuzzer PRIVATE ${PROJECT_SOURCE_DIR}/coordinator/src/rollouts)
  endif()
endif()
