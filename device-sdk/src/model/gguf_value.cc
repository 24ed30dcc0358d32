#include <cstring>
#include <limits>
#include <string>

#include "flotilla/model/gguf.h"
#include "gguf_internal.h"

namespace flotilla::model {

std::string_view GgufTypeName(GgufType type) {
  switch (type) {
    case GgufType::kU8: return "u8";
    case GgufType::kI8: return "i8";
    case GgufType::kU16: return "u16";
    case GgufType::kI16: return "i16";
    case GgufType::kU32: return "u32";
    case GgufType::kI32: return "i32";
    case GgufType::kF32: return "f32";
    case GgufType::kBool: return "bool";
    case GgufType::kString: return "string";
    case GgufType::kArray: return "array";
    case GgufType::kU64: return "u64";
    case GgufType::kI64: return "i64";
    case GgufType::kF64: return "f64";
  }
  return "unknown";
}

namespace internal_gguf {

size_t ScalarWidth(GgufType t) {
  switch (t) {
    case GgufType::kU8:
    case GgufType::kI8:
    case GgufType::kBool: return 1;
    case GgufType::kU16:
    case GgufType::kI16: return 2;
    case GgufType::kU32:
    case GgufType::kI32:
    case GgufType::kF32: return 4;
    case GgufType::kU64:
    case GgufType::kI64:
    case GgufType::kF64: return 8;
    default: return 0;
  }
}

bool IsSigned(GgufType t) {
  return t == GgufType::kI8 || t == GgufType::kI16 || t == GgufType::kI32 || t == GgufType::kI64;
}

bool IsInteger(GgufType t) {
  return t == GgufType::kU8 || t == GgufType::kI8 || t == GgufType::kU16 || t == GgufType::kI16 ||
         t == GgufType::kU32 || t == GgufType::kI32 || t == GgufType::kU64 || t == GgufType::kI64;
}

uint64_t LoadScalar(GgufType t, const uint8_t* p) {
  const size_t w = ScalarWidth(t);
  uint64_t v = 0;
  std::memcpy(&v, p, w);  // little-endian host (static_assert in gguf.h)
  if (IsSigned(t) && w < 8) {
    const int shift = static_cast<int>(64 - 8 * w);
    v = static_cast<uint64_t>(static_cast<int64_t>(v << shift) >> shift);
  }
  return v;
}

}  // namespace internal_gguf

using internal_gguf::IsInteger;
using internal_gguf::IsSigned;
using internal_gguf::LoadScalar;
using internal_gguf::ScalarWidth;

GgufValue GgufValue::String(std::string v) {
  GgufValue out(GgufType::kString, 0);
  out.data_ = std::move(v);
  return out;
}

GgufValue GgufValue::StringArray(std::vector<std::string> v) {
  GgufValue out(GgufType::kArray, 0);
  out.elem_type_ = GgufType::kString;
  out.data_ = std::move(v);
  return out;
}

Result<GgufValue> GgufValue::PackedArray(GgufType elem_type, Bytes packed) {
  const size_t w = ScalarWidth(elem_type);
  if (w == 0) return InvalidArgumentError("packed array element type must be a scalar, got " + std::string(GgufTypeName(elem_type)));
  if (packed.size() % w != 0) return InvalidArgumentError("packed array size is not a multiple of the element width");
  if (elem_type == GgufType::kBool) {
    for (size_t i = 0; i < packed.size(); ++i) {
      if (packed[i] > 1) return InvalidArgumentError("bool array element " + std::to_string(i) + " is not 0 or 1");
    }
  }
  GgufValue out(GgufType::kArray, 0);
  out.elem_type_ = elem_type;
  out.data_ = std::move(packed);
  return out;
}

Result<GgufValue> GgufValue::ArrayOfArrays(std::vector<GgufValue> elems) {
  for (size_t i = 0; i < elems.size(); ++i) {
    if (!elems[i].is_array()) return InvalidArgumentError("nested array element " + std::to_string(i) + " is not an array");
  }
  GgufValue out(GgufType::kArray, 0);
  out.elem_type_ = GgufType::kArray;
  out.data_ = std::move(elems);
  return out;
}

namespace {
template <typename T>
GgufValue Packed(GgufType t, std::span<const T> v) {
  Bytes b(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
  return GgufValue::PackedArray(t, std::move(b)).value();
}
}  // namespace

GgufValue GgufValue::ArrayU8(std::span<const uint8_t> v) { return Packed(GgufType::kU8, v); }
GgufValue GgufValue::ArrayI8(std::span<const int8_t> v) { return Packed(GgufType::kI8, v); }
GgufValue GgufValue::ArrayU16(std::span<const uint16_t> v) { return Packed(GgufType::kU16, v); }
GgufValue GgufValue::ArrayI16(std::span<const int16_t> v) { return Packed(GgufType::kI16, v); }
GgufValue GgufValue::ArrayU32(std::span<const uint32_t> v) { return Packed(GgufType::kU32, v); }
GgufValue GgufValue::ArrayI32(std::span<const int32_t> v) { return Packed(GgufType::kI32, v); }
GgufValue GgufValue::ArrayU64(std::span<const uint64_t> v) { return Packed(GgufType::kU64, v); }
GgufValue GgufValue::ArrayI64(std::span<const int64_t> v) { return Packed(GgufType::kI64, v); }
GgufValue GgufValue::ArrayF32(std::span<const float> v) { return Packed(GgufType::kF32, v); }
GgufValue GgufValue::ArrayF64(std::span<const double> v) { return Packed(GgufType::kF64, v); }
GgufValue GgufValue::ArrayBool(std::span<const bool> v) {
  Bytes b(v.size());
  for (size_t i = 0; i < v.size(); ++i) b[i] = v[i] ? 1 : 0;
  return PackedArray(GgufType::kBool, std::move(b)).value();
}

size_t GgufValue::array_size() const {
  if (!is_array()) return 0;
  if (const auto* p = std::get_if<Bytes>(&data_)) return p->size() / ScalarWidth(elem_type_);
  if (const auto* s = std::get_if<std::vector<std::string>>(&data_)) return s->size();
  if (const auto* a = std::get_if<std::vector<GgufValue>>(&data_)) return a->size();
  return 0;
}

Status GgufValue::TypeError(GgufType wanted) const {
  std::string have(GgufTypeName(type_));
  if (is_array()) have = "array of " + std::string(GgufTypeName(elem_type_));
  return InvalidArgumentError("expected " + std::string(GgufTypeName(wanted)) + ", value is " + have);
}

Status GgufValue::ArrayTypeError(GgufType wanted) const {
  return TypeError(GgufType::kArray)
      .WithContext("wanted an array of " + std::string(GgufTypeName(wanted)));
}

#define FLT_GGUF_SCALAR_GETTER(Name, T, Tag)                     \
  Result<T> GgufValue::Get##Name() const {                      \
    if (type_ != GgufType::Tag) return TypeError(GgufType::Tag); \
    return static_cast<T>(scalar_);                             \
  }
FLT_GGUF_SCALAR_GETTER(U8, uint8_t, kU8)
FLT_GGUF_SCALAR_GETTER(I8, int8_t, kI8)
FLT_GGUF_SCALAR_GETTER(U16, uint16_t, kU16)
FLT_GGUF_SCALAR_GETTER(I16, int16_t, kI16)
FLT_GGUF_SCALAR_GETTER(U32, uint32_t, kU32)
FLT_GGUF_SCALAR_GETTER(I32, int32_t, kI32)
FLT_GGUF_SCALAR_GETTER(U64, uint64_t, kU64)
FLT_GGUF_SCALAR_GETTER(I64, int64_t, kI64)
#undef FLT_GGUF_SCALAR_GETTER

Result<float> GgufValue::GetF32() const {
  if (type_ != GgufType::kF32) return TypeError(GgufType::kF32);
  return std::bit_cast<float>(static_cast<uint32_t>(scalar_));
}
Result<double> GgufValue::GetF64() const {
  if (type_ != GgufType::kF64) return TypeError(GgufType::kF64);
  return std::bit_cast<double>(scalar_);
}
Result<bool> GgufValue::GetBool() const {
  if (type_ != GgufType::kBool) return TypeError(GgufType::kBool);
  return scalar_ != 0;
}
Result<std::string_view> GgufValue::GetString() const {
  if (type_ != GgufType::kString) return TypeError(GgufType::kString);
  return std::string_view(std::get<std::string>(data_));
}

Result<uint64_t> GgufValue::GetUInt() const {
  if (!IsInteger(type_)) return InvalidArgumentError("expected an integer, value is " + std::string(GgufTypeName(type_)));
  if (IsSigned(type_) && static_cast<int64_t>(scalar_) < 0) {
    return OutOfRangeError("expected a non-negative integer, value is " + std::to_string(static_cast<int64_t>(scalar_)));
  }
  return scalar_;
}

Result<int64_t> GgufValue::GetInt() const {
  if (!IsInteger(type_)) return InvalidArgumentError("expected an integer, value is " + std::string(GgufTypeName(type_)));
  if (type_ == GgufType::kU64 && scalar_ > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return OutOfRangeError("u64 value " + std::to_string(scalar_) + " does not fit in int64");
  }
  return static_cast<int64_t>(scalar_);
}

Result<double> GgufValue::GetFloat() const {
  if (type_ == GgufType::kF32) return static_cast<double>(std::bit_cast<float>(static_cast<uint32_t>(scalar_)));
  if (type_ == GgufType::kF64) return std::bit_cast<double>(scalar_);
  return InvalidArgumentError("expected f32 or f64, value is " + std::string(GgufTypeName(type_)));
}

Result<std::span<const std::string>> GgufValue::GetStringArray() const {
  if (!is_array() || elem_type_ != GgufType::kString) return ArrayTypeError(GgufType::kString);
  return std::span<const std::string>(std::get<std::vector<std::string>>(data_));
}

Result<std::span<const GgufValue>> GgufValue::GetArrayOfArrays() const {
  if (!is_array() || elem_type_ != GgufType::kArray) return ArrayTypeError(GgufType::kArray);
  return std::span<const GgufValue>(std::get<std::vector<GgufValue>>(data_));
}

Result<ByteSpan> GgufValue::GetPackedArray() const {
  if (!is_array() || ScalarWidth(elem_type_) == 0) {
    return InvalidArgumentError("expected an array of scalars").WithContext(TypeError(GgufType::kArray).message());
  }
  return ByteSpan(std::get<Bytes>(data_));
}

namespace {
template <typename T>
std::vector<T> Unpack(ByteSpan b) {
  std::vector<T> out(b.size() / sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), b.data(), out.size() * sizeof(T));
  return out;
}
}  // namespace

Result<std::vector<float>> GgufValue::GetF32Array() const {
  if (!is_array() || elem_type_ != GgufType::kF32) return ArrayTypeError(GgufType::kF32);
  return Unpack<float>(std::get<Bytes>(data_));
}
Result<std::vector<int32_t>> GgufValue::GetI32Array() const {
  if (!is_array() || elem_type_ != GgufType::kI32) return ArrayTypeError(GgufType::kI32);
  return Unpack<int32_t>(std::get<Bytes>(data_));
}
Result<std::vector<uint32_t>> GgufValue::GetU32Array() const {
  if (!is_array() || elem_type_ != GgufType::kU32) return ArrayTypeError(GgufType::kU32);
  return Unpack<uint32_t>(std::get<Bytes>(data_));
}

Result<std::vector<int64_t>> GgufValue::GetIntArray() const {
  if (!is_array() || !IsInteger(elem_type_)) {
    return InvalidArgumentError("expected an array of integers, value is " +
                                std::string(is_array() ? "array of " : "") +
                                std::string(GgufTypeName(is_array() ? elem_type_ : type_)));
  }
  const Bytes& b = std::get<Bytes>(data_);
  const size_t w = ScalarWidth(elem_type_);
  std::vector<int64_t> out(b.size() / w);
  for (size_t i = 0; i < out.size(); ++i) {
    const uint64_t v = LoadScalar(elem_type_, b.data() + i * w);
    if (elem_type_ == GgufType::kU64 && v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return OutOfRangeError("array element " + std::to_string(i) + " does not fit in int64");
    }
    out[i] = static_cast<int64_t>(v);
  }
  return out;
}

bool operator==(const GgufValue& a, const GgufValue& b) {
  if (a.type_ != b.type_) return false;
  if (a.is_array() && a.elem_type_ != b.elem_type_) return false;
  return a.scalar_ == b.scalar_ && a.data_ == b.data_;
}

}  // namespace flotilla::model
