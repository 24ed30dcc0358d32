# round_bench: one round of 100 / 1,000 / 3,000 devices through `flotilla coordinator run`
# (a child process) over a real Mosquitto with mTLS; coordinator CPU and peak RSS.
if(FLOTILLA_BUILD_BENCH AND TARGET flotilla_test_agents AND TARGET flotilla)
  add_executable(round_bench ${CMAKE_CURRENT_LIST_DIR}/round_bench.cc)
  target_link_libraries(round_bench PRIVATE flotilla_coordinator flotilla_test_agents flotilla_broker flotilla_httplib
                        nlohmann_json::nlohmann_json flotilla_warnings)
  target_compile_definitions(round_bench PRIVATE FLOTILLA_CLI="$<TARGET_FILE:flotilla>")
  add_dependencies(round_bench flotilla)
endif()
