// Internal helpers for the mbedTLS adapters: RAII for mbedTLS contexts, the CSPRNG
// callback, and error formatting. Never included by public headers.
#pragma once

#include <mbedtls/platform_util.h>

#include <cstddef>
#include <string>
#include <string_view>

#include "flotilla/core/random.h"
#include "flotilla/core/status.h"

namespace flotilla::security::internal {

// An mbedTLS context with its init/free pair; not copyable or movable (mbedTLS contexts
// may hold pointers into themselves).
template <typename T, void (*Init)(T*), void (*Free)(T*)>
class Scoped {
 public:
  Scoped() { Init(&v_); }
  ~Scoped() { Free(&v_); }
  Scoped(const Scoped&) = delete;
  Scoped& operator=(const Scoped&) = delete;
  T* get() { return &v_; }
  const T* get() const { return &v_; }

 private:
  T v_;
};

// f_rng for mbedTLS calls; p_rng is a flotilla::Random*.
int RandomCallback(void* p_rng, unsigned char* out, size_t len);
inline void* RngArg(Random& rng) { return &rng; }

// "what: <mbedTLS message> (-0x....)".
std::string MbedTlsMessage(std::string_view what, int ret);
inline Status MbedTlsStatus(StatusCode code, std::string_view what, int ret) {
  return Status(code, MbedTlsMessage(what, ret));
}

// Wipes a secret buffer in a way the compiler cannot elide.
inline void Wipe(void* p, size_t n) { mbedtls_platform_zeroize(p, n); }

// mbedTLS PEM parsers want a NUL-terminated buffer whose length includes the NUL.
inline std::string NulTerminated(std::string_view pem) { return std::string(pem); }

}  // namespace flotilla::security::internal
