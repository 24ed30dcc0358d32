#include "flotilla/model/adapter_file.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "flotilla/core/file.h"
#include "flotilla/core/testing/seeded_random.h"
#include "flotilla/model/inference.h"
#include "flotilla/model/quant.h"
#include "inference_test_util.h"
#include "lora_test_util.h"

namespace flotilla::model {
namespace {

using testing::DVec;
using testing::ModelPath;
using testing::RelativeError;
using testing::TestTokens;

std::unique_ptr<LlamaModel> Load(const std::filesystem::path& p) {
  Result<std::unique_ptr<LlamaModel>> m = LlamaModel::Open(p);
  FLT_CHECK_OK(m.status());
  return std::move(*m);
}

TempDir MakeDir() {
  Result<TempDir> d = TempDir::Create("flotilla-adapter-test");
  FLT_CHECK_OK(d.status());
  return std::move(*d);
}

LoraConfig Targets(std::vector<Projection> t, int64_t rank = 4, float alpha = 8.0f, uint64_t seed = 5) {
  LoraConfig c;
  c.rank = rank;
  c.alpha = alpha;
  c.targets = std::move(t);
  c.a_seed = seed;
  return c;
}

const std::vector<Projection> kAll = {Projection::kQ,    Projection::kK,  Projection::kV,   Projection::kO,
                                      Projection::kGate, Projection::kUp, Projection::kDown};

LoraAdapter MakeAdapter(const ModelConfig& mc, const LoraConfig& lc, uint64_t b_seed, float amp) {
  Result<LoraAdapter> a = LoraAdapter::Create(mc, lc);
  FLT_CHECK_OK(a.status());
  ::flotilla::model::testing::FillRandomB(*a, b_seed, amp);
  return std::move(*a);
}

bool SameMatrices(const LoraAdapter& x, const LoraAdapter& y) {
  if (x.matrices().size() != y.matrices().size()) return false;
  for (size_t i = 0; i < x.matrices().size(); ++i) {
    const LoraMatrix& a = x.matrices()[i];
    const LoraMatrix& b = y.matrices()[i];
    if (a.layer != b.layer || a.proj != b.proj || a.rank != b.rank || a.in_dim != b.in_dim || a.out_dim != b.out_dim ||
        a.a.size() != b.a.size() || a.b.size() != b.b.size() ||
        std::memcmp(a.a.data(), b.a.data(), a.a.size() * sizeof(float)) != 0 ||
        std::memcmp(a.b.data(), b.b.data(), a.b.size() * sizeof(float)) != 0) {
      return false;
    }
  }
  return true;
}

// An adapter file taken apart for editing, then put back together in memory.
struct EditableGguf {
  struct Tensor {
    std::string name;
    GgmlType type;
    std::vector<int64_t> ne;
    Bytes data;
  };
  std::vector<std::pair<std::string, GgufValue>> kv;
  std::vector<Tensor> tensors;

  static EditableGguf From(const GgufFile& f) {
    EditableGguf e;
    e.kv = f.metadata();
    for (const GgufTensor& t : f.tensors()) {
      e.tensors.push_back({t.name, t.type, std::vector<int64_t>(t.shape().begin(), t.shape().end()),
                           Bytes(t.bytes().begin(), t.bytes().end())});
    }
    return e;
  }
  void Set(const std::string& key, GgufValue v) {
    for (auto& [k, value] : kv) {
      if (k == key) {
        value = std::move(v);
        return;
      }
    }
    kv.emplace_back(key, std::move(v));
  }
  void Remove(const std::string& key) {
    std::erase_if(kv, [&](const auto& p) { return p.first == key; });
  }
  Tensor& Find(const std::string& name) {
    for (Tensor& t : tensors) {
      if (t.name == name) return t;
    }
    FLT_CHECK_MSG(false, "no such tensor");
    return tensors[0];
  }
  void Drop(const std::string& name) {
    std::erase_if(tensors, [&](const Tensor& t) { return t.name == name; });
  }
  Bytes Write() const {
    GgufWriter w;
    for (const auto& [k, v] : kv) w.Set(k, v);
    for (const Tensor& t : tensors) FLT_CHECK_OK(w.AddTensor(t.name, t.type, t.ne, t.data));
    Result<Bytes> b = w.WriteToBuffer();
    FLT_CHECK_OK(b.status());
    return std::move(*b);
  }
};

class AdapterFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_path_ = ModelPath("tiny", "f32");
    base_ = Load(base_path_);
    Result<std::string> h = ModelFileSha256(base_path_);
    ASSERT_TRUE(h.ok());
    base_hash_ = *h;
    adapter_ = std::make_unique<LoraAdapter>(MakeAdapter(base_->config(), Targets({Projection::kQ, Projection::kV}), 3, 0.1f));
    adapter_->base_hash = base_hash_;
    adapter_->version = 12;
    adapter_->name = "kitchen-v12";
    path_ = dir_.path() / "a.gguf";
    ASSERT_TRUE(SaveAdapter(*adapter_, path_).ok());
    Result<std::unique_ptr<GgufFile>> f = GgufFile::Open(path_);
    ASSERT_TRUE(f.ok());
    editable_ = EditableGguf::From(**f);
  }

  // Reads `bytes` as an adapter for the tiny base (with its hash).
  Result<LoraAdapter> ReadBytes(const Bytes& bytes, const std::string& hash = {}) {
    Result<std::unique_ptr<GgufFile>> f = GgufFile::OpenFromMemory(bytes);
    if (!f.ok()) return f.status();
    return ReadAdapter(**f, *base_, hash);
  }
  // Expects `e` to be refused with `code` and a message containing `needle`.
  void ExpectRefused(const EditableGguf& e, StatusCode code, const std::string& needle) {
    Result<LoraAdapter> r = ReadBytes(e.Write());
    ASSERT_FALSE(r.ok()) << needle;
    EXPECT_EQ(r.status().code(), code) << r.status().ToString();
    EXPECT_NE(r.status().ToString().find(needle), std::string::npos) << r.status().ToString();
  }
  // The saved adapter with metadata `key` set to `value` is refused so.
  void ExpectKeyRefused(const std::string& key, GgufValue value, StatusCode code, const std::string& needle) {
    EditableGguf e = editable_;
    e.Set(key, std::move(value));
    ExpectRefused(e, code, needle);
  }

  TempDir dir_ = MakeDir();
  std::filesystem::path base_path_;
  std::unique_ptr<LlamaModel> base_;
  std::string base_hash_;
  std::unique_ptr<LoraAdapter> adapter_;
  std::filesystem::path path_;
  EditableGguf editable_;
};

// ---- SHA-256 ----------------------------------------------------------------------------

TEST(ModelFileSha256Test, MatchesFips180Vectors) {
  TempDir dir = MakeDir();
  auto hash_of = [&](std::string_view content) {
    const std::filesystem::path p = dir.path() / "f";
    FLT_CHECK_OK(WriteFileAtomic(p, content));
    Result<std::string> h = ModelFileSha256(p);
    FLT_CHECK_OK(h.status());
    return *h;
  };
  EXPECT_EQ(hash_of(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(hash_of("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(hash_of("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(hash_of("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrs"
                    "mnopqrstnopqrstu"),
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  EXPECT_EQ(hash_of(std::string(1000000, 'a')), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  // Padding edge cases (values from Python's hashlib).
  EXPECT_EQ(hash_of(std::string(55, 'x')), "d5e285683cd4efc02d021a5c62014694958901005d6f71e89e0989fac77e4072");
  EXPECT_EQ(hash_of(std::string(56, 'x')), "04c26261370ee7541549d16dee320c723e3fd14671e66a099afe0a377c16888e");
  EXPECT_EQ(hash_of(std::string(64, 'x')), "7ce100971f64e7001e8fe5a51973ecdfe1ced42befe7ee8d5fd6219506b5393c");
  EXPECT_EQ(hash_of(std::string(119, 'x')), "000b48d4edf0fa7bee3c6236ecd2785baa5db4eeb8bb54341b029e0d9fa5fb0c");
  // Larger than the 1 MiB read buffer, not a multiple of 64.
  std::string big(3 * 1024 * 1024 + 17, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 7 + 3) % 251);
  EXPECT_EQ(hash_of(big), "b94a81035474d847a7b5f270ed72d10d51a5643254d6495dce93e2022aa22ac7");

  EXPECT_EQ(ModelFileSha256(dir.path() / "missing").status().code(), StatusCode::kNotFound);
}

// ---- Save / load ------------------------------------------------------------------------

TEST_F(AdapterFileTest, SaveLoadRoundTripIsExact) {
  Result<LoraAdapter> back = LoadAdapter(path_, *base_, base_hash_);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(SameMatrices(*adapter_, *back));
  EXPECT_EQ(back->config().rank, 4);
  EXPECT_EQ(back->config().alpha, 8.0f);
  EXPECT_TRUE(back->config().frozen_a);
  EXPECT_EQ(back->config().a_seed, 5u);
  EXPECT_EQ(FormatProjections(back->config().targets), "q,v");
  EXPECT_EQ(back->base_hash, base_hash_);
  EXPECT_EQ(back->version, 12u);
  EXPECT_EQ(back->name, "kitchen-v12");

  // Trainable A, all targets, no hash.
  LoraConfig lc = Targets(kAll, 8, 16.0f);
  lc.frozen_a = false;
  flotilla::testing::SeededRandom rng(9);
  Result<LoraAdapter> full = LoraAdapter::Create(base_->config(), lc, &rng);
  ASSERT_TRUE(full.ok());
  const std::filesystem::path p2 = dir_.path() / "full.gguf";
  ASSERT_TRUE(SaveAdapter(*full, p2).ok());
  Result<LoraAdapter> back2 = LoadAdapter(p2, *base_, base_hash_);  // no recorded hash: not checked
  ASSERT_TRUE(back2.ok()) << back2.status().ToString();
  EXPECT_TRUE(SameMatrices(*full, *back2));
  EXPECT_FALSE(back2->config().frozen_a);
  EXPECT_EQ(back2->base_hash, "");
}

TEST_F(AdapterFileTest, FileFollowsLlamaCppAdapterLayout) {
  Result<std::unique_ptr<GgufFile>> f = GgufFile::Open(path_);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(*(*f)->GetString("general.type"), "adapter");
  EXPECT_EQ(*(*f)->GetString("general.architecture"), "llama");
  EXPECT_EQ(*(*f)->GetString("adapter.type"), "lora");
  EXPECT_EQ(*(*f)->GetF32("adapter.lora.alpha"), 8.0f);
  EXPECT_EQ(*(*f)->GetString("flotilla.adapter.base_sha256"), base_hash_);
  EXPECT_EQ((*f)->tensors().size(), 2u * 2 * 2);  // 2 layers x (q, v) x (a, b)
  const GgufTensor* a = (*f)->FindTensor("blk.1.attn_v.weight.lora_a");
  const GgufTensor* b = (*f)->FindTensor("blk.1.attn_v.weight.lora_b");
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(a->type, GgmlType::kF32);
  EXPECT_EQ(std::vector<int64_t>(a->shape().begin(), a->shape().end()), (std::vector<int64_t>{64, 4}));  // [in, r]
  EXPECT_EQ(std::vector<int64_t>(b->shape().begin(), b->shape().end()), (std::vector<int64_t>{4, 32}));  // [r, out]
  // Row r of A (PEFT lora_A.weight [r, in]) is contiguous.
  const LoraMatrix* m = adapter_->Find(1, Projection::kV);
  EXPECT_EQ(std::memcmp(a->data, m->a.data(), a->n_bytes), 0);
  EXPECT_EQ(std::memcmp(b->data, m->b.data(), b->n_bytes), 0);
}

TEST_F(AdapterFileTest, AcceptsF16FactorsAndMissingAlpha) {
  // A PEFT-converted style file: no Flotilla keys, F16 factors, no alpha.
  EditableGguf e = editable_;
  for (const char* k : {"flotilla.adapter.version", "flotilla.adapter.frozen_a", "flotilla.adapter.a_seed",
                        "flotilla.adapter.base_sha256", "flotilla.adapter.targets", "flotilla.adapter.adapter_version",
                        "adapter.lora.alpha"}) {
    e.Remove(k);
  }
  for (EditableGguf::Tensor& t : e.tensors) {
    std::vector<float> f(t.data.size() / 4);
    std::memcpy(f.data(), t.data.data(), t.data.size());
    Result<Bytes> h = QuantizeToBytes(GgmlType::kF16, f);
    ASSERT_TRUE(h.ok());
    t.type = GgmlType::kF16;
    t.data = std::move(*h);
  }
  Result<LoraAdapter> r = ReadBytes(e.Write(), base_hash_);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(r->config().frozen_a);
  EXPECT_EQ(r->scale(), 1.0f);  // llama.cpp: no alpha means s = user scale
  const LoraMatrix* m = r->Find(0, Projection::kQ);
  const LoraMatrix* want = adapter_->Find(0, Projection::kQ);
  for (size_t i = 0; i < m->b.size(); ++i) EXPECT_NEAR(m->b[i], want->b[i], 1e-3f * std::abs(want->b[i]) + 1e-7f);
}

TEST_F(AdapterFileTest, RefusesFilesThatAreNotLoraAdapters) {
  Result<LoraAdapter> model_as_adapter = LoadAdapter(base_path_, *base_);
  ASSERT_FALSE(model_as_adapter.ok());
  EXPECT_NE(model_as_adapter.status().ToString().find("general.type"), std::string::npos);

  ExpectKeyRefused("general.type", GgufValue::String("model"), StatusCode::kInvalidArgument,
                   "general.type is 'model'");
  ExpectKeyRefused("adapter.type", GgufValue::String("ia3"), StatusCode::kInvalidArgument, "adapter.type is 'ia3'");
  ExpectKeyRefused("general.architecture", GgufValue::String("gpt2"), StatusCode::kInvalidArgument,
                   "'gpt2' but the base model is 'llama'");
  ExpectKeyRefused("flotilla.adapter.version", GgufValue::U32(2), StatusCode::kUnimplemented,
                   "flotilla.adapter.version is 2");
  ExpectKeyRefused("adapter.lora.alpha", GgufValue::F32(std::numeric_limits<float>::infinity()),
                   StatusCode::kInvalidArgument, "adapter.lora.alpha is not finite");
  ExpectKeyRefused("adapter.lora.alpha", GgufValue::String("16"), StatusCode::kInvalidArgument, "adapter.lora.alpha");
}

TEST_F(AdapterFileTest, RefusesMissingOrMisshapenTensors) {
  EditableGguf e = editable_;
  e.Drop("blk.0.attn_q.weight.lora_b");
  ExpectRefused(e, StatusCode::kInvalidArgument, "'blk.0.attn_q.weight.lora_a' but no lora_b");

  // A/B stored untransposed (PEFT shapes read the wrong way round).
  e = editable_;
  e.Find("blk.0.attn_q.weight.lora_a").ne = {4, 64};
  ExpectRefused(e, StatusCode::kInvalidArgument, "incorrect shape (hint: maybe LoRA A/B are transposed)");
  e = editable_;
  e.Find("blk.1.attn_v.weight.lora_b").ne = {32, 4};
  ExpectRefused(e, StatusCode::kInvalidArgument, "incorrect shape");
  // lora_a and lora_b disagree on the rank: llama.cpp's "not transposed" rule.
  e = editable_;
  {
    EditableGguf::Tensor& a = e.Find("blk.0.attn_q.weight.lora_a");
    a.ne = {64, 2};
    a.data.resize(64 * 2 * 4);
  }
  ExpectRefused(e, StatusCode::kInvalidArgument, "lora_a tensor of 'blk.0.attn_q.weight' is not transposed");
  // A different rank in another matrix.
  e = editable_;
  {
    EditableGguf::Tensor& a = e.Find("blk.1.attn_q.weight.lora_a");
    EditableGguf::Tensor& b = e.Find("blk.1.attn_q.weight.lora_b");
    a.ne = {64, 2};
    a.data.resize(64 * 2 * 4);
    b.ne = {2, 64};
    b.data.resize(64 * 2 * 4);
  }
  ExpectRefused(e, StatusCode::kInvalidArgument, "adapter rank differs between matrices");
  // 3-D factor.
  e = editable_;
  e.Find("blk.0.attn_q.weight.lora_a").ne = {64, 4, 1};
  ExpectRefused(e, StatusCode::kInvalidArgument, "must be 2-D");
  e = editable_;
  e.tensors.push_back({"blk.0.attn_q.weight.extra", GgmlType::kF32, {4}, Bytes(16)});
  ExpectRefused(e, StatusCode::kInvalidArgument, "neither a .lora_a nor a .lora_b");
}

TEST_F(AdapterFileTest, RefusesQuantizedAndNonFiniteFactors) {
  EditableGguf e = editable_;
  {
    EditableGguf::Tensor& a = e.Find("blk.0.attn_q.weight.lora_a");  // ne = [64, 4]: Q8_0 fits
    std::vector<float> f(a.data.size() / 4);
    std::memcpy(f.data(), a.data.data(), a.data.size());
    Result<Bytes> q = QuantizeToBytes(GgmlType::kQ8_0, f);
    ASSERT_TRUE(q.ok());
    a.type = GgmlType::kQ8_0;
    a.data = std::move(*q);
  }
  ExpectRefused(e, StatusCode::kInvalidArgument, "must be f32 or f16");
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    e = editable_;
    std::memcpy(e.Find("blk.1.attn_v.weight.lora_b").data.data() + 4 * 7, &bad, 4);
    ExpectRefused(e, StatusCode::kInvalidArgument, "'blk.1.attn_v.weight.lora_b' has a non-finite value at element 7");
  }
}

TEST_F(AdapterFileTest, RefusesAdapterForAnotherBase) {
  // Hash recorded in the file differs from the base's.
  Result<LoraAdapter> r = LoadAdapter(path_, *base_, std::string(64, '0'));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("adapter is for base " + base_hash_ + ", this base is 0000"), std::string::npos)
      << r.status().ToString();
  // Same hash in upper case is the same base.
  std::string upper = base_hash_;
  std::transform(upper.begin(), upper.end(), upper.begin(), [](char c) { return static_cast<char>(std::toupper(c)); });
  EXPECT_TRUE(LoadAdapter(path_, *base_, upper).ok());

  // An adapter made for a deeper model adapts tensors this base does not have.
  ModelConfig deeper = base_->config();
  deeper.n_layers = 3;
  LoraAdapter big = MakeAdapter(deeper, Targets({Projection::kQ}), 1, 0.1f);
  const std::filesystem::path p = dir_.path() / "deeper.gguf";
  ASSERT_TRUE(SaveAdapter(big, p).ok());
  r = LoadAdapter(p, *base_);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("'blk.2.attn_q.weight.lora_a' adapts a tensor the base model does not have"),
            std::string::npos)
      << r.status().ToString();
  // A shallower one leaves layers uncovered.
  ModelConfig shallower = base_->config();
  shallower.n_layers = 1;
  ASSERT_TRUE(SaveAdapter(MakeAdapter(shallower, Targets({Projection::kQ}), 1, 0.1f), p).ok());
  r = LoadAdapter(p, *base_);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().ToString().find("'blk.1.attn_q.weight' is missing"), std::string::npos) << r.status().ToString();
  // A wider one has other shapes.
  ModelConfig wider = base_->config();
  wider.ffn_dim = 256;
  ASSERT_TRUE(SaveAdapter(MakeAdapter(wider, Targets({Projection::kUp}), 1, 0.1f), p).ok());
  r = LoadAdapter(p, *base_);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().ToString().find("incorrect shape"), std::string::npos) << r.status().ToString();
}

TEST_F(AdapterFileTest, RefusesInconsistentFlotillaMetadata) {
  // A frozen-A file whose A is not the seed's stream.
  EditableGguf e = editable_;
  e.Find("blk.1.attn_q.weight.lora_a").data[40] ^= 1;
  ExpectRefused(e, StatusCode::kInvalidArgument, "frozen-A tensor 'blk.1.attn_q.weight.lora_a' differs");
  ExpectKeyRefused("flotilla.adapter.a_seed", GgufValue::U64(6), StatusCode::kInvalidArgument,
                   "differs from the stream of seed 6");
  ExpectKeyRefused("flotilla.adapter.targets", GgufValue::String("q,k,v"), StatusCode::kInvalidArgument,
                   "says 'q,k,v' but the tensors adapt 'q,v'");
  ExpectKeyRefused("flotilla.adapter.frozen_a", GgufValue::U32(1), StatusCode::kInvalidArgument,
                   "flotilla.adapter.frozen_a");
  e = editable_;
  e.Remove("flotilla.adapter.a_seed");
  ExpectRefused(e, StatusCode::kInvalidArgument, "flotilla.adapter.a_seed is missing");
}

TEST_F(AdapterFileTest, RefusesAdaptingNonProjectionTensors) {
  EditableGguf e = editable_;
  e.tensors.push_back({"output_norm.weight.lora_a", GgmlType::kF32, {64, 4}, Bytes(64 * 4 * 4)});
  e.tensors.push_back({"output_norm.weight.lora_b", GgmlType::kF32, {4, 1}, Bytes(4 * 4)});
  ExpectRefused(e, StatusCode::kUnimplemented, "only the q, k, v, o, gate, up and down projections");
}

TEST_F(AdapterFileTest, TruncatedAndGarbageFilesGiveGgufErrors) {
  Result<Bytes> full = ReadFileBytes(path_);
  ASSERT_TRUE(full.ok());
  for (size_t keep : {size_t{0}, size_t{3}, size_t{24}, full->size() / 2, full->size() - 1}) {
    const std::filesystem::path p = dir_.path() / "trunc.gguf";
    ASSERT_TRUE(WriteFileAtomic(p, ByteSpan(full->data(), keep)).ok());
    Result<LoraAdapter> r = LoadAdapter(p, *base_);
    ASSERT_FALSE(r.ok()) << keep;
    EXPECT_NE(r.status().ToString().find("while loading adapter"), std::string::npos) << r.status().ToString();
  }
  Bytes garbage(4096);
  SplitMix64 rng(4);
  for (uint8_t& b : garbage) b = static_cast<uint8_t>(rng.Next());
  EXPECT_FALSE(ReadBytes(garbage).ok());
  EXPECT_EQ(LoadAdapter(dir_.path() / "nope.gguf", *base_).status().code(), StatusCode::kNotFound);
}

// ---- Merge ------------------------------------------------------------------------------

std::vector<std::vector<float>> AllLogits(const LlamaModel& m, const std::vector<int32_t>& tokens,
                                          ProjectionAdapter* adapter = nullptr) {
  InferenceOptions o;
  o.n_threads = 2;
  o.all_logits = true;
  Result<std::unique_ptr<InferenceSession>> s = InferenceSession::Create(m, o);
  FLT_CHECK_OK(s.status());
  (*s)->set_adapter(adapter);
  FLT_CHECK_OK((*s)->Eval(tokens));
  std::vector<std::vector<float>> out;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const auto l = (*s)->logits(static_cast<int64_t>(i));
    out.emplace_back(l.begin(), l.end());
  }
  return out;
}

DVec ToDouble(const std::vector<float>& v) { return DVec(v.begin(), v.end()); }

size_t ArgMax(std::span<const float> v) { return static_cast<size_t>(std::max_element(v.begin(), v.end()) - v.begin()); }

struct Agreement {
  double worst_rel = 0;  // max over positions of RelativeError
  double top1 = 0;       // fraction of positions with the same argmax
};
Agreement Compare(const std::vector<std::vector<float>>& got, const std::vector<std::vector<float>>& want) {
  Agreement a;
  size_t same = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    a.worst_rel = std::max(a.worst_rel, RelativeError(got[i], ToDouble(want[i])));
    same += ArgMax(got[i]) == ArgMax(want[i]) ? 1 : 0;
  }
  a.top1 = static_cast<double>(same) / static_cast<double>(got.size());
  return a;
}

TEST(MergeTest, F32MergeMatchesBasePlusAdaptersAndRequantizedMergeStaysClose) {
  TempDir dir = MakeDir();
  auto base = Load(ModelPath("train", "f32"));
  const ModelConfig& mc = base->config();
  // Two adapters, one on everything, one on attention; B large enough to move the logits.
  const LoraAdapter a1 = MakeAdapter(mc, Targets(kAll, 8, 16.0f, 1), 11, 0.05f);
  const LoraAdapter a2 = MakeAdapter(mc, Targets({Projection::kQ, Projection::kO}, 4, 4.0f, 2), 12, 0.05f);
  const std::vector<MergeInput> inputs = {{&a1, 0.8f}, {&a2, 1.5f}};
  LoraApplier applier;
  applier.Add(&a1, 0.8f);
  applier.Add(&a2, 1.5f);
  const std::vector<int32_t> tokens = TestTokens(mc.vocab_size, 64, 17);
  const auto plain = AllLogits(*base, tokens);
  const auto want = AllLogits(*base, tokens, &applier);
  ASSERT_GT(Compare(plain, want).worst_rel, 0.05);  // the adapters matter

  const std::filesystem::path f32 = dir.path() / "merged-f32.gguf";
  ASSERT_TRUE(MergeAdapters(*base, inputs, *NamedRecipe("f32"), f32).ok());
  auto merged = Load(f32);
  EXPECT_EQ(merged->name(), std::string(base->name()) + "+lora");
  const Agreement exact = Compare(AllLogits(*merged, tokens), want);
  // Only float rounding differs: W'x vs Wx + s·B(Ax).
  std::printf("merge f32: worst relative logit error %.2e\n", exact.worst_rel);
  EXPECT_LT(exact.worst_rel, 1e-4);
  EXPECT_EQ(exact.top1, 1.0);

  // Q8_0: compared with the F32 base+adapters. The bound is that of plain Q8_0
  // quantization of the same model (the merge adds nothing on top of it).
  const std::filesystem::path q8 = dir.path() / "merged-q8.gguf";
  ASSERT_TRUE(MergeAdapters(*base, inputs, *NamedRecipe("q8_0"), q8).ok());
  auto merged_q8 = Load(q8);
  EXPECT_EQ(merged_q8->TypeLabel(), "Q8_0");
  const Agreement q = Compare(AllLogits(*merged_q8, tokens), want);
  auto base_q8 = Load(ModelPath("train", "q8_0"));
  const Agreement q_base = Compare(AllLogits(*base_q8, tokens), plain);
  std::printf("merge q8_0: worst relative logit error %.4f (base alone quantized: %.4f), top-1 agreement %.3f\n",
              q.worst_rel, q_base.worst_rel, q.top1);
  // Stated bound: the inference tests' Q8_0 tolerance (6% of the logits' RMS) and at
  // most twice what quantizing the unadapted base costs; the argmax nearly always agrees.
  EXPECT_LT(q.worst_rel, 0.06);
  EXPECT_LT(q.worst_rel, 2 * q_base.worst_rel);
  EXPECT_GE(q.top1, 0.95);
}

TEST(MergeTest, UntouchedTensorsAreCopiedByteForByte) {
  TempDir dir = MakeDir();
  auto base = Load(ModelPath("tiny", "q8_0"));
  const LoraAdapter a = MakeAdapter(base->config(), Targets({Projection::kV, Projection::kDown}), 3, 0.05f);
  const std::vector<MergeInput> inputs = {{&a, 1.0f}};
  const std::filesystem::path out = dir.path() / "m.gguf";
  ASSERT_TRUE(MergeAdapters(*base, inputs, *NamedRecipe("q8_0"), out).ok());
  auto merged = Load(out);
  const GgufFile& in = base->file();
  const GgufFile& mf = merged->file();
  ASSERT_EQ(in.tensors().size(), mf.tensors().size());
  int changed = 0;
  for (const GgufTensor& t : in.tensors()) {
    const GgufTensor* m = mf.FindTensor(t.name);
    ASSERT_NE(m, nullptr) << t.name;
    EXPECT_EQ(m->type, t.type) << t.name;
    const bool adapted = t.name.find("attn_v") != std::string::npos || t.name.find("ffn_down") != std::string::npos;
    const bool same = m->n_bytes == t.n_bytes && std::memcmp(m->data, t.data, t.n_bytes) == 0;
    EXPECT_EQ(same, !adapted) << t.name;
    changed += adapted ? 1 : 0;
  }
  EXPECT_EQ(changed, 4);
  // Metadata carried over (tokenizer, hyperparameters).
  for (const auto& [key, value] : in.metadata()) {
    if (key == "general.name") continue;
    const GgufValue* v = mf.Find(key);
    ASSERT_NE(v, nullptr) << key;
    EXPECT_TRUE(*v == value) << key;
  }
  // A scale of 0 (or no adapter) reproduces the base tensors exactly.
  const std::vector<MergeInput> zero = {{&a, 0.0f}};
  ASSERT_TRUE(MergeAdapters(*base, zero, *NamedRecipe("q8_0"), out).ok());
  auto same = Load(out);
  for (const GgufTensor& t : in.tensors()) {
    const GgufTensor* m = same->file().FindTensor(t.name);
    ASSERT_NE(m, nullptr);
    EXPECT_EQ(std::memcmp(m->data, t.data, t.n_bytes), 0) << t.name;
  }
}

TEST(MergeTest, RefusesAdaptersThatDoNotFit) {
  TempDir dir = MakeDir();
  auto base = Load(ModelPath("tiny", "f32"));
  ModelConfig other = base->config();
  other.ffn_dim = 256;
  const LoraAdapter a = MakeAdapter(other, Targets({Projection::kUp}), 3, 0.05f);
  const std::vector<MergeInput> inputs = {{&a, 1.0f}};
  Status s = MergeAdapters(*base, inputs, *NamedRecipe("f32"), dir.path() / "x.gguf");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("does not fit"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "x.gguf"));
}

}  // namespace
}  // namespace flotilla::model
