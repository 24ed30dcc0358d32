#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <unordered_set>

#include "flotilla/model/gguf.h"
#include "flotilla/model/quant.h"
#include "flotilla/model/tensor_types.h"
#include "gguf_internal.h"

namespace flotilla::model {
namespace internal_gguf {
namespace {

template <typename T>
void Put(Bytes& out, T v) {
  const size_t at = out.size();
  out.resize(at + sizeof(T));
  std::memcpy(out.data() + at, &v, sizeof(T));
}

void PutString(Bytes& out, std::string_view s) {
  Put<uint64_t>(out, s.size());
  out.insert(out.end(), s.begin(), s.end());
}

}  // namespace

void AppendValue(Bytes& out, const GgufValue& value) {
  const GgufType t = value.type();
  if (t == GgufType::kString) {
    PutString(out, value.GetString().value());
    return;
  }
  if (t != GgufType::kArray) {
    // Scalars: the value's low ScalarWidth bytes, recovered through a 1-element array.
    uint64_t bits = 0;
    switch (t) {
      case GgufType::kU8: bits = value.GetU8().value(); break;
      case GgufType::kI8: bits = static_cast<uint8_t>(value.GetI8().value()); break;
      case GgufType::kU16: bits = value.GetU16().value(); break;
      case GgufType::kI16: bits = static_cast<uint16_t>(value.GetI16().value()); break;
      case GgufType::kU32: bits = value.GetU32().value(); break;
      case GgufType::kI32: bits = static_cast<uint32_t>(value.GetI32().value()); break;
      case GgufType::kU64: bits = value.GetU64().value(); break;
      case GgufType::kI64: bits = static_cast<uint64_t>(value.GetI64().value()); break;
      case GgufType::kF32: bits = std::bit_cast<uint32_t>(value.GetF32().value()); break;
      case GgufType::kF64: bits = std::bit_cast<uint64_t>(value.GetF64().value()); break;
      case GgufType::kBool: bits = value.GetBool().value() ? 1 : 0; break;
      default: break;
    }
    const size_t at = out.size();
    out.resize(at + ScalarWidth(t));
    std::memcpy(out.data() + at, &bits, ScalarWidth(t));
    return;
  }
  const GgufType elem = value.array_type();
  Put<uint32_t>(out, static_cast<uint32_t>(elem));
  Put<uint64_t>(out, value.array_size());
  if (elem == GgufType::kString) {
    Result<std::span<const std::string>> items = value.GetStringArray();
    for (size_t i = 0; i < items->size(); ++i) PutString(out, (*items)[i]);
  } else if (elem == GgufType::kArray) {
    Result<std::span<const GgufValue>> items = value.GetArrayOfArrays();
    for (size_t i = 0; i < items->size(); ++i) AppendValue(out, (*items)[i]);
  } else {
    ByteSpan packed = value.GetPackedArray().value();
    out.insert(out.end(), packed.begin(), packed.end());
  }
}

}  // namespace internal_gguf

using internal_gguf::AlignUp;

void GgufWriter::Set(std::string key, GgufValue value) {
  for (auto& [k, v] : kv_) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  kv_.emplace_back(std::move(key), std::move(value));
}

const GgufValue* GgufWriter::Find(std::string_view key) const {
  for (const auto& [k, v] : kv_) {
    if (k == key) return &v;
  }
  return nullptr;
}

bool GgufWriter::Remove(std::string_view key) {
  auto it = std::find_if(kv_.begin(), kv_.end(), [&](const auto& kv) { return kv.first == key; });
  if (it == kv_.end()) return false;
  kv_.erase(it);
  return true;
}

Status GgufWriter::SetAlignment(uint32_t alignment) {
  if (alignment < 8 || !std::has_single_bit(alignment)) {
    return InvalidArgumentError("alignment " + std::to_string(alignment) + " is not a power of two >= 8");
  }
  alignment_ = alignment;
  if (alignment == kGgufDefaultAlignment) {
    Remove("general.alignment");
  } else {
    SetU32("general.alignment", alignment);
  }
  return Status::Ok();
}

Status GgufWriter::CheckTensor(const std::string& name, GgmlType type, std::span<const int64_t> ne,
                               size_t size) const {
  if (name.empty() || name.size() > kGgufMaxNameBytes) {
    return InvalidArgumentError("tensor name '" + name + "' must be 1 to 63 bytes");
  }
  for (const Tensor& t : tensors_) {
    if (t.name == name) return InvalidArgumentError("duplicate tensor name '" + name + "'");
  }
  if (ne.size() > kGgufMaxDims) return InvalidArgumentError("tensor '" + name + "' has more than 4 dims");
  if (FindTypeTraits(static_cast<uint32_t>(type)) == nullptr) {
    return InvalidArgumentError("tensor '" + name + "' has an unknown type");
  }
  Result<size_t> bytes = TensorBytes(type, ne);
  if (!bytes.ok()) return InvalidArgumentError("tensor '" + name + "': " + bytes.status().message());
  if (*bytes != size) {
    return InvalidArgumentError("tensor '" + name + "' needs " + std::to_string(*bytes) + " bytes, got " +
                                std::to_string(size));
  }
  return Status::Ok();
}

Status GgufWriter::AddTensor(std::string name, GgmlType type, std::span<const int64_t> ne, Bytes data) {
  FLT_RETURN_IF_ERROR(CheckTensor(name, type, ne, data.size()));
  Tensor t{std::move(name), type, std::vector<int64_t>(ne.begin(), ne.end()), std::move(data), {}};
  t.data = t.owned;  // the vector's heap buffer survives moves of Tensor
  tensors_.push_back(std::move(t));
  return Status::Ok();
}

Status GgufWriter::AddTensorView(std::string name, GgmlType type, std::span<const int64_t> ne, ByteSpan data) {
  FLT_RETURN_IF_ERROR(CheckTensor(name, type, ne, data.size()));
  tensors_.push_back(Tensor{std::move(name), type, std::vector<int64_t>(ne.begin(), ne.end()), {}, data});
  return Status::Ok();
}

Status GgufWriter::AddTensorFromF32(std::string name, GgmlType type, std::span<const int64_t> ne,
                                    std::span<const float> values) {
  Result<int64_t> n = ElementCount(ne);
  if (!n.ok() || static_cast<size_t>(*n) != values.size()) {
    return InvalidArgumentError("tensor '" + name + "': " + std::to_string(values.size()) +
                                " values do not match its shape");
  }
  Result<Bytes> q = QuantizeToBytes(type, values);
  if (!q.ok()) return InvalidArgumentError("tensor '" + name + "': " + q.status().message());
  return AddTensor(std::move(name), type, ne, std::move(q).value());
}

Bytes GgufWriter::EncodeHeader(uint64_t* data_size) const {
  using internal_gguf::Put;
  using internal_gguf::PutString;
  Bytes out;
  Put<uint32_t>(out, kGgufMagic);
  Put<uint32_t>(out, kGgufVersion);
  Put<uint64_t>(out, tensors_.size());
  Put<uint64_t>(out, kv_.size());
  for (const auto& [key, value] : kv_) {
    PutString(out, key);
    Put<uint32_t>(out, static_cast<uint32_t>(value.type()));
    internal_gguf::AppendValue(out, value);
  }
  uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    PutString(out, t.name);
    Put<uint32_t>(out, static_cast<uint32_t>(t.ne.size()));
    for (int64_t d : t.ne) Put<uint64_t>(out, static_cast<uint64_t>(d));
    Put<uint32_t>(out, static_cast<uint32_t>(t.type));
    Put<uint64_t>(out, offset);
    offset += AlignUp(t.data.size(), alignment_);
  }
  out.resize(AlignUp(out.size(), alignment_), 0);
  *data_size = offset;
  return out;
}

Result<Bytes> GgufWriter::WriteToBuffer() const {
  uint64_t data_size = 0;
  Bytes out = EncodeHeader(&data_size);
  out.reserve(out.size() + data_size);
  for (const Tensor& t : tensors_) {
    out.insert(out.end(), t.data.begin(), t.data.end());
    out.resize(AlignUp(out.size(), alignment_), 0);
  }
  return out;
}

namespace {

Status WriteAll(int fd, const uint8_t* p, size_t n, const std::string& path) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return UnavailableError("cannot write " + path + ": " + std::strerror(errno));
    p += w;
    n -= static_cast<size_t>(w);
  }
  return Status::Ok();
}

}  // namespace

Status GgufWriter::WriteFile(const std::filesystem::path& path) const {
  // Streams tensor data instead of building the whole file in memory (models can be
  // hundreds of MB); same temp + fsync + rename protocol as flotilla::WriteFileAtomic.
  const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  std::string tmp = (dir / ("." + path.filename().string() + ".tmpXXXXXX")).string();
  const int fd = ::mkstemp(tmp.data());
  if (fd < 0) return UnavailableError("cannot create a temp file next to " + path.string() + ": " + std::strerror(errno));
  auto fail = [&](Status s) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return s;
  };
  if (::fchmod(fd, 0644) != 0) return fail(UnavailableError("cannot chmod " + tmp));
  uint64_t data_size = 0;
  const Bytes header = EncodeHeader(&data_size);
  Status s = WriteAll(fd, header.data(), header.size(), tmp);
  if (!s.ok()) return fail(s);
  static constexpr uint8_t kZeros[256] = {};
  for (const Tensor& t : tensors_) {
    s = WriteAll(fd, t.data.data(), t.data.size(), tmp);
    if (!s.ok()) return fail(s);
    size_t pad = AlignUp(t.data.size(), alignment_) - t.data.size();
    while (pad > 0 && s.ok()) {
      const size_t n = std::min(pad, sizeof(kZeros));
      s = WriteAll(fd, kZeros, n, tmp);
      pad -= n;
    }
    if (!s.ok()) return fail(s);
  }
  if (::fsync(fd) != 0) return fail(UnavailableError("cannot fsync " + tmp + ": " + std::strerror(errno)));
  if (::close(fd) != 0) {
    ::unlink(tmp.c_str());
    return UnavailableError("cannot close " + tmp);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    return UnavailableError("cannot rename into " + path.string() + ": " + std::strerror(e));
  }
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return Status::Ok();
}

}  // namespace flotilla::model
