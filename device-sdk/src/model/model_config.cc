#include "flotilla/model/model_config.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

#include "flotilla/core/check.h"

namespace flotilla::model {
namespace {

struct Named {
  std::string_view name;
  ModelConfig config;
};

ModelConfig Make(int64_t dim, int64_t layers, int64_t heads, int64_t kv_heads, int64_t ffn, int64_t vocab, int64_t ctx) {
  ModelConfig c;
  c.dim = dim;
  c.n_layers = layers;
  c.n_heads = heads;
  c.n_kv_heads = kv_heads;
  c.ffn_dim = ffn;
  c.vocab_size = vocab;
  c.context_length = ctx;
  return c;
}

const std::array<Named, 4>& NamedTable() {
  static const std::array<Named, 4> kTable = {{
      {"tiny", Make(64, 2, 4, 2, 128, 259, 64)},
      {"train", Make(256, 4, 8, 4, 768, 512, 256)},
      {"15m", Make(288, 6, 6, 6, 768, 32000, 256)},
      {"110m", Make(768, 12, 12, 12, 2048, 32000, 1024)},
  }};
  return kTable;
}

constexpr std::string_view kPrefix = "llama.";

std::string Key(std::string_view suffix) { return std::string(kPrefix) + std::string(suffix); }

Result<int64_t> ReadCount(const GgufFile& f, std::string_view suffix, bool required, int64_t fallback) {
  const std::string key = Key(suffix);
  const GgufValue* v = f.Find(key);
  if (v == nullptr) {
    if (required) return InvalidArgumentError("required key '" + key + "' is missing");
    return fallback;
  }
  if (v->is_array()) return UnimplementedError("per-layer values for '" + key + "' are not supported");
  Result<uint64_t> u = v->GetUInt();
  if (!u.ok()) return InvalidArgumentError("key '" + key + "': " + u.status().message());
  if (*u > static_cast<uint64_t>(std::numeric_limits<int32_t>::max())) {
    return InvalidArgumentError("key '" + key + "' value " + std::to_string(*u) + " is implausibly large");
  }
  return static_cast<int64_t>(*u);
}

Result<float> ReadFloat(const GgufFile& f, std::string_view suffix, bool required, float fallback) {
  const std::string key = Key(suffix);
  if (f.Find(key) == nullptr) {
    if (required) return InvalidArgumentError("required key '" + key + "' is missing");
    return fallback;
  }
  FLT_ASSIGN_OR_RETURN(double d, f.GetFloat(key));
  return static_cast<float>(d);
}

void Permute(std::span<const float> in, std::span<float> out, int64_t n_head, int64_t n_in, bool to_llama) {
  FLT_CHECK(in.size() == out.size() && n_head > 0 && n_in > 0);
  const auto rows = static_cast<int64_t>(in.size()) / n_in;
  FLT_CHECK(rows * n_in == static_cast<int64_t>(in.size()) && rows % n_head == 0);
  const int64_t hd = rows / n_head;
  FLT_CHECK(hd % 2 == 0);
  for (int64_t h = 0; h < n_head; ++h) {
    for (int64_t i = 0; i < hd / 2; ++i) {
      for (int64_t j = 0; j < 2; ++j) {
        // reshape(n_head, 2, hd/2, n_in).swapaxes(1, 2): llama row (i, j) <- HF row (j, i).
        const int64_t llama_row = h * hd + 2 * i + j;
        const int64_t hf_row = h * hd + j * (hd / 2) + i;
        const int64_t src = to_llama ? hf_row : llama_row;
        const int64_t dst = to_llama ? llama_row : hf_row;
        std::copy_n(in.begin() + src * n_in, n_in, out.begin() + dst * n_in);
      }
    }
  }
}

}  // namespace

Status ModelConfig::Validate() const {
  if (dim <= 0 || n_layers <= 0 || n_heads <= 0 || n_kv_heads <= 0 || ffn_dim <= 0 || vocab_size <= 0 ||
      context_length <= 0) {
    return InvalidArgumentError("model sizes must be positive");
  }
  if (dim % n_heads != 0) return InvalidArgumentError("dim " + std::to_string(dim) + " is not a multiple of n_heads");
  if (head_dim() % 2 != 0) return InvalidArgumentError("head_dim " + std::to_string(head_dim()) + " must be even");
  if (n_heads % n_kv_heads != 0) return InvalidArgumentError("n_heads must be a multiple of n_kv_heads");
  if (!(rope_theta > 0) || !std::isfinite(rope_theta)) return InvalidArgumentError("rope_theta must be positive");
  if (!(rms_eps > 0) || !std::isfinite(rms_eps)) return InvalidArgumentError("rms_eps must be positive");
  return Status::Ok();
}

int64_t ModelConfig::ParameterCount() const {
  const int64_t per_layer = 2 * dim + dim * dim * 2 + 2 * dim * kv_dim() + 3 * dim * ffn_dim;
  return vocab_size * dim * (tied_output ? 1 : 2) + dim + n_layers * per_layer;
}

Result<ModelConfig> NamedConfig(std::string_view name) {
  for (const Named& n : NamedTable()) {
    if (n.name == name) return n.config;
  }
  return NotFoundError("unknown model config '" + std::string(name) + "' (known: tiny, train, 15m, 110m)");
}

std::span<const std::string_view> NamedConfigNames() {
  static const std::array<std::string_view, 4> kNames = {"tiny", "train", "15m", "110m"};
  return kNames;
}

void WriteLlamaConfig(const ModelConfig& c, GgufWriter& w) {
  auto u32 = [](int64_t v) { return static_cast<uint32_t>(v); };
  w.SetString(std::string(kKeyArchitecture), "llama");
  w.SetU32(Key("context_length"), u32(c.context_length));
  w.SetU32(Key("embedding_length"), u32(c.dim));
  w.SetU32(Key("block_count"), u32(c.n_layers));
  w.SetU32(Key("feed_forward_length"), u32(c.ffn_dim));
  w.SetU32(Key("attention.head_count"), u32(c.n_heads));
  w.SetU32(Key("attention.head_count_kv"), u32(c.n_kv_heads));
  w.SetF32(Key("attention.layer_norm_rms_epsilon"), c.rms_eps);
  w.SetU32(Key("rope.dimension_count"), u32(c.head_dim()));
  w.SetF32(Key("rope.freq_base"), c.rope_theta);
  w.SetU32(Key("vocab_size"), u32(c.vocab_size));
}

Result<ModelConfig> ReadLlamaConfig(const GgufFile& f) {
  FLT_ASSIGN_OR_RETURN(std::string_view arch, f.GetString(kKeyArchitecture));
  if (arch != "llama") return InvalidArgumentError("architecture is '" + std::string(arch) + "', expected 'llama'");
  ModelConfig c;
  FLT_ASSIGN_OR_RETURN(c.context_length, ReadCount(f, "context_length", true, 0));
  FLT_ASSIGN_OR_RETURN(c.dim, ReadCount(f, "embedding_length", true, 0));
  FLT_ASSIGN_OR_RETURN(c.n_layers, ReadCount(f, "block_count", true, 0));
  FLT_ASSIGN_OR_RETURN(c.ffn_dim, ReadCount(f, "feed_forward_length", true, 0));
  FLT_ASSIGN_OR_RETURN(c.n_heads, ReadCount(f, "attention.head_count", true, 0));
  FLT_ASSIGN_OR_RETURN(c.n_kv_heads, ReadCount(f, "attention.head_count_kv", false, c.n_heads));
  FLT_ASSIGN_OR_RETURN(c.rms_eps, ReadFloat(f, "attention.layer_norm_rms_epsilon", true, 0));
  FLT_ASSIGN_OR_RETURN(c.rope_theta, ReadFloat(f, "rope.freq_base", false, 10000.0f));
  int64_t vocab_from_tokens = 0;
  if (const GgufValue* tokens = f.Find("tokenizer.ggml.tokens")) vocab_from_tokens = static_cast<int64_t>(tokens->array_size());
  FLT_ASSIGN_OR_RETURN(c.vocab_size, ReadCount(f, "vocab_size", false, vocab_from_tokens));
  if (c.n_heads > 0 && c.dim % c.n_heads == 0) {
    FLT_ASSIGN_OR_RETURN(int64_t rope_dims, ReadCount(f, "rope.dimension_count", false, c.dim / c.n_heads));
    if (rope_dims != c.dim / c.n_heads) {
      return UnimplementedError("partial rotary embeddings (rope.dimension_count " + std::to_string(rope_dims) +
                                " != head_dim) are not supported");
    }
  }
  c.tied_output = f.FindTensor(kOutputName) == nullptr;
  FLT_RETURN_IF_ERROR(c.Validate());
  return c;
}

std::string LayerTensorName(int64_t layer, LlamaTensor which) {
  static constexpr std::array<std::string_view, 9> kNames = {"attn_norm", "attn_q",   "attn_k",  "attn_v",  "attn_output",
                                                             "ffn_norm",  "ffn_gate", "ffn_up",  "ffn_down"};
  return "blk." + std::to_string(layer) + "." + std::string(kNames[static_cast<size_t>(which)]) + ".weight";
}

std::vector<TensorSpec> LlamaTensorSpecs(const ModelConfig& c) {
  std::vector<TensorSpec> s;
  s.push_back({std::string(kTokenEmbdName), {c.dim, c.vocab_size}, false});
  for (int64_t l = 0; l < c.n_layers; ++l) {
    s.push_back({LayerTensorName(l, LlamaTensor::kAttnNorm), {c.dim}, true});
    s.push_back({LayerTensorName(l, LlamaTensor::kAttnQ), {c.dim, c.n_heads * c.head_dim()}, false});
    s.push_back({LayerTensorName(l, LlamaTensor::kAttnK), {c.dim, c.kv_dim()}, false});
    s.push_back({LayerTensorName(l, LlamaTensor::kAttnV), {c.dim, c.kv_dim()}, false});
    s.push_back({LayerTensorName(l, LlamaTensor::kAttnOutput), {c.n_heads * c.head_dim(), c.dim}, false});
    s.push_back({LayerTensorName(l, LlamaTensor::kFfnNorm), {c.dim}, true});
    s.push_back({LayerTensorName(l, LlamaTensor::kFfnGate), {c.dim, c.ffn_dim}, false});
    s.push_back({LayerTensorName(l, LlamaTensor::kFfnUp), {c.dim, c.ffn_dim}, false});
    s.push_back({LayerTensorName(l, LlamaTensor::kFfnDown), {c.ffn_dim, c.dim}, false});
  }
  s.push_back({std::string(kOutputNormName), {c.dim}, true});
  if (!c.tied_output) s.push_back({std::string(kOutputName), {c.dim, c.vocab_size}, false});
  return s;
}

Status CheckLlamaTensors(const ModelConfig& c, const GgufFile& f) {
  for (const TensorSpec& spec : LlamaTensorSpecs(c)) {
    const GgufTensor* t = f.FindTensor(spec.name);
    if (t == nullptr) return InvalidArgumentError("tensor '" + spec.name + "' is missing");
    bool ok = t->n_dims == spec.ne.size();
    for (size_t d = 0; ok && d < spec.ne.size(); ++d) ok = t->ne[d] == spec.ne[d];
    if (!ok) {
      std::string want, have;
      for (int64_t d : spec.ne) want += (want.empty() ? "" : ", ") + std::to_string(d);
      for (int64_t d : t->shape()) have += (have.empty() ? "" : ", ") + std::to_string(d);
      return InvalidArgumentError("tensor '" + spec.name + "' has shape [" + have + "], expected [" + want + "]");
    }
  }
  return Status::Ok();
}

void PermuteQKHfToLlama(std::span<const float> in, std::span<float> out, int64_t n_head, int64_t n_in) {
  Permute(in, out, n_head, n_in, true);
}
void PermuteQKLlamaToHf(std::span<const float> in, std::span<float> out, int64_t n_head, int64_t n_in) {
  Permute(in, out, n_head, n_in, false);
}

}  // namespace flotilla::model
