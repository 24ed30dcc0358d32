#include "flotilla/model/tokenizer.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "flotilla/model/model_file.h"

namespace flotilla::model {
namespace {

constexpr const char* kMark = "\xE2\x96\x81";

int32_t ByteId(int b) { return 3 + b; }  // <unk>, <s>, </s>, then bytes

// Byte vocabulary plus hand-scored pieces.
Vocabulary HandVocab(std::vector<std::pair<std::string, float>> pieces) {
  Vocabulary v = ByteVocabulary();
  v.add_space_prefix = true;
  for (auto& [text, score] : pieces) {
    v.tokens.push_back(text);
    v.scores.push_back(score);
    v.types.push_back(TokenType::kNormal);
  }
  return v;
}

std::string M(std::string s) { return kMark + s; }

TEST(TokenizerTest, KnownEncodingFollowsScoreOrder) {
  // ids: 259 ▁, 260 h, 261 e, 262 l, 263 o, 264 w, 265 r, 266 d, 267 ll, 268 he,
  // 269 lo, 270 hell, 271 hello, 272 or
  auto tok = Tokenizer::Create(HandVocab({{kMark, -10}, {"h", -10}, {"e", -10}, {"l", -10}, {"o", -10},
                                          {"w", -10}, {"r", -10}, {"d", -10}, {"ll", -1}, {"he", -2},
                                          {"lo", -4}, {"hell", -3}, {"hello", -6}, {"or", -7}}));
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  // "▁hello▁world": ll(-1) first, then he(-2), hell(-3), hello(-6); "lo" loses to "ll".
  // Second word: only "or" applies.
  EXPECT_EQ((*tok)->Encode("hello world", false), (std::vector<int32_t>{259, 271, 259, 264, 272, 262, 266}));
  EXPECT_EQ((*tok)->Encode("hello world", true).front(), 1);
  EXPECT_EQ((*tok)->Decode((*tok)->Encode("hello world", true)), "hello world");
  // Not in any piece: byte fallback for "é" (C3 A9).
  EXPECT_EQ((*tok)->Encode("\xC3\xA9", false), (std::vector<int32_t>{259, ByteId(0xC3), ByteId(0xA9)}));
}

TEST(TokenizerTest, EqualScoresMergeLeftmostFirst) {
  auto tok = Tokenizer::Create(HandVocab({{"a", -5}, {"aa", -1}}));
  ASSERT_TRUE(tok.ok());
  // "aaa" with no space prefix symbol merging: ▁ falls back to <0x20>; then [aa][a].
  EXPECT_EQ((*tok)->Encode("aaa", false), (std::vector<int32_t>{ByteId(' '), 260, 259}));
}

TEST(TokenizerTest, SpecialAndByteTokenTextIsLiteral) {
  Vocabulary v = HandVocab({{"<", -1}, {"s", -1}, {">", -1}, {"<s", -1}});
  auto tok = Tokenizer::Create(v);
  ASSERT_TRUE(tok.ok());
  const std::vector<int32_t> ids = (*tok)->Encode("<s>", false);
  for (int32_t id : ids) EXPECT_NE(id, 1);  // never BOS
  EXPECT_EQ((*tok)->Decode(ids), "<s>");
  EXPECT_EQ((*tok)->Decode((*tok)->Encode("<0x41>", false)), "<0x41>");
}

TEST(TokenizerTest, ByteVocabularyMapsBytesOneToOne) {
  auto tok = Tokenizer::Create(ByteVocabulary());
  ASSERT_TRUE(tok.ok());
  EXPECT_EQ((*tok)->vocab_size(), 259);
  EXPECT_EQ((*tok)->Encode("hi !", true),
            (std::vector<int32_t>{1, ByteId('h'), ByteId('i'), ByteId(' '), ByteId('!')}));
  EXPECT_EQ((*tok)->Decode(std::vector<int32_t>{1, ByteId(0xFF), ByteId('a'), 2}), "\xFF" "a");
  EXPECT_EQ((*tok)->Encode("", false), std::vector<int32_t>{});
}

TEST(TokenizerTest, LiteralSpaceMarkAndMissingSpacePieceRoundTrip) {
  auto tok = Tokenizer::Create(HandVocab({{"x", -1}}));
  ASSERT_TRUE(tok.ok());
  const std::string text = std::string("a ") + kMark + " x";
  EXPECT_EQ((*tok)->Decode((*tok)->Encode(text, false)), text);
}

std::string RandomUtf8(SplitMix64& rng, size_t chars) {
  std::string s;
  for (size_t i = 0; i < chars; ++i) {
    uint32_t cp;
    switch (rng.Next() % 6) {
      case 0: cp = ' '; break;
      case 1: cp = 0x2581; break;
      case 2: cp = 0x80 + static_cast<uint32_t>(rng.Next() % 0x780); break;
      case 3: cp = 0x10000 + static_cast<uint32_t>(rng.Next() % 0x100000); break;
      case 4: {
        cp = 0x800 + static_cast<uint32_t>(rng.Next() % 0xF800);
        if (cp >= 0xD800 && cp <= 0xDFFF) cp = 'q';
        break;
      }
      default: cp = static_cast<uint32_t>("etaoin shrdlu the of and"[rng.Next() % 24]); break;
    }
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else if (cp < 0x800) {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      s += static_cast<char>(0xE0 | (cp >> 12));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      s += static_cast<char>(0xF0 | (cp >> 18));
      s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  return s;
}

TEST(TokenizerTest, RandomUtf8AndRandomBytesRoundTrip) {
  std::vector<std::unique_ptr<Tokenizer>> toks;
  toks.push_back(*Tokenizer::Create(ByteVocabulary()));
  toks.push_back(*Tokenizer::Create(*SyntheticVocabulary(512)));
  toks.push_back(*Tokenizer::Create(*SyntheticVocabulary(2000)));
  SplitMix64 rng(99);
  for (int iter = 0; iter < 300; ++iter) {
    const std::string utf8 = RandomUtf8(rng, rng.Next() % 40);
    std::string bytes(rng.Next() % 40, '\0');
    for (char& c : bytes) c = static_cast<char>(rng.Next());
    for (const auto& tok : toks) {
      ASSERT_EQ(tok->Decode(tok->Encode(utf8, true)), utf8) << iter;
      ASSERT_EQ(tok->Decode(tok->Encode(bytes, false)), bytes) << iter;
    }
  }
}

TEST(TokenizerTest, SyntheticVocabularyIsValidAndReachesWords) {
  EXPECT_FALSE(SyntheticVocabulary(258).ok());
  Vocabulary v = *SyntheticVocabulary(32000);
  EXPECT_EQ(v.tokens.size(), 32000u);
  EXPECT_TRUE(v.Validate().ok());
  auto tok = *Tokenizer::Create(v);
  const std::vector<int32_t> ids = tok->Encode("the", false);
  ASSERT_EQ(ids.size(), 1u);
  EXPECT_EQ(v.tokens[static_cast<size_t>(ids[0])], M("the"));
  EXPECT_EQ(tok->Encode("the people said", false).size(), 3u);
  EXPECT_EQ(*SyntheticVocabulary(600)->tokens.rbegin(), SyntheticVocabulary(600)->tokens.back());
}

TEST(TokenizerTest, VocabularyRoundTripsThroughGguf) {
  Vocabulary v = *SyntheticVocabulary(400);
  v.pad_id = 0;
  v.add_bos = false;
  GgufWriter w;
  WriteVocabulary(v, w);
  Bytes b = *w.WriteToBuffer();
  auto f = GgufFile::OpenFromMemory(b);
  ASSERT_TRUE(f.ok());
  auto back = ReadVocabulary(**f);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->tokens, v.tokens);
  EXPECT_EQ(back->scores, v.scores);
  EXPECT_EQ(back->types, v.types);
  EXPECT_EQ(back->pad_id, 0);
  EXPECT_FALSE(back->add_bos);
  EXPECT_TRUE(back->add_space_prefix);
  EXPECT_TRUE(Tokenizer::FromGguf(**f).ok());
}

TEST(TokenizerTest, RejectsBadVocabularies) {
  Vocabulary v = ByteVocabulary();
  v.model = "gpt2";
  EXPECT_EQ(v.Validate().code(), StatusCode::kUnimplemented);
  v = ByteVocabulary();
  v.scores.pop_back();
  EXPECT_FALSE(v.Validate().ok());
  v = ByteVocabulary();
  v.bos_id = 1000;
  EXPECT_FALSE(v.Validate().ok());
  v = ByteVocabulary();
  v.tokens[5] = "<0xZZ>";
  EXPECT_FALSE(v.Validate().ok());
  v = ByteVocabulary();
  v.tokens[1] = "<unk>";
  EXPECT_FALSE(v.Validate().ok());
}

}  // namespace
}  // namespace flotilla::model
