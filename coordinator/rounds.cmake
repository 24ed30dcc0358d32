# flotilla_rounds: the coordinator's round engine (docs/rounds.md) — round state machine,
# RoundDriver over the Transport seam, the SQLite round journal, in-process upload source
# and adapter registry. Kept apart from flotilla_coordinator (store, REST, PKI) so both
# evolve side by side; links core, core_sqlite, protocol, security, aggregation. Never the
# device agent (the tests link both).
set(_flt_rounds ${PROJECT_SOURCE_DIR}/coordinator)
add_library(flotilla_rounds
  ${_flt_rounds}/src/rounds/round_state.cc
  ${_flt_rounds}/src/rounds/round_spec.cc
  ${_flt_rounds}/src/rounds/round_journal_sqlite.cc
  ${_flt_rounds}/src/rounds/round_ports.cc
  ${_flt_rounds}/src/rounds/round_driver.cc
  ${_flt_rounds}/src/rounds/round_fast_identity_openssl.cc)
target_include_directories(flotilla_rounds PUBLIC ${_flt_rounds}/include)
target_link_libraries(flotilla_rounds
  PUBLIC flotilla_core flotilla_protocol flotilla_security flotilla_aggregation
  PRIVATE flotilla_core_sqlite nlohmann_json::nlohmann_json OpenSSL::Crypto flotilla_warnings)

if(FLOTILLA_BUILD_TESTS)
  file(GLOB _flt_rounds_tests CONFIGURE_DEPENDS ${_flt_rounds}/tests/rounds/*_test.cc)
  if(_flt_rounds_tests)
    flotilla_add_test(NAME rounds_test
      SOURCES ${_flt_rounds_tests}
      LIBS flotilla_rounds flotilla_device flotilla_core_sqlite flotilla_core_testing flotilla_transport_testing
           flotilla_protocol_testing flotilla_aggregation
      TIMEOUT 300)
  endif()
endif()
