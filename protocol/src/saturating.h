// Overflow-free int64 arithmetic for timestamp windows: timestamps are chosen by the
// sender and bounds by the caller, so neither may be trusted not to overflow.
#pragma once

#include <cstdint>

namespace flotilla::protocol::internal {

inline int64_t SaturatingAdd(int64_t a, int64_t b) {
  int64_t r = 0;
  if (__builtin_add_overflow(a, b, &r)) return b > 0 ? INT64_MAX : INT64_MIN;
  return r;
}

inline int64_t SaturatingSub(int64_t a, int64_t b) {
  int64_t r = 0;
  if (__builtin_sub_overflow(a, b, &r)) return b > 0 ? INT64_MIN : INT64_MAX;
  return r;
}

}  // namespace flotilla::protocol::internal
