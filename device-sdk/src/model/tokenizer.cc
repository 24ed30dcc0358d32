#include "flotilla/model/tokenizer.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <queue>
#include <unordered_set>

#include "model/utf8.h"

namespace flotilla::model {
namespace {

constexpr std::string_view kSpaceMark = "\xE2\x96\x81";  // U+2581 LOWER ONE EIGHTH BLOCK
constexpr std::string_view kUnknownPiece = "\xE2\x96\x85";

std::string ByteTokenText(int b) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "<0x%02X>", b);
  return buf;
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// Byte value of a "<0xNN>" token, or -1.
int ParseByteToken(std::string_view s) {
  if (s.size() != 6 || s.substr(0, 3) != "<0x" || s[5] != '>') return -1;
  const int hi = HexDigit(s[3]);
  const int lo = HexDigit(s[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

// Frequent English words; the synthetic vocabulary adds each with all its prefixes.
constexpr std::array<std::string_view, 120> kCommonWords = {
    "the",   "of",    "and",   "to",    "a",     "in",     "is",    "it",    "you",   "that",  "he",    "was",
    "for",   "on",    "are",   "with",  "as",    "his",    "they",  "be",    "at",    "one",   "have",  "this",
    "from",  "or",    "had",   "by",    "not",   "but",    "what",  "some",  "we",    "can",   "out",   "other",
    "were",  "all",   "there", "when",  "up",    "use",    "your",  "how",   "said",  "an",    "each",  "she",
    "which", "do",    "their", "time",  "if",    "will",   "way",   "about", "many",  "then",  "them",  "would",
    "write", "like",  "so",    "these", "her",   "long",   "make",  "thing", "see",   "him",   "two",   "has",
    "look",  "more",  "day",   "could", "go",    "come",   "did",   "my",    "no",    "most",  "who",   "over",
    "know",  "water", "than",  "call",  "first", "people", "may",   "down",  "side",  "been",  "now",   "find",
    "any",   "new",   "work",  "part",  "take",  "get",    "place", "made",  "live",  "where", "after", "back",
    "little", "only", "round", "man",   "year",  "came",   "show",  "every", "good",  "me",    "give",  "our",
};
constexpr std::array<std::string_view, 12> kSuffixes = {"ing", "ed", "er", "es", "ly", "tion", "s", "en", "est", "al", "ent", "ion"};

}  // namespace

Status Vocabulary::Validate() const {
  if (model != "llama") {
    return UnimplementedError("tokenizer model '" + model + "' is not supported (only 'llama')");
  }
  const size_t n = tokens.size();
  if (n == 0) return InvalidArgumentError("vocabulary is empty");
  if (n > static_cast<size_t>(INT32_MAX)) return InvalidArgumentError("vocabulary too large");
  if (scores.size() != n || types.size() != n) {
    return InvalidArgumentError("tokens/scores/token_type lengths differ (" + std::to_string(n) + ", " +
                                std::to_string(scores.size()) + ", " + std::to_string(types.size()) + ")");
  }
  auto check_id = [&](int32_t id, const char* what, bool optional) -> Status {
    if ((optional && id == -1) || (id >= 0 && static_cast<size_t>(id) < n)) return Status::Ok();
    return InvalidArgumentError(std::string(what) + " id " + std::to_string(id) + " is out of range");
  };
  FLT_RETURN_IF_ERROR(check_id(bos_id, "bos", true));
  FLT_RETURN_IF_ERROR(check_id(eos_id, "eos", true));
  FLT_RETURN_IF_ERROR(check_id(unk_id, "unknown", true));
  FLT_RETURN_IF_ERROR(check_id(pad_id, "padding", true));
  std::unordered_set<std::string_view> seen;
  seen.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (types[i] == TokenType::kByte && ParseByteToken(tokens[i]) < 0) {
      return InvalidArgumentError("byte token " + std::to_string(i) + " is not spelled <0xNN>");
    }
    if (types[i] == TokenType::kNormal && tokens[i].empty()) {
      return InvalidArgumentError("normal token " + std::to_string(i) + " is empty");
    }
    if (!seen.insert(tokens[i]).second) {
      return InvalidArgumentError("duplicate token text at id " + std::to_string(i));
    }
  }
  return Status::Ok();
}

Vocabulary ByteVocabulary() {
  Vocabulary v;
  v.tokens = {"<unk>", "<s>", "</s>"};
  v.types = {TokenType::kUnknown, TokenType::kControl, TokenType::kControl};
  for (int b = 0; b < 256; ++b) {
    v.tokens.push_back(ByteTokenText(b));
    v.types.push_back(TokenType::kByte);
  }
  v.scores.assign(v.tokens.size(), 0.0f);
  v.add_space_prefix = false;
  return v;
}

Result<Vocabulary> SyntheticVocabulary(int64_t size) {
  if (size < 259) return InvalidArgumentError("a vocabulary needs at least 259 tokens (3 specials + 256 bytes)");
  Vocabulary v = ByteVocabulary();
  v.add_space_prefix = true;
  std::vector<std::string> pieces;
  std::unordered_set<std::string> seen;
  auto add = [&](std::string p) {
    if (seen.insert(p).second) pieces.push_back(std::move(p));
  };
  add(std::string(kSpaceMark));
  for (char c = 'a'; c <= 'z'; ++c) add(std::string(1, c));
  for (char c = 'A'; c <= 'Z'; ++c) add(std::string(1, c));
  for (char c = '0'; c <= '9'; ++c) add(std::string(1, c));
  for (char c : std::string_view(".,!?'\";:-()[]{}/\\&*%$#@+=<>_~`|^\n\t")) add(std::string(1, c));
  for (std::string_view w : kCommonWords) {
    const std::string full = std::string(kSpaceMark) + std::string(w);
    for (size_t len = kSpaceMark.size() + 1; len <= full.size(); ++len) add(full.substr(0, len));
    for (size_t len = 2; len <= w.size(); ++len) add(std::string(w.substr(0, len)));
  }
  for (std::string_view s : kSuffixes) {
    for (size_t len = 2; len <= s.size(); ++len) add(std::string(s.substr(0, len)));
  }
  const auto budget = static_cast<size_t>(size) - v.tokens.size();
  if (pieces.size() > budget) pieces.resize(budget);
  for (size_t i = 0; i < pieces.size(); ++i) {
    v.tokens.push_back(std::move(pieces[i]));
    v.scores.push_back(-static_cast<float>(i));  // earlier pieces merge first
    v.types.push_back(TokenType::kNormal);
  }
  for (int64_t i = 0; static_cast<int64_t>(v.tokens.size()) < size; ++i) {
    v.tokens.push_back("<unused_" + std::to_string(i) + ">");
    v.scores.push_back(-1e9f);
    v.types.push_back(TokenType::kUnused);
  }
  return v;
}

void WriteVocabulary(const Vocabulary& v, GgufWriter& w) {
  w.SetString("tokenizer.ggml.model", v.model);
  w.Set("tokenizer.ggml.tokens", GgufValue::StringArray(v.tokens));
  w.Set("tokenizer.ggml.scores", GgufValue::ArrayF32(v.scores));
  std::vector<int32_t> types(v.types.size());
  for (size_t i = 0; i < types.size(); ++i) types[i] = static_cast<int32_t>(v.types[i]);
  w.Set("tokenizer.ggml.token_type", GgufValue::ArrayI32(types));
  if (v.bos_id >= 0) w.SetU32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(v.bos_id));
  if (v.eos_id >= 0) w.SetU32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(v.eos_id));
  if (v.unk_id >= 0) w.SetU32("tokenizer.ggml.unknown_token_id", static_cast<uint32_t>(v.unk_id));
  if (v.pad_id >= 0) w.SetU32("tokenizer.ggml.padding_token_id", static_cast<uint32_t>(v.pad_id));
  w.SetBool("tokenizer.ggml.add_bos_token", v.add_bos);
  w.SetBool("tokenizer.ggml.add_space_prefix", v.add_space_prefix);
}

Result<Vocabulary> ReadVocabulary(const GgufFile& f) {
  Vocabulary v;
  FLT_ASSIGN_OR_RETURN(std::string_view model, f.GetString("tokenizer.ggml.model"));
  v.model = std::string(model);
  if (v.model != "llama") return UnimplementedError("tokenizer model '" + v.model + "' is not supported (only 'llama')");
  FLT_ASSIGN_OR_RETURN(const GgufValue* tokens, f.Get("tokenizer.ggml.tokens"));
  FLT_ASSIGN_OR_RETURN(std::span<const std::string> tok, tokens->GetStringArray());
  v.tokens.assign(tok.begin(), tok.end());
  if (const GgufValue* scores = f.Find("tokenizer.ggml.scores")) {
    FLT_ASSIGN_OR_RETURN(v.scores, scores->GetF32Array());
  } else {
    v.scores.assign(v.tokens.size(), 0.0f);
  }
  if (const GgufValue* types = f.Find("tokenizer.ggml.token_type")) {
    FLT_ASSIGN_OR_RETURN(std::vector<int64_t> raw, types->GetIntArray());
    v.types.resize(raw.size());
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] < 0 || raw[i] > 6) return InvalidArgumentError("token " + std::to_string(i) + " has unknown type");
      v.types[i] = static_cast<TokenType>(raw[i]);
    }
  } else {
    v.types.assign(v.tokens.size(), TokenType::kNormal);
  }
  auto read_id = [&](std::string_view key, int32_t* out) -> Status {
    if (f.Find(key) == nullptr) return Status::Ok();
    FLT_ASSIGN_OR_RETURN(uint64_t id, f.GetUInt(key));
    if (id > static_cast<uint64_t>(INT32_MAX)) return InvalidArgumentError(std::string(key) + " is out of range");
    *out = static_cast<int32_t>(id);
    return Status::Ok();
  };
  FLT_RETURN_IF_ERROR(read_id("tokenizer.ggml.bos_token_id", &v.bos_id));
  FLT_RETURN_IF_ERROR(read_id("tokenizer.ggml.eos_token_id", &v.eos_id));
  FLT_RETURN_IF_ERROR(read_id("tokenizer.ggml.unknown_token_id", &v.unk_id));
  FLT_RETURN_IF_ERROR(read_id("tokenizer.ggml.padding_token_id", &v.pad_id));
  if (f.Find("tokenizer.ggml.add_bos_token") != nullptr) {
    FLT_ASSIGN_OR_RETURN(v.add_bos, f.GetBool("tokenizer.ggml.add_bos_token"));
  }
  if (f.Find("tokenizer.ggml.add_space_prefix") != nullptr) {
    FLT_ASSIGN_OR_RETURN(v.add_space_prefix, f.GetBool("tokenizer.ggml.add_space_prefix"));
  }
  FLT_RETURN_IF_ERROR(v.Validate());
  return v;
}

Tokenizer::Tokenizer(Vocabulary vocab) : vocab_(std::move(vocab)) {
  std::fill(std::begin(byte_ids_), std::end(byte_ids_), -1);
  for (size_t i = 0; i < vocab_.tokens.size(); ++i) {
    const auto id = static_cast<int32_t>(i);
    if (vocab_.types[i] == TokenType::kByte) {
      byte_ids_[ParseByteToken(vocab_.tokens[i])] = id;
    } else if (vocab_.types[i] == TokenType::kNormal || vocab_.types[i] == TokenType::kUserDefined) {
      mergeable_.emplace(vocab_.tokens[i], id);
    }
  }
}

Result<std::unique_ptr<Tokenizer>> Tokenizer::Create(Vocabulary vocab) {
  FLT_RETURN_IF_ERROR(vocab.Validate());
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(vocab)));
}

Result<std::unique_ptr<Tokenizer>> Tokenizer::FromGguf(const GgufFile& file) {
  FLT_ASSIGN_OR_RETURN(Vocabulary v, ReadVocabulary(file));
  return Create(std::move(v));
}

bool Tokenizer::IsControl(int32_t id) const {
  return id >= 0 && id < vocab_size() && vocab_.types[static_cast<size_t>(id)] == TokenType::kControl;
}

void Tokenizer::EmitBytes(std::string_view bytes, std::vector<int32_t>& out) const {
  for (char c : bytes) {
    const int32_t id = byte_ids_[static_cast<uint8_t>(c)];
    if (id >= 0) {
      out.push_back(id);
    } else if (vocab_.unk_id >= 0) {
      out.push_back(vocab_.unk_id);
    }
  }
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_bos) const {
  std::vector<int32_t> out;
  if (add_bos && vocab_.bos_id >= 0) out.push_back(vocab_.bos_id);
  if (text.empty()) return out;

  // Symbols over an escaped copy of the text (spaces → U+2581). Each symbol remembers the
  // original bytes it came from, for byte fallback. `raw` symbols (literal U+2581, invalid
  // UTF-8) never merge and always fall back to their own bytes.
  struct Symbol {
    size_t start;  // in `esc`
    size_t len;
    std::string_view original;
    bool raw;
    int prev;
    int next;
  };
  std::string esc;
  esc.reserve(text.size() * 3 + 3);
  std::vector<Symbol> sym;
  auto push = [&](std::string_view escaped, std::string_view original, bool raw) {
    const int idx = static_cast<int>(sym.size());
    sym.push_back({esc.size(), escaped.size(), original, raw, idx - 1, idx + 1});
    esc.append(escaped);
  };
  if (vocab_.add_space_prefix) push(kSpaceMark, " ", false);
  for (size_t i = 0; i < text.size();) {
    const size_t len = utf8::DecodeAt(text, i).length;
    if (len == 0) {
      push(text.substr(i, 1), text.substr(i, 1), true);
      i += 1;
    } else if (text[i] == ' ') {
      push(kSpaceMark, text.substr(i, 1), false);
      i += 1;
    } else {
      const std::string_view ch = text.substr(i, len);
      push(ch, ch, ch == kSpaceMark);
      i += len;
    }
  }
  sym.back().next = -1;

  struct Bigram {
    int left;
    int right;
    float score;
    size_t size;
  };
  auto worse = [](const Bigram& a, const Bigram& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  };
  std::priority_queue<Bigram, std::vector<Bigram>, decltype(worse)> queue(worse);
  auto try_add = [&](int left, int right) {
    if (left < 0 || right < 0 || sym[static_cast<size_t>(left)].raw || sym[static_cast<size_t>(right)].raw) return;
    const Symbol& l = sym[static_cast<size_t>(left)];
    const Symbol& r = sym[static_cast<size_t>(right)];
    auto it = mergeable_.find(std::string_view(esc).substr(l.start, l.len + r.len));
    if (it == mergeable_.end()) return;
    queue.push({left, right, vocab_.scores[static_cast<size_t>(it->second)], l.len + r.len});
  };
  for (size_t i = 1; i < sym.size(); ++i) try_add(static_cast<int>(i) - 1, static_cast<int>(i));

  while (!queue.empty()) {
    const Bigram b = queue.top();
    queue.pop();
    Symbol& l = sym[static_cast<size_t>(b.left)];
    Symbol& r = sym[static_cast<size_t>(b.right)];
    if (l.len == 0 || r.len == 0 || l.len + r.len != b.size) continue;  // stale
    l.len += r.len;
    r.len = 0;
    l.next = r.next;
    if (r.next >= 0) sym[static_cast<size_t>(r.next)].prev = b.left;
    try_add(l.prev, b.left);
    try_add(b.left, l.next);
  }

  for (int i = 0; i != -1; i = sym[static_cast<size_t>(i)].next) {
    const Symbol& s = sym[static_cast<size_t>(i)];
    if (!s.raw) {
      auto it = mergeable_.find(std::string_view(esc).substr(s.start, s.len));
      if (it != mergeable_.end()) {
        out.push_back(it->second);
        continue;
      }
    }
    // Unmatched symbols are always single characters (merges only produce tokens).
    EmitBytes(s.original, out);
  }
  return out;
}

std::string Tokenizer::TokenPiece(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return "";
  const auto i = static_cast<size_t>(id);
  const std::string& text = vocab_.tokens[i];
  switch (vocab_.types[i]) {
    case TokenType::kByte:
      return std::string(1, static_cast<char>(ParseByteToken(text)));
    case TokenType::kControl:
    case TokenType::kUnused:
      return "";
    case TokenType::kUnknown:
      return std::string(kUnknownPiece);
    default:
      break;
  }
  std::string out;
  out.reserve(text.size());
  for (size_t p = 0; p < text.size();) {
    if (text.compare(p, kSpaceMark.size(), kSpaceMark) == 0) {
      out.push_back(' ');
      p += kSpaceMark.size();
    } else {
      out.push_back(text[p++]);
    }
  }
  return out;
}

std::string Tokenizer::Decode(std::span<const int32_t> ids) const {
  std::string out;
  bool first = true;
  for (int32_t id : ids) {
    if (IsControl(id)) continue;
    std::string piece = TokenPiece(id);
    if (first && vocab_.add_space_prefix && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
    first = false;
    out += piece;
  }
  return out;
}

}  // namespace flotilla::model
