# `flotilla coordinator run` SIGKILLed at every round stage and restarted (a child process
# per start), over a real Mosquitto with mTLS and real agents. Label: integration.
if(FLOTILLA_BUILD_TESTS AND TARGET flotilla_test_agents AND TARGET flotilla)
  flotilla_add_test(NAME coordinator_crash_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/integration/coordinator_crash_test.cc
    LIBS flotilla_coordinator flotilla_test_agents flotilla_broker flotilla_httplib nlohmann_json::nlohmann_json
    LABELS integration TIMEOUT 600)
  target_compile_definitions(coordinator_crash_test PRIVATE FLOTILLA_CLI="$<TARGET_FILE:flotilla>")
  add_dependencies(coordinator_crash_test flotilla)
endif()
