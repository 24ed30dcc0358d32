# flotilla_device: the device agent — local sample store (SQLite), FL client, OTA client
# glue. Sources in src/device/, unit tests in tests/device/ (device_test).
file(GLOB FLOTILLA_DEVICE_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/src/device/*.cc)
if(FLOTILLA_DEVICE_SOURCES)
  add_library(flotilla_device ${FLOTILLA_DEVICE_SOURCES})
  target_include_directories(flotilla_device PUBLIC include PRIVATE src)
  target_link_libraries(flotilla_device PUBLIC flotilla_model flotilla_core flotilla_core_sqlite
                        PRIVATE flotilla_warnings)
  if(FLOTILLA_BUILD_TESTS)
    file(GLOB FLOTILLA_DEVICE_TESTS CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/tests/device/*_test.cc)
    if(FLOTILLA_DEVICE_TESTS)
      flotilla_add_test(NAME device_test SOURCES ${FLOTILLA_DEVICE_TESTS} LIBS flotilla_device flotilla_core_testing)
    endif()
  endif()
endif()
