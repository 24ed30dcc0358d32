#include "flotilla/protocol/adapter_vector.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <string>

namespace flotilla::protocol {

static_assert(std::endian::native == std::endian::little, "adapter vectors are little-endian float32");

Bytes EncodeAdapterVector(std::span<const float> values) {
  Bytes out(values.size() * sizeof(float));
  if (!values.empty()) std::memcpy(out.data(), values.data(), out.size());
  return out;
}

Result<std::vector<float>> DecodeAdapterVector(ByteSpan bytes, size_t expected_length) {
  if (bytes.size() % sizeof(float) != 0) {
    return InvalidArgumentError("adapter vector: " + std::to_string(bytes.size()) +
                                " bytes is not a whole number of float32 values");
  }
  const size_t n = bytes.size() / sizeof(float);
  if (expected_length != 0 && n != expected_length) {
    return InvalidArgumentError("adapter vector: " + std::to_string(n) + " values, expected " +
                                std::to_string(expected_length));
  }
  std::vector<float> out(n);
  if (n > 0) std::memcpy(out.data(), bytes.data(), bytes.size());
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(out[i])) {
      return InvalidArgumentError("adapter vector: value " + std::to_string(i) + " is not finite");
    }
  }
  return out;
}

}  // namespace flotilla::protocol
