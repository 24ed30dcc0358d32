#include "platform/mbedtls/mbedtls_util.h"

#include <mbedtls/error.h>

#include <cstdio>
#include <span>

namespace flotilla::security::internal {

int RandomCallback(void* p_rng, unsigned char* out, size_t len) {
  static_cast<Random*>(p_rng)->Fill(std::span<uint8_t>(out, len));
  return 0;
}

std::string MbedTlsMessage(std::string_view what, int ret) {
  char text[160];
  mbedtls_strerror(ret, text, sizeof(text));
  char code[24];
  std::snprintf(code, sizeof(code), " (-0x%04x)", static_cast<unsigned>(ret < 0 ? -ret : ret));
  std::string out(what);
  out += ": ";
  out += text;
  out += code;
  return out;
}

}  // namespace flotilla::security::internal
