// Helpers shared by the security unit tests.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <string_view>

#include "flotilla/core/bytes.h"
#include "flotilla/core/check.h"

namespace flotilla::security::testing {

// Test vectors are written in hex; a typo is a test bug, so abort loudly.
inline Bytes Hex(std::string_view hex) {
  Result<Bytes> b = FromHex(hex);
  FLT_CHECK_OK(b.status());
  return std::move(b).value();
}

inline Bytes Repeat(uint8_t byte, size_t n) { return Bytes(n, byte); }

inline Bytes Range(int first, int last_exclusive) {
  Bytes out;
  for (int i = first; i < last_exclusive; ++i) out.push_back(static_cast<uint8_t>(i));
  return out;
}

#define FLT_ASSERT_OK(expr) ASSERT_TRUE((expr).ok()) << ::flotilla::internal::AsStatus((expr)).ToString()
#define FLT_EXPECT_OK(expr) EXPECT_TRUE((expr).ok()) << ::flotilla::internal::AsStatus((expr)).ToString()

}  // namespace flotilla::security::testing
