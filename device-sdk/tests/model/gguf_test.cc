#include "flotilla/model/gguf.h"

#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "flotilla/core/file.h"
#include "flotilla/model/model_file.h"
#include "flotilla/model/tensor_types.h"

namespace flotilla::model {
namespace {

// Hand-assembles GGUF bytes, including structures the writer refuses to produce.
class Raw {
 public:
  Raw& U8(uint8_t v) { return Put(v); }
  Raw& U32(uint32_t v) { return Put(v); }
  Raw& U64(uint64_t v) { return Put(v); }
  Raw& Str(std::string_view s) {
    U64(s.size());
    b_.insert(b_.end(), s.begin(), s.end());
    return *this;
  }
  Raw& Header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    return U32(kGgufMagic).U32(version).U64(n_tensors).U64(n_kv);
  }
  Raw& KvU32(std::string_view key, uint32_t v) { return Str(key).U32(4).U32(v); }
  // Tensor info with n_dims = ne.size().
  Raw& Info(std::string_view name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
    Str(name).U32(static_cast<uint32_t>(ne.size()));
    for (uint64_t d : ne) U64(d);
    return U32(type).U64(offset);
  }
  Raw& PadTo(size_t alignment) {
    while (b_.size() % alignment != 0) b_.push_back(0);
    return *this;
  }
  Raw& Zeros(size_t n) {
    b_.resize(b_.size() + n, 0);
    return *this;
  }
  const Bytes& bytes() const { return b_; }

 private:
  template <typename T>
  Raw& Put(T v) {
    const size_t at = b_.size();
    b_.resize(at + sizeof(T));
    std::memcpy(b_.data() + at, &v, sizeof(T));
    return *this;
  }
  Bytes b_;
};

Result<std::unique_ptr<GgufFile>> Parse(const Bytes& b, const GgufLimits& limits = {}) {
  return GgufFile::OpenFromMemory(b, limits);
}

// Every metadata value type, with edge values.
void AddAllMetadata(GgufWriter& w) {
  w.Set("u8", GgufValue::U8(255));
  w.Set("i8", GgufValue::I8(-128));
  w.Set("u16", GgufValue::U16(65535));
  w.Set("i16", GgufValue::I16(-32768));
  w.Set("u32", GgufValue::U32(0xFFFFFFFFu));
  w.Set("i32", GgufValue::I32(std::numeric_limits<int32_t>::min()));
  w.Set("u64", GgufValue::U64(std::numeric_limits<uint64_t>::max()));
  w.Set("i64", GgufValue::I64(std::numeric_limits<int64_t>::min()));
  w.Set("f32", GgufValue::F32(-1.5e-7f));
  w.Set("f64", GgufValue::F64(3.141592653589793));
  w.Set("bool.true", GgufValue::Bool(true));
  w.Set("bool.false", GgufValue::Bool(false));
  w.Set("str", GgufValue::String(std::string("h\xC3\xA9llo\0world", 12)));
  w.Set("str.empty", GgufValue::String(""));
  const uint8_t u8s[] = {0, 1, 255};
  const int8_t i8s[] = {-1, 2};
  const uint16_t u16s[] = {7, 65535};
  const int16_t i16s[] = {-7};
  const uint32_t u32s[] = {1, 2, 3};
  const int32_t i32s[] = {-1, 0, 1};
  const uint64_t u64s[] = {uint64_t{1} << 63};
  const int64_t i64s[] = {-5, 5};
  const float f32s[] = {0.5f, -0.25f};
  const double f64s[] = {1e300};
  const bool bools[] = {true, false, true};
  w.Set("arr.u8", GgufValue::ArrayU8(u8s));
  w.Set("arr.i8", GgufValue::ArrayI8(i8s));
  w.Set("arr.u16", GgufValue::ArrayU16(u16s));
  w.Set("arr.i16", GgufValue::ArrayI16(i16s));
  w.Set("arr.u32", GgufValue::ArrayU32(u32s));
  w.Set("arr.i32", GgufValue::ArrayI32(i32s));
  w.Set("arr.u64", GgufValue::ArrayU64(u64s));
  w.Set("arr.i64", GgufValue::ArrayI64(i64s));
  w.Set("arr.f32", GgufValue::ArrayF32(f32s));
  w.Set("arr.f64", GgufValue::ArrayF64(f64s));
  w.Set("arr.bool", GgufValue::ArrayBool(bools));
  w.Set("arr.str", GgufValue::StringArray({"a", "", "\xE2\x96\x81x"}));
  w.Set("arr.empty", GgufValue::ArrayF32({}));
  GgufValue inner1 = GgufValue::ArrayI32(i32s);
  GgufValue inner2 = GgufValue::StringArray({"x", "y"});
  GgufValue nested = *GgufValue::ArrayOfArrays({inner1, inner2});
  w.Set("arr.nested", *GgufValue::ArrayOfArrays({nested, *GgufValue::ArrayOfArrays({})}));
}

TEST(GgufTest, EveryMetadataTypeRoundTrips) {
  GgufWriter w;
  AddAllMetadata(w);
  Bytes bytes = *w.WriteToBuffer();
  auto f = Parse(bytes);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  GgufWriter expect;
  AddAllMetadata(expect);
  ASSERT_EQ((*f)->metadata().size(), 28u);
  for (const auto& [key, value] : (*f)->metadata()) {
    const GgufValue* want = expect.Find(key);
    ASSERT_NE(want, nullptr) << key;
    EXPECT_TRUE(value == *want) << key;
  }
  EXPECT_EQ((*f)->version(), 3u);
  EXPECT_EQ((*f)->alignment(), 32u);
  EXPECT_EQ(*(*f)->Find("i8")->GetI8(), -128);
  EXPECT_EQ(*(*f)->Find("u64")->GetU64(), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(*(*f)->GetString("str"), std::string_view("h\xC3\xA9llo\0world", 12));
  EXPECT_EQ(*(*f)->GetF32("f32"), -1.5e-7f);
  EXPECT_EQ(*(*f)->Find("f64")->GetF64(), 3.141592653589793);
  EXPECT_EQ((*(*f)->Find("arr.f32")->GetF32Array()), (std::vector<float>{0.5f, -0.25f}));
  EXPECT_EQ((*(*f)->Find("arr.i16")->GetIntArray()), (std::vector<int64_t>{-7}));
  auto nested = (*f)->Find("arr.nested")->GetArrayOfArrays();
  ASSERT_TRUE(nested.ok());
  ASSERT_EQ(nested->size(), 2u);
  auto level2 = (*nested)[0].GetArrayOfArrays();
  ASSERT_TRUE(level2.ok());
  EXPECT_EQ((*level2)[1].GetStringArray()->size(), 2u);
}

TEST(GgufTest, TypedGettersReportWrongTypes) {
  GgufWriter w;
  AddAllMetadata(w);
  Bytes bytes = *w.WriteToBuffer();
  auto f = *Parse(bytes);
  Result<uint32_t> r = f->GetU32("str");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("'str'"), std::string::npos);
  EXPECT_NE(r.status().message().find("expected u32"), std::string::npos);
  EXPECT_EQ(f->GetU32("missing").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(*f->GetUInt("u8"), 255u);  // lenient integer getter
  EXPECT_EQ(f->GetUInt("i8").status().code(), StatusCode::kOutOfRange);
  EXPECT_FALSE(f->Find("arr.str")->GetF32Array().ok());
  EXPECT_FALSE(f->Find("u32")->GetString().ok());
  EXPECT_EQ(*f->GetFloat("f64"), 3.141592653589793);
}

TEST(GgufTest, EveryTensorTypeRoundTripsThroughAFile) {
  auto dir = TempDir::Create("gguf_test");
  ASSERT_TRUE(dir.ok());
  GgufWriter w;
  SplitMix64 rng(3);
  std::vector<Bytes> datas;
  std::vector<GgmlType> types;
  for (uint32_t id = 0; id < 64; ++id) {
    const TypeTraits* t = FindTypeTraits(id);
    if (t == nullptr) continue;
    const std::vector<int64_t> ne = {t->block_size * 2, 3};
    Bytes data(*TensorBytes(t->type, ne));
    for (uint8_t& b : data) b = static_cast<uint8_t>(rng.Next());
    ASSERT_TRUE(w.AddTensor("t." + std::string(t->name), t->type, ne, data).ok());
    datas.push_back(data);
    types.push_back(t->type);
  }
  w.SetU32("general.quantization_version", 2);
  ASSERT_TRUE(w.SetAlignment(64).ok());
  const auto path = dir->path() / "all.gguf";
  ASSERT_TRUE(w.WriteFile(path).ok());
  auto f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ((*f)->alignment(), 64u);
  ASSERT_EQ((*f)->tensors().size(), types.size());
  for (size_t i = 0; i < types.size(); ++i) {
    const GgufTensor& t = (*f)->tensors()[i];
    EXPECT_EQ(t.type, types[i]);
    EXPECT_EQ(t.n_dims, 2u);
    EXPECT_EQ(t.ne[1], 3);
    EXPECT_EQ(t.offset % 64, 0u);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % 64, 0u);  // page-aligned mapping
    EXPECT_EQ(Bytes(t.data, t.data + t.n_bytes), datas[i]) << t.name;
    EXPECT_EQ((*f)->FindTensor(t.name), &t);
  }
  EXPECT_EQ((*f)->GetTensor("nope").status().code(), StatusCode::kNotFound);
  // Same bytes from the buffer path and the file path.
  EXPECT_EQ(*ReadFileBytes(path), *w.WriteToBuffer());
}

TEST(GgufTest, WriterRejectsBadTensors) {
  GgufWriter w;
  const int64_t ne[] = {33, 2};
  EXPECT_FALSE(w.AddTensor("q", GgmlType::kQ8_0, ne, Bytes(100)).ok());  // row not whole blocks
  const int64_t ok_ne[] = {32};
  EXPECT_FALSE(w.AddTensor("x", GgmlType::kF32, ok_ne, Bytes(127)).ok());  // size mismatch
  EXPECT_TRUE(w.AddTensor("x", GgmlType::kF32, ok_ne, Bytes(128)).ok());
  EXPECT_FALSE(w.AddTensor("x", GgmlType::kF32, ok_ne, Bytes(128)).ok());  // duplicate
  EXPECT_FALSE(w.AddTensor(std::string(64, 'n'), GgmlType::kF32, ok_ne, Bytes(128)).ok());
  const int64_t five[] = {1, 1, 1, 1, 1};
  EXPECT_FALSE(w.AddTensor("y", GgmlType::kF32, five, Bytes(4)).ok());
  EXPECT_FALSE(w.SetAlignment(48).ok());
  EXPECT_FALSE(w.SetAlignment(4).ok());
}

TEST(GgufTest, WriterOutputMatchesHandAssembledSpecBytes) {
  GgufWriter w;
  w.SetU32("k", 7);
  w.SetString("s", "ab");
  std::vector<float> v(8);
  for (int i = 0; i < 8; ++i) v[static_cast<size_t>(i)] = static_cast<float>(i);
  const int64_t ne[] = {8};
  ASSERT_TRUE(w.AddTensorFromF32("t", GgmlType::kF32, ne, v).ok());
  ASSERT_TRUE(w.AddTensorFromF32("u", GgmlType::kF32, ne, v).ok());
  Raw r;
  r.Header(2, 2).KvU32("k", 7).Str("s").U32(8).Str("ab");
  r.Info("t", {8}, 0, 0).Info("u", {8}, 0, 32).PadTo(32);
  for (int rep = 0; rep < 2; ++rep) {
    for (float x : v) r.U32(std::bit_cast<uint32_t>(x));
  }
  EXPECT_EQ(*w.WriteToBuffer(), r.bytes());
}

TEST(GgufTest, ReadsVersion1WithU32Counts) {
  Raw r;
  r.U32(kGgufMagic).U32(1).U32(1).U32(1);
  r.U32(3).U8('k').U8('e').U8('y').U32(4).U32(42);                  // key "key" = u32 42
  r.U32(1).U8('t').U32(1).U32(8).U32(0).U64(0);                     // "t" [8] f32 @0
  r.PadTo(32).Zeros(32);
  auto f = Parse(r.bytes());
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ((*f)->version(), 1u);
  EXPECT_EQ(*(*f)->GetU32("key"), 42u);
  EXPECT_EQ((*f)->tensors()[0].ne[0], 8);
}

TEST(GgufTest, RejectsUnalignedBufferAndMissingFile) {
  Bytes b(64);
  EXPECT_EQ(GgufFile::OpenFromMemory(ByteSpan(b).subspan(1)).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(GgufFile::Open("/nonexistent/x.gguf").status().code(), StatusCode::kNotFound);
}

struct HostileCase {
  std::string name;
  Bytes bytes;
  StatusCode code;
  std::string message_part;
};

std::vector<HostileCase> HostileCases() {
  std::vector<HostileCase> c;
  const uint64_t kHuge = uint64_t{1} << 62;
  c.push_back({"empty", {}, StatusCode::kDataLoss, "truncated"});
  c.push_back({"bad magic", Raw().U32(0x46554748).U32(3).U64(0).U64(0).bytes(), StatusCode::kInvalidArgument,
               "bad magic"});
  c.push_back({"version 4", Raw().Header(0, 0, 4).bytes(), StatusCode::kInvalidArgument, "version 4"});
  c.push_back({"version 0", Raw().Header(0, 0, 0).bytes(), StatusCode::kInvalidArgument, "version 0"});
  c.push_back({"truncated counts", Raw().U32(kGgufMagic).U32(3).U32(0).bytes(), StatusCode::kDataLoss,
               "tensor count"});
  c.push_back({"huge tensor count", Raw().Header(kHuge, 0).bytes(), StatusCode::kResourceExhausted,
               "tensor count"});
  c.push_back({"huge kv count", Raw().Header(0, kHuge).bytes(), StatusCode::kResourceExhausted, "metadata count"});
  c.push_back({"kv count beyond file", Raw().Header(0, 60000).bytes(), StatusCode::kDataLoss, "cannot fit"});
  c.push_back({"tensor count beyond file", Raw().Header(60000, 0).bytes(), StatusCode::kDataLoss, "cannot fit"});
  c.push_back({"huge key length", Raw().Header(0, 1).U64(kHuge).Zeros(16).bytes(), StatusCode::kResourceExhausted,
               "metadata key length"});
  c.push_back({"key past end", Raw().Header(0, 1).U64(1000).Zeros(16).bytes(), StatusCode::kDataLoss,
               "at byte 32"});
  c.push_back({"unknown value type", Raw().Header(0, 1).Str("k").U32(13).U32(0).bytes(),
               StatusCode::kInvalidArgument, "unknown value type 13"});
  c.push_back({"bool not 0/1", Raw().Header(0, 1).Str("k").U32(7).U8(2).Zeros(8).bytes(),
               StatusCode::kInvalidArgument, "bool value 2"});
  c.push_back({"truncated scalar", Raw().Header(0, 1).Str("k").U32(10).U32(1).bytes(), StatusCode::kDataLoss,
               "scalar value"});
  c.push_back({"huge array count", Raw().Header(0, 1).Str("k").U32(9).U32(6).U64(kHuge).bytes(),
               StatusCode::kResourceExhausted, "array count"});
  c.push_back({"array beyond file", Raw().Header(0, 1).Str("k").U32(9).U32(10).U64(1000).Zeros(64).bytes(),
               StatusCode::kDataLoss, "cannot fit"});
  c.push_back({"unknown array type", Raw().Header(0, 1).Str("k").U32(9).U32(77).U64(0).bytes(),
               StatusCode::kInvalidArgument, "unknown array element type 77"});
  c.push_back({"bool array element", Raw().Header(0, 1).Str("k").U32(9).U32(7).U64(2).U8(1).U8(9).bytes(),
               StatusCode::kInvalidArgument, "bool array element 1"});
  {
    Raw deep;
    deep.Header(0, 1).Str("k").U32(9);
    for (int i = 0; i < 10; ++i) deep.U32(9).U64(1);
    deep.U32(4).U64(0);
    c.push_back({"arrays nested too deep", deep.bytes(), StatusCode::kResourceExhausted, "nested deeper"});
  }
  c.push_back({"duplicate key", Raw().Header(0, 2).KvU32("a", 1).KvU32("a", 2).bytes(), StatusCode::kInvalidArgument,
               "duplicate metadata key 'a'"});
  c.push_back({"alignment zero", Raw().Header(0, 1).KvU32("general.alignment", 0).bytes(),
               StatusCode::kInvalidArgument, "general.alignment 0"});
  c.push_back({"alignment 48", Raw().Header(0, 1).KvU32("general.alignment", 48).bytes(),
               StatusCode::kInvalidArgument, "not a power of two"});
  c.push_back({"alignment wrong type", Raw().Header(0, 1).Str("general.alignment").U32(10).U64(32).bytes(),
               StatusCode::kInvalidArgument, "general.alignment must be u32"});
  auto one_tensor = [](std::vector<uint64_t> ne, uint32_t type, uint64_t offset, size_t data = 256) {
    return Raw().Header(1, 0).Info("w", std::move(ne), type, offset).PadTo(32).Zeros(data).bytes();
  };
  c.push_back({"five dims", one_tensor({1, 1, 1, 1, 1}, 0, 0), StatusCode::kInvalidArgument, "n_dims 5"});
  c.push_back({"unknown tensor type", one_tensor({32}, 99, 0), StatusCode::kInvalidArgument,
               "unknown or unsupported tensor type 99"});
  c.push_back({"IQ type unsupported", one_tensor({256}, 16, 0), StatusCode::kInvalidArgument,
               "unsupported tensor type 16"});
  c.push_back({"row not whole blocks", one_tensor({33, 2}, 8, 0), StatusCode::kInvalidArgument,
               "not a multiple of the q8_0 block size"});
  c.push_back({"element count overflow", one_tensor({uint64_t{1} << 32, uint64_t{1} << 32}, 0, 0),
               StatusCode::kInvalidArgument, "overflows"});
  c.push_back({"byte size overflow", one_tensor({uint64_t{1} << 61, 2}, 0, 0), StatusCode::kInvalidArgument,
               "overflow"});
  c.push_back({"dimension > int64", one_tensor({~uint64_t{0}}, 0, 0), StatusCode::kInvalidArgument, "too large"});
  c.push_back({"misaligned offset", one_tensor({8}, 0, 4), StatusCode::kInvalidArgument,
               "not a multiple of the alignment 32"});
  c.push_back({"data past end", one_tensor({128}, 0, 0, 100), StatusCode::kDataLoss, "past the end"});
  c.push_back({"offset past end", one_tensor({8}, 0, uint64_t{1} << 40), StatusCode::kDataLoss, "past the end"});
  c.push_back({"offset wraps", one_tensor({8}, 0, ~uint64_t{31}), StatusCode::kDataLoss, "past the end"});
  c.push_back({"overlapping tensors",
               Raw().Header(2, 0).Info("a", {16}, 0, 0).Info("b", {16}, 0, 32).PadTo(32).Zeros(128).bytes(),
               StatusCode::kInvalidArgument, "overlap"});
  c.push_back({"duplicate tensor",
               Raw().Header(2, 0).Info("a", {8}, 0, 0).Info("a", {8}, 0, 32).PadTo(32).Zeros(64).bytes(),
               StatusCode::kInvalidArgument, "duplicate tensor name 'a'"});
  c.push_back({"tensor name too long", Raw().Header(1, 0).Info(std::string(64, 'x'), {8}, 0, 0).PadTo(32).Zeros(32).bytes(),
               StatusCode::kInvalidArgument, "name must be 1 to 63 bytes"});
  c.push_back({"empty tensor name", Raw().Header(1, 0).Info("", {8}, 0, 0).PadTo(32).Zeros(32).bytes(),
               StatusCode::kInvalidArgument, "name must be"});
  c.push_back({"truncated tensor info", Raw().Header(1, 0).Str("w").U32(4).U64(8).U64(8).bytes(), StatusCode::kDataLoss,
               "tensor dimension"});
  return c;
}

TEST(GgufTest, HostileFilesAreRejectedWithClearErrors) {
  for (const HostileCase& h : HostileCases()) {
    auto f = Parse(h.bytes);
    ASSERT_FALSE(f.ok()) << h.name;
    EXPECT_EQ(f.status().code(), h.code) << h.name << ": " << f.status().ToString();
    EXPECT_NE(f.status().message().find(h.message_part), std::string::npos)
        << h.name << ": '" << f.status().message() << "' lacks '" << h.message_part << "'";
  }
}

TEST(GgufTest, MetadataSizeLimitIsEnforced) {
  GgufWriter w;
  w.Set("big", GgufValue::String(std::string(5000, 'x')));
  Bytes b = *w.WriteToBuffer();
  GgufLimits limits;
  limits.max_metadata_bytes = 1024;
  auto f = Parse(b, limits);
  EXPECT_EQ(f.status().code(), StatusCode::kResourceExhausted);
  limits = GgufLimits();
  limits.max_string_bytes = 100;
  EXPECT_EQ(Parse(b, limits).status().code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(Parse(b).ok());
}

Bytes SmallValidFile() {
  GgufWriter w;
  w.SetString("general.architecture", "llama");
  w.SetU32("llama.block_count", 2);
  w.Set("tokenizer.ggml.tokens", GgufValue::StringArray({"<unk>", "a", "bc"}));
  const float scores[] = {0.f, -1.f, -2.f};
  w.Set("tokenizer.ggml.scores", GgufValue::ArrayF32(scores));
  GgufValue inner = GgufValue::StringArray({"x"});
  w.Set("nested", *GgufValue::ArrayOfArrays({inner}));
  std::vector<float> v(64, 0.5f);
  const int64_t ne1[] = {32, 2};
  const int64_t ne2[] = {64};
  EXPECT_TRUE(w.AddTensorFromF32("a", GgmlType::kQ8_0, ne1, v).ok());
  EXPECT_TRUE(w.AddTensorFromF32("b", GgmlType::kF32, ne2, v).ok());
  EXPECT_TRUE(w.AddTensorFromF32("c", GgmlType::kQ4_0, ne1, v).ok());
  return *w.WriteToBuffer();
}

void CheckInvariants(const GgufFile& f, const Bytes& buf) {
  for (const GgufTensor& t : f.tensors()) {
    if (t.n_bytes == 0) continue;
    ASSERT_GE(t.data, buf.data());
    ASSERT_LE(t.data + t.n_bytes, buf.data() + buf.size());
    ASSERT_EQ(*TensorBytes(t.type, t.ne), t.n_bytes);
  }
}

TEST(GgufTest, EveryTruncationIsRejected) {
  const Bytes valid = SmallValidFile();
  auto full = Parse(valid);
  ASSERT_TRUE(full.ok());
  // The padding after the last tensor is optional; everything before it is not.
  const GgufTensor& last = (*full)->tensors().back();
  const size_t needed = (*full)->data_offset() + last.offset + last.n_bytes;
  ASSERT_LT(needed, valid.size());
  for (size_t len = 0; len < valid.size(); ++len) {
    Bytes cut(valid.begin(), valid.begin() + static_cast<std::ptrdiff_t>(len));
    EXPECT_EQ(Parse(cut).ok(), len >= needed) << "prefix of " << len << " bytes";
  }
}

// A few thousand deterministic mutations of a valid file: the reader must return (OK or
// an error) without crashing, and anything it accepts must be internally consistent.
TEST(GgufTest, SurvivesDeterministicMutations) {
  const Bytes valid = SmallValidFile();
  SplitMix64 rng(20240601);
  int accepted = 0;
  for (int iter = 0; iter < 4000; ++iter) {
    Bytes m = valid;
    const int edits = 1 + static_cast<int>(rng.Next() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t pos = rng.Next() % m.size();
      switch (rng.Next() % 6) {
        case 0: m[pos] = static_cast<uint8_t>(rng.Next()); break;
        case 1: m[pos] ^= static_cast<uint8_t>(1u << (rng.Next() % 8)); break;
        case 2: {  // plant an extreme 64-bit value (counts, lengths, offsets)
          const uint64_t extremes[] = {0, 1, 0xFFFFFFFFull, ~uint64_t{0}, uint64_t{1} << 63, 31, 33, 1 << 20};
          const uint64_t v = extremes[rng.Next() % 8];
          const size_t at = std::min(pos, m.size() - 8);
          std::memcpy(m.data() + at, &v, 8);
          break;
        }
        case 3: m.resize(pos); break;
        case 4: m.insert(m.begin() + static_cast<std::ptrdiff_t>(pos), static_cast<uint8_t>(rng.Next())); break;
        default: m.erase(m.begin() + static_cast<std::ptrdiff_t>(pos)); break;
      }
      if (m.size() < 8) break;
    }
    auto f = Parse(m);
    if (f.ok()) {
      ++accepted;
      CheckInvariants(**f, m);
    } else {
      EXPECT_FALSE(f.status().message().empty());
    }
  }
  // Most mutations must be caught, but some (e.g. in tensor data) are harmless.
  EXPECT_GT(accepted, 0);
  EXPECT_LT(accepted, 4000);
}

}  // namespace
}  // namespace flotilla::model
