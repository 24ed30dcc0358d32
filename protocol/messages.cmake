# flotilla_protocol: the wire format (flotilla.v1 protobuf messages), topic tree, signed
# envelopes with a replay window, payload helpers, and the Transport interface
# (transport.h, header-only, owned by the transport work).
add_subdirectory(${CMAKE_CURRENT_SOURCE_DIR}/proto ${CMAKE_CURRENT_BINARY_DIR}/proto)

add_library(flotilla_protocol
  src/topics.cc
  src/envelope.cc
  src/replay_window.cc
  src/payload.cc
  src/adapter_vector.cc
  src/transport_inbox.cc)
target_include_directories(flotilla_protocol PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include)
target_link_libraries(flotilla_protocol
  PUBLIC flotilla_core flotilla_protocol_pb protobuf::libprotobuf
  PRIVATE flotilla_warnings)

# Fakes for unit tests (FakeSigner / FakeVerifier): header-only, no crypto.
add_library(flotilla_protocol_testing INTERFACE)
target_include_directories(flotilla_protocol_testing INTERFACE ${CMAKE_CURRENT_SOURCE_DIR}/testing/include)
target_link_libraries(flotilla_protocol_testing INTERFACE flotilla_protocol)

if(FLOTILLA_BUILD_TESTS)
  flotilla_add_test(NAME protocol_messages_test
    SOURCES tests/messages_test.cc
    LIBS flotilla_protocol)
  flotilla_add_test(NAME protocol_topics_test
    SOURCES tests/topics_test.cc
    LIBS flotilla_protocol)
  flotilla_add_test(NAME protocol_envelope_test
    SOURCES tests/envelope_test.cc tests/replay_window_test.cc tests/payload_test.cc
            tests/envelope_fuzz_test.cc ${PROJECT_SOURCE_DIR}/tests/fuzz/envelope_fuzzer.cc
    LIBS flotilla_protocol flotilla_protocol_testing flotilla_core_testing)
endif()
