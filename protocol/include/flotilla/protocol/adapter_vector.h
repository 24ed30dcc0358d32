// The wire form of a global adapter's trainable vector (frozen-A: the B matrices,
// flattened), as the coordinator stores and serves it and devices fetch it by URL +
// sha256: raw little-endian float32, no header. Both sides use these two functions.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

#include "flotilla/core/bytes.h"
#include "flotilla/core/status.h"

namespace flotilla::protocol {

Bytes EncodeAdapterVector(std::span<const float> values);
// InvalidArgument if the size is not a whole number of floats, differs from
// expected_length (when non-zero), or a value is not finite.
Result<std::vector<float>> DecodeAdapterVector(ByteSpan bytes, size_t expected_length = 0);

}  // namespace flotilla::protocol
