#include <sys/wait.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "flotilla/core/file.h"
#if defined(FLT_EXAMPLE_FINETUNE)
#include "flotilla/device/sample_store.h"
#endif
#include "flotilla/flotilla.h"
#include "flotilla/flotilla.hpp"
#include "flotilla/model/adapter_file.h"
#include "flotilla/model/inference.h"
#include "flotilla/model/lora.h"
#include "flotilla/model/model_file.h"
#include "flotilla/model/trainer.h"

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

// Runs a command, returns (exit code, stdout+stderr).
std::pair<int, std::string> RunCommand(const std::string& cmd) {
  std::FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) return {-1, ""};
  std::string out;
  char buf[512];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, got);
  const int rc = pclose(p);
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, out};
}

// The C example program (examples/c/generate.c) builds in the suite and runs here.
TEST_F(CApiTest, ExampleProgramRuns) {
  auto [rc, out] = RunCommand(std::string(FLT_EXAMPLE_RUNNER) + " \"" + FLT_EXAMPLE_GENERATE + "\" \"" + path_ +
                              "\" \"Hi\" 8");
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

// Next-token logits after `prompt` (BOS first) through flt_model_logits.
std::vector<float> NextLogits(flt_model* m, const std::string& prompt) {
  std::vector<int32_t> ids(prompt.size() + 1);
  size_t n = 0;
  EXPECT_EQ(flt_model_tokenize(m, prompt.data(), prompt.size(), 1, ids.data(), ids.size(), &n), FLT_OK);
  std::vector<float> logits(static_cast<size_t>(flt_model_vocab_size(m)));
  EXPECT_EQ(flt_model_logits(m, ids.data(), n, logits.data(), logits.size()), FLT_OK) << flt_last_error();
  return logits;
}

#if defined(FLT_EXAMPLE_FINETUNE)
// Log-softmax of one token (the fine-tuning tests; engine-only builds have no training).
double LogProb(const std::vector<float>& logits, int32_t token) {
  double mx = logits[0];
  for (float v : logits) mx = std::max(mx, static_cast<double>(v));
  double sum = 0;
  for (float v : logits) sum += std::exp(static_cast<double>(v) - mx);
  return static_cast<double>(logits[static_cast<size_t>(token)]) - mx - std::log(sum);
}
#endif

TEST_F(CApiTest, LogitsMatchTheLibraryAndCheckTheirBuffer) {
  flt::ModelPtr m = Load();
  const std::vector<float> logits = NextLogits(m.get(), "Fleet");
  auto model = flotilla::model::LlamaModel::Open(path_);
  ASSERT_TRUE(model.ok());
  auto session = flotilla::model::InferenceSession::Create(**model);
  ASSERT_TRUE(session.ok());
  ASSERT_TRUE((*session)->Eval((*model)->tokenizer().Encode("Fleet", true)).ok());
  const auto lib = (*session)->logits();
  EXPECT_EQ(logits, std::vector<float>(lib.begin(), lib.end()));
  // A second call starts a fresh sequence.
  EXPECT_EQ(NextLogits(m.get(), "Fleet"), logits);
  int32_t ids[2] = {1, 'a' + 3};
  float small[10];
  EXPECT_EQ(flt_model_logits(m.get(), ids, 2, small, 10), FLT_ERR_BUFFER_TOO_SMALL);
  std::vector<float> out(259);
  EXPECT_EQ(flt_model_logits(m.get(), ids, 0, out.data(), out.size()), FLT_ERR_INVALID_ARGUMENT);
  const std::vector<int32_t> too_many(65, 'a' + 3);
  EXPECT_EQ(flt_model_logits(m.get(), too_many.data(), too_many.size(), out.data(), out.size()), FLT_ERR_CONTEXT_FULL);
  int32_t bad[1] = {5000};
  EXPECT_EQ(flt_model_logits(m.get(), bad, 1, out.data(), out.size()), FLT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(flt_model_logits(nullptr, ids, 2, out.data(), out.size()), FLT_ERR_INVALID_ARGUMENT);
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

#if defined(FLT_EXAMPLE_FINETUNE)
// ---- samples, fine-tuning, agent parameters (builds with the device SDK) --------------

using flt::SamplesPtr;

SamplesPtr OpenSamples(const std::string& path, double held_out = 0.25) {
  flt_samples_params p = flt_samples_default_params();
  p.held_out_fraction = held_out;
  flt_status st;
  SamplesPtr s = flt::OpenSamples(path.c_str(), &p, &st);
  EXPECT_EQ(st, FLT_OK) << flt_last_error();
  return s;
}

// One device's habits: short, repetitive sentences a tiny model can learn quickly.
void AddHabits(flt_samples* s, int n) {
  static const char* const kPlaces[] = {"kitchen", "garage", "hallway", "porch"};
  for (int i = 0; i < n; ++i) {
    char text[96];
    const int len = std::snprintf(text, sizeof text, "the %s light turns on at %d pm", kPlaces[i % 4], 5 + i % 3);
    ASSERT_EQ(flt_samples_add(s, text, static_cast<size_t>(len), i % 2 == 0 ? "home" : nullptr,
                              1700000000000 + i, nullptr),
              FLT_OK)
        << flt_last_error();
  }
}

TEST_F(CApiTest, SamplesAddCountAndRefuseBadText) {
  SamplesPtr s = OpenSamples((dir_->path() / "samples-basic.sqlite").string(), 0.5);
  ASSERT_NE(s, nullptr);
  int64_t id = -1;
  ASSERT_EQ(flt_samples_add(s.get(), "hello there", 11, "greeting", 0, &id), FLT_OK) << flt_last_error();
  EXPECT_GT(id, 0);
  AddHabits(s.get(), 39);
  int64_t train = -1, held = -1;
  ASSERT_EQ(flt_samples_count(s.get(), &train, &held), FLT_OK);
  EXPECT_EQ(train + held, 40);
  EXPECT_GT(train, 5);  // a keyed hash split at 0.5 of 40 ids
  EXPECT_GT(held, 5);
  flt_samples_stats st{};
  ASSERT_EQ(flt_samples_get_stats(s.get(), &st), FLT_OK);
  EXPECT_EQ(st.count, 40);
  EXPECT_EQ(st.train_count, train);
  EXPECT_GT(st.bytes, 40 * 10);
  EXPECT_EQ(st.oldest_ms, 1700000000000);

  // Invalid UTF-8 (a lone continuation byte at offset 3), in text and label: refused with
  // the offset, nothing stored.
  const char bad[] = {'a', 'b', 'c', '\x80', 'd'};
  EXPECT_EQ(flt_samples_add(s.get(), bad, sizeof bad, nullptr, 0, nullptr), FLT_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(flt_last_error()).find("UTF-8"), std::string::npos) << flt_last_error();
  EXPECT_NE(std::string(flt_last_error()).find("3"), std::string::npos) << flt_last_error();
  EXPECT_EQ(flt_samples_add(s.get(), "ok", 2, "\xc3", 0, nullptr), FLT_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(flt_last_error()).find("label"), std::string::npos) << flt_last_error();
  EXPECT_EQ(flt_samples_add(s.get(), "", 0, nullptr, 0, nullptr), FLT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(flt_samples_add(s.get(), nullptr, 3, nullptr, 0, nullptr), FLT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(flt_samples_add(s.get(), "x", 1, nullptr, -5, nullptr), FLT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(flt_samples_add(nullptr, "x", 1, nullptr, 0, nullptr), FLT_ERR_INVALID_ARGUMENT);
  ASSERT_EQ(flt_samples_count(s.get(), &train, &held), FLT_OK);
  EXPECT_EQ(train + held, 40);

  // Reopening sees the same split (the split key is persisted with the store).
  s.reset();
  SamplesPtr again = OpenSamples((dir_->path() / "samples-basic.sqlite").string(), 0.5);
  int64_t train2 = -1, held2 = -1;
  ASSERT_EQ(flt_samples_count(again.get(), &train2, &held2), FLT_OK);
  EXPECT_EQ(train2, train);
  EXPECT_EQ(held2, held);
  int64_t removed = 0;
  ASSERT_EQ(flt_samples_clear(again.get(), &removed), FLT_OK);
  EXPECT_EQ(removed, 40);

  // Age limit: a sample already too old is an invalid argument, not stored.
  flt_samples_params p = flt_samples_default_params();
  p.max_age_ms = 60000;
  flt_samples* aged = nullptr;
  ASSERT_EQ(flt_samples_open((dir_->path() / "samples-aged.sqlite").string().c_str(), &p, &aged), FLT_OK);
  SamplesPtr aged_ptr(aged);
  EXPECT_EQ(flt_samples_add(aged, "old news", 8, nullptr, 1000, nullptr), FLT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(flt_samples_add(aged, "fresh", 5, nullptr, 0, nullptr), FLT_OK) << flt_last_error();
  p.held_out_fraction = 1.5;
  flt_samples* none = reinterpret_cast<flt_samples*>(0x1);
  EXPECT_EQ(flt_samples_open((dir_->path() / "bad.sqlite").string().c_str(), &p, &none), FLT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(none, nullptr);
  flt_samples_close(nullptr);
}

struct ProgressLog {
  std::vector<int32_t> steps;
  std::vector<int32_t> totals;
  std::vector<float> losses;
  int32_t cancel_at = 0;  // 0: never
};

int OnProgress(int32_t step, int32_t total, float loss, float lr, void* user) {
  auto* log = static_cast<ProgressLog*>(user);
  log->steps.push_back(step);
  log->totals.push_back(total);
  log->losses.push_back(loss);
  EXPECT_GT(lr, 0.0f);
  return log->cancel_at != 0 && step >= log->cancel_at ? 1 : 0;
}

flt_finetune_params SmallFinetune() {
  flt_finetune_params fp = flt_finetune_default_params();
  fp.steps = 30;
  fp.seq_len = 32;
  fp.batch = 2;
  fp.learning_rate = 1e-2f;
  fp.rank = 4;
  fp.use_frozen_a_seed = 1;
  fp.frozen_a_seed = 99;
  fp.n_threads = 1;
  return fp;
}

TEST_F(CApiTest, FinetuneLowersHeldOutPerplexityAndTheAdapterApplies) {
  flt::ModelPtr m = Load();
  SamplesPtr s = OpenSamples((dir_->path() / "samples-train.sqlite").string());
  AddHabits(s.get(), 64);

  const flt_finetune_params fp = SmallFinetune();
  ProgressLog log;
  flt_adapter* raw = nullptr;
  flt_finetune_stats stats{};
  ASSERT_EQ(flt_finetune(m.get(), s.get(), &fp, OnProgress, &log, &raw, &stats), FLT_OK) << flt_last_error();
  flt::AdapterPtr adapter(raw);
  ASSERT_NE(adapter, nullptr);

  // Progress once per step, in order, with the total.
  ASSERT_EQ(log.steps.size(), 30u);
  for (size_t i = 0; i < log.steps.size(); ++i) {
    EXPECT_EQ(log.steps[i], static_cast<int32_t>(i + 1));
    EXPECT_EQ(log.totals[i], 30);
  }
  EXPECT_EQ(stats.steps, 30);
  EXPECT_GT(stats.tokens, 0);
  EXPECT_FLOAT_EQ(stats.first_loss, log.losses.front());
  EXPECT_FLOAT_EQ(stats.last_loss, log.losses.back());
  EXPECT_LT(stats.last_loss, stats.first_loss);
  EXPECT_EQ(stats.train_samples + stats.held_out_samples, 64);
  ASSERT_GT(stats.held_out_perplexity_before, 0.0);
  // Held-out text follows the same habits: fine-tuning must help it clearly.
  EXPECT_LT(stats.held_out_perplexity_after, 0.7 * stats.held_out_perplexity_before)
      << stats.held_out_perplexity_before << " -> " << stats.held_out_perplexity_after;

  // Applied through the C API, the adapter changes the logits, towards the habits: the
  // next byte after "the garage" is far more likely to be ' ' (as in every sample).
  const std::vector<float> base_logits = NextLogits(m.get(), "the garage");
  ASSERT_EQ(flt_model_set_adapter(m.get(), adapter.get(), 1.0f), FLT_OK) << flt_last_error();
  const std::vector<float> tuned_logits = NextLogits(m.get(), "the garage");
  const std::vector<int32_t> tuned_tokens = GreedyTokens(m.get(), "the garage");
  EXPECT_GT(LogProb(tuned_logits, ' ' + 3), LogProb(base_logits, ' ' + 3) + 0.5);

  // Saved, it is a regular adapter file for this base: reloaded it generates the same,
  // and the library's inference-path evaluation agrees with the reported perplexity.
  const std::string saved = (dir_->path() / "capi-finetuned.gguf").string();
  ASSERT_EQ(flt_adapter_save(adapter.get(), saved.c_str()), FLT_OK) << flt_last_error();
  flt::AdapterPtr reloaded = flt::LoadAdapter(m.get(), saved.c_str());
  ASSERT_NE(reloaded, nullptr) << flt_last_error();
  ASSERT_EQ(flt_model_set_adapter(m.get(), reloaded.get(), 1.0f), FLT_OK);
  EXPECT_EQ(GreedyTokens(m.get(), "the garage"), tuned_tokens);
  EXPECT_EQ(NextLogits(m.get(), "the garage"), tuned_logits);

  auto model = flotilla::model::LlamaModel::Open(path_);
  ASSERT_TRUE(model.ok());
  auto hash = flotilla::model::ModelFileSha256(path_);
  auto lib_adapter = flotilla::model::LoadAdapter(saved, **model, *hash);
  ASSERT_TRUE(lib_adapter.ok()) << lib_adapter.status().ToString();
  EXPECT_EQ(lib_adapter->config().a_seed, 99u);
  // Rebuild the held-out split's texts through a second handle on the same store and
  // score them with the library's training engine: the same measure flt_finetune reports.
  flotilla::device::SampleStoreOptions so;
  so.held_out_fraction = 0.25;  // as OpenSamples
  auto store = flotilla::device::SampleStore::Open(dir_->path() / "samples-train.sqlite", so);
  ASSERT_TRUE(store.ok());
  auto held = (*store)->HeldOutTexts();
  ASSERT_TRUE(held.ok());
  const auto data = flotilla::model::TokenDataset::FromTexts((*model)->tokenizer(), *held);
  flotilla::model::TrainEngineOptions eo;
  eo.n_threads = 1;
  eo.max_seq_len = 32;
  auto engine = flotilla::model::TrainEngine::CreateLora(**model, *lib_adapter, eo);
  ASSERT_TRUE(engine.ok()) << engine.status().ToString();
  auto eval = flotilla::model::Evaluate(**engine, data, 32);
  ASSERT_TRUE(eval.ok()) << eval.status().ToString();
  EXPECT_NEAR(eval->perplexity, stats.held_out_perplexity_after, 1e-6 * stats.held_out_perplexity_after);
}

TEST_F(CApiTest, FinetuneCancelReturnsNoAdapter) {
  flt::ModelPtr m = Load();
  SamplesPtr s = OpenSamples((dir_->path() / "samples-cancel.sqlite").string());
  AddHabits(s.get(), 32);
  const flt_finetune_params fp = SmallFinetune();
  ProgressLog log;
  log.cancel_at = 3;
  flt_adapter* out = reinterpret_cast<flt_adapter*>(0x1);
  flt_finetune_stats stats{};
  EXPECT_EQ(flt_finetune(m.get(), s.get(), &fp, OnProgress, &log, &out, &stats), FLT_ERR_CANCELLED);
  EXPECT_EQ(out, nullptr);
  EXPECT_EQ(log.steps, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(stats.steps, 3);
  EXPECT_NE(std::string(flt_last_error()).find("cancelled"), std::string::npos) << flt_last_error();
  EXPECT_STREQ(flt_status_string(FLT_ERR_CANCELLED), "cancelled");
}

TEST_F(CApiTest, FinetuneRefusesBadArgumentsAndTooLittleText) {
  flt::ModelPtr m = Load();
  SamplesPtr s = OpenSamples((dir_->path() / "samples-small.sqlite").string(), 0.0);
  flt_adapter* out = nullptr;
  flt_finetune_params fp = SmallFinetune();
  EXPECT_EQ(flt_finetune(nullptr, s.get(), &fp, nullptr, nullptr, &out, nullptr), FLT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(flt_finetune(m.get(), nullptr, &fp, nullptr, nullptr, &out, nullptr), FLT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(flt_finetune(m.get(), s.get(), &fp, nullptr, nullptr, nullptr, nullptr), FLT_ERR_INVALID_ARGUMENT);
  // An empty store: nothing to train on, said with numbers.
  EXPECT_EQ(flt_finetune(m.get(), s.get(), &fp, nullptr, nullptr, &out, nullptr), FLT_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(flt_last_error()).find("seq_len + 1 = 33"), std::string::npos) << flt_last_error();
  AddHabits(s.get(), 8);
  fp.targets = "q,x";
  EXPECT_EQ(flt_finetune(m.get(), s.get(), &fp, nullptr, nullptr, &out, nullptr), FLT_ERR_INVALID_ARGUMENT);
  fp = SmallFinetune();
  fp.seq_len = 1000;  // beyond the tiny model's context of 64 (and the data)
  EXPECT_EQ(flt_finetune(m.get(), s.get(), &fp, nullptr, nullptr, &out, nullptr), FLT_ERR_INVALID_ARGUMENT);
  fp = SmallFinetune();
  fp.steps = 0;
  EXPECT_EQ(flt_finetune(m.get(), s.get(), &fp, nullptr, nullptr, &out, nullptr), FLT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(out, nullptr);
  EXPECT_EQ(flt_adapter_save(nullptr, "/tmp/x.gguf"), FLT_ERR_INVALID_ARGUMENT);
}

TEST_F(CApiTest, AgentCreateChecksItsParameters) {
  flt_agent* a = reinterpret_cast<flt_agent*>(0x1);
  EXPECT_EQ(flt_agent_create(nullptr, &a), FLT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(a, nullptr);
  flt_agent_params p = flt_agent_default_params();
  EXPECT_EQ(p.worker_threads, 1);
  EXPECT_DOUBLE_EQ(p.samples.held_out_fraction, 0.1);
  const std::string data = (dir_->path() / "agent-data").string();
  p.device_id = "dev-1";
  p.data_dir = data.c_str();
  p.broker_uri = "ssl://127.0.0.1:1";
  p.key_file = "/nonexistent/dev.key";
  p.coordinator_cert_file = "/nonexistent/coordinator.pem";
  // No model: refused (no training stand-in in production).
  EXPECT_EQ(flt_agent_create(&p, &a), FLT_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(flt_last_error()).find("model_path"), std::string::npos) << flt_last_error();
  p.model_path = path_.c_str();
  // ssl:// without the mTLS files.
  EXPECT_EQ(flt_agent_create(&p, &a), FLT_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(flt_last_error()).find("mTLS"), std::string::npos) << flt_last_error();
  p.broker_uri = "tcp://127.0.0.1:1";
  EXPECT_EQ(flt_agent_create(&p, &a), FLT_ERR_NOT_FOUND);
  EXPECT_NE(std::string(flt_last_error()).find("/nonexistent/dev.key"), std::string::npos) << flt_last_error();
  p.train_seq_len = 1000;
  EXPECT_EQ(flt_agent_create(&p, &a), FLT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(a, nullptr);
  // Every call is NULL-safe.
  EXPECT_EQ(flt_agent_start(nullptr), FLT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(flt_agent_stop(nullptr), FLT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(flt_agent_poll(nullptr, 0, nullptr), FLT_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(flt_agent_add_sample(nullptr, "x", 1, nullptr, 0), FLT_ERR_INVALID_ARGUMENT);
  flt_agent_status st;
  EXPECT_EQ(flt_agent_status_get(nullptr, &st), FLT_ERR_INVALID_ARGUMENT);
  flt_round_info ri;
  EXPECT_EQ(flt_agent_last_round(nullptr, &ri), FLT_ERR_INVALID_ARGUMENT);
  flt_agent_free(nullptr);
}

// The C examples build as C11 with -Werror (CMake) and run here.
TEST_F(CApiTest, FinetuneExampleProgramRuns) {
  const std::string samples = (dir_->path() / "example-samples.sqlite").string();
  const std::string out = (dir_->path() / "example-adapter.gguf").string();
  auto [rc, text] = RunCommand(std::string(FLT_EXAMPLE_RUNNER) + " \"" + FLT_EXAMPLE_FINETUNE + "\" \"" + path_ +
                               "\" \"" + samples + "\" \"" + out + "\" 6");
  EXPECT_EQ(rc, 0) << text;
  EXPECT_NE(text.find("step 6/6"), std::string::npos) << text;
  EXPECT_NE(text.find("trained 6 steps"), std::string::npos) << text;
  EXPECT_TRUE(std::filesystem::exists(out)) << text;
}

TEST_F(CApiTest, AgentExampleProgramReportsBadSetup) {
  auto [rc, text] = RunCommand(std::string(FLT_EXAMPLE_RUNNER) + " \"" + FLT_EXAMPLE_AGENT + "\"");
  EXPECT_EQ(rc, 2) << text;
  EXPECT_NE(text.find("usage:"), std::string::npos) << text;
  const std::string d = (dir_->path() / "agent-example").string();
  auto [rc2, text2] = RunCommand(std::string(FLT_EXAMPLE_RUNNER) + " \"" + FLT_EXAMPLE_AGENT + "\" dev-1 \"" + d +
                                 "\" ssl://127.0.0.1:1 /nonexistent/ca.pem /nonexistent/dev.pem /nonexistent/dev.key "
                                 "/nonexistent/coord.pem \"" + path_ + "\" g 1");
  EXPECT_EQ(rc2, 1) << text2;
  EXPECT_NE(text2.find("flt_agent_create failed: not found"), std::string::npos) << text2;
}
#else
// Engine-only builds: the device-SDK calls exist and say they are not built.
TEST_F(CApiTest, DeviceCallsAreUnsupportedInEngineOnlyBuilds) {
  flt_samples* s = reinterpret_cast<flt_samples*>(0x1);
  EXPECT_EQ(flt_samples_open("/tmp/x.sqlite", nullptr, &s), FLT_ERR_UNSUPPORTED);
  EXPECT_EQ(s, nullptr);
  EXPECT_NE(std::string(flt_last_error()).find("FLOTILLA_ENGINE_ONLY"), std::string::npos);
  flt_agent* a = reinterpret_cast<flt_agent*>(0x1);
  flt_agent_params p = flt_agent_default_params();
  EXPECT_EQ(flt_agent_create(&p, &a), FLT_ERR_UNSUPPORTED);
  EXPECT_EQ(a, nullptr);
}
#endif

}  // namespace
