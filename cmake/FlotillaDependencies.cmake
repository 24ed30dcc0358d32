# Every third-party dependency is a Debian 12 package installed by scripts/setup.sh.
find_package(Threads REQUIRED)

if(FLOTILLA_ENGINE_ONLY)
  # core + device-sdk only (no fmt/spdlog users), e.g. the aarch64 cross build.
  if(FLOTILLA_BUILD_TESTS)
    if(CMAKE_CROSSCOMPILING)
      # Debian packages no aarch64 GTest: build it from the sources in googletest-src.
      set(INSTALL_GTEST OFF CACHE BOOL "" FORCE)
      set(BUILD_GMOCK ON CACHE BOOL "" FORCE)
      add_subdirectory(/usr/src/googletest ${CMAKE_BINARY_DIR}/_deps/googletest EXCLUDE_FROM_ALL SYSTEM)
      foreach(_flt_gt gtest gmock gtest_main)
        if(NOT TARGET GTest::${_flt_gt})
          add_library(GTest::${_flt_gt} ALIAS ${_flt_gt})
        endif()
      endforeach()
    else()
      find_package(GTest REQUIRED)
    endif()
  endif()
  return()
endif()

find_package(fmt REQUIRED)
find_package(spdlog REQUIRED)

find_package(Protobuf REQUIRED)
find_package(OpenSSL REQUIRED)
find_package(SQLite3 REQUIRED)
find_package(eclipse-paho-mqtt-c REQUIRED)
find_package(PahoMqttCpp REQUIRED)
find_package(nlohmann_json REQUIRED)
find_package(CLI11 REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)
find_package(ZLIB)

# mbedTLS 2.28 ships no CMake package on Debian 12.
find_path(MBEDTLS_INCLUDE_DIR mbedtls/ssl.h REQUIRED)
find_library(MBEDTLS_LIB mbedtls REQUIRED)
find_library(MBEDX509_LIB mbedx509 REQUIRED)
find_library(MBEDCRYPTO_LIB mbedcrypto REQUIRED)
add_library(flotilla_mbedtls INTERFACE)
target_include_directories(flotilla_mbedtls SYSTEM INTERFACE ${MBEDTLS_INCLUDE_DIR})
target_link_libraries(flotilla_mbedtls INTERFACE ${MBEDTLS_LIB} ${MBEDX509_LIB} ${MBEDCRYPTO_LIB})

# cpp-httplib: the Debian package ships a compiled library configured with OpenSSL.
add_library(flotilla_httplib INTERFACE)
target_link_libraries(flotilla_httplib INTERFACE PkgConfig::HTTPLIB OpenSSL::SSL OpenSSL::Crypto)

if(FLOTILLA_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()
if(FLOTILLA_BUILD_BENCH)
  find_package(benchmark REQUIRED)
endif()

find_program(MOSQUITTO_EXECUTABLE mosquitto PATHS /usr/sbin /usr/local/sbin)
