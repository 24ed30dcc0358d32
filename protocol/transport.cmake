# Transport: the Paho MQTT v5 adapter (flotilla_protocol_mqtt), the Mosquitto broker
# harness (flotilla_broker) and the in-memory fake for unit tests
# (flotilla_transport_testing). The Transport interface itself (transport.h) is a header
# of flotilla_protocol. Docs: docs/transport.md.
set(_flt_tr ${CMAKE_CURRENT_LIST_DIR})

add_library(flotilla_protocol_mqtt ${_flt_tr}/src/platform/paho/mqtt_transport.cc)
target_link_libraries(flotilla_protocol_mqtt
  PUBLIC flotilla_protocol flotilla_core
  PRIVATE PahoMqttCpp::paho-mqttpp3 eclipse-paho-mqtt-c::paho-mqtt3as flotilla_warnings)

add_library(flotilla_broker ${_flt_tr}/src/platform/mosquitto/mosquitto_broker.cc)
target_link_libraries(flotilla_broker PUBLIC flotilla_protocol flotilla_core PRIVATE flotilla_warnings)
if(MOSQUITTO_EXECUTABLE)
  target_compile_definitions(flotilla_broker PRIVATE FLOTILLA_MOSQUITTO_FALLBACK="${MOSQUITTO_EXECUTABLE}")
endif()

add_library(flotilla_transport_testing ${_flt_tr}/testing/src/in_memory_transport.cc)
target_include_directories(flotilla_transport_testing PUBLIC ${_flt_tr}/testing/include)
target_link_libraries(flotilla_transport_testing PUBLIC flotilla_protocol flotilla_core PRIVATE flotilla_warnings)

if(FLOTILLA_BUILD_TESTS)
  flotilla_add_test(NAME transport_unit_test
    SOURCES ${_flt_tr}/tests/transport_fake_test.cc ${_flt_tr}/tests/transport_options_test.cc
    LIBS flotilla_transport_testing flotilla_protocol_mqtt flotilla_broker flotilla_core_testing)
endif()
