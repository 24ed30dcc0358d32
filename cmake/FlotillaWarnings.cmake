# flotilla_warnings: the warning set every Flotilla target links (PRIVATE).
add_library(flotilla_warnings INTERFACE)
target_compile_options(flotilla_warnings INTERFACE
  -Wall -Wextra -Werror -Wpedantic -Wshadow -Wnon-virtual-dtor -Wold-style-cast
  -Wcast-align -Wunused -Woverloaded-virtual -Wnull-dereference -Wdouble-promotion
  -Wformat=2 -Wimplicit-fallthrough)
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  # GCC 12 reports false positives in libstdc++ headers under -O2 (PR 105651, 106199).
  target_compile_options(flotilla_warnings INTERFACE -Wno-restrict -Wno-array-bounds -Wno-stringop-overflow
                         -Wno-null-dereference)
endif()
