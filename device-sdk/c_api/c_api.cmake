# flotilla_device_c: the C API for firmware (c_api/include/flotilla/flotilla.h) over the
# engine (flotilla_model) and, when it is built, the device agent (flotilla_device:
# samples, fine-tuning, the FL agent). The C example programs examples/c/*.c are built
# as C11 with -Wall -Wextra -Werror -Wpedantic and run by c_api_test.
set(_flt_capi ${CMAKE_CURRENT_SOURCE_DIR}/c_api)
if(TARGET flotilla_device)
  add_library(flotilla_device_c ${_flt_capi}/src/flotilla_c.cc ${_flt_capi}/src/flotilla_c_train.cc
              ${_flt_capi}/src/flotilla_c_agent.cc)
  target_link_libraries(flotilla_device_c PRIVATE flotilla_model flotilla_device flotilla_protocol_mqtt
                        flotilla_security flotilla_warnings)
else()
  # Engine-only builds: samples, fine-tuning and agent calls return FLT_ERR_UNSUPPORTED.
  add_library(flotilla_device_c ${_flt_capi}/src/flotilla_c.cc ${_flt_capi}/src/flotilla_c_engine_only.cc)
  target_link_libraries(flotilla_device_c PRIVATE flotilla_model flotilla_warnings)
endif()
target_include_directories(flotilla_device_c PUBLIC ${_flt_capi}/include PRIVATE ${_flt_capi}/src)

# C example programs: generate (inference) always; finetune and agent with the device SDK.
set(_flt_c_examples generate)
if(TARGET flotilla_device)
  list(APPEND _flt_c_examples finetune agent)
endif()
foreach(_ex IN LISTS _flt_c_examples)
  add_executable(flotilla_example_${_ex} ${PROJECT_SOURCE_DIR}/examples/c/${_ex}.c)
  set_target_properties(flotilla_example_${_ex} PROPERTIES C_STANDARD 11 C_STANDARD_REQUIRED ON C_EXTENSIONS OFF
                        LINKER_LANGUAGE CXX)
  target_compile_options(flotilla_example_${_ex} PRIVATE -Wall -Wextra -Werror -Wpedantic)
  target_link_libraries(flotilla_example_${_ex} PRIVATE flotilla_device_c)
endforeach()

if(FLOTILLA_BUILD_TESTS)
  flotilla_add_test(NAME c_api_test SOURCES ${_flt_capi}/tests/c_api_test.cc LIBS flotilla_device_c flotilla_model)
  if(TARGET flotilla_device)
    target_link_libraries(c_api_test PRIVATE flotilla_device)
  endif()
  # Cross builds run the examples through the same emulator as the tests (qemu-aarch64).
  list(JOIN CMAKE_CROSSCOMPILING_EMULATOR " " _flt_example_runner)
  target_compile_definitions(c_api_test PRIVATE FLT_EXAMPLE_GENERATE="$<TARGET_FILE:flotilla_example_generate>"
                             FLT_EXAMPLE_RUNNER="${_flt_example_runner}")
  add_dependencies(c_api_test flotilla_example_generate)
  if(TARGET flotilla_device)
    target_compile_definitions(c_api_test PRIVATE FLT_EXAMPLE_FINETUNE="$<TARGET_FILE:flotilla_example_finetune>"
                               FLT_EXAMPLE_AGENT="$<TARGET_FILE:flotilla_example_agent>")
    add_dependencies(c_api_test flotilla_example_finetune flotilla_example_agent)
  endif()
endif()
