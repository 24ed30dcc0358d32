# Transport integration tests: MqttTransport against a real Mosquitto started by the
# MosquittoBroker harness (free loopback ports, temp dirs). Label: integration.
set(_flt_it ${CMAKE_CURRENT_LIST_DIR})

if(FLOTILLA_BUILD_TESTS)
  flotilla_add_test(NAME transport_mqtt_integration_test
    SOURCES ${_flt_it}/integration/transport_mqtt_test.cc
    LIBS flotilla_protocol_mqtt flotilla_broker flotilla_transport_test_support flotilla_test_pki
    LABELS integration TIMEOUT 180)
  flotilla_add_test(NAME transport_scale_integration_test
    SOURCES ${_flt_it}/integration/transport_scale_test.cc
    LIBS flotilla_protocol_mqtt flotilla_broker flotilla_transport_test_support
    LABELS integration TIMEOUT 240)
endif()
