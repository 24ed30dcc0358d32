# flotilla_rollouts: OTA publishing (tensor-aligned GGUF chunking), staged rollouts with
# SQLite state, device report ingestion, MQTT hints and the REST routes (docs/ota.md
# "Publishing", "Rollouts"). Included from the root CMakeLists after the coordinator.
set(_flt_ro ${PROJECT_SOURCE_DIR}/coordinator)
add_library(flotilla_rollouts
  ${_flt_ro}/src/rollouts/publish.cc
  ${_flt_ro}/src/rollouts/rollout_logic.cc
  ${_flt_ro}/src/rollouts/rollout_json.cc
  ${_flt_ro}/src/rollouts/rollout_manager.cc
  ${_flt_ro}/src/rollouts/rollout_http.cc)
target_include_directories(flotilla_rollouts PUBLIC ${_flt_ro}/include PRIVATE ${_flt_ro}/src/rollouts)
target_link_libraries(flotilla_rollouts
  PUBLIC flotilla_core flotilla_protocol flotilla_ota flotilla_ota_repo
  PRIVATE flotilla_core_sqlite flotilla_security flotilla_model flotilla_httplib nlohmann_json::nlohmann_json
          flotilla_warnings)

if(FLOTILLA_BUILD_TESTS)
  flotilla_add_test(NAME rollout_test
    SOURCES ${_flt_ro}/tests/rollouts/rollout_test.cc
            ${_flt_ro}/tests/rollouts/rollout_logic_test.cc
            ${_flt_ro}/tests/rollouts/rollout_publish_test.cc
            ${_flt_ro}/tests/rollouts/rollout_http_test.cc
            ${_flt_ro}/tests/rollouts/rollout_lifecycle_test.cc
            ${_flt_ro}/tests/rollouts/rollout_db_test.cc
            ${_flt_ro}/tests/rollouts/rollout_fuzz_test.cc
            ${PROJECT_SOURCE_DIR}/tests/fuzz/rollout_fuzzer.cc
    LIBS flotilla_rollouts flotilla_coordinator flotilla_core_sqlite flotilla_ota_testing flotilla_transport_testing
         flotilla_model flotilla_httplib nlohmann_json::nlohmann_json
    TIMEOUT 120)
  target_include_directories(rollout_test PRIVATE ${_flt_ro}/src/rollouts)
endif()
