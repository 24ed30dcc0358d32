# Libraries shared by the integration tests and benchmarks, defined before any
# tests/<area>.cmake so their `if(TARGET ...)` checks see them.

# TCP relay (severable links), polling helpers (also bench/mqtt_bench.cc).
add_library(flotilla_transport_test_support ${CMAKE_CURRENT_LIST_DIR}/transport_test_support.cc)
target_include_directories(flotilla_transport_test_support PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(flotilla_transport_test_support PUBLIC flotilla_protocol flotilla_core PRIVATE flotilla_warnings)

# Throw-away PKI for mTLS (certificates from flotilla_security's X.509 API).
add_library(flotilla_test_pki ${CMAKE_CURRENT_LIST_DIR}/test_pki.cc)
target_include_directories(flotilla_test_pki PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(flotilla_test_pki PUBLIC flotilla_core PRIVATE flotilla_security flotilla_warnings)

# Real DeviceAgents with fleet certificates for the coordinator tests.
if(TARGET flotilla_device AND TARGET flotilla_protocol_mqtt AND TARGET flotilla_rounds)
  add_library(flotilla_test_agents STATIC ${CMAKE_CURRENT_LIST_DIR}/test_agents.cc)
  target_include_directories(flotilla_test_agents PUBLIC ${CMAKE_CURRENT_LIST_DIR})
  target_link_libraries(flotilla_test_agents PUBLIC flotilla_device flotilla_test_pki
                        PRIVATE flotilla_protocol_mqtt flotilla_security flotilla_rounds flotilla_warnings)
endif()
