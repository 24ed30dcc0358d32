# `flotilla coordinator run` with rounds: Coordinator::Start in process over a real
# Mosquitto (mTLS + ACLs), real device agents enrolling over MQTT and uploading/fetching
# over HTTP; REST-started, scheduled, cancelled and too-small rounds. Label: integration.
if(FLOTILLA_BUILD_TESTS AND TARGET flotilla_test_agents)
  flotilla_add_test(NAME coordinator_rounds_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/integration/coordinator_rounds_test.cc
    LIBS flotilla_coordinator flotilla_test_agents flotilla_broker flotilla_protocol_mqtt flotilla_test_pki
         flotilla_httplib flotilla_core_testing nlohmann_json::nlohmann_json
    LABELS integration TIMEOUT 240)
  target_include_directories(coordinator_rounds_test PRIVATE ${PROJECT_SOURCE_DIR}/coordinator/tests)
endif()
