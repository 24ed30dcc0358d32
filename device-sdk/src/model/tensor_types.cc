#include "flotilla/model/tensor_types.h"

#include <array>
#include <limits>
#include <string>

#include "flotilla/core/check.h"

namespace flotilla::model {
namespace {

// Sizes from ggml-common.h. Types kept for loading/sizing only have can_* = false.
constexpr std::array<TypeTraits, 20> kTraits = {{
    {GgmlType::kF32, "f32", 1, 4, false, true, true},
    {GgmlType::kF16, "f16", 1, 2, false, true, true},
    {GgmlType::kQ4_0, "q4_0", 32, 18, true, true, true},
    {GgmlType::kQ4_1, "q4_1", 32, 20, true, false, false},
    {GgmlType::kQ5_0, "q5_0", 32, 22, true, false, false},
    {GgmlType::kQ5_1, "q5_1", 32, 24, true, false, false},
    {GgmlType::kQ8_0, "q8_0", 32, 34, true, true, true},
    {GgmlType::kQ8_1, "q8_1", 32, 36, true, false, false},
    {GgmlType::kQ2_K, "q2_K", 256, 84, true, false, false},
    {GgmlType::kQ3_K, "q3_K", 256, 110, true, false, false},
    {GgmlType::kQ4_K, "q4_K", 256, 144, true, true, true},
    {GgmlType::kQ5_K, "q5_K", 256, 176, true, false, false},
    {GgmlType::kQ6_K, "q6_K", 256, 210, true, true, true},
    {GgmlType::kQ8_K, "q8_K", 256, 292, true, false, false},
    {GgmlType::kI8, "i8", 1, 1, false, false, false},
    {GgmlType::kI16, "i16", 1, 2, false, false, false},
    {GgmlType::kI32, "i32", 1, 4, false, false, false},
    {GgmlType::kI64, "i64", 1, 8, false, false, false},
    {GgmlType::kF64, "f64", 1, 8, false, false, false},
    {GgmlType::kBF16, "bf16", 1, 2, false, true, true},
}};

char Lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

}  // namespace

const TypeTraits* FindTypeTraits(uint32_t type_id) {
  for (const TypeTraits& t : kTraits) {
    if (static_cast<uint32_t>(t.type) == type_id) return &t;
  }
  return nullptr;
}

const TypeTraits& Traits(GgmlType type) {
  const TypeTraits* t = FindTypeTraits(static_cast<uint32_t>(type));
  FLT_CHECK_MSG(t != nullptr, "GgmlType value outside the traits table");
  return *t;
}

Result<GgmlType> ParseTypeName(std::string_view name) {
  for (const TypeTraits& t : kTraits) {
    if (t.name.size() != name.size()) continue;
    bool eq = true;
    for (size_t i = 0; i < name.size() && eq; ++i) eq = Lower(t.name[i]) == Lower(name[i]);
    if (eq) return t.type;
  }
  return NotFoundError("unknown tensor type name '" + std::string(name) + "'");
}

Result<size_t> RowSize(GgmlType type, int64_t n) {
  const TypeTraits& t = Traits(type);
  if (n < 0) return InvalidArgumentError("negative row length " + std::to_string(n));
  if (n % t.block_size != 0) {
    return InvalidArgumentError("row length " + std::to_string(n) + " is not a multiple of the " +
                                std::string(t.name) + " block size " + std::to_string(t.block_size));
  }
  // n / block_size * type_size <= n * 2 for every type, so no overflow for n < 2^62.
  return static_cast<size_t>(n / t.block_size) * t.type_size;
}

Result<int64_t> ElementCount(std::span<const int64_t> ne) {
  int64_t count = 1;
  for (size_t i = 0; i < ne.size(); ++i) {
    if (ne[i] < 0) return InvalidArgumentError("dimension " + std::to_string(i) + " is negative");
    if (ne[i] != 0 && count > std::numeric_limits<int64_t>::max() / ne[i]) {
      return InvalidArgumentError("element count overflows int64");
    }
    count *= ne[i];
  }
  return count;
}

Result<size_t> TensorBytes(GgmlType type, std::span<const int64_t> ne) {
  FLT_ASSIGN_OR_RETURN(int64_t elements, ElementCount(ne));
  (void)elements;
  FLT_ASSIGN_OR_RETURN(size_t bytes, RowSize(type, ne.empty() ? 1 : ne[0]));
  for (size_t i = 1; i < ne.size(); ++i) {
    const auto d = static_cast<uint64_t>(ne[i]);
    if (d != 0 && bytes > std::numeric_limits<size_t>::max() / d) {
      return InvalidArgumentError("tensor byte size overflows");
    }
    bytes *= static_cast<size_t>(d);
  }
  return bytes;
}

}  // namespace flotilla::model
