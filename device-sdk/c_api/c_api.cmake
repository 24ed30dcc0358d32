# flotilla_device_c: the C API for firmware (c_api/include/flotilla/flotilla.h), the C
# example program examples/c/generate.c (C11, -Wall -Wextra -Werror), and their test.
add_library(flotilla_device_c ${CMAKE_CURRENT_SOURCE_DIR}/c_api/src/flotilla_c.cc)
target_include_directories(flotilla_device_c PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/c_api/include)
target_link_libraries(flotilla_device_c PRIVATE flotilla_model flotilla_warnings)

add_executable(flotilla_example_generate ${PROJECT_SOURCE_DIR}/examples/c/generate.c)
set_target_properties(flotilla_example_generate PROPERTIES C_STANDARD 11 C_STANDARD_REQUIRED ON C_EXTENSIONS OFF
                      LINKER_LANGUAGE CXX)
target_compile_options(flotilla_example_generate PRIVATE -Wall -Wextra -Werror -Wpedantic)
target_link_libraries(flotilla_example_generate PRIVATE flotilla_device_c)

if(FLOTILLA_BUILD_TESTS)
  flotilla_add_test(NAME c_api_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/c_api/tests/c_api_test.cc
                    LIBS flotilla_device_c flotilla_model)
  # Cross builds run the example through the same emulator as the tests (qemu-aarch64).
  list(JOIN CMAKE_CROSSCOMPILING_EMULATOR " " _flt_example_runner)
  target_compile_definitions(c_api_test PRIVATE FLT_EXAMPLE_GENERATE="$<TARGET_FILE:flotilla_example_generate>"
                             FLT_EXAMPLE_RUNNER="${_flt_example_runner}")
  add_dependencies(c_api_test flotilla_example_generate)
endif()
