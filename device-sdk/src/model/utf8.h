// Strict UTF-8 decoding shared by the tokenizer, the tokenizer trainer and the sample
// store (private to the device SDK): no overlong forms, surrogates or code points above
// U+10FFFF.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace flotilla::utf8 {

struct Decoded {
  uint32_t code_point = 0;
  size_t length = 0;  // 1..4 bytes, or 0 when s[i] does not start a valid sequence
};

inline Decoded DecodeAt(std::string_view s, size_t i) {
  const auto c0 = static_cast<uint8_t>(s[i]);
  if (c0 < 0x80) return {c0, 1};
  size_t len;
  uint32_t cp;
  if ((c0 & 0xE0) == 0xC0) {
    len = 2;
    cp = c0 & 0x1Fu;
  } else if ((c0 & 0xF0) == 0xE0) {
    len = 3;
    cp = c0 & 0x0Fu;
  } else if ((c0 & 0xF8) == 0xF0) {
    len = 4;
    cp = c0 & 0x07u;
  } else {
    return {};
  }
  if (i + len > s.size()) return {};
  for (size_t k = 1; k < len; ++k) {
    const auto c = static_cast<uint8_t>(s[i + k]);
    if ((c & 0xC0) != 0x80) return {};
    cp = (cp << 6) | (c & 0x3Fu);
  }
  static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return {};
  return {cp, len};
}

// Offset of the first byte that is not part of valid UTF-8, or npos when all of s is.
inline size_t FirstInvalid(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t len = DecodeAt(s, i).length;
    if (len == 0) return i;
    i += len;
  }
  return std::string_view::npos;
}

}  // namespace flotilla::utf8
