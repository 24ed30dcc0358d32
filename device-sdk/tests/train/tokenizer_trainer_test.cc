#include "flotilla/model/tokenizer_trainer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <unordered_set>
#include <vector>

#include "flotilla/core/testing/seeded_random.h"
#include "flotilla/model/gguf.h"
#include "flotilla/model/tokenizer.h"

namespace flotilla::model {
namespace {

constexpr std::string_view kMark = "\xE2\x96\x81";

// English-like test text: words with a Zipf-ish frequency, punctuation, digits, newlines,
// some accented words. Seeded, so the tests are reproducible.
std::string MakeCorpus(uint64_t seed, size_t bytes) {
  static const std::vector<std::string> kWords = {
      "the",    "kitchen", "lights", "turn",    "on",      "off",    "please", "living", "room",   "is",
      "at",     "degrees", "and",    "heater",  "bedroom", "coffee", "maker",  "start",  "morning", "evening",
      "percent", "battery", "door",  "locked",  "window",  "open",   "music",  "play",   "tomorrow", "weather",
      "café",   "über",    "naïve",  "garage",  "sensor",  "motion", "temperature", "humidity", "timer", "minutes"};
  testing::SeededRandom rng(seed);
  std::string out;
  while (out.size() < bytes) {
    const size_t n = 3 + rng.Uniform(8);
    for (size_t i = 0; i < n; ++i) {
      // Zipf-ish: the square of a uniform index favours the first words.
      const double u = rng.UniformDouble();
      const auto w = static_cast<size_t>(u * u * static_cast<double>(kWords.size()));
      if (i > 0) out += ' ';
      std::string word = kWords[w];
      if (i == 0) word[0] = static_cast<char>(word[0] >= 'a' && word[0] <= 'z' ? word[0] - 32 : word[0]);
      out += word;
      if (rng.Uniform(10) == 0) out += " " + std::to_string(rng.Uniform(100));
    }
    out += rng.Uniform(4) == 0 ? "?\n" : ".\n";
  }
  return out;
}

// A large open vocabulary (pseudo-words from syllables, Zipf-like use), so thousands of
// merges are available: the workload of a real pretraining corpus.
std::string MakeBigCorpus(uint64_t seed, size_t bytes) {
  static const char* kSyl[] = {"ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pra", "sto", "gle",
                               "an", "er", "in", "on", "us", "bri", "cha", "dre", "fu", "ho", "ji", "qua"};
  testing::SeededRandom rng(seed);
  std::vector<std::string> vocab(20000);
  for (std::string& w : vocab) {
    const size_t n = 1 + rng.Uniform(4);
    for (size_t i = 0; i < n; ++i) w += kSyl[rng.Uniform(std::size(kSyl))];
  }
  std::string out;
  out.reserve(bytes + 64);
  while (out.size() < bytes) {
    const double u = rng.UniformDouble();
    out += vocab[static_cast<size_t>(u * u * u * static_cast<double>(vocab.size()))];
    out += rng.Uniform(12) == 0 ? ".\n" : " ";
  }
  return out;
}

std::unique_ptr<Tokenizer> MustCreate(Vocabulary v) {
  auto t = Tokenizer::Create(std::move(v));
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return t.ok() ? std::move(*t) : nullptr;
}

TokenizerTrainerOptions Opts(int64_t vocab) {
  TokenizerTrainerOptions o;
  o.vocab_size = vocab;
  return o;
}

TEST(TokenizerTrainerTest, ProducesExactVocabSizeThatValidates) {
  const std::string corpus = MakeCorpus(1, 60000);
  for (int64_t size : {259, 260, 300, 512, 1000}) {
    TokenizerTrainingStats st;
    auto v = TrainTokenizer(corpus, Opts(size), &st);
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    EXPECT_EQ(static_cast<int64_t>(v->tokens.size()), size);
    EXPECT_TRUE(v->Validate().ok()) << v->Validate().ToString();
    EXPECT_EQ(v->model, "llama");
    EXPECT_EQ(v->tokens[0], "<unk>");
    EXPECT_EQ(v->tokens[1], "<s>");
    EXPECT_EQ(v->tokens[2], "</s>");
    EXPECT_EQ(v->tokens[3], "<0x00>");
    EXPECT_EQ(v->tokens[258], "<0xFF>");
    EXPECT_EQ(v->types[258], TokenType::kByte);
    EXPECT_EQ(259 + st.merges + st.char_pieces + st.unused, size);
  }
}

TEST(TokenizerTrainerTest, ScoresFollowMergeOrder) {
  auto v = TrainTokenizer(MakeCorpus(2, 30000), Opts(400));
  ASSERT_TRUE(v.ok());
  float prev = 1.0f;
  for (size_t i = 259; i < v->tokens.size(); ++i) {
    if (v->types[i] != TokenType::kNormal) continue;
    EXPECT_LT(v->scores[i], prev) << "token " << i;
    prev = v->scores[i];
  }
}

TEST(TokenizerTrainerTest, CompressesTrainingTextAndMatchesTrainingSegmentation) {
  const std::string corpus = MakeCorpus(3, 200000);
  TokenizerTrainingStats st;
  auto v = TrainTokenizer(corpus, Opts(1024), &st);
  ASSERT_TRUE(v.ok());
  auto tok = MustCreate(*v);
  const std::vector<int32_t> ids = tok->Encode(corpus, false);
  const double ratio = static_cast<double>(corpus.size()) / static_cast<double>(ids.size());
  std::printf("bytes/token %.2f (trained segmentation %lld tokens, tokenizer %zu)\n", ratio,
              static_cast<long long>(st.trained_tokens), ids.size());
  // A small closed vocabulary: almost every word becomes one token.
  EXPECT_GT(ratio, 4.0);
  // The Tokenizer's score-ordered merges replay the trainer's merges: the corpus is one
  // document here, so the token counts agree up to SPM tie effects.
  EXPECT_NEAR(static_cast<double>(ids.size()), static_cast<double>(st.trained_tokens),
              0.01 * static_cast<double>(st.trained_tokens));
  EXPECT_EQ(tok->Decode(ids), corpus);
}

TEST(TokenizerTrainerTest, FrequentWordsBecomeSingleTokens) {
  const std::string corpus = MakeCorpus(4, 100000);
  auto v = TrainTokenizer(corpus, Opts(600));
  ASSERT_TRUE(v.ok());
  auto tok = MustCreate(*v);
  for (std::string_view w : {"the", "kitchen", "lights", "please", "temperature", "café", "über"}) {
    const auto ids = tok->Encode(w, false);
    ASSERT_EQ(ids.size(), 1u) << w;
    EXPECT_EQ(v->tokens[static_cast<size_t>(ids[0])], std::string(kMark) + std::string(w));
    // Mid-sentence too: " kitchen" is the same piece.
    const auto two = tok->Encode(std::string("the ") + std::string(w), false);
    EXPECT_EQ(two.size(), 2u) << w;
  }
  // A word never seen falls apart into pieces but still round-trips.
  const std::string odd = "zyxwvq";
  EXPECT_GT(tok->Encode(odd, false).size(), 1u);
  EXPECT_EQ(tok->Decode(tok->Encode(odd, false)), odd);
}

TEST(TokenizerTrainerTest, RoundTripsArbitraryBytes) {
  auto v = TrainTokenizer(MakeCorpus(5, 50000), Opts(700));
  ASSERT_TRUE(v.ok());
  auto tok = MustCreate(*v);
  std::vector<std::string> cases = {
      "",
      " ",
      "   leading and  double  spaces ",
      "kitchen\n\nlights\t\ton",
      "literal \xE2\x96\x81 mark and \xE2\x96\x81\xE2\x96\x81",
      "invalid \xFF\xC3 utf8 \xE2\x82",
      "<s> </s> <0x41> <unk> <unused_0>",
      "日本語のテキスト café naïve",
      std::string("nul\0byte", 8),
  };
  testing::SeededRandom rng(99);
  for (int i = 0; i < 200; ++i) {
    std::string s(rng.Uniform(64), '\0');
    for (char& c : s) c = static_cast<char>(rng.NextU32() & 0xFF);
    cases.push_back(s);
  }
  for (const std::string& s : cases) {
    const auto ids = tok->Encode(s, true);
    EXPECT_EQ(tok->Decode(ids), s);
  }
}

TEST(TokenizerTrainerTest, IsDeterministicAndIndependentOfDocumentOrder) {
  const std::string corpus = MakeCorpus(6, 80000);
  std::vector<std::string> lines;
  for (size_t p = 0; p < corpus.size();) {
    const size_t e = corpus.find('\n', p);
    lines.push_back(corpus.substr(p, e - p));
    p = e + 1;
  }
  std::vector<std::string_view> docs(lines.begin(), lines.end());
  auto a = TrainTokenizer(docs, Opts(800));
  auto b = TrainTokenizer(docs, Opts(800));
  std::reverse(docs.begin(), docs.end());
  auto c = TrainTokenizer(docs, Opts(800));
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->tokens, b->tokens);
  EXPECT_EQ(a->scores, b->scores);
  EXPECT_EQ(a->tokens, c->tokens);
  auto d = TrainTokenizer(MakeCorpus(7, 80000), Opts(800));
  ASSERT_TRUE(d.ok());
  EXPECT_NE(a->tokens, d->tokens);
}

TEST(TokenizerTrainerTest, PiecesRespectLengthAndWordBoundaries) {
  TokenizerTrainerOptions o = Opts(2000);
  o.max_piece_chars = 5;
  auto v = TrainTokenizer(MakeCorpus(8, 80000), o);
  ASSERT_TRUE(v.ok());
  for (size_t i = 259; i < v->tokens.size(); ++i) {
    if (v->types[i] != TokenType::kNormal) continue;
    const std::string& t = v->tokens[i];
    // Count characters: UTF-8 lead bytes.
    size_t chars = 0;
    for (char ch : t) chars += (static_cast<uint8_t>(ch) & 0xC0) != 0x80;
    EXPECT_LE(chars, 5u) << t;
    // "▁" only as a leading run; no piece mixes letters with punctuation or newlines.
    size_t p = 0;
    while (t.compare(p, kMark.size(), kMark) == 0) p += kMark.size();
    const std::string rest = t.substr(p);
    EXPECT_EQ(rest.find(kMark), std::string::npos) << t;
    const bool has_alpha = std::any_of(rest.begin(), rest.end(), [](char ch) { return std::isalpha(static_cast<uint8_t>(ch)); });
    const bool has_punct = std::any_of(rest.begin(), rest.end(), [](char ch) { return ch == '.' || ch == '?' || ch == '\n'; });
    EXPECT_FALSE(has_alpha && has_punct) << t;
  }
}

TEST(TokenizerTrainerTest, StopsAtMinFrequencyAndPadsWithUnused) {
  TokenizerTrainerOptions o = Opts(5000);
  TokenizerTrainingStats st;
  auto v = TrainTokenizer("tiny tiny corpus", o, &st);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->tokens.size(), 5000u);
  EXPECT_GT(st.unused, 4000);
  // "▁tiny" occurs twice (min_frequency 2): learned; "corpus" once: not.
  auto tok = MustCreate(*v);
  EXPECT_EQ(tok->Encode("tiny", false).size(), 1u);
  EXPECT_GT(tok->Encode("corpus", false).size(), 1u);
  EXPECT_EQ(v->types.back(), TokenType::kUnused);

  auto empty = TrainTokenizer("", Opts(300), &st);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->tokens.size(), 300u);
  EXPECT_EQ(st.merges, 0);
}

TEST(TokenizerTrainerTest, RejectsBadOptions) {
  TokenizerTrainerOptions o = Opts(258);
  EXPECT_EQ(TrainTokenizer("x", o).status().code(), StatusCode::kInvalidArgument);
  o = Opts(300);
  o.max_piece_chars = 1;
  EXPECT_EQ(TrainTokenizer("x", o).status().code(), StatusCode::kInvalidArgument);
  o = Opts(300);
  o.min_frequency = 0;
  EXPECT_EQ(TrainTokenizer("x", o).status().code(), StatusCode::kInvalidArgument);
  o = Opts(300);
  o.character_coverage = 0;
  EXPECT_EQ(TrainTokenizer("x", o).status().code(), StatusCode::kInvalidArgument);
  o.character_coverage = 1.5;
  EXPECT_EQ(TrainTokenizer("x", o).status().code(), StatusCode::kInvalidArgument);
}

TEST(TokenizerTrainerTest, RareCharactersFallBackToBytes) {
  std::string corpus;
  for (int i = 0; i < 2000; ++i) corpus += "aé ";
  corpus += "ж";  // one occurrence in ~6000 characters: below 0.9995 coverage
  TokenizerTrainingStats st;
  auto v = TrainTokenizer(corpus, Opts(400), &st);
  ASSERT_TRUE(v.ok());
  const std::unordered_set<std::string> toks(v->tokens.begin(), v->tokens.end());
  EXPECT_TRUE(toks.count("é"));
  EXPECT_FALSE(toks.count("ж"));
  EXPECT_EQ(st.char_pieces, 1);
  auto tok = MustCreate(*v);
  EXPECT_EQ(tok->Encode("ж", false).size(), 3u);  // <0x20> for the prefix space, 2 bytes of ж
  TokenizerTrainerOptions all = Opts(400);
  all.character_coverage = 1.0;
  auto w = TrainTokenizer(corpus, all);
  ASSERT_TRUE(w.ok());
  EXPECT_NE(std::find(w->tokens.begin(), w->tokens.end(), "ж"), w->tokens.end());
}

TEST(TokenizerTrainerTest, RoundTripsThroughGgufMetadata) {
  TokenizerTrainerOptions o = Opts(500);
  o.add_bos = false;
  auto v = TrainTokenizer(MakeCorpus(9, 40000), o);
  ASSERT_TRUE(v.ok());
  GgufWriter w;
  WriteVocabulary(*v, w);
  auto bytes = w.WriteToBuffer();
  ASSERT_TRUE(bytes.ok());
  auto f = GgufFile::OpenFromMemory(*bytes);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  auto back = ReadVocabulary(**f);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->tokens, v->tokens);
  EXPECT_EQ(back->scores, v->scores);
  EXPECT_EQ(back->types, v->types);
  EXPECT_EQ(back->add_bos, false);
  EXPECT_EQ(back->add_space_prefix, true);
  auto t1 = MustCreate(*v);
  auto t2 = Tokenizer::FromGguf(**f);
  ASSERT_TRUE(t2.ok());
  const std::string probe = "Turn on the kitchen lights please.";
  EXPECT_EQ(t1->Encode(probe, true), (*t2)->Encode(probe, true));
}

TEST(TokenizerTrainerTest, TrainsMegabytesToThousandsOfPiecesQuickly) {
  const std::string corpus = MakeBigCorpus(10, 4 << 20);
  TokenizerTrainingStats st;
  const auto t0 = std::chrono::steady_clock::now();
  auto v = TrainTokenizer(corpus, Opts(4096), &st);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(v.ok());
  auto tok = MustCreate(*v);
  const std::string_view head = std::string_view(corpus).substr(0, 256 << 10);
  const double ratio = static_cast<double>(head.size()) / static_cast<double>(tok->Encode(head, false).size());
  std::printf("4 MiB -> 4096 tokens: %.2f s, %lld merges, %lld unused, %.2f bytes/token\n", secs,
              static_cast<long long>(st.merges), static_cast<long long>(st.unused), ratio);
  EXPECT_EQ(st.unused, 0);
  EXPECT_GT(ratio, 3.0);
  EXPECT_LT(secs, 30.0);  // seconds in release; generous for sanitizer builds
}

}  // namespace
}  // namespace flotilla::model
