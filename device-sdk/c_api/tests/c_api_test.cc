#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "flotilla/core/file.h"
#include "flotilla/flotilla.h"
#include "flotilla/flotilla.hpp"
#include "flotilla/model/adapter_file.h"
#include "flotilla/model/inference.h"
#include "flotilla/model/lora.h"
#include "flotilla/model/model_file.h"

namespace {

using flotilla::TempDir;

class CApiTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto dir = TempDir::Create("flotilla-capi");
    ASSERT_TRUE(dir.ok());
    dir_ = new TempDir(std::move(*dir));
    path_ = (dir_->path() / "tiny.gguf").string();
    auto config = flotilla::model::NamedConfig("tiny");
    flotilla::model::RandomModelOptions o;
    o.seed = 5;
    o.weight_type = flotilla::model::GgmlType::kQ8_0;
    ASSERT_TRUE(flotilla::model::WriteRandomModel(*config, o, path_).ok());
  }
  static void TearDownTestSuite() { delete dir_; }

  static flt::ModelPtr Load() {
    flt_status s;
    flt::ModelPtr m = flt::LoadModel(path_.c_str(), nullptr, &s);
    EXPECT_EQ(s, FLT_OK) << flt_last_error();
    return m;
  }

  static TempDir* dir_;
  static std::string path_;
};
TempDir* CApiTest::dir_ = nullptr;
std::string CApiTest::path_;

TEST_F(CApiTest, StatusStringsAndDefaults) {
  EXPECT_STREQ(flt_status_string(FLT_OK), "ok");
  EXPECT_STREQ(flt_status_string(FLT_ERR_CONTEXT_FULL), "context full");
  EXPECT_STREQ(flt_status_string(static_cast<flt_status>(99)), "unknown status");
  const flt_model_params mp = flt_model_default_params();
  EXPECT_EQ(mp.n_threads, 0);
  EXPECT_EQ(mp.cpu_path, nullptr);
  const flt_generate_params gp = flt_generate_default_params();
  EXPECT_GT(gp.max_tokens, 0);
  EXPECT_EQ(gp.use_seed, 0);
}

TEST_F(CApiTest, LoadFailuresHaveCodesAndMessages) {
  flt_model* m = reinterpret_cast<flt_model*>(0x1);
  EXPECT_EQ(flt_model_load("/nonexistent/model.gguf", nullptr, &m), FLT_ERR_NOT_FOUND);
  EXPECT_EQ(m, nullptr);
  EXPECT_NE(std::string(flt_last_error()).find("/nonexistent/model.gguf"), std::string::npos) << flt_last_error();
  EXPECT_EQ(flt_model_load(nullptr, nullptr, &m), FLT_ERR_INVALID_ARGUMENT);
  const std::string garbage = (dir_->path() / "garbage.gguf").string();
  ASSERT_TRUE(flotilla::WriteFileAtomic(garbage, std::string("not a gguf file at all")).ok());
  EXPECT_EQ(flt_model_load(garbage.c_str(), nullptr, &m), FLT_ERR_INVALID_ARGUMENT);
  flt_model_params p = flt_model_default_params();
  p.cpu_path = "no-such-path";
  EXPECT_EQ(flt_model_load(path_.c_str(), &p, &m), FLT_ERR_INVALID_ARGUMENT);
  p = flt_model_default_params();
  p.n_ctx = 100000;  // tiny's context is 64
  EXPECT_EQ(flt_model_load(path_.c_str(), &p, &m), FLT_ERR_INVALID_ARGUMENT);
  flt_model_free(nullptr);
}

TEST_F(CApiTest, TokenizeIntoACallerBuffer) {
  flt::ModelPtr m = Load();
  EXPECT_EQ(flt_model_vocab_size(m.get()), 259);
  EXPECT_EQ(flt_model_n_ctx(m.get()), 64);
  size_t n = 0;
  // Size query, then the real call. Byte vocabulary: BOS + one token per byte.
  EXPECT_EQ(flt_model_tokenize(m.get(), "hello", 5, 1, nullptr, 0, &n), FLT_ERR_BUFFER_TOO_SMALL);
  EXPECT_EQ(n, 6u);
  std::vector<int32_t> ids(n);
  ASSERT_EQ(flt_model_tokenize(m.get(), "hello", 5, 1, ids.data(), ids.size(), &n), FLT_OK);
  EXPECT_EQ(ids, (std::vector<int32_t>{1, 'h' + 3, 'e' + 3, 'l' + 3, 'l' + 3, 'o' + 3}));
  int32_t small[3] = {-1, -1, -1};
  EXPECT_EQ(flt_model_tokenize(m.get(), "hello", 5, 0, small, 3, &n), FLT_ERR_BUFFER_TOO_SMALL);
  EXPECT_EQ(n, 5u);
  EXPECT_EQ(small[2], 'l' + 3);
  EXPECT_EQ(flt_model_tokenize(nullptr, "x", 1, 0, small, 3, &n), FLT_ERR_INVALID_ARGUMENT);
}

struct Collected {
  std::vector<int32_t> tokens;
  std::string text;
  size_t stop_after = 0;  // 0: never stop
};

int Collect(int32_t token, const char* piece, size_t len, void* user) {
  auto* c = static_cast<Collected*>(user);
  c->tokens.push_back(token);
  c->text.append(piece, len);
  return c->stop_after != 0 && c->tokens.size() >= c->stop_after ? 1 : 0;
}

TEST_F(CApiTest, GenerateMatchesTheLibraryAndStreamsTokens) {
  flt::ModelPtr m = Load();
  flt_generate_params gp = flt_generate_default_params();
  gp.temperature = 0.0f;
  gp.max_tokens = 12;
  gp.stop_at_eos = 0;
  char text[256];
  size_t len = 0;
  Collected c;
  flt_generate_stats stats{};
  const std::string prompt = "Fleet";
  ASSERT_EQ(flt_model_generate(m.get(), prompt.data(), prompt.size(), &gp, text, sizeof text, &len, Collect, &c, &stats),
            FLT_OK)
      << flt_last_error();
  EXPECT_EQ(stats.generated_tokens, 12);
  EXPECT_EQ(stats.prompt_tokens, 6);
  EXPECT_EQ(stats.stop_reason, FLT_STOP_MAX_TOKENS);
  EXPECT_EQ(c.tokens.size(), 12u);
  EXPECT_EQ(std::string(text, len), c.text);
  EXPECT_EQ(std::strlen(text), len);

  // The same through the C++ library.
  auto model = flotilla::model::LlamaModel::Open(path_);
  ASSERT_TRUE(model.ok());
  auto session = flotilla::model::InferenceSession::Create(**model);
  flotilla::model::SamplerParams sp;
  sp.temperature = 0.0f;
  auto sampler = flotilla::model::Sampler::Create(sp, 259);
  flotilla::model::GenerateOptions go;
  go.max_tokens = 12;
  go.stop_at_eos = false;
  auto r = flotilla::model::Generate(**session, **sampler, (*model)->tokenizer().Encode(prompt, true), go);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->tokens, c.tokens);

  // A second call starts a fresh sequence: same output.
  Collected again;
  ASSERT_EQ(flt_model_generate(m.get(), prompt.data(), prompt.size(), &gp, text, sizeof text, &len, Collect, &again,
                               nullptr),
            FLT_OK);
  EXPECT_EQ(again.tokens, c.tokens);
}

TEST_F(CApiTest, CallbackStopsAndSmallBuffersTruncateCleanly) {
  flt::ModelPtr m = Load();
  flt_generate_params gp = flt_generate_default_params();
  gp.use_seed = 1;
  gp.seed = 3;
  gp.max_tokens = 20;
  gp.stop_at_eos = 0;
  char text[64];
  size_t len = 0;
  Collected c;
  c.stop_after = 4;
  flt_generate_stats stats{};
  ASSERT_EQ(flt_model_generate(m.get(), "a", 1, &gp, text, sizeof text, &len, Collect, &c, &stats), FLT_OK);
  EXPECT_EQ(stats.stop_reason, FLT_STOP_CALLBACK);
  EXPECT_EQ(stats.generated_tokens, 4);

  // 3 bytes of room: at most 2 one-byte pieces + NUL, then BUFFER_TOO_SMALL.
  char tiny[3] = {'x', 'x', 'x'};
  Collected d;
  EXPECT_EQ(flt_model_generate(m.get(), "a", 1, &gp, tiny, sizeof tiny, &len, Collect, &d, &stats),
            FLT_ERR_BUFFER_TOO_SMALL);
  EXPECT_EQ(stats.stop_reason, FLT_STOP_BUFFER_FULL);
  EXPECT_LE(len, 2u);
  EXPECT_EQ(tiny[len], '\0');
  EXPECT_EQ(d.text, std::string(tiny, len));

  // Streaming only: no text buffer at all.
  Collected e;
  ASSERT_EQ(flt_model_generate(m.get(), "a", 1, &gp, nullptr, 0, &len, Collect, &e, &stats), FLT_OK);
  EXPECT_EQ(stats.generated_tokens, 20);
  EXPECT_EQ(e.tokens.size(), 20u);
  EXPECT_EQ(len, 0u);

  // A prompt longer than the context.
  const std::string long_prompt(100, 'z');
  EXPECT_EQ(flt_model_generate(m.get(), long_prompt.data(), long_prompt.size(), &gp, text, sizeof text, &len, nullptr,
                               nullptr, nullptr),
            FLT_ERR_CONTEXT_FULL);
  EXPECT_EQ(flt_model_generate(nullptr, "a", 1, &gp, text, sizeof text, &len, nullptr, nullptr, nullptr),
            FLT_ERR_INVALID_ARGUMENT);
}

// The C example program (examples/c/generate.c) builds in the suite and runs here.
TEST_F(CApiTest, ExampleProgramRuns) {
  std::string cmd = std::string(FLT_EXAMPLE_RUNNER) + " \"" + FLT_EXAMPLE_GENERATE + "\" \"" + path_ + "\" \"Hi\" 8 2>&1";
  std::FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[512];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, got);
  const int rc = pclose(p);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("prompt: 3 tokens (vocab 259, context 64)"), std::string::npos) << out;
  EXPECT_NE(out.find("generated 8 tokens"), std::string::npos) << out;
}

// ---- LoRA adapters -------------------------------------------------------------------

// Writes an adapter for the test model with B large enough to change greedy output.
std::string WriteTestAdapter(const std::string& model_path, const std::string& name, const std::string& base_hash) {
  auto model = flotilla::model::LlamaModel::Open(model_path);
  FLT_CHECK_OK(model.status());
  flotilla::model::LoraConfig lc;
  lc.rank = 4;
  lc.targets = *flotilla::model::ParseProjections("all");
  lc.a_seed = 17;
  auto adapter = flotilla::model::LoraAdapter::Create((*model)->config(), lc);
  FLT_CHECK_OK(adapter.status());
  flotilla::model::SplitMix64 rng(3);
  for (auto& m : adapter->matrices()) {
    for (float& v : m.b) v = 4.0f * rng.NextSymmetric();
  }
  adapter->base_hash = base_hash;
  const std::string path = (std::filesystem::path(model_path).parent_path() / name).string();
  FLT_CHECK_OK(flotilla::model::SaveAdapter(*adapter, path));
  return path;
}

std::vector<int32_t> GreedyTokens(flt_model* m, const std::string& prompt) {
  flt_generate_params gp = flt_generate_default_params();
  gp.temperature = 0.0f;
  gp.max_tokens = 16;
  gp.stop_at_eos = 0;
  Collected c;
  EXPECT_EQ(flt_model_generate(m, prompt.data(), prompt.size(), &gp, nullptr, 0, nullptr, Collect, &c, nullptr), FLT_OK)
      << flt_last_error();
  return c.tokens;
}

TEST_F(CApiTest, AdapterChangesGenerationLikeTheLibraryAndCanBeCleared) {
  auto hash = flotilla::model::ModelFileSha256(path_);
  ASSERT_TRUE(hash.ok());
  const std::string adapter_path = WriteTestAdapter(path_, "capi-adapter.gguf", *hash);
  flt::ModelPtr m = Load();
  const std::vector<int32_t> base = GreedyTokens(m.get(), "Fleet");

  flt_status st;
  flt::AdapterPtr a = flt::LoadAdapter(m.get(), adapter_path.c_str(), &st);
  ASSERT_EQ(st, FLT_OK) << flt_last_error();
  ASSERT_EQ(flt_model_set_adapter(m.get(), a.get(), 0.75f), FLT_OK) << flt_last_error();
  const std::vector<int32_t> adapted = GreedyTokens(m.get(), "Fleet");
  EXPECT_NE(adapted, base);

  // The same through the C++ library.
  auto model = flotilla::model::LlamaModel::Open(path_);
  ASSERT_TRUE(model.ok());
  auto lib_adapter = flotilla::model::LoadAdapter(adapter_path, **model, *hash);
  ASSERT_TRUE(lib_adapter.ok()) << lib_adapter.status().ToString();
  flotilla::model::LoraApplier applier;
  applier.Add(&*lib_adapter, 0.75f);
  auto session = flotilla::model::InferenceSession::Create(**model);
  ASSERT_TRUE(session.ok());
  (*session)->set_adapter(&applier);
  flotilla::model::SamplerParams sp;
  sp.temperature = 0.0f;
  auto sampler = flotilla::model::Sampler::Create(sp, 259);
  flotilla::model::GenerateOptions go;
  go.max_tokens = 16;
  go.stop_at_eos = false;
  auto r = flotilla::model::Generate(**session, **sampler, (*model)->tokenizer().Encode("Fleet", true), go);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->tokens, adapted);

  // Freeing the handle while set is safe (the model keeps a reference); NULL clears.
  a.reset();
  EXPECT_EQ(GreedyTokens(m.get(), "Fleet"), adapted);
  ASSERT_EQ(flt_model_set_adapter(m.get(), nullptr, 1.0f), FLT_OK);
  EXPECT_EQ(GreedyTokens(m.get(), "Fleet"), base);
}

TEST_F(CApiTest, AdapterLoadFailuresHaveCodesAndMessages) {
  flt::ModelPtr m = Load();
  flt_adapter* a = reinterpret_cast<flt_adapter*>(0x1);
  EXPECT_EQ(flt_adapter_load(m.get(), "/nonexistent/a.gguf", &a), FLT_ERR_NOT_FOUND);
  EXPECT_EQ(a, nullptr);
  EXPECT_EQ(flt_adapter_load(nullptr, "/x", &a), FLT_ERR_INVALID_ARGUMENT);
  // A model file is not an adapter.
  EXPECT_EQ(flt_adapter_load(m.get(), path_.c_str(), &a), FLT_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(flt_last_error()).find("general.type"), std::string::npos) << flt_last_error();
  // An adapter recorded for another base.
  const std::string other = WriteTestAdapter(path_, "capi-other-base.gguf", std::string(64, 'e'));
  EXPECT_EQ(flt_adapter_load(m.get(), other.c_str(), &a), FLT_ERR_UNSUPPORTED);
  EXPECT_NE(std::string(flt_last_error()).find("adapter is for base eeee"), std::string::npos) << flt_last_error();

  // An adapter belongs to the model it was loaded for; scales must be finite.
  const std::string ok_path = WriteTestAdapter(path_, "capi-nohash.gguf", "");
  flt::AdapterPtr good = flt::LoadAdapter(m.get(), ok_path.c_str());
  ASSERT_NE(good, nullptr) << flt_last_error();
  flt::ModelPtr m2 = Load();
  EXPECT_EQ(flt_model_set_adapter(m2.get(), good.get(), 1.0f), FLT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(flt_model_set_adapter(m.get(), good.get(), std::nanf("")), FLT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(flt_model_set_adapter(nullptr, nullptr, 1.0f), FLT_ERR_INVALID_ARGUMENT);
  flt_adapter_free(nullptr);
}

}  // namespace
