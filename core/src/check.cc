#include "flotilla/core/check.h"

#include <cstdio>
#include <cstdlib>

namespace flotilla::internal {

void CheckFailed(const char* file, int line, const char* expr, const char* msg) {
  std::fprintf(stderr, "flotilla: check failed at %s:%d: %s%s%s\n", file, line, expr, msg ? ": " : "",
               msg ? msg : "");
  std::fflush(stderr);
  std::abort();
}

}  // namespace flotilla::internal
