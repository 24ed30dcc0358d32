# mqtt_bench: 1,000 MqttTransport clients against the harness Mosquitto (plain and mTLS):
# connect, subscribe, fan-out 1 -> 1,000, fan-in 1,000 -> 1; medians of 3 runs.
if(FLOTILLA_BUILD_BENCH)
  if(NOT TARGET flotilla_test_pki)
    # Defined by tests/support/support.cmake (tests/ is always added); kept for reuse.
    include(${CMAKE_CURRENT_LIST_DIR}/../tests/support/support.cmake)
  endif()
  add_executable(mqtt_bench ${CMAKE_CURRENT_LIST_DIR}/mqtt_bench.cc)
  target_link_libraries(mqtt_bench PRIVATE flotilla_protocol_mqtt flotilla_broker flotilla_transport_test_support
                        flotilla_test_pki flotilla_warnings)
endif()
