#include "flotilla/model/model_config.h"

#include <gtest/gtest.h>

#include <cmath>

#include "flotilla/core/file.h"
#include "flotilla/model/model_file.h"
#include "flotilla/model/quant.h"
#include "flotilla/model/tensor_types.h"
#include "flotilla/model/tokenizer.h"

namespace flotilla::model {
namespace {

TEST(ModelConfigTest, NamedConfigsMatchIssue3) {
  const ModelConfig tiny = *NamedConfig("tiny");
  EXPECT_EQ(tiny.dim, 64);
  EXPECT_EQ(tiny.n_layers, 2);
  EXPECT_EQ(tiny.n_heads, 4);
  EXPECT_EQ(tiny.n_kv_heads, 2);
  EXPECT_EQ(tiny.ffn_dim, 128);
  EXPECT_EQ(tiny.vocab_size, 259);
  EXPECT_EQ(tiny.context_length, 64);
  const ModelConfig train = *NamedConfig("train");
  EXPECT_EQ(train.head_dim(), 32);
  EXPECT_EQ(train.kv_dim(), 128);
  EXPECT_EQ(NamedConfig("15m")->ffn_dim, 768);
  EXPECT_EQ(NamedConfig("110m")->context_length, 1024);
  EXPECT_EQ(NamedConfig("7b").status().code(), StatusCode::kNotFound);
  for (std::string_view n : NamedConfigNames()) EXPECT_TRUE(NamedConfig(n)->Validate().ok()) << n;
  // stories15M: 15.19M parameters with a tied classifier (llama2.c README).
  EXPECT_NEAR(static_cast<double>(NamedConfig("15m")->ParameterCount()), 15.19e6, 0.01e6);
  ModelConfig bad = tiny;
  bad.n_kv_heads = 3;
  EXPECT_FALSE(bad.Validate().ok());
}

TEST(ModelConfigTest, TensorNamesAndShapes) {
  EXPECT_EQ(LayerTensorName(3, LlamaTensor::kAttnQ), "blk.3.attn_q.weight");
  EXPECT_EQ(LayerTensorName(0, LlamaTensor::kFfnDown), "blk.0.ffn_down.weight");
  ModelConfig c = *NamedConfig("tiny");
  std::vector<TensorSpec> specs = LlamaTensorSpecs(c);
  ASSERT_EQ(specs.size(), 1u + 2u * 9u + 1u);  // tied: no output.weight
  EXPECT_EQ(specs[0].ne, (std::vector<int64_t>{64, 259}));
  EXPECT_EQ(specs[3].name, "blk.0.attn_k.weight");
  EXPECT_EQ(specs[3].ne, (std::vector<int64_t>{64, 32}));
  EXPECT_EQ(specs[9].ne, (std::vector<int64_t>{128, 64}));  // ffn_down [n_ff, n_embd]
  c.tied_output = false;
  EXPECT_EQ(LlamaTensorSpecs(c).back().name, "output.weight");
}

TEST(ModelConfigTest, QKPermutationMatchesConvertScript) {
  // One head, head_dim 4, one input column: HF rows [r0 r1 | r2 r3] (rotate-half) become
  // adjacent pairs (r0, r2), (r1, r3).
  const float hf[] = {10, 11, 12, 13};
  float llama[4];
  PermuteQKHfToLlama(hf, llama, 1, 1);
  EXPECT_EQ(std::vector<float>(llama, llama + 4), (std::vector<float>{10, 12, 11, 13}));
  // Two heads of head_dim 2 are unchanged (pairs already adjacent); rows keep columns.
  const float two[] = {1, 2, 3, 4, 5, 6, 7, 8};
  float out[8];
  PermuteQKHfToLlama(two, out, 2, 2);
  EXPECT_EQ(std::vector<float>(out, out + 8), std::vector<float>(two, two + 8));
  // Inverse on a bigger matrix.
  std::vector<float> m(8 * 16 * 3);
  for (size_t i = 0; i < m.size(); ++i) m[i] = static_cast<float>(i);
  std::vector<float> p(m.size()), back(m.size());
  PermuteQKHfToLlama(m, p, 8, 3);
  EXPECT_NE(p, m);
  PermuteQKLlamaToHf(p, back, 8, 3);
  EXPECT_EQ(back, m);
}

TEST(ModelFileTest, RandomModelIsDeterministicAndReadable) {
  const ModelConfig c = *NamedConfig("tiny");
  GgufWriter a, b, other;
  ASSERT_TRUE(BuildRandomModel(c, {.seed = 5}, a).ok());
  ASSERT_TRUE(BuildRandomModel(c, {.seed = 5}, b).ok());
  ASSERT_TRUE(BuildRandomModel(c, {.seed = 6}, other).ok());
  const Bytes ba = *a.WriteToBuffer();
  EXPECT_EQ(ba, *b.WriteToBuffer());
  EXPECT_NE(ba, *other.WriteToBuffer());
  auto f = GgufFile::OpenFromMemory(ba);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  auto cfg = ReadLlamaConfig(**f);
  ASSERT_TRUE(cfg.ok()) << cfg.status().ToString();
  EXPECT_EQ(cfg->dim, c.dim);
  EXPECT_EQ(cfg->n_kv_heads, 2);
  EXPECT_EQ(cfg->vocab_size, 259);
  EXPECT_TRUE(cfg->tied_output);
  EXPECT_FLOAT_EQ(cfg->rms_eps, 1e-5f);
  EXPECT_TRUE(CheckLlamaTensors(*cfg, **f).ok());
  EXPECT_EQ(*(*f)->GetU32("general.file_type"), 0u);
  EXPECT_EQ((*f)->Find("general.quantization_version"), nullptr);  // F32: not quantized
  EXPECT_EQ(*(*f)->GetString("tokenizer.ggml.model"), "llama");
  // Tensor values are the documented generator's.
  const TensorSpec spec = LlamaTensorSpecs(c)[2];
  const GgufTensor* t = (*f)->FindTensor(spec.name);
  ASSERT_NE(t, nullptr);
  std::vector<float> want = RandomTensorValues(spec, 5);
  EXPECT_EQ(*DequantizeToFloats(GgmlType::kF32, t->bytes(), t->n_elements), want);
  EXPECT_TRUE(Tokenizer::FromGguf(**f).ok());
}

TEST(ModelFileTest, ReadConfigRejectsMissingKeysAndWrongShapes) {
  GgufWriter w;
  w.SetString("general.architecture", "gpt2");
  auto f = *GgufFile::OpenFromMemory(*w.WriteToBuffer());
  EXPECT_FALSE(ReadLlamaConfig(*f).ok());
  GgufWriter w2;
  WriteLlamaConfig(*NamedConfig("tiny"), w2);
  w2.Remove("llama.block_count");
  Bytes b2 = *w2.WriteToBuffer();
  auto f2 = *GgufFile::OpenFromMemory(b2);
  EXPECT_NE(ReadLlamaConfig(*f2).status().message().find("block_count"), std::string::npos);
  // Counts stored as u64 are accepted too.
  GgufWriter w3;
  WriteLlamaConfig(*NamedConfig("tiny"), w3);
  w3.Set("llama.block_count", GgufValue::U64(2));
  Bytes b3 = *w3.WriteToBuffer();
  auto f3 = *GgufFile::OpenFromMemory(b3);
  auto c3 = ReadLlamaConfig(*f3);
  ASSERT_TRUE(c3.ok()) << c3.status().ToString();
  EXPECT_EQ(c3->n_layers, 2);
  ModelConfig wrong = *c3;
  wrong.ffn_dim = 96;
  GgufWriter w4;
  ASSERT_TRUE(BuildRandomModel(*NamedConfig("tiny"), {}, w4).ok());
  Bytes b4 = *w4.WriteToBuffer();
  auto f4 = *GgufFile::OpenFromMemory(b4);
  EXPECT_NE(CheckLlamaTensors(wrong, *f4).message().find("ffn_gate"), std::string::npos);
}

TEST(ModelFileTest, QuantizeRecipesPickTypesAndKeepValuesClose) {
  auto dir = *TempDir::Create("model_file_test");
  ModelConfig c = *NamedConfig("tiny");
  c.tied_output = false;
  const auto f32_path = dir.path() / "f32.gguf";
  ASSERT_TRUE(WriteRandomModel(c, {.seed = 9}, f32_path).ok());
  auto in = *GgufFile::Open(f32_path);
  struct Case {
    const char* recipe;
    GgmlType q;
    GgmlType embd;
    uint32_t file_type;
  };
  // tiny's rows (64, 128) are not multiples of 256: q4_k-mixed falls back to Q8_0.
  for (const Case& k : {Case{"q8_0", GgmlType::kQ8_0, GgmlType::kQ8_0, 7}, Case{"q4_0", GgmlType::kQ4_0, GgmlType::kQ4_0, 2},
                        Case{"q4_0-mixed", GgmlType::kQ4_0, GgmlType::kQ8_0, 2},
                        Case{"q4_k-mixed", GgmlType::kQ8_0, GgmlType::kQ8_0, 15}, Case{"f16", GgmlType::kF16, GgmlType::kF16, 1}}) {
    const auto out = dir.path() / (std::string(k.recipe) + ".gguf");
    ASSERT_TRUE(QuantizeModel(*in, *NamedRecipe(k.recipe), out).ok()) << k.recipe;
    auto q = *GgufFile::Open(out);
    EXPECT_EQ(q->FindTensor("blk.1.attn_q.weight")->type, k.q) << k.recipe;
    EXPECT_EQ(q->FindTensor("token_embd.weight")->type, k.embd) << k.recipe;
    EXPECT_EQ(q->FindTensor("output.weight")->type, k.embd) << k.recipe;
    EXPECT_EQ(q->FindTensor("blk.0.attn_norm.weight")->type, GgmlType::kF32);
    EXPECT_EQ(*q->GetU32("general.file_type"), k.file_type);
    EXPECT_EQ(q->Find("general.quantization_version") != nullptr, k.q != GgmlType::kF16) << k.recipe;
    EXPECT_TRUE(ReadLlamaConfig(*q).ok());
    const GgufTensor* t = q->FindTensor("blk.0.ffn_down.weight");
    const GgufTensor* ref = in->FindTensor("blk.0.ffn_down.weight");
    std::vector<float> a = *DequantizeToFloats(t->type, t->bytes(), t->n_elements);
    std::vector<float> b = *DequantizeToFloats(ref->type, ref->bytes(), ref->n_elements);
    double max_err = 0;
    for (size_t i = 0; i < a.size(); ++i) max_err = std::max(max_err, static_cast<double>(std::fabs(a[i] - b[i])));
    EXPECT_LT(max_err, 0.02) << k.recipe;  // weights are within +-1/sqrt(128)
  }
  // Q4_K rows need multiples of 256: the train config's ffn_down rows (768) qualify.
  EXPECT_FALSE(NamedRecipe("q3_k").ok());
  EXPECT_FALSE(WriteRandomModel(c, {.weight_type = GgmlType::kQ4_K}, dir.path() / "x.gguf").ok());
}

}  // namespace
}  // namespace flotilla::model
