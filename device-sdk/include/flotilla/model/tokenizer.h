// Tokenizer from GGUF metadata: llama.cpp's "llama" model (SentencePiece-style BPE over
// scores, U+2581 for spaces, byte fallback <0xNN>). The byte-level vocabulary of the
// `tiny` config is a "llama" vocabulary with no pieces beyond the 256 byte tokens.
//
// Round-trip guarantee: with all 256 byte tokens present, Decode(Encode(s)) == s for any
// byte string s (valid UTF-8 or not). To keep it, two corner cases differ from
// llama.cpp: a literal U+2581 in the input is encoded as its three byte tokens (llama.cpp
// turns it into a space), and a space that no piece covers falls back to <0x20> (llama.cpp
// emits the bytes of U+2581). Only normal and user-defined tokens take part in merges,
// so literal "<s>" or "<0x41>" text is never read as a control or byte token.
// "gpt2" BPE vocabularies are not supported (Unimplemented).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "flotilla/core/status.h"
#include "flotilla/model/gguf.h"

namespace flotilla::model {

// tokenizer.ggml.token_type values (llama_token_type).
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

struct Vocabulary {
  std::string model = "llama";  // tokenizer.ggml.model
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<TokenType> types;
  int32_t bos_id = 1;
  int32_t eos_id = 2;
  int32_t unk_id = 0;
  int32_t pad_id = -1;  // -1: none
  bool add_bos = true;
  bool add_space_prefix = true;

  // InvalidArgument for mismatched array lengths, an out-of-range special id, duplicate
  // token text, a byte token not spelled <0xNN>, or an unsupported model.
  Status Validate() const;
};

// 259 tokens: <unk>, <s>, </s>, then <0x00>..<0xFF> (ids 3..258). add_space_prefix is
// off so that plain ASCII maps one byte to one token.
Vocabulary ByteVocabulary();
// `size` >= 259 tokens: the byte vocabulary, then U+2581, printable ASCII, frequent
// English words with all their prefixes (so SPM merges can reach them), then
// <unused_N> fillers. Deterministic. InvalidArgument if size < 259.
Result<Vocabulary> SyntheticVocabulary(int64_t size);

// Writes the tokenizer.ggml.* keys llama.cpp reads.
void WriteVocabulary(const Vocabulary& vocab, GgufWriter& writer);
// Reads them back; InvalidArgument/Unimplemented for missing or malformed keys.
Result<Vocabulary> ReadVocabulary(const GgufFile& file);

// Immutable after creation; all methods are thread-safe.
class Tokenizer {
 public:
  static Result<std::unique_ptr<Tokenizer>> Create(Vocabulary vocab);
  static Result<std::unique_ptr<Tokenizer>> FromGguf(const GgufFile& file);

  // Text to token ids; BOS first when add_bos. Never fails: bytes with no token become
  // byte tokens, or unk_id if the vocabulary has no byte tokens.
  std::vector<int32_t> Encode(std::string_view text, bool add_bos) const;
  // Token ids to text: control tokens are dropped, and one leading space (the one Encode
  // prefixed) is removed when add_space_prefix. Out-of-range ids decode to nothing.
  std::string Decode(std::span<const int32_t> ids) const;
  // The bytes one token stands for (U+2581 → space, <0xNN> → the byte, control → "",
  // unknown → U+2585 as llama.cpp). For streaming output.
  std::string TokenPiece(int32_t id) const;

  const Vocabulary& vocabulary() const { return vocab_; }
  int64_t vocab_size() const { return static_cast<int64_t>(vocab_.tokens.size()); }
  int32_t bos_id() const { return vocab_.bos_id; }
  int32_t eos_id() const { return vocab_.eos_id; }
  bool IsControl(int32_t id) const;

 private:
  explicit Tokenizer(Vocabulary vocab);
  void EmitBytes(std::string_view bytes, std::vector<int32_t>& out) const;

  Vocabulary vocab_;
  std::unordered_map<std::string_view, int32_t> mergeable_;  // views into vocab_.tokens
  int32_t byte_ids_[256];
};

}  // namespace flotilla::model
