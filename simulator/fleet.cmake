# flotilla_simulator: the fleet simulator (docs/simulator.md) — N real device agents in one
# process against a real Mosquitto (mTLS + ACLs) and the coordinator's round engine with
# its SQLite journal and Store; fault injection and the JSON report. Included from
# simulator/CMakeLists.txt. simulator -> device agent + coordinator (ARCHITECTURE.md 3).
set(_flt_sim ${CMAKE_CURRENT_LIST_DIR})
if(TARGET flotilla_device AND TARGET flotilla_rounds AND TARGET flotilla_coordinator AND TARGET flotilla_synthdata)
  add_library(flotilla_simulator
    ${_flt_sim}/src/fleet/base_model.cc
    ${_flt_sim}/src/fleet/faults.cc
    ${_flt_sim}/src/fleet/fleet.cc
    ${_flt_sim}/src/fleet/fleet_parts.cc
    ${_flt_sim}/src/fleet/report.cc)
  target_include_directories(flotilla_simulator PUBLIC ${_flt_sim}/include PRIVATE ${_flt_sim}/src/fleet)
  target_link_libraries(flotilla_simulator
    PUBLIC flotilla_device flotilla_rounds flotilla_synthdata flotilla_core
    PRIVATE flotilla_coordinator flotilla_broker flotilla_protocol_mqtt flotilla_security flotilla_model
            nlohmann_json::nlohmann_json flotilla_warnings)

  if(FLOTILLA_BUILD_TESTS)
    file(GLOB _flt_sim_tests CONFIGURE_DEPENDS ${_flt_sim}/tests/fleet/*_test.cc)
    if(_flt_sim_tests)
      flotilla_add_test(NAME simulator_test SOURCES ${_flt_sim_tests}
                        LIBS flotilla_simulator nlohmann_json::nlohmann_json)
      target_include_directories(simulator_test PRIVATE ${_flt_sim}/src/fleet)
    endif()
  endif()
endif()
