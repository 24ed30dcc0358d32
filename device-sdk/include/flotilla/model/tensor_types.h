// Per-type traits of ggml tensor element types: block size, bytes per block, name, and
// checked row/tensor byte sizes. Pure functions of the type id; thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "flotilla/core/status.h"
#include "flotilla/model/ggml_type.h"

namespace flotilla::model {

struct TypeTraits {
  GgmlType type;
  std::string_view name;  // ggml_type_name spelling: "f32", "q4_0", "q4_K", ...
  int64_t block_size;     // elements per block (1 for plain types)
  size_t type_size;       // bytes per block
  bool quantized;
  bool can_dequantize;  // DequantizeRow supports it (quant.h)
  bool can_quantize;    // QuantizeRow supports it (quant.h)
};

// Traits for a type id read from a file; nullptr if the id is unknown to this engine
// (IQ types, removed Q4_2/Q4_3, anything past the table).
const TypeTraits* FindTypeTraits(uint32_t type_id);

// Traits of a known enum value. Aborts on a value outside the table (a programming error).
const TypeTraits& Traits(GgmlType type);

inline std::string_view TypeName(GgmlType type) { return Traits(type).name; }

// Parses a type name, case-insensitively ("Q8_0", "q4_k", "f16"). NotFound if unknown.
Result<GgmlType> ParseTypeName(std::string_view name);

// Bytes in one row of `n` elements. InvalidArgument if n < 0 or n is not a multiple of the
// block size (ggml requires ne0 % block_size == 0).
Result<size_t> RowSize(GgmlType type, int64_t n);

// Bytes of a whole tensor with ggml dims `ne` (ne[0] innermost). InvalidArgument on a
// negative dim, a row not made of whole blocks, or an element/byte count that overflows.
Result<size_t> TensorBytes(GgmlType type, std::span<const int64_t> ne);

// Number of elements; InvalidArgument on a negative dim or int64 overflow.
Result<int64_t> ElementCount(std::span<const int64_t> ne);

}  // namespace flotilla::model
