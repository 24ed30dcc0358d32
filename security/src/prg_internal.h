// Shared argument checks for the AES-CTR backends.
#pragma once

#include <cstddef>
#include <string>

#include "flotilla/core/status.h"

namespace flotilla::security::internal {

// Chunk for keystream generation: zero a piece that stays in L1, then encrypt it in place.
inline constexpr size_t kKeystreamChunk = 16 * 1024;

inline Status CheckCtrArgs(std::string_view backend, size_t key_size, size_t in_size, size_t out_size) {
  if (key_size != 16 && key_size != 32) {
    return InvalidArgumentError(std::string(backend) + " aes-ctr: key must be 16 or 32 bytes, got " +
                                std::to_string(key_size));
  }
  if (in_size != out_size) {
    return InvalidArgumentError(std::string(backend) + " aes-ctr: input is " + std::to_string(in_size) +
                                " bytes but output is " + std::to_string(out_size));
  }
  return Status::Ok();
}

}  // namespace flotilla::security::internal
