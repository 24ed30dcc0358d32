# flotilla_device: the device agent — local sample store (SQLite), FL client, OTA client
# glue. Sources in src/device/, unit tests in tests/device/ (device_test).
file(GLOB FLOTILLA_DEVICE_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/src/device/*.cc)
if(FLOTILLA_DEVICE_SOURCES)
  add_library(flotilla_device ${FLOTILLA_DEVICE_SOURCES})
  target_include_directories(flotilla_device PUBLIC include PRIVATE src)
  # The round agent: signed envelopes + topics (protocol), MQTT (Paho adapter), mbedTLS
  # identities and hashes (security), the SecAgg+ client and fixed point (aggregation),
  # cpp-httplib for uploads and adapter downloads. Never the coordinator.
  target_link_libraries(flotilla_device PUBLIC flotilla_model flotilla_core flotilla_core_sqlite
                        flotilla_protocol flotilla_aggregation flotilla_security
                        PRIVATE flotilla_protocol_mqtt flotilla_httplib flotilla_warnings)
  if(FLOTILLA_BUILD_TESTS)
    file(GLOB FLOTILLA_DEVICE_TESTS CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/tests/device/*_test.cc)
    if(FLOTILLA_DEVICE_TESTS)
      flotilla_add_test(NAME device_test SOURCES ${FLOTILLA_DEVICE_TESTS}
                        LIBS flotilla_device flotilla_core_testing flotilla_transport_testing
                             flotilla_protocol_testing flotilla_httplib)
      target_include_directories(device_test PRIVATE src)  # agent_store.h
    endif()
  endif()
endif()
