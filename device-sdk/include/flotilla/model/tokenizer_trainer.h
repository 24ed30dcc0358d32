// SentencePiece-style BPE tokenizer trainer producing a flotilla "llama" Vocabulary that
// the existing Tokenizer (tokenizer.h) reads: <unk>, <s>, </s>, the 256 byte tokens
// <0x00>..<0xFF>, then the learned merges in merge order with score -rank (the llama SPM
// convention: Tokenizer merges the highest-scoring adjacent pair first, so it replays the
// training merges), then multi-byte characters as single pieces, then <unused_N> fillers
// if the corpus ran out of merges. The vocabulary has exactly `vocab_size` tokens.
//
// Pre-tokenization (why pieces never span words): spaces become U+2581 ("▁"), a "▁" is
// prefixed to each document when add_space_prefix (as Tokenizer::Encode does), and a
// piece never crosses a word boundary: a boundary sits before a run of "▁", and between
// two non-"▁" characters of different classes (letters/other, digits, punctuation,
// control characters such as '\n'). So "▁the", "▁▁", "ing", "." and "2024" can be pieces,
// "e▁t" or "s." cannot. Single-byte characters (ASCII, and the space) get no piece of
// their own: their byte token already encodes them in one token. Rare characters beyond
// `character_coverage`, invalid UTF-8 and literal U+2581 never join a piece (the Tokenizer
// byte-falls-back on them).
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "flotilla/core/status.h"
#include "flotilla/model/tokenizer.h"

namespace flotilla::model {

struct TokenizerTrainerOptions {
  // Exact number of tokens in the result, >= 259 (3 specials + 256 bytes).
  int64_t vocab_size = 4096;
  // Longest learned piece in Unicode characters ("▁" counts as one), >= 2.
  int max_piece_chars = 16;
  // A pair is merged only while it occurs at least this often (>= 1).
  int64_t min_frequency = 2;
  // Fraction of character occurrences (0 < c <= 1) the character set must cover; the
  // rarest characters beyond it never join a piece. Multi-byte characters inside the set
  // also take vocabulary entries, at most half of the learnable budget.
  double character_coverage = 0.9995;
  // Stored in the vocabulary and used for pre-tokenization (as Tokenizer::Encode).
  bool add_space_prefix = true;
  bool add_bos = true;
};

struct TokenizerTrainingStats {
  int64_t documents = 0;
  int64_t corpus_bytes = 0;
  int64_t unique_words = 0;     // distinct pre-tokenized words
  int64_t merges = 0;           // learned pieces (vocabulary entries from merges)
  int64_t char_pieces = 0;      // multi-byte characters given their own entry
  int64_t unused = 0;           // <unused_N> fillers (corpus exhausted before vocab_size)
  // Tokens the training segmentation needs for the whole corpus (no BOS); the Tokenizer
  // built from the vocabulary reproduces it up to SPM's score-order tie effects.
  int64_t trained_tokens = 0;
  double seconds = 0;
};

// Trains on `documents` (each encoded on its own, as Tokenizer::Encode(doc) would).
// Deterministic: same input and options give the same vocabulary on every platform.
// InvalidArgument for bad options (vocab_size < 259, max_piece_chars < 2, coverage out of
// (0, 1], min_frequency < 1). Never fails on the corpus content (any bytes are fine; an
// empty corpus yields bytes + fillers). Thread-safe (no shared state). Roughly linear in
// corpus size plus O(affected words) per merge: a few MB to 4096 tokens in seconds.
Result<Vocabulary> TrainTokenizer(std::span<const std::string_view> documents, const TokenizerTrainerOptions& options,
                                  TokenizerTrainingStats* stats = nullptr);

// One document: the whole text, encoded as a single Tokenizer::Encode(text).
Result<Vocabulary> TrainTokenizer(std::string_view text, const TokenizerTrainerOptions& options,
                                  TokenizerTrainingStats* stats = nullptr);

}  // namespace flotilla::model
