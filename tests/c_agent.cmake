# Device agents created only through the C API (flotilla_device_c) take part in a real
# federated round: Mosquitto with mTLS + ACLs, an in-process RoundDriver coordinator,
# adapters served over HTTP. Label: integration.
if(FLOTILLA_BUILD_TESTS AND TARGET flotilla_rounds AND TARGET flotilla_device AND TARGET flotilla_device_c)
  flotilla_add_test(NAME c_agent_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/integration/c_agent_test.cc
    LIBS flotilla_device_c flotilla_rounds flotilla_device flotilla_model flotilla_protocol_mqtt flotilla_broker
         flotilla_test_pki flotilla_httplib
    LABELS integration TIMEOUT 240)
endif()
