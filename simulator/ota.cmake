# flotilla_simulator_ota: the OTA fleet simulator (docs/simulator.md "OTA rollouts") — N
# real OtaClients with their own journals and A/B slots against the ArtifactServer (behind
# a faulting proxy) and a RolloutManager; health failures, download faults, crashes and
# restarts; a JSON report per phase. Included from simulator/CMakeLists.txt.
# simulator -> device side (flotilla_ota) + coordinator (flotilla_rollouts) (ARCHITECTURE.md 3).
set(_flt_simota ${CMAKE_CURRENT_LIST_DIR})
if(TARGET flotilla_rollouts AND TARGET flotilla_ota_repo)
  add_library(flotilla_simulator_ota
    ${_flt_simota}/src/ota/ota_fleet.cc
    ${_flt_simota}/src/ota/fault_proxy.cc)
  target_include_directories(flotilla_simulator_ota PUBLIC ${_flt_simota}/include PRIVATE ${_flt_simota}/src/ota)
  target_link_libraries(flotilla_simulator_ota
    PUBLIC flotilla_rollouts flotilla_ota flotilla_core
    PRIVATE flotilla_ota_repo flotilla_security flotilla_httplib nlohmann_json::nlohmann_json flotilla_warnings)

  if(FLOTILLA_BUILD_TESTS)
    file(GLOB _flt_simota_tests CONFIGURE_DEPENDS ${_flt_simota}/tests/ota/*_test.cc)
    if(_flt_simota_tests)
      flotilla_add_test(NAME simulator_ota_test SOURCES ${_flt_simota_tests}
                        LIBS flotilla_simulator_ota flotilla_core_testing nlohmann_json::nlohmann_json
                        TIMEOUT 300)
      target_include_directories(simulator_ota_test PRIVATE ${_flt_simota}/src/ota)
    endif()
  endif()
endif()
