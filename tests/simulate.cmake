# The fleet simulator end to end (issue 6, item 9): a small fleet of real device agents
# with the engine trainer over a real Mosquitto (mTLS + ACLs) and the in-process round
# engine; rounds complete, the aggregate is the exact sum of the survivors' inputs, and
# held-out perplexity improves. Plus `flotilla simulate` through the shipped CLI.
if(FLOTILLA_BUILD_TESTS AND TARGET flotilla_simulator)
  flotilla_add_test(NAME simulate_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/integration/simulate_test.cc
                    LIBS flotilla_simulator flotilla_coordinator flotilla_rounds nlohmann_json::nlohmann_json
                    LABELS integration TIMEOUT 300)
  target_compile_definitions(simulate_test PRIVATE FLOTILLA_CLI="$<TARGET_FILE:flotilla>")
  add_dependencies(simulate_test flotilla)
endif()
