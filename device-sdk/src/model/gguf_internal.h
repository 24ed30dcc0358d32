// Helpers shared by the GGUF value, reader and writer code (not public).
#pragma once

#include <cstddef>
#include <cstdint>

#include "flotilla/model/gguf.h"

namespace flotilla::model::internal_gguf {

// Byte width of a scalar value type; 0 for string/array/unknown.
size_t ScalarWidth(GgufType t);
bool IsSigned(GgufType t);
bool IsInteger(GgufType t);
// Reads a little-endian scalar of type t, sign-extending signed types into the u64.
uint64_t LoadScalar(GgufType t, const uint8_t* p);

// Serializes `value` (without its type tag) in GGUF v3 encoding.
void AppendValue(Bytes& out, const GgufValue& value);

inline uint64_t AlignUp(uint64_t x, uint64_t alignment) { return (x + alignment - 1) / alignment * alignment; }

}  // namespace flotilla::model::internal_gguf
