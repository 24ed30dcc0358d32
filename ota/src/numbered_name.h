// "<prefix><decimal n><suffix>" file names (root-3.pem, 12.root.pb). Internal.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace flotilla::ota::internal {

// n for a name of exactly that shape with 1..18 digits, else nullopt.
inline std::optional<uint64_t> ParseNumberedName(std::string_view name, std::string_view prefix,
                                                 std::string_view suffix) {
  if (name.size() <= prefix.size() + suffix.size() || name.substr(0, prefix.size()) != prefix ||
      name.substr(name.size() - suffix.size()) != suffix) {
    return std::nullopt;
  }
  const std::string_view digits = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (digits.size() > 18) return std::nullopt;
  uint64_t n = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + static_cast<uint64_t>(c - '0');
  }
  return n;
}

}  // namespace flotilla::ota::internal
