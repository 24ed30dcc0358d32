// Byte buffers and hex helpers.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flotilla/core/status.h"

namespace flotilla {

using Bytes = std::vector<uint8_t>;
using ByteSpan = std::span<const uint8_t>;

inline ByteSpan AsBytes(std::string_view s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }
inline std::string_view AsStringView(ByteSpan b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }
inline Bytes ToBytes(std::string_view s) { return Bytes(s.begin(), s.end()); }

// Lower-case hex.
std::string ToHex(ByteSpan bytes);
// Accepts upper or lower case; an odd length or a non-hex character is InvalidArgument.
Result<Bytes> FromHex(std::string_view hex);

// Constant-time equality for secrets (MACs, tags, hashes compared against attacker input).
bool ConstantTimeEqual(ByteSpan a, ByteSpan b);

}  // namespace flotilla
