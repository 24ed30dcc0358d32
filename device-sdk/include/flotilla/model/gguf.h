// GGUF v3 files (ggml docs/gguf.md): a strict, bounds-checked reader over a read-only
// memory mapping (tensor data is never copied) and a writer that produces files
// llama.cpp loads. Little-endian only, like the format.
//
// Reader guarantees: every count, length, offset, type and shape is validated against
// the file size and GgufLimits before it is used or allocated for; a malformed file gives
// InvalidArgument/DataLoss/ResourceExhausted with the byte offset and what was wrong.
#pragma once

#include <array>
#include <bit>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

#include "flotilla/core/bytes.h"
#include "flotilla/core/status.h"
#include "flotilla/model/ggml_type.h"

static_assert(std::endian::native == std::endian::little, "GGUF and the ggml blocks are little-endian");

namespace flotilla::model {

inline constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" read as a little-endian u32
inline constexpr uint32_t kGgufVersion = 3;
inline constexpr uint32_t kGgufDefaultAlignment = 32;
inline constexpr size_t kGgufMaxDims = 4;        // GGML_MAX_DIMS
inline constexpr size_t kGgufMaxNameBytes = 63;  // GGML_MAX_NAME (64) minus the NUL

// Metadata value types (gguf_type; stored in files, append-only).
enum class GgufType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};
std::string_view GgufTypeName(GgufType type);

// One metadata value: a scalar, a string, or an array (of scalars, strings or arrays).
// Numeric arrays are kept packed as their little-endian file bytes, so a value never
// takes much more memory than its encoding.
class GgufValue {
 public:
  GgufValue() : GgufValue(GgufType::kU8, 0) {}

  static GgufValue U8(uint8_t v) { return GgufValue(GgufType::kU8, v); }
  static GgufValue I8(int8_t v) { return GgufValue(GgufType::kI8, static_cast<uint64_t>(static_cast<int64_t>(v))); }
  static GgufValue U16(uint16_t v) { return GgufValue(GgufType::kU16, v); }
  static GgufValue I16(int16_t v) { return GgufValue(GgufType::kI16, static_cast<uint64_t>(static_cast<int64_t>(v))); }
  static GgufValue U32(uint32_t v) { return GgufValue(GgufType::kU32, v); }
  static GgufValue I32(int32_t v) { return GgufValue(GgufType::kI32, static_cast<uint64_t>(static_cast<int64_t>(v))); }
  static GgufValue U64(uint64_t v) { return GgufValue(GgufType::kU64, v); }
  static GgufValue I64(int64_t v) { return GgufValue(GgufType::kI64, static_cast<uint64_t>(v)); }
  static GgufValue F32(float v) { return GgufValue(GgufType::kF32, std::bit_cast<uint32_t>(v)); }
  static GgufValue F64(double v) { return GgufValue(GgufType::kF64, std::bit_cast<uint64_t>(v)); }
  static GgufValue Bool(bool v) { return GgufValue(GgufType::kBool, v ? 1 : 0); }
  static GgufValue String(std::string v);
  static GgufValue StringArray(std::vector<std::string> v);
  // Array of a scalar type from its packed little-endian element bytes. InvalidArgument if
  // `elem_type` is not a scalar type, the size is not a multiple of its width, or a bool
  // element is not 0/1.
  static Result<GgufValue> PackedArray(GgufType elem_type, Bytes packed);
  // Array of arrays (GGUF nested arrays). InvalidArgument if an element is not an array.
  static Result<GgufValue> ArrayOfArrays(std::vector<GgufValue> elems);
  // Typed conveniences for scalar arrays.
  static GgufValue ArrayU8(std::span<const uint8_t> v);
  static GgufValue ArrayI8(std::span<const int8_t> v);
  static GgufValue ArrayU16(std::span<const uint16_t> v);
  static GgufValue ArrayI16(std::span<const int16_t> v);
  static GgufValue ArrayU32(std::span<const uint32_t> v);
  static GgufValue ArrayI32(std::span<const int32_t> v);
  static GgufValue ArrayU64(std::span<const uint64_t> v);
  static GgufValue ArrayI64(std::span<const int64_t> v);
  static GgufValue ArrayF32(std::span<const float> v);
  static GgufValue ArrayF64(std::span<const double> v);
  static GgufValue ArrayBool(std::span<const bool> v);

  GgufType type() const { return type_; }
  bool is_array() const { return type_ == GgufType::kArray; }
  // Array element type and count (0 / kU8 for non-arrays).
  GgufType array_type() const { return elem_type_; }
  size_t array_size() const;

  // Exact-type getters: InvalidArgument naming both types when the type differs.
  Result<uint8_t> GetU8() const;
  Result<int8_t> GetI8() const;
  Result<uint16_t> GetU16() const;
  Result<int16_t> GetI16() const;
  Result<uint32_t> GetU32() const;
  Result<int32_t> GetI32() const;
  Result<uint64_t> GetU64() const;
  Result<int64_t> GetI64() const;
  Result<float> GetF32() const;
  Result<double> GetF64() const;
  Result<bool> GetBool() const;
  Result<std::string_view> GetString() const;  // view valid while this value lives
  // Any integer type whose value fits (llama.cpp writers use u32 or u64 for counts).
  Result<uint64_t> GetUInt() const;
  Result<int64_t> GetInt() const;
  // F32 or F64.
  Result<double> GetFloat() const;

  // Arrays. The span getters return views valid while this value lives.
  Result<std::span<const std::string>> GetStringArray() const;
  Result<std::span<const GgufValue>> GetArrayOfArrays() const;
  // Packed bytes of a scalar array (any element type).
  Result<ByteSpan> GetPackedArray() const;
  // Copies out a scalar array whose element type matches T exactly.
  Result<std::vector<float>> GetF32Array() const;
  Result<std::vector<int32_t>> GetI32Array() const;
  Result<std::vector<uint32_t>> GetU32Array() const;
  // Integer array of any integer element type, each value checked to fit in int64.
  Result<std::vector<int64_t>> GetIntArray() const;

  // Structural equality (same type, same bits; F32/F64 compare bit patterns).
  friend bool operator==(const GgufValue& a, const GgufValue& b);

 private:
  GgufValue(GgufType type, uint64_t scalar) : type_(type), scalar_(scalar) {}
  Status TypeError(GgufType wanted) const;
  Status ArrayTypeError(GgufType wanted) const;

  GgufType type_;
  GgufType elem_type_ = GgufType::kU8;  // arrays only
  uint64_t scalar_ = 0;                 // scalars: zero/sign-extended integer or float bits
  // string | packed scalar array | string array | array of arrays
  std::variant<std::monostate, std::string, Bytes, std::vector<std::string>, std::vector<GgufValue>> data_;
};

// Reader limits beyond what the file size implies. Defaults accept every llama.cpp
// model we know of (vocab arrays of ~256K strings, thousands of tensors).
struct GgufLimits {
  uint64_t max_tensors = 65536;
  uint64_t max_kv = 65536;
  uint64_t max_string_bytes = uint64_t{1} << 20;    // one string (keys, tokens, templates)
  uint64_t max_array_elements = uint64_t{1} << 24;  // one array (all nesting levels count)
  uint64_t max_metadata_bytes = uint64_t{1} << 30;  // header + KV + tensor infos
  uint32_t max_array_depth = 4;                     // nested arrays
};

struct GgufTensor {
  std::string name;
  GgmlType type;
  uint32_t n_dims;                 // 0..4 as stored
  std::array<int64_t, 4> ne;       // ggml order (ne[0] innermost); unused dims are 1
  int64_t n_elements;
  uint64_t offset;                 // relative to the data section
  size_t n_bytes;
  const uint8_t* data;             // into the mapping (null when n_bytes == 0)

  ByteSpan bytes() const { return {data, n_bytes}; }
  int64_t row_length() const { return ne[0]; }
  int64_t n_rows() const { return ne[0] == 0 ? 0 : n_elements / ne[0]; }
  std::span<const int64_t> shape() const { return {ne.data(), n_dims}; }
};

class GgufFile {
 public:
  // Maps `path` read-only and parses it. NotFound/PermissionDenied for I/O problems,
  // InvalidArgument/DataLoss for a malformed file (message has the byte offset).
  static Result<std::unique_ptr<GgufFile>> Open(const std::filesystem::path& path, const GgufLimits& limits = {});
  // Parses a buffer the caller owns; it must outlive the GgufFile and be 8-byte aligned
  // (tensor views point into it). For tests, fuzzing and in-memory models.
  static Result<std::unique_ptr<GgufFile>> OpenFromMemory(ByteSpan data, const GgufLimits& limits = {});

  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // start of the tensor data section
  uint64_t file_size() const { return size_; }

  // Metadata in file order. Immutable after Open: safe to read from several threads.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return kv_; }
  const GgufValue* Find(std::string_view key) const;
  // NotFound when absent; type errors as in GgufValue, prefixed with the key.
  Result<const GgufValue*> Get(std::string_view key) const;
  Result<std::string_view> GetString(std::string_view key) const;
  Result<uint32_t> GetU32(std::string_view key) const;
  Result<float> GetF32(std::string_view key) const;
  Result<bool> GetBool(std::string_view key) const;
  Result<uint64_t> GetUInt(std::string_view key) const;  // any fitting integer type
  Result<double> GetFloat(std::string_view key) const;   // f32 or f64

  // Tensors in file order; views stay valid while the GgufFile lives.
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const GgufTensor* FindTensor(std::string_view name) const;
  Result<const GgufTensor*> GetTensor(std::string_view name) const;  // NotFound if absent

 private:
  GgufFile() = default;
  Status Parse(const GgufLimits& limits);

  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  void* mapping_ = nullptr;  // owned munmap region (null for OpenFromMemory)
  size_t mapping_size_ = 0;
  uint32_t version_ = 0;
  uint32_t alignment_ = kGgufDefaultAlignment;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::unordered_map<std::string_view, size_t> kv_index_;  // keys view kv_ strings
  std::vector<GgufTensor> tensors_;
  std::unordered_map<std::string_view, size_t> tensor_index_;
};

// Builds a GGUF v3 file: metadata in insertion order, tensors in insertion order, each
// tensor's data padded to the alignment. Not thread-safe.
class GgufWriter {
 public:
  GgufWriter() = default;

  // Adds or replaces (in place) a metadata value.
  void Set(std::string key, GgufValue value);
  void SetString(std::string key, std::string v) { Set(std::move(key), GgufValue::String(std::move(v))); }
  void SetU32(std::string key, uint32_t v) { Set(std::move(key), GgufValue::U32(v)); }
  void SetF32(std::string key, float v) { Set(std::move(key), GgufValue::F32(v)); }
  void SetBool(std::string key, bool v) { Set(std::move(key), GgufValue::Bool(v)); }
  const GgufValue* Find(std::string_view key) const;
  bool Remove(std::string_view key);

  // Power of two >= 8; also stored as general.alignment (u32) when not the default 32.
  Status SetAlignment(uint32_t alignment);

  // Adds a tensor whose bytes the writer owns. InvalidArgument for an empty/too long/
  // duplicate name, more than 4 dims, a negative dim, a row that is not whole blocks or
  // a data size that does not match the shape. `ne` is in ggml order.
  Status AddTensor(std::string name, GgmlType type, std::span<const int64_t> ne, Bytes data);
  // As AddTensor, but borrows `data`: it must stay valid until the last Write* returns.
  Status AddTensorView(std::string name, GgmlType type, std::span<const int64_t> ne, ByteSpan data);
  // Quantizes F32 values to `type` and adds the result (owned).
  Status AddTensorFromF32(std::string name, GgmlType type, std::span<const int64_t> ne, std::span<const float> values);

  size_t tensor_count() const { return tensors_.size(); }

  // Writes the file atomically (temp file in the same directory, fsync, rename).
  Status WriteFile(const std::filesystem::path& path) const;
  Result<Bytes> WriteToBuffer() const;

 private:
  struct Tensor {
    std::string name;
    GgmlType type;
    std::vector<int64_t> ne;
    Bytes owned;
    ByteSpan data;
  };
  Status CheckTensor(const std::string& name, GgmlType type, std::span<const int64_t> ne, size_t size) const;
  Bytes EncodeHeader(uint64_t* data_size) const;

  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<Tensor> tensors_;
  uint32_t alignment_ = kGgufDefaultAlignment;
};

}  // namespace flotilla::model
