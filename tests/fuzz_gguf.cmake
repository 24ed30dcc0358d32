# GGUF reader fuzz target (FLOTILLA_FUZZ=ON with clang). Run e.g.
#   ./gguf_fuzzer -max_total_time=30 -max_len=65536 <corpus dir>
if(TARGET flotilla_model)
  flotilla_add_fuzzer(NAME gguf_fuzzer SOURCES ${CMAKE_CURRENT_LIST_DIR}/fuzz/gguf_fuzzer.cc LIBS flotilla_model flotilla_warnings)
endif()
