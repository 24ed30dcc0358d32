// RunBench (model_bench.h): the pp/tg figures, with and without a LoRA adapter applied.
#include "flotilla/model/model_bench.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <optional>
#include <string>

#include "flotilla/core/file.h"
#include "flotilla/model/adapter_file.h"
#include "flotilla/model/lora.h"
#include "flotilla/model/model_config.h"
#include "flotilla/model/model_file.h"
#include "lora_test_util.h"

namespace flotilla::model {
namespace {

class ModelBenchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = TempDir::Create("model-bench");
    ASSERT_TRUE(d.ok());
    dir_.emplace(std::move(*d));
    path_ = (dir_->path() / "tiny.gguf").string();
    RandomModelOptions o;
    o.weight_type = GgmlType::kQ8_0;
    ASSERT_TRUE(WriteRandomModel(*NamedConfig("tiny"), o, path_).ok());
    auto m = LlamaModel::Open(path_);
    ASSERT_TRUE(m.ok());
    model_ = std::move(*m);
  }

  std::string WriteAdapter(const std::string& name, const std::string& base_hash) {
    LoraConfig lc;
    lc.rank = 4;
    lc.a_seed = 3;
    auto a = LoraAdapter::Create(model_->config(), lc);
    EXPECT_TRUE(a.ok());
    testing::FillRandomB(*a, 7, 0.5f);
    a->base_hash = base_hash;
    const std::string p = (dir_->path() / name).string();
    EXPECT_TRUE(SaveAdapter(*a, p).ok());
    return p;
  }

  std::optional<TempDir> dir_;
  std::string path_;
  std::unique_ptr<LlamaModel> model_;
};

TEST_F(ModelBenchTest, MeasuresWithAndWithoutAnAdapter) {
  BenchOptions o;
  o.n_prompt = 8;
  o.n_gen = 4;
  o.repetitions = 2;
  o.n_threads = 1;
  o.warmup = false;
  auto plain = RunBench(*model_, o);
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  ASSERT_EQ(plain->size(), 2u);
  EXPECT_EQ((*plain)[0].test, "pp8");
  EXPECT_EQ((*plain)[1].test, "tg4");
  EXPECT_FALSE((*plain)[0].with_adapter);

  auto hash = ModelFileSha256(path_);
  ASSERT_TRUE(hash.ok());
  o.adapter_path = WriteAdapter("a.gguf", *hash);
  o.adapter_scale = 0.5f;
  o.base_sha256 = *hash;
  auto with = RunBench(*model_, o);
  ASSERT_TRUE(with.ok()) << with.status().ToString();
  ASSERT_EQ(with->size(), 2u);
  for (const BenchResult& r : *with) {
    EXPECT_TRUE(r.with_adapter);
    ASSERT_EQ(r.tokens_per_second.size(), 2u);
    EXPECT_GT(r.median, 0.0);
  }
}

TEST_F(ModelBenchTest, RefusesAnAdapterForAnotherBaseOrAMissingFile) {
  BenchOptions o;
  o.n_prompt = 4;
  o.n_gen = 0;
  o.repetitions = 1;
  o.n_threads = 1;
  o.base_sha256 = std::string(64, 'a');
  o.adapter_path = WriteAdapter("other.gguf", std::string(64, 'b'));
  auto r = RunBench(*model_, o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition) << r.status().ToString();
  o.adapter_path = dir_->path() / "missing.gguf";
  r = RunBench(*model_, o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound) << r.status().ToString();
  o.adapter_path = WriteAdapter("ok.gguf", "");
  o.adapter_scale = std::nanf("");
  r = RunBench(*model_, o);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace flotilla::model
