# LoRA adapter file fuzz target (FLOTILLA_FUZZ=ON with clang). Run e.g.
#   ./adapter_fuzzer -max_total_time=30 <corpus dir>
if(TARGET flotilla_model)
  flotilla_add_fuzzer(NAME adapter_fuzzer SOURCES ${CMAKE_CURRENT_LIST_DIR}/fuzz/adapter_fuzzer.cc
                      LIBS flotilla_model flotilla_warnings)
endif()
