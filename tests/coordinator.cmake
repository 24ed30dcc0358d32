# Coordinator integration test (REST API over real HTTP on loopback, PKI accepted by a
# real Mosquitto with mTLS, the MQTT device endpoint end to end) and the fuzz target for
# the coordinator's decoders of untrusted bytes (enrolment envelopes, upload bodies).
if(FLOTILLA_BUILD_TESTS)
  flotilla_add_test(NAME coordinator_api_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/integration/coordinator_api_test.cc
    LIBS flotilla_coordinator flotilla_broker flotilla_protocol_mqtt flotilla_httplib flotilla_core_testing
         nlohmann_json::nlohmann_json
    LABELS integration TIMEOUT 180)
  target_include_directories(coordinator_api_test PRIVATE ${PROJECT_SOURCE_DIR}/coordinator/tests)
endif()
flotilla_add_fuzzer(NAME coordinator_upload_fuzzer
  SOURCES ${PROJECT_SOURCE_DIR}/coordinator/tests/enrolment_fuzzer.cc
  LIBS flotilla_coordinator flotilla_warnings)
# End to end over the shipped `flotilla pki` / `flotilla coordinator` commands.
if(FLOTILLA_BUILD_TESTS)
  add_test(NAME coordinator_cli_e2e
    COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/integration/coordinator_cli_e2e.sh $<TARGET_FILE:flotilla>)
  set_tests_properties(coordinator_cli_e2e PROPERTIES LABELS integration TIMEOUT 120
                       PASS_REGULAR_EXPRESSION "coordinator CLI e2e: all checks passed")
endif()
