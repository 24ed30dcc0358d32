// BPE training with incremental pair counts (the standard algorithm of SentencePiece's and
// Hugging Face's BPE trainers): the corpus is reduced to distinct words with counts, every
// adjacent symbol pair keeps a count and the list of words it occurs in, and a max-heap
// with lazy deletion yields the most frequent pair. A merge rewrites only the words that
// contain the pair and adjusts the counts of the pairs around each occurrence, so one
// merge costs O(occurrences), not a recount of the corpus.
#include "flotilla/model/tokenizer_trainer.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <queue>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "model/utf8.h"

namespace flotilla::model {
namespace {

constexpr uint32_t kSpaceMarkCp = 0x2581;  // U+2581 "▁"
// Longer runs of one class are cut into chunks for training (pieces are far shorter, and
// it keeps a merge's rewrite of one word cheap). The cut only costs the pair at the cut.
constexpr size_t kMaxWordChars = 256;

enum class CharClass : uint8_t { kSpace, kLetter, kDigit, kPunct, kControl };

CharClass ClassOf(uint32_t cp) {
  if (cp == kSpaceMarkCp) return CharClass::kSpace;
  if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp < 0xA0)) return CharClass::kControl;
  if (cp >= '0' && cp <= '9') return CharClass::kDigit;
  if (cp < 0x80) {
    const bool alpha = (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z');
    return alpha ? CharClass::kLetter : CharClass::kPunct;
  }
  // Latin-1 punctuation and the General Punctuation block (dashes, quotes, ellipsis).
  if ((cp >= 0xA1 && cp <= 0xBF && cp != 0xAA && cp != 0xB5 && cp != 0xBA) || cp == 0xD7 || cp == 0xF7 ||
      (cp >= 0x2000 && cp <= 0x206F)) {
    return CharClass::kPunct;
  }
  return CharClass::kLetter;
}

// A pre-tokenized word: code points (U+2581 for a space) and how often it occurs.
using WordCounts = std::unordered_map<std::u32string, int64_t>;

// Splits `doc` into words (see tokenizer_trainer.h) and counts them. Characters the
// Tokenizer never merges (invalid UTF-8, literal U+2581) end the current word and are
// charged to `fallback_tokens` (one byte token per byte).
void CountWords(std::string_view doc, bool add_space_prefix, WordCounts& words, int64_t& fallback_tokens) {
  std::u32string word;
  auto flush = [&] {
    if (!word.empty()) ++words[word];
    word.clear();
  };
  auto push = [&](uint32_t cp) {
    if (!word.empty()) {
      const CharClass prev = ClassOf(word.back());
      const CharClass cur = ClassOf(cp);
      const bool boundary = cur == CharClass::kSpace ? prev != CharClass::kSpace
                                                     : (prev != CharClass::kSpace && prev != cur);
      if (boundary || word.size() >= kMaxWordChars) flush();
    }
    word.push_back(cp);
  };
  if (add_space_prefix && !doc.empty()) push(kSpaceMarkCp);
  for (size_t i = 0; i < doc.size();) {
    const utf8::Decoded d = utf8::DecodeAt(doc, i);
    if (d.length == 0 || d.code_point == kSpaceMarkCp) {
      flush();
      const size_t n = d.length == 0 ? 1 : d.length;
      fallback_tokens += static_cast<int64_t>(n);
      i += n;
      continue;
    }
    push(doc[i] == ' ' ? kSpaceMarkCp : d.code_point);
    i += d.length;
  }
  flush();
}

std::string EncodeUtf8(uint32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return out;
}

struct Symbol {
  std::string text;   // escaped piece text (U+2581 for spaces)
  int chars = 0;      // Unicode characters
  int64_t cost = 1;   // tokens the Tokenizer emits for it when it stays unmerged
};

struct Word {
  std::vector<int32_t> syms;
  int64_t count = 0;
};

using PairKey = uint64_t;
PairKey Key(int32_t a, int32_t b) { return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b); }
int32_t Left(PairKey k) { return static_cast<int32_t>(k >> 32); }
int32_t Right(PairKey k) { return static_cast<int32_t>(k & 0xFFFFFFFFu); }

struct HeapEntry {
  int64_t count;
  PairKey pair;
};
// Most frequent first; ties to the smaller (left, right) ids, which are creation order,
// so the result never depends on hash-table iteration order.
struct HeapLess {
  bool operator()(const HeapEntry& x, const HeapEntry& y) const {
    return x.count < y.count || (x.count == y.count && x.pair > y.pair);
  }
};

class BpeTrainer {
 public:
  BpeTrainer(const TokenizerTrainerOptions& o) : opt_(o) {}

  // Builds symbols and words from the counted words. Returns the multi-byte characters
  // that get a vocabulary entry (by frequency), as symbol ids.
  std::vector<int32_t> Init(const WordCounts& counts, int64_t char_budget, int64_t& fallback_tokens) {
    // Character frequencies → the covered set (most frequent first, ties by code point).
    std::unordered_map<uint32_t, int64_t> char_freq;
    int64_t total_chars = 0;
    for (const auto& [w, c] : counts) {
      for (uint32_t cp : w) char_freq[cp] += c;
      total_chars += c * static_cast<int64_t>(w.size());
    }
    std::vector<std::pair<uint32_t, int64_t>> chars(char_freq.begin(), char_freq.end());
    std::sort(chars.begin(), chars.end(), [](const auto& x, const auto& y) {
      return x.second != y.second ? x.second > y.second : x.first < y.first;
    });
    std::unordered_map<uint32_t, int32_t> char_id;
    std::vector<int32_t> char_pieces;
    int64_t covered = 0;
    for (const auto& [cp, freq] : chars) {
      // Always keep the space mark and ASCII (their byte tokens cost nothing extra); the
      // rest while the coverage target is not yet met.
      const bool cheap = cp < 0x80 || cp == kSpaceMarkCp;
      if (!cheap && static_cast<double>(covered) >= opt_.character_coverage * static_cast<double>(total_chars)) continue;
      covered += freq;
      const auto id = static_cast<int32_t>(symbols_.size());
      std::string text = EncodeUtf8(cp);
      const bool multibyte = !cheap;
      const bool gets_entry = multibyte && static_cast<int64_t>(char_pieces.size()) < char_budget;
      symbols_.push_back({text, 1, gets_entry || !multibyte ? 1 : static_cast<int64_t>(text.size())});
      by_text_.emplace(std::move(text), id);
      char_id.emplace(cp, id);
      if (gets_entry) char_pieces.push_back(id);
    }
    // Words as symbol sequences, split at uncovered characters (byte fallback).
    std::vector<std::pair<const std::u32string*, int64_t>> sorted;
    sorted.reserve(counts.size());
    for (const auto& [w, c] : counts) sorted.emplace_back(&w, c);
    std::sort(sorted.begin(), sorted.end(), [](const auto& x, const auto& y) { return *x.first < *y.first; });
    for (const auto& [w, c] : sorted) {
      Word word;
      word.count = c;
      for (uint32_t cp : *w) {
        auto it = char_id.find(cp);
        if (it == char_id.end()) {
          fallback_tokens += c * static_cast<int64_t>(EncodeUtf8(cp).size());
          AddWord(std::move(word));
          word = Word{{}, c};
          continue;
        }
        word.syms.push_back(it->second);
      }
      AddWord(std::move(word));
    }
    for (uint32_t w = 0; w < words_.size(); ++w) {
      const std::vector<int32_t>& s = words_[w].syms;
      for (size_t i = 0; i + 1 < s.size(); ++i) AddPair(s[i], s[i + 1], words_[w].count, w);
    }
    for (const auto& [k, c] : pair_count_) heap_.push({c, k});
    return char_pieces;
  }

  // Runs up to `budget` merges creating new pieces; returns their symbol ids in order.
  std::vector<int32_t> Merge(int64_t budget) {
    std::vector<int32_t> learned;
    while (static_cast<int64_t>(learned.size()) < budget && !heap_.empty()) {
      const HeapEntry top = heap_.top();
      heap_.pop();
      auto it = pair_count_.find(top.pair);
      if (it == pair_count_.end() || it->second != top.count) continue;  // stale
      if (top.count < opt_.min_frequency) break;
      const int32_t a = Left(top.pair), b = Right(top.pair);
      std::string text = symbols_[static_cast<size_t>(a)].text + symbols_[static_cast<size_t>(b)].text;
      int32_t x;
      auto existing = by_text_.find(text);
      if (existing != by_text_.end()) {
        x = existing->second;  // another split of a piece we already have: no new entry
      } else {
        x = static_cast<int32_t>(symbols_.size());
        symbols_.push_back({text, symbols_[static_cast<size_t>(a)].chars + symbols_[static_cast<size_t>(b)].chars, 1});
        by_text_.emplace(std::move(text), x);
        learned.push_back(x);
      }
      ApplyMerge(top.pair, x);
    }
    return learned;
  }

  int64_t SegmentedTokens() const {
    int64_t n = 0;
    for (const Word& w : words_) {
      for (int32_t s : w.syms) n += w.count * symbols_[static_cast<size_t>(s)].cost;
    }
    return n;
  }
  const Symbol& symbol(int32_t id) const { return symbols_[static_cast<size_t>(id)]; }
  size_t word_count() const { return words_.size(); }

 private:
  void AddWord(Word w) {
    if (!w.syms.empty()) words_.push_back(std::move(w));
  }

  bool Mergeable(int32_t a, int32_t b) const {
    return symbols_[static_cast<size_t>(a)].chars + symbols_[static_cast<size_t>(b)].chars <= opt_.max_piece_chars;
  }

  void AddPair(int32_t a, int32_t b, int64_t count, uint32_t word) {
    if (!Mergeable(a, b)) return;
    const PairKey k = Key(a, b);
    pair_count_[k] += count;
    where_[k].push_back(word);
  }

  // Replaces every occurrence of `pair` (left to right, non-overlapping) by `x` in the
  // words that contain it, updating neighbouring pair counts by deltas.
  void ApplyMerge(PairKey pair, int32_t x) {
    const int32_t a = Left(pair), b = Right(pair);
    std::vector<uint32_t> words = std::move(where_[pair]);
    where_.erase(pair);
    pair_count_.erase(pair);
    std::sort(words.begin(), words.end());
    words.erase(std::unique(words.begin(), words.end()), words.end());
    delta_.clear();
    std::vector<int32_t> out;
    for (uint32_t w : words) {
      Word& word = words_[w];
      const std::vector<int32_t>& s = word.syms;
      const int64_t c = word.count;
      out.clear();
      bool changed = false;
      for (size_t i = 0; i < s.size();) {
        if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
          if (!out.empty()) {
            Delta(out.back(), a, -c, w);
            Delta(out.back(), x, c, w);
          }
          if (i + 2 < s.size()) {
            Delta(b, s[i + 2], -c, w);
            Delta(x, s[i + 2], c, w);
          }
          out.push_back(x);
          i += 2;
          changed = true;
        } else {
          out.push_back(s[i]);
          ++i;
        }
      }
      if (changed) word.syms = out;
    }
    for (const auto& [k, d] : delta_) {
      if (d == 0 || k == pair) continue;
      int64_t& count = pair_count_[k];
      count += d;
      if (count <= 0) {
        pair_count_.erase(k);
        where_.erase(k);
      } else {
        heap_.push({count, k});
      }
    }
  }

  void Delta(int32_t l, int32_t r, int64_t d, uint32_t word) {
    if (!Mergeable(l, r)) return;
    const PairKey k = Key(l, r);
    delta_[k] += d;
    if (d > 0) where_[k].push_back(word);
  }

  const TokenizerTrainerOptions& opt_;
  std::vector<Symbol> symbols_;
  std::unordered_map<std::string, int32_t> by_text_;
  std::vector<Word> words_;
  std::unordered_map<PairKey, int64_t> pair_count_;
  std::unordered_map<PairKey, std::vector<uint32_t>> where_;
  std::unordered_map<PairKey, int64_t> delta_;
  std::priority_queue<HeapEntry, std::vector<HeapEntry>, HeapLess> heap_;
};

Status ValidateOptions(const TokenizerTrainerOptions& o) {
  if (o.vocab_size < 259) {
    return InvalidArgumentError("vocab_size " + std::to_string(o.vocab_size) +
                                " is below 259 (3 special tokens + 256 byte tokens)");
  }
  if (o.vocab_size > (int64_t{1} << 24)) {
    return InvalidArgumentError("vocab_size " + std::to_string(o.vocab_size) + " is above 2^24 (scores must stay exact)");
  }
  if (o.max_piece_chars < 2) return InvalidArgumentError("max_piece_chars must be at least 2");
  if (o.min_frequency < 1) return InvalidArgumentError("min_frequency must be at least 1");
  if (!(o.character_coverage > 0.0 && o.character_coverage <= 1.0)) {
    return InvalidArgumentError("character_coverage must be in (0, 1]");
  }
  return Status::Ok();
}

}  // namespace

Result<Vocabulary> TrainTokenizer(std::span<const std::string_view> documents, const TokenizerTrainerOptions& options,
                                  TokenizerTrainingStats* stats) {
  FLT_RETURN_IF_ERROR(ValidateOptions(options));
  const auto t0 = std::chrono::steady_clock::now();
  TokenizerTrainingStats st;
  st.documents = static_cast<int64_t>(documents.size());

  WordCounts counts;
  int64_t fallback_tokens = 0;
  for (std::string_view doc : documents) {
    st.corpus_bytes += static_cast<int64_t>(doc.size());
    CountWords(doc, options.add_space_prefix, counts, fallback_tokens);
  }
  st.unique_words = static_cast<int64_t>(counts.size());

  Vocabulary v = ByteVocabulary();
  v.add_space_prefix = options.add_space_prefix;
  v.add_bos = options.add_bos;
  const int64_t learnable = options.vocab_size - static_cast<int64_t>(v.tokens.size());

  BpeTrainer bpe(options);
  const std::vector<int32_t> char_pieces = bpe.Init(counts, learnable / 2, fallback_tokens);
  counts.clear();
  const std::vector<int32_t> merges = bpe.Merge(learnable - static_cast<int64_t>(char_pieces.size()));

  // Merged pieces in merge order: score -rank makes the Tokenizer replay them in order.
  int64_t rank = 0;
  for (int32_t id : merges) {
    v.tokens.push_back(bpe.symbol(id).text);
    v.scores.push_back(-static_cast<float>(rank++));
    v.types.push_back(TokenType::kNormal);
  }
  // Single characters never win a merge, so their score only has to stay below the merges.
  for (int32_t id : char_pieces) {
    v.tokens.push_back(bpe.symbol(id).text);
    v.scores.push_back(-static_cast<float>(rank++));
    v.types.push_back(TokenType::kNormal);
  }
  for (int64_t i = 0; static_cast<int64_t>(v.tokens.size()) < options.vocab_size; ++i) {
    v.tokens.push_back("<unused_" + std::to_string(i) + ">");
    v.scores.push_back(-1e9f);
    v.types.push_back(TokenType::kUnused);
    ++st.unused;
  }
  st.merges = static_cast<int64_t>(merges.size());
  st.char_pieces = static_cast<int64_t>(char_pieces.size());
  st.trained_tokens = bpe.SegmentedTokens() + fallback_tokens;
  st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  FLT_RETURN_IF_ERROR(v.Validate());
  if (stats != nullptr) *stats = st;
  return v;
}

Result<Vocabulary> TrainTokenizer(std::string_view text, const TokenizerTrainerOptions& options,
                                  TokenizerTrainingStats* stats) {
  const std::string_view docs[1] = {text};
  return TrainTokenizer(std::span<const std::string_view>(docs), options, stats);
}

}  // namespace flotilla::model
