#include "flotilla/model/model_file.h"

#include <array>
#include <cmath>

#include "flotilla/model/quant.h"
#include "flotilla/model/tensor_types.h"
#include "flotilla/model/tokenizer.h"

namespace flotilla::model {
namespace {

bool RowFits(GgmlType type, int64_t row) { return row % Traits(type).block_size == 0; }

// Type for one tensor under a recipe (norms and 1-D tensors stay F32).
GgmlType PickType(const QuantRecipe& r, std::string_view name, std::span<const int64_t> ne) {
  if (ne.size() < 2) return GgmlType::kF32;
  GgmlType want = r.matrices;
  if (name == kTokenEmbdName) want = r.embedding;
  if (name == kOutputName) want = r.output;
  if (RowFits(want, ne[0])) return want;
  if (RowFits(r.fallback, ne[0])) return r.fallback;
  return GgmlType::kF32;
}

bool AnyQuantized(const std::vector<GgmlType>& types) {
  for (GgmlType t : types) {
    if (Traits(t).quantized) return true;
  }
  return false;
}

}  // namespace

uint64_t Fnv1a64(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : s) {
    h ^= static_cast<uint8_t>(c);
    h *= 0x100000001b3ULL;
  }
  return h;
}

std::vector<float> RandomTensorValues(const TensorSpec& spec, uint64_t seed) {
  int64_t n = 1;
  for (int64_t d : spec.ne) n *= d;
  std::vector<float> v(static_cast<size_t>(n));
  SplitMix64 rng(SplitMix64(seed ^ Fnv1a64(spec.name)).Next());
  if (spec.is_norm) {
    for (float& x : v) x = 1.0f + 0.1f * rng.NextSymmetric();
  } else {
    const float scale = spec.name == kTokenEmbdName ? 1.0f : 1.0f / std::sqrt(static_cast<float>(spec.ne[0]));
    for (float& x : v) x = scale * rng.NextSymmetric();
  }
  return v;
}

Status BuildRandomModel(const ModelConfig& config, const RandomModelOptions& options, GgufWriter& w) {
  FLT_RETURN_IF_ERROR(config.Validate());
  Vocabulary vocab;
  if (config.vocab_size == 259) {
    vocab = ByteVocabulary();
  } else {
    FLT_ASSIGN_OR_RETURN(vocab, SyntheticVocabulary(config.vocab_size));
  }
  w.SetString(std::string(kKeyArchitecture), "llama");
  w.SetString(std::string(kKeyName), options.name);
  WriteLlamaConfig(config, w);
  std::vector<GgmlType> types;
  for (const TensorSpec& spec : LlamaTensorSpecs(config)) {
    const GgmlType type = spec.is_norm ? GgmlType::kF32 : options.weight_type;
    if (!RowFits(type, spec.ne[0])) {
      return InvalidArgumentError("tensor '" + spec.name + "' row length " + std::to_string(spec.ne[0]) +
                                  " is not a multiple of the " + std::string(TypeName(type)) + " block size");
    }
    const std::vector<float> values = RandomTensorValues(spec, options.seed);
    FLT_RETURN_IF_ERROR(w.AddTensorFromF32(spec.name, type, spec.ne, values));
    types.push_back(type);
  }
  LlamaFileType ft = LlamaFileType::kAllF32;
  switch (options.weight_type) {
    case GgmlType::kF16: ft = LlamaFileType::kMostlyF16; break;
    case GgmlType::kBF16: ft = LlamaFileType::kMostlyBF16; break;
    case GgmlType::kQ8_0: ft = LlamaFileType::kMostlyQ8_0; break;
    case GgmlType::kQ4_0: ft = LlamaFileType::kMostlyQ4_0; break;
    case GgmlType::kQ6_K: ft = LlamaFileType::kMostlyQ6_K; break;
    case GgmlType::kQ4_K: ft = LlamaFileType::kMostlyQ4_K_M; break;
    default: break;
  }
  w.SetU32(std::string(kKeyFileType), static_cast<uint32_t>(ft));
  if (AnyQuantized(types)) w.SetU32(std::string(kKeyQuantizationVersion), kQuantFormatVersion);
  WriteVocabulary(vocab, w);
  return Status::Ok();
}

Status WriteRandomModel(const ModelConfig& config, const RandomModelOptions& options,
                        const std::filesystem::path& path) {
  GgufWriter w;
  FLT_RETURN_IF_ERROR(BuildRandomModel(config, options, w));
  return w.WriteFile(path);
}

Result<QuantRecipe> NamedRecipe(std::string_view name) {
  using T = GgmlType;
  using F = LlamaFileType;
  static const std::array<QuantRecipe, 7> kRecipes = {{
      {"f32", T::kF32, T::kF32, T::kF32, T::kF32, F::kAllF32},
      {"f16", T::kF16, T::kF16, T::kF16, T::kF16, F::kMostlyF16},
      {"bf16", T::kBF16, T::kBF16, T::kBF16, T::kBF16, F::kMostlyBF16},
      {"q8_0", T::kQ8_0, T::kQ8_0, T::kQ8_0, T::kF16, F::kMostlyQ8_0},
      {"q4_0", T::kQ4_0, T::kQ4_0, T::kQ4_0, T::kF16, F::kMostlyQ4_0},
      {"q4_0-mixed", T::kQ4_0, T::kQ8_0, T::kQ8_0, T::kF16, F::kMostlyQ4_0},
      {"q4_k-mixed", T::kQ4_K, T::kQ6_K, T::kQ6_K, T::kQ8_0, F::kMostlyQ4_K_M},
  }};
  for (const QuantRecipe& r : kRecipes) {
    if (r.name == name) return r;
  }
  return NotFoundError("unknown quantization recipe '" + std::string(name) +
                       "' (known: f32, f16, bf16, q8_0, q4_0, q4_0-mixed, q4_k-mixed)");
}

Status QuantizeModel(const GgufFile& in, const QuantRecipe& recipe, const std::filesystem::path& out) {
  GgufWriter w;
  for (const auto& [key, value] : in.metadata()) {
    if (key == kKeyFileType || key == kKeyQuantizationVersion || key == "general.alignment") continue;
    w.Set(key, value);
  }
  FLT_RETURN_IF_ERROR(w.SetAlignment(in.alignment()));
  std::vector<GgmlType> types;
  for (const GgufTensor& t : in.tensors()) {
    const GgmlType target = PickType(recipe, t.name, t.shape());
    types.push_back(target);
    if (target == t.type) {
      FLT_RETURN_IF_ERROR(w.AddTensorView(t.name, t.type, t.shape(), t.bytes()));
      continue;
    }
    Result<std::vector<float>> f32 = DequantizeToFloats(t.type, t.bytes(), t.n_elements);
    if (!f32.ok()) return f32.status().WithContext("tensor '" + t.name + "'");
    FLT_RETURN_IF_ERROR(w.AddTensorFromF32(t.name, target, t.shape(), *f32));
  }
  w.SetU32(std::string(kKeyFileType), static_cast<uint32_t>(recipe.file_type));
  if (AnyQuantized(types)) w.SetU32(std::string(kKeyQuantizationVersion), kQuantFormatVersion);
  return w.WriteFile(out);
}

}  // namespace flotilla::model
