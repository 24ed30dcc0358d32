# OTA integration tests: real repository signing, real HTTP on loopback (ArtifactServer +
# HttpFetcher), real SQLite journal files in temp dirs, fork()ed power-loss harness.
if(FLOTILLA_BUILD_TESTS AND TARGET flotilla_ota)
  add_library(flotilla_ota_test_support STATIC ${CMAKE_CURRENT_SOURCE_DIR}/integration/ota_test_support.cc)
  target_include_directories(flotilla_ota_test_support PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/integration)
  target_link_libraries(flotilla_ota_test_support PUBLIC flotilla_ota_testing PRIVATE flotilla_warnings)
  flotilla_add_test(NAME ota_client_test
    SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/integration/ota_client_test.cc
    LIBS flotilla_ota_test_support
    LABELS integration
    TIMEOUT 120)
  flotilla_add_test(NAME ota_power_loss_test
    SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/integration/ota_power_loss_test.cc
    LIBS flotilla_ota_test_support
    LABELS integration
    TIMEOUT 300)
endif()
