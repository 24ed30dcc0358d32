// DenseLlamaWeights: seeded init statistics, dequantized copies of loaded models, and
// F32 GGUF files that LlamaModel::Open loads back exactly.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "flotilla/core/file.h"
#include "flotilla/model/llama_model.h"
#include "flotilla/model/model_config.h"
#include "flotilla/model/model_file.h"
#include "flotilla/model/quant.h"
#include "flotilla/model/train.h"

namespace flotilla::model {
namespace {

std::filesystem::path TestPath(const std::string& name) {
  static TempDir dir = std::move(TempDir::Create("dense_weights_test").value());
  return dir.path() / name;
}

ModelConfig SmallConfig() {
  ModelConfig c = NamedConfig("tiny").value();
  c.vocab_size = 300;  // SyntheticVocabulary sizes are >= 259
  return c;
}

struct Stats {
  double mean = 0, std = 0, max_abs = 0;
};
Stats Describe(std::span<const float> v) {
  Stats s;
  for (float x : v) s.mean += static_cast<double>(x);
  s.mean /= static_cast<double>(v.size());
  for (float x : v) {
    s.std += (static_cast<double>(x) - s.mean) * (static_cast<double>(x) - s.mean);
    s.max_abs = std::max(s.max_abs, std::abs(static_cast<double>(x)));
  }
  s.std = std::sqrt(s.std / static_cast<double>(v.size()));
  return s;
}

TEST(DenseWeightsTest, InitHasEveryTensorWithTheDocumentedStatistics) {
  ModelConfig c = NamedConfig("train").value();
  Result<std::unique_ptr<DenseLlamaWeights>> w = DenseLlamaWeights::Init(c, 5);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  const std::vector<TensorSpec> specs = LlamaTensorSpecs(c);
  ASSERT_EQ((*w)->names().size(), specs.size());
  int64_t total = 0;
  const double residual = 0.02 / std::sqrt(2.0 * static_cast<double>(c.n_layers));
  for (size_t i = 0; i < specs.size(); ++i) {
    EXPECT_EQ((*w)->names()[i], specs[i].name);
    std::span<const float> t = (*w)->Tensor(specs[i].name);
    int64_t n = 1;
    for (int64_t d : specs[i].ne) n *= d;
    ASSERT_EQ(static_cast<int64_t>(t.size()), n) << specs[i].name;
    total += n;
    const Stats s = Describe(t);
    if (specs[i].is_norm) {
      EXPECT_EQ(s.mean, 1.0) << specs[i].name;
      EXPECT_EQ(s.std, 0.0) << specs[i].name;
      continue;
    }
    const bool is_residual = specs[i].name.find("attn_output") != std::string::npos ||
                             specs[i].name.find("ffn_down") != std::string::npos;
    const double want = is_residual ? residual : 0.02;
    EXPECT_NEAR(s.std, want, 0.03 * want) << specs[i].name;
    EXPECT_NEAR(s.mean, 0.0, 0.05 * want) << specs[i].name;
    EXPECT_LE(s.max_abs, want * std::sqrt(3.0) * 1.0001) << specs[i].name;  // uniform bound
  }
  EXPECT_EQ(total, c.ParameterCount());
  EXPECT_TRUE((*w)->Tensor("blk.9.attn_q.weight").empty());
  EXPECT_EQ((*w)->config().dim, c.dim);
}

TEST(DenseWeightsTest, InitIsDeterministicPerSeedAndPerTensor) {
  const ModelConfig c = SmallConfig();
  auto a = std::move(DenseLlamaWeights::Init(c, 1).value());
  auto b = std::move(DenseLlamaWeights::Init(c, 1).value());
  auto other = std::move(DenseLlamaWeights::Init(c, 2).value());
  for (const std::string& name : a->names()) {
    const std::span<const float> ta = a->Tensor(name), tb = b->Tensor(name), to = other->Tensor(name);
    EXPECT_TRUE(std::equal(ta.begin(), ta.end(), tb.begin())) << name;
    if (name.find("norm") == std::string::npos) {
      EXPECT_FALSE(std::equal(ta.begin(), ta.end(), to.begin())) << name;
    }
  }
  // A tensor's values do not depend on the rest of the model: one more layer keeps layer 0.
  ModelConfig deeper = c;
  deeper.n_layers += 1;
  auto d = std::move(DenseLlamaWeights::Init(deeper, 1).value());
  const std::span<const float> q0 = a->Tensor("blk.0.attn_q.weight"), dq0 = d->Tensor("blk.0.attn_q.weight");
  EXPECT_TRUE(std::equal(q0.begin(), q0.end(), dq0.begin()));
  // Distinct tensors of one model are not copies of each other.
  const std::span<const float> k0 = a->Tensor("blk.0.attn_k.weight");
  EXPECT_FALSE(std::equal(k0.begin(), k0.end(), q0.begin()));
}

TEST(DenseWeightsTest, InitRefusesAnInvalidConfig) {
  ModelConfig c = SmallConfig();
  c.n_heads = 3;  // dim 64 not divisible
  EXPECT_EQ(DenseLlamaWeights::Init(c, 1).status().code(), StatusCode::kInvalidArgument);
}

TEST(DenseWeightsTest, SaveWritesAnF32ModelThatLoadsBackExactly) {
  for (bool tied : {true, false}) {
    ModelConfig c = SmallConfig();
    c.tied_output = tied;
    auto w = std::move(DenseLlamaWeights::Init(c, 3).value());
    // Make norms non-trivial so a mix-up would show.
    std::span<float> norm = w->Tensor("blk.1.ffn_norm.weight");
    for (size_t i = 0; i < norm.size(); ++i) norm[i] = 0.5f + static_cast<float>(i) * 0.01f;
    const Vocabulary vocab = SyntheticVocabulary(c.vocab_size).value();
    const std::filesystem::path path = TestPath(tied ? "tied.gguf" : "untied.gguf");
    ASSERT_TRUE(w->Save(path, vocab, "dense-test").ok());

    Result<std::unique_ptr<LlamaModel>> m = LlamaModel::Open(path);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    EXPECT_EQ((*m)->name(), "dense-test");
    EXPECT_EQ((*m)->config().dim, c.dim);
    EXPECT_EQ((*m)->config().n_kv_heads, c.n_kv_heads);
    EXPECT_EQ((*m)->config().tied_output, tied);
    EXPECT_EQ((*m)->tokenizer().vocab_size(), c.vocab_size);
    EXPECT_EQ((*m)->TypeLabel(), "F32");
    EXPECT_EQ((*m)->layer(1).ffn_norm[3], norm[3]);
    // The engine's own view of the weights agrees value for value.
    std::vector<float> row(static_cast<size_t>(c.dim));
    (*m)->EmbedToken(123, row.data());
    const std::span<const float> embd = w->Tensor(kTokenEmbdName);
    EXPECT_TRUE(std::equal(row.begin(), row.end(), embd.begin() + 123 * c.dim));

    auto back = std::move(DenseLlamaWeights::FromModel(**m).value());
    ASSERT_EQ(back->names(), w->names());
    for (const std::string& name : w->names()) {
      const std::span<const float> a = w->Tensor(name), b = back->Tensor(name);
      ASSERT_EQ(a.size(), b.size());
      EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << name;
    }
  }
}

TEST(DenseWeightsTest, SaveRefusesAVocabularyOfTheWrongSize) {
  const ModelConfig c = SmallConfig();
  auto w = std::move(DenseLlamaWeights::Init(c, 3).value());
  const Status s = w->Save(TestPath("bad.gguf"), SyntheticVocabulary(c.vocab_size + 1).value(), "x");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("vocab_size"), std::string::npos) << s.ToString();
  EXPECT_FALSE(std::filesystem::exists(TestPath("bad.gguf")));
}

TEST(DenseWeightsTest, FromModelDequantizesWithTheReferenceDequantizers) {
  const ModelConfig c = SmallConfig();
  for (GgmlType type : {GgmlType::kQ8_0, GgmlType::kQ4_0, GgmlType::kF16}) {
    RandomModelOptions ro;
    ro.seed = 9;
    ro.weight_type = type;
    const std::filesystem::path path = TestPath("random.gguf");
    ASSERT_TRUE(WriteRandomModel(c, ro, path).ok());
    auto m = std::move(LlamaModel::Open(path).value());
    auto w = std::move(DenseLlamaWeights::FromModel(*m).value());
    for (const TensorSpec& spec : LlamaTensorSpecs(c)) {
      const GgufTensor* t = m->file().FindTensor(spec.name);
      ASSERT_NE(t, nullptr);
      const std::span<const float> got = w->Tensor(spec.name);
      ASSERT_EQ(static_cast<int64_t>(got.size()), t->n_elements);
      // Row by row through the block-level reference functions.
      std::vector<float> want(got.size());
      if (t->type == GgmlType::kQ8_0) {
        DequantizeRowQ8_0(reinterpret_cast<const BlockQ8_0*>(t->data), want.data(), t->n_elements);
      } else if (t->type == GgmlType::kQ4_0) {
        DequantizeRowQ4_0(reinterpret_cast<const BlockQ4_0*>(t->data), want.data(), t->n_elements);
      } else {
        ASSERT_TRUE(Dequantize(t->type, t->bytes(), want).ok());
      }
      EXPECT_EQ(std::memcmp(want.data(), got.data(), want.size() * sizeof(float)), 0) << spec.name;
      // And close to the values the file was made from (quantization error only).
      const std::vector<float> orig = RandomTensorValues(spec, ro.seed);
      double err = 0, mag = 0;
      for (size_t i = 0; i < orig.size(); ++i) {
        err = std::max(err, std::abs(static_cast<double>(orig[i] - got[i])));
        mag = std::max(mag, std::abs(static_cast<double>(orig[i])));
      }
      EXPECT_LE(err, (type == GgmlType::kQ4_0 ? 0.15 : 0.01) * mag) << spec.name;
    }
  }
}

}  // namespace
}  // namespace flotilla::model
