// GGUF reader. Every read goes through Cursor, which bounds-checks against the end of
// the (metadata-limited) buffer; counts are checked against the bytes left before any
// allocation, so a hostile file can never make the reader allocate much more than its
// own size.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>

#include "flotilla/model/gguf.h"
#include "flotilla/model/tensor_types.h"
#include "gguf_internal.h"

namespace flotilla::model {
namespace {

using internal_gguf::LoadScalar;
using internal_gguf::ScalarWidth;

std::string At(uint64_t offset) { return "at byte " + std::to_string(offset) + ": "; }

bool IsKnownValueType(uint32_t t) { return t <= static_cast<uint32_t>(GgufType::kF64); }

class Cursor {
 public:
  Cursor(const uint8_t* base, uint64_t size, uint64_t limit, bool wide_counts)
      : base_(base), size_(size), end_(std::min(size, limit)), wide_(wide_counts) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return end_ - pos_; }

  Status Need(uint64_t n, std::string_view what) const {
    if (n <= end_ - pos_) return Status::Ok();
    if (end_ < size_) {
      return ResourceExhaustedError(At(pos_) + std::string(what) + " needs " + std::to_string(n) +
                                    " bytes, past the metadata size limit of " + std::to_string(end_) + " bytes");
    }
    return DataLossError(At(pos_) + "file truncated: " + std::string(what) + " needs " + std::to_string(n) +
                         " bytes, only " + std::to_string(end_ - pos_) + " left");
  }

  template <typename T>
  Result<T> Read(std::string_view what) {
    FLT_RETURN_IF_ERROR(Need(sizeof(T), what));
    T v;
    std::memcpy(&v, base_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  // u64 in v2/v3, u32 in v1 (tensor/kv counts, string lengths, array counts, dims).
  Result<uint64_t> ReadCount(std::string_view what) {
    if (wide_) return Read<uint64_t>(what);
    FLT_ASSIGN_OR_RETURN(uint32_t v, Read<uint32_t>(what));
    return uint64_t{v};
  }

  const uint8_t* Take(uint64_t n) {  // REQUIRES: Need(n) succeeded
    const uint8_t* p = base_ + pos_;
    pos_ += n;
    return p;
  }

  size_t count_width() const { return wide_ ? 8 : 4; }

 private:
  const uint8_t* base_;
  uint64_t size_;
  uint64_t end_;
  uint64_t pos_ = 0;
  bool wide_;
};

class Parser {
 public:
  Parser(Cursor& c, const GgufLimits& limits) : c_(c), limits_(limits) {}

  Result<std::string> ReadString(std::string_view what) {
    const uint64_t at = c_.pos();
    FLT_ASSIGN_OR_RETURN(uint64_t len, c_.ReadCount(what));
    if (len > limits_.max_string_bytes) {
      return ResourceExhaustedError(At(at) + std::string(what) + " length " + std::to_string(len) +
                                    " exceeds the limit of " + std::to_string(limits_.max_string_bytes));
    }
    FLT_RETURN_IF_ERROR(c_.Need(len, what));
    const uint8_t* p = c_.Take(len);
    return std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(len));
  }

  Result<GgufValue> ReadValue(GgufType type, uint32_t depth) {
    const uint64_t at = c_.pos();
    if (type == GgufType::kString) {
      FLT_ASSIGN_OR_RETURN(std::string s, ReadString("string value"));
      return GgufValue::String(std::move(s));
    }
    if (type != GgufType::kArray) {
      const size_t w = ScalarWidth(type);
      FLT_RETURN_IF_ERROR(c_.Need(w, "scalar value"));
      const uint8_t* p = c_.Take(w);
      if (type == GgufType::kBool && *p > 1) {
        return InvalidArgumentError(At(at) + "bool value " + std::to_string(*p) + " is not 0 or 1");
      }
      return ScalarFromPacked(type, p);
    }
    if (depth >= limits_.max_array_depth) {
      return ResourceExhaustedError(At(at) + "arrays nested deeper than " + std::to_string(limits_.max_array_depth));
    }
    FLT_ASSIGN_OR_RETURN(uint32_t elem_raw, c_.Read<uint32_t>("array element type"));
    if (!IsKnownValueType(elem_raw)) {
      return InvalidArgumentError(At(at) + "unknown array element type " + std::to_string(elem_raw));
    }
    const auto elem = static_cast<GgufType>(elem_raw);
    const uint64_t count_at = c_.pos();
    FLT_ASSIGN_OR_RETURN(uint64_t count, c_.ReadCount("array count"));
    if (count > limits_.max_array_elements) {
      return ResourceExhaustedError(At(count_at) + "array count " + std::to_string(count) + " exceeds the limit of " +
                                    std::to_string(limits_.max_array_elements));
    }
    // Smallest possible encoding of one element: bounds the count by the bytes left.
    const uint64_t min_elem = elem == GgufType::kString  ? c_.count_width()
                              : elem == GgufType::kArray ? 4 + c_.count_width()
                                                         : ScalarWidth(elem);
    if (count > c_.remaining() / min_elem) {
      return DataLossError(At(count_at) + "array of " + std::to_string(count) + " " +
                           std::string(GgufTypeName(elem)) + " elements cannot fit in the " +
                           std::to_string(c_.remaining()) + " bytes left");
    }
    if (elem == GgufType::kString) {
      std::vector<std::string> items;
      items.reserve(static_cast<size_t>(count));
      for (uint64_t i = 0; i < count; ++i) {
        FLT_ASSIGN_OR_RETURN(std::string s, ReadString("string array element"));
        items.push_back(std::move(s));
      }
      return GgufValue::StringArray(std::move(items));
    }
    if (elem == GgufType::kArray) {
      std::vector<GgufValue> items;
      items.reserve(static_cast<size_t>(count));
      for (uint64_t i = 0; i < count; ++i) {
        FLT_ASSIGN_OR_RETURN(GgufValue v, ReadValue(GgufType::kArray, depth + 1));
        items.push_back(std::move(v));
      }
      return GgufValue::ArrayOfArrays(std::move(items));
    }
    const uint64_t bytes = count * ScalarWidth(elem);
    const uint8_t* p = c_.Take(bytes);
    Result<GgufValue> v = GgufValue::PackedArray(elem, Bytes(p, p + bytes));
    if (!v.ok()) return InvalidArgumentError(At(at) + v.status().message());
    return v;
  }

 private:
  static GgufValue ScalarFromPacked(GgufType type, const uint8_t* p) {
    const uint64_t v = LoadScalar(type, p);
    switch (type) {
      case GgufType::kU8: return GgufValue::U8(static_cast<uint8_t>(v));
      case GgufType::kI8: return GgufValue::I8(static_cast<int8_t>(v));
      case GgufType::kU16: return GgufValue::U16(static_cast<uint16_t>(v));
      case GgufType::kI16: return GgufValue::I16(static_cast<int16_t>(v));
      case GgufType::kU32: return GgufValue::U32(static_cast<uint32_t>(v));
      case GgufType::kI32: return GgufValue::I32(static_cast<int32_t>(v));
      case GgufType::kU64: return GgufValue::U64(v);
      case GgufType::kI64: return GgufValue::I64(static_cast<int64_t>(v));
      case GgufType::kF32: return GgufValue::F32(std::bit_cast<float>(static_cast<uint32_t>(v)));
      case GgufType::kF64: return GgufValue::F64(std::bit_cast<double>(v));
      case GgufType::kBool: return GgufValue::Bool(v != 0);
      default: return GgufValue();
    }
  }

  Cursor& c_;
  const GgufLimits& limits_;
};

}  // namespace

Result<std::unique_ptr<GgufFile>> GgufFile::OpenFromMemory(ByteSpan data, const GgufLimits& limits) {
  if (reinterpret_cast<uintptr_t>(data.data()) % 8 != 0) {
    return InvalidArgumentError("GGUF buffer must be 8-byte aligned");
  }
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->base_ = data.data();
  f->size_ = data.size();
  FLT_RETURN_IF_ERROR(f->Parse(limits));
  return f;
}

Result<std::unique_ptr<GgufFile>> GgufFile::Open(const std::filesystem::path& path, const GgufLimits& limits) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int e = errno;
    std::string msg = "cannot open " + path.string() + ": " + std::strerror(e);
    if (e == ENOENT) return NotFoundError(msg);
    if (e == EACCES || e == EPERM) return PermissionDeniedError(msg);
    return UnavailableError(msg);
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return InvalidArgumentError(path.string() + " is not a regular file");
  }
  const auto size = static_cast<uint64_t>(st.st_size);
  std::unique_ptr<GgufFile> f(new GgufFile());
  if (size > 0) {
    void* m = ::mmap(nullptr, static_cast<size_t>(size), PROT_READ, MAP_PRIVATE, fd, 0);
    const int e = errno;
    ::close(fd);
    if (m == MAP_FAILED) return UnavailableError("cannot mmap " + path.string() + ": " + std::strerror(e));
    f->mapping_ = m;
    f->mapping_size_ = static_cast<size_t>(size);
    f->base_ = static_cast<const uint8_t*>(m);
  } else {
    ::close(fd);
  }
  f->size_ = size;
  Status s = f->Parse(limits);
  if (!s.ok()) return std::move(s).WithContext("while reading " + path.string());
  return f;
}

GgufFile::~GgufFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_size_);
}

Status GgufFile::Parse(const GgufLimits& limits) {
  {  // Magic and version come first: they decide the count width.
    Cursor head(base_, size_, size_, true);
    FLT_ASSIGN_OR_RETURN(uint32_t magic, head.Read<uint32_t>("magic"));
    if (magic != kGgufMagic) {
      char hex[16];
      std::snprintf(hex, sizeof(hex), "0x%08x", magic);
      return InvalidArgumentError(At(0) + "bad magic " + std::string(hex) + ", not a GGUF file");
    }
    FLT_ASSIGN_OR_RETURN(version_, head.Read<uint32_t>("version"));
    if (version_ < 1 || version_ > 3) {
      return InvalidArgumentError(At(4) + "unsupported GGUF version " + std::to_string(version_) +
                                  " (this reader handles 1 to 3)");
    }
  }
  Cursor c(base_, size_, limits.max_metadata_bytes, version_ >= 2);
  FLT_RETURN_IF_ERROR(c.Need(8, "header"));
  c.Take(8);
  Parser p(c, limits);

  const uint64_t tc_at = c.pos();
  FLT_ASSIGN_OR_RETURN(uint64_t n_tensors, c.ReadCount("tensor count"));
  const uint64_t kc_at = c.pos();
  FLT_ASSIGN_OR_RETURN(uint64_t n_kv, c.ReadCount("metadata count"));
  if (n_tensors > limits.max_tensors) {
    return ResourceExhaustedError(At(tc_at) + "tensor count " + std::to_string(n_tensors) + " exceeds the limit of " +
                                  std::to_string(limits.max_tensors));
  }
  if (n_kv > limits.max_kv) {
    return ResourceExhaustedError(At(kc_at) + "metadata count " + std::to_string(n_kv) + " exceeds the limit of " +
                                  std::to_string(limits.max_kv));
  }
  // Minimum encodings: KV = key length + type + 1 byte; tensor info = name length +
  // n_dims + type + offset.
  const uint64_t cw = c.count_width();
  if (n_kv > c.remaining() / (cw + 4 + 1)) {
    return DataLossError(At(kc_at) + "metadata count " + std::to_string(n_kv) + " cannot fit in the " +
                         std::to_string(c.remaining()) + " bytes left");
  }
  kv_.reserve(static_cast<size_t>(n_kv));
  for (uint64_t i = 0; i < n_kv; ++i) {
    const uint64_t at = c.pos();
    FLT_ASSIGN_OR_RETURN(std::string key, p.ReadString("metadata key"));
    if (kv_index_.count(key) != 0) return InvalidArgumentError(At(at) + "duplicate metadata key '" + key + "'");
    const uint64_t type_at = c.pos();
    FLT_ASSIGN_OR_RETURN(uint32_t type_raw, c.Read<uint32_t>("metadata value type"));
    if (!IsKnownValueType(type_raw)) {
      return InvalidArgumentError(At(type_at) + "unknown value type " + std::to_string(type_raw) + " for key '" + key +
                                  "'");
    }
    Result<GgufValue> v = p.ReadValue(static_cast<GgufType>(type_raw), 0);
    if (!v.ok()) return std::move(v).status().WithContext("in metadata key '" + key + "'");
    kv_.emplace_back(std::move(key), std::move(v).value());
    kv_index_.emplace(kv_.back().first, kv_.size() - 1);  // kv_ never reallocates (reserved)
  }

  if (const GgufValue* a = Find("general.alignment")) {
    Result<uint32_t> align = a->GetU32();
    if (!align.ok()) return InvalidArgumentError("general.alignment must be u32: " + align.status().message());
    if (*align < 8 || !std::has_single_bit(*align)) {
      return InvalidArgumentError("general.alignment " + std::to_string(*align) +
                                  " is not a power of two >= 8");
    }
    alignment_ = *align;
  }

  if (n_tensors > c.remaining() / (cw + 4 + 4 + 8)) {
    return DataLossError(At(tc_at) + "tensor count " + std::to_string(n_tensors) + " cannot fit in the " +
                         std::to_string(c.remaining()) + " bytes left");
  }
  tensors_.reserve(static_cast<size_t>(n_tensors));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    const uint64_t at = c.pos();
    FLT_ASSIGN_OR_RETURN(std::string name, p.ReadString("tensor name"));
    const std::string where = "tensor " + std::to_string(i) + " '" + name + "'";
    if (name.empty() || name.size() > kGgufMaxNameBytes) {
      return InvalidArgumentError(At(at) + where + ": name must be 1 to " + std::to_string(kGgufMaxNameBytes) +
                                  " bytes, is " + std::to_string(name.size()));
    }
    if (tensor_index_.count(name) != 0) return InvalidArgumentError(At(at) + "duplicate tensor name '" + name + "'");
    const uint64_t dims_at = c.pos();
    FLT_ASSIGN_OR_RETURN(uint32_t n_dims, c.Read<uint32_t>("tensor n_dims"));
    if (n_dims > kGgufMaxDims) {
      return InvalidArgumentError(At(dims_at) + where + ": n_dims " + std::to_string(n_dims) + " exceeds 4");
    }
    GgufTensor t{};
    t.name = std::move(name);
    t.n_dims = n_dims;
    t.ne = {1, 1, 1, 1};
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t ne_at = c.pos();
      FLT_ASSIGN_OR_RETURN(uint64_t ne, c.ReadCount("tensor dimension"));
      if (ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return InvalidArgumentError(At(ne_at) + where + ": dimension " + std::to_string(d) + " is too large");
      }
      t.ne[d] = static_cast<int64_t>(ne);
    }
    const uint64_t type_at = c.pos();
    FLT_ASSIGN_OR_RETURN(uint32_t type_raw, c.Read<uint32_t>("tensor type"));
    const TypeTraits* traits = FindTypeTraits(type_raw);
    if (traits == nullptr) {
      return InvalidArgumentError(At(type_at) + where + ": unknown or unsupported tensor type " +
                                  std::to_string(type_raw));
    }
    t.type = traits->type;
    Result<int64_t> n_el = ElementCount(t.ne);
    if (!n_el.ok()) return InvalidArgumentError(At(dims_at) + where + ": " + n_el.status().message());
    t.n_elements = *n_el;
    Result<size_t> bytes = TensorBytes(t.type, t.ne);
    if (!bytes.ok()) return InvalidArgumentError(At(dims_at) + where + ": " + bytes.status().message());
    t.n_bytes = *bytes;
    const uint64_t off_at = c.pos();
    FLT_ASSIGN_OR_RETURN(t.offset, c.Read<uint64_t>("tensor offset"));
    if (t.offset % alignment_ != 0) {
      return InvalidArgumentError(At(off_at) + where + ": data offset " + std::to_string(t.offset) +
                                  " is not a multiple of the alignment " + std::to_string(alignment_));
    }
    tensors_.push_back(std::move(t));
    tensor_index_.emplace(tensors_.back().name, tensors_.size() - 1);
  }

  data_offset_ = internal_gguf::AlignUp(c.pos(), alignment_);
  const uint64_t data_size = data_offset_ <= size_ ? size_ - data_offset_ : 0;
  for (GgufTensor& t : tensors_) {
    if (t.offset > data_size || t.n_bytes > data_size - t.offset) {
      return DataLossError("tensor '" + t.name + "' data [" + std::to_string(data_offset_ + t.offset) + ", +" +
                           std::to_string(t.n_bytes) + ") extends past the end of the file (" +
                           std::to_string(size_) + " bytes)");
    }
    t.data = t.n_bytes == 0 ? nullptr : base_ + data_offset_ + t.offset;
  }
  std::vector<size_t> order(tensors_.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return tensors_[a].offset < tensors_[b].offset; });
  const GgufTensor* prev = nullptr;
  for (size_t idx : order) {
    const GgufTensor& t = tensors_[idx];
    if (t.n_bytes == 0) continue;
    if (prev != nullptr && prev->offset + prev->n_bytes > t.offset) {
      return InvalidArgumentError("tensors '" + prev->name + "' and '" + t.name + "' overlap at data offset " +
                                  std::to_string(t.offset));
    }
    prev = &t;
  }
  return Status::Ok();
}

const GgufValue* GgufFile::Find(std::string_view key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

Result<const GgufValue*> GgufFile::Get(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return NotFoundError("metadata key '" + std::string(key) + "' not found");
  return v;
}

namespace {
template <typename T, typename Fn>
Result<T> Typed(const GgufFile& f, std::string_view key, Fn fn) {
  FLT_ASSIGN_OR_RETURN(const GgufValue* v, f.Get(key));
  Result<T> r = fn(*v);
  if (!r.ok()) return Status(r.status().code(), "metadata key '" + std::string(key) + "': " + r.status().message());
  return r;
}
}  // namespace

Result<std::string_view> GgufFile::GetString(std::string_view key) const {
  return Typed<std::string_view>(*this, key, [](const GgufValue& v) { return v.GetString(); });
}
Result<uint32_t> GgufFile::GetU32(std::string_view key) const {
  return Typed<uint32_t>(*this, key, [](const GgufValue& v) { return v.GetU32(); });
}
Result<float> GgufFile::GetF32(std::string_view key) const {
  return Typed<float>(*this, key, [](const GgufValue& v) { return v.GetF32(); });
}
Result<bool> GgufFile::GetBool(std::string_view key) const {
  return Typed<bool>(*this, key, [](const GgufValue& v) { return v.GetBool(); });
}
Result<uint64_t> GgufFile::GetUInt(std::string_view key) const {
  return Typed<uint64_t>(*this, key, [](const GgufValue& v) { return v.GetUInt(); });
}
Result<double> GgufFile::GetFloat(std::string_view key) const {
  return Typed<double>(*this, key, [](const GgufValue& v) { return v.GetFloat(); });
}

const GgufTensor* GgufFile::FindTensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

Result<const GgufTensor*> GgufFile::GetTensor(std::string_view name) const {
  const GgufTensor* t = FindTensor(name);
  if (t == nullptr) return NotFoundError("tensor '" + std::string(name) + "' not found");
  return t;
}

}  // namespace flotilla::model
