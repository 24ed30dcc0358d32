# Transport integration tests: MqttTransport against a real Mosquitto started by the
# MosquittoBroker harness (free loopback ports, temp dirs). Label: integration.
set(_flt_it ${CMAKE_CURRENT_LIST_DIR})

# Support shared with bench/mqtt_bench.cc: TCP relay (severable links), polling helpers.
add_library(flotilla_transport_test_support ${_flt_it}/support/transport_test_support.cc)
target_include_directories(flotilla_transport_test_support PUBLIC ${_flt_it}/support)
target_link_libraries(flotilla_transport_test_support PUBLIC flotilla_protocol flotilla_core PRIVATE flotilla_warnings)

# Throw-away PKI for mTLS (certificates from flotilla_security's X.509 API).
add_library(flotilla_test_pki ${_flt_it}/support/test_pki.cc)
target_include_directories(flotilla_test_pki PUBLIC ${_flt_it}/support)
target_link_libraries(flotilla_test_pki PUBLIC flotilla_core PRIVATE flotilla_security flotilla_warnings)

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
