# Federated rounds end to end: device agents (flotilla_device) and the round driver
# (flotilla_rounds) over a real Mosquitto with mTLS + ACLs (harness + throw-away PKI).
# Label: integration. FLOTILLA_ROUND_E2E_DEVICES overrides the 1,000-device fleet.
if(FLOTILLA_BUILD_TESTS AND TARGET flotilla_rounds AND TARGET flotilla_device)
  flotilla_add_test(NAME round_e2e_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/integration/round_e2e_test.cc
    LIBS flotilla_rounds flotilla_device flotilla_protocol_mqtt flotilla_broker flotilla_test_pki
    LABELS integration TIMEOUT 300)
  target_include_directories(round_e2e_test PRIVATE ${PROJECT_SOURCE_DIR}/coordinator/tests/rounds)
  if(FLOTILLA_SANITIZE)
    target_compile_definitions(round_e2e_test PRIVATE FLOTILLA_SANITIZED=1)
  endif()
endif()
