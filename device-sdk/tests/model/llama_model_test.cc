#include "flotilla/model/llama_model.h"

#include <gtest/gtest.h>

#include "flotilla/model/kv_cache.h"
#include "inference_test_util.h"

namespace flotilla::model {
namespace {

using testing::CopyModel;
using testing::ModelPath;
using testing::TestDir;

Status LoadStatus(const std::filesystem::path& p) { return LlamaModel::Open(p).status(); }

// Writes a copy of the tiny model changed by `edit` and returns its load status.
Status LoadEdited(const std::string& name, const std::function<void(const GgufFile&, GgufWriter&)>& edit) {
  Result<std::unique_ptr<GgufFile>> in = GgufFile::Open(ModelPath("tiny", "q8_0"));
  FLT_CHECK_OK(in.status());
  GgufWriter w;
  edit(**in, w);
  const std::filesystem::path out = TestDir() / (name + ".gguf");
  FLT_CHECK_OK(w.WriteFile(out));
  return LoadStatus(out);
}

TEST(LlamaModelTest, LoadsConfigTokenizerAndZeroCopyWeights) {
  Result<std::unique_ptr<LlamaModel>> m = LlamaModel::Open(ModelPath("train", "q4_k-mixed"));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  const LlamaModel& model = **m;
  EXPECT_EQ(model.config().dim, 256);
  EXPECT_EQ(model.config().n_kv_heads, 4);
  EXPECT_TRUE(model.config().tied_output);
  EXPECT_EQ(model.tokenizer().vocab_size(), 512);
  EXPECT_EQ(model.TypeLabel(), "Q4_K_M");
  // Tied output: the output projection is token_embd itself (Q6_K in this recipe).
  EXPECT_EQ(model.output().data, model.token_embedding().data);
  EXPECT_EQ(model.output().type, GgmlType::kQ6_K);
  EXPECT_EQ(model.layer(0).wq.type, GgmlType::kQ4_K);
  // Weights point into the mapping: nothing copied.
  EXPECT_EQ(model.OwnedBytes(), 0u);
  const GgufTensor* q = model.file().FindTensor("blk.1.attn_q.weight");
  EXPECT_EQ(model.layer(1).wq.data, q->data);
  EXPECT_GT(model.DecodeWeightBytes(), 0u);
  EXPECT_LT(model.DecodeWeightBytes(), model.TensorBytes());
}

TEST(LlamaModelTest, EmbeddingLookupDequantizesTheRow) {
  for (const char* recipe : {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_k-mixed"}) {
    Result<std::unique_ptr<LlamaModel>> m = LlamaModel::Open(ModelPath("train", recipe));
    ASSERT_TRUE(m.ok()) << recipe;
    const testing::RefModel ref = testing::LoadRef((*m)->file());
    std::vector<float> row(256);
    (*m)->EmbedToken(300, row.data());
    for (size_t i = 0; i < row.size(); ++i) ASSERT_EQ(row[i], ref.embd[300 * 256 + i]) << recipe << " " << i;
  }
}

TEST(LlamaModelTest, Bf16MatricesAreWidenedOnce) {
  Result<std::unique_ptr<LlamaModel>> m = LlamaModel::Open(ModelPath("tiny", "bf16"));
  ASSERT_TRUE(m.ok());
  EXPECT_EQ((*m)->layer(0).wq.type, GgmlType::kF32);
  EXPECT_GT((*m)->OwnedBytes(), 0u);
}

TEST(LlamaModelTest, RefusesAMissingTensor) {
  Status s = LoadEdited("missing", [](const GgufFile& in, GgufWriter& w) {
    CopyModel(in, w, [](const GgufTensor& t) { return t.name != "blk.1.ffn_up.weight"; });
  });
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("blk.1.ffn_up.weight"), std::string::npos) << s.ToString();
}

TEST(LlamaModelTest, RefusesAWrongShape) {
  Status s = LoadEdited("shape", [](const GgufFile& in, GgufWriter& w) {
    CopyModel(in, w, [](const GgufTensor& t) { return t.name != "blk.0.attn_k.weight"; });
    // [64, 64] instead of [64, 32] (2 KV heads x 16).
    const int64_t ne[] = {64, 64};
    FLT_CHECK_OK(w.AddTensor("blk.0.attn_k.weight", GgmlType::kF32, ne, Bytes(64 * 64 * 4)));
  });
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("blk.0.attn_k.weight"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("expected [64, 32]"), std::string::npos) << s.ToString();
}

TEST(LlamaModelTest, RefusesUnsupportedTensorTypes) {
  Status s = LoadEdited("q4_1", [](const GgufFile& in, GgufWriter& w) {
    CopyModel(in, w, [](const GgufTensor& t) { return t.name != "blk.0.ffn_gate.weight"; });
    const int64_t ne[] = {64, 128};
    FLT_CHECK_OK(w.AddTensor("blk.0.ffn_gate.weight", GgmlType::kQ4_1, ne, Bytes(128 * 2 * 20)));
  });
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("blk.0.ffn_gate.weight"), std::string::npos) << s.ToString();

  s = LoadEdited("norm_q8", [](const GgufFile& in, GgufWriter& w) {
    CopyModel(in, w, [](const GgufTensor& t) { return t.name != "output_norm.weight"; });
    const int64_t ne[] = {64};
    FLT_CHECK_OK(w.AddTensor("output_norm.weight", GgmlType::kQ8_0, ne, Bytes(2 * 34)));
  });
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("output_norm.weight"), std::string::npos) << s.ToString();
}

TEST(LlamaModelTest, RefusesBadMetadata) {
  Status s = LoadEdited("arch", [](const GgufFile& in, GgufWriter& w) {
    CopyModel(in, w);
    w.SetString("general.architecture", "gpt2");
  });
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  s = LoadEdited("heads", [](const GgufFile& in, GgufWriter& w) {
    CopyModel(in, w);
    w.SetU32("llama.attention.head_count_kv", 3);  // does not divide 4 heads
  });
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  s = LoadEdited("no_tokens", [](const GgufFile& in, GgufWriter& w) {
    CopyModel(in, w);
    w.Remove("tokenizer.ggml.tokens");
  });
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(LoadStatus(TestDir() / "does-not-exist.gguf").code(), StatusCode::kNotFound);
}

TEST(KvCacheTest, LayoutAndLimits) {
  Result<std::unique_ptr<KvCache>> c = KvCache::Create(2, 8, 4);
  ASSERT_TRUE(c.ok());
  KvCache& kv = **c;
  EXPECT_EQ(kv.bytes(), 2u * 2 * 8 * 4 * sizeof(float));
  EXPECT_EQ(kv.k(1, 3) - kv.k(0, 0), (1 * 8 + 3) * 4);
  EXPECT_EQ(kv.v_t(1) - kv.v_t(0), 8 * 4);
  for (int i = 0; i < 8 * 4; ++i) EXPECT_EQ(kv.v_t(1)[i], 0.0f);  // zeroed values
  kv.set_size(5);
  EXPECT_EQ(kv.size(), 5);
  kv.Clear();
  EXPECT_EQ(kv.size(), 0);
  // Value rows are padded to a multiple of 8 positions.
  Result<std::unique_ptr<KvCache>> odd = KvCache::Create(2, 12, 4);
  ASSERT_TRUE(odd.ok());
  EXPECT_EQ((*odd)->v_stride(), 16);
  EXPECT_EQ((*odd)->v_t(1) - (*odd)->v_t(0), 16 * 4);
  EXPECT_EQ((*odd)->bytes(), 2u * 4 * (12 + 16) * sizeof(float));
  EXPECT_EQ(KvCache::Create(0, 8, 4).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(KvCache::Create(1000, 1 << 20, 4096).status().code(), StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace flotilla::model
