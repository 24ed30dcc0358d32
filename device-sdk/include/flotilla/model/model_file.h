// Whole-model file tools: seeded random llama models (test data) and re-quantization
// of an existing model with a recipe. The CLI's `model create` / `model quantize` wrap
// these.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "flotilla/core/status.h"
#include "flotilla/model/gguf.h"
#include "flotilla/model/model_config.h"

namespace flotilla::model {

// Test-data generator (NOT a CSPRNG): SplitMix64. Each tensor gets its own stream seeded
// with SplitMix64(seed ^ FNV-1a-64(tensor name)), so a tensor's values do not depend on
// which other tensors exist. Uniform floats use the top 24 bits: u = (x >> 40) * 2^-24.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform in [-1, 1).
  float NextSymmetric() { return static_cast<float>(Next() >> 40) * (2.0f / 16777216.0f) - 1.0f; }

 private:
  uint64_t state_;
};
uint64_t Fnv1a64(std::string_view s);

struct RandomModelOptions {
  uint64_t seed = 1;
  GgmlType weight_type = GgmlType::kF32;  // matrices; norms are always F32
  std::string name = "flotilla-random";
};

// Values of one tensor of a random model (exposed so tests can recompute them):
// matrices U(-1,1)/sqrt(ne[0]) (token_embd U(-1,1)), norms 1 + 0.1*U(-1,1).
std::vector<float> RandomTensorValues(const TensorSpec& spec, uint64_t seed);

// Fills `writer` with a complete llama model: config keys, tokenizer (ByteVocabulary for
// vocab 259, SyntheticVocabulary otherwise), general.* keys, all tensors. Deterministic
// for (config, options). InvalidArgument for an invalid config or a weight type whose
// block size does not divide the row lengths.
Status BuildRandomModel(const ModelConfig& config, const RandomModelOptions& options, GgufWriter& writer);
Status WriteRandomModel(const ModelConfig& config, const RandomModelOptions& options,
                        const std::filesystem::path& path);

// Which type each tensor gets. Norm vectors stay F32. A tensor whose row length is not a
// multiple of its target's block size gets `fallback` (llama-quantize does the same for
// K-quants), and F32 if that does not fit either.
struct QuantRecipe {
  std::string name;
  GgmlType matrices;   // attention and FFN weights
  GgmlType embedding;  // token_embd.weight
  GgmlType output;     // output.weight
  GgmlType fallback;
  LlamaFileType file_type;
};
// "f32", "f16", "bf16", "q8_0", "q4_0", "q4_0-mixed" (Q4_0; token_embd and output Q8_0),
// "q4_k-mixed" (Q4_K matrices, Q6_K token_embd/output, fallback Q8_0; a Q4_K_M-like mix).
// NotFound otherwise.
Result<QuantRecipe> NamedRecipe(std::string_view name);

// Dequantizes every tensor of `in` and writes it re-quantized per `recipe` to `out`,
// copying all metadata (general.file_type and general.quantization_version updated).
// Tensors whose type is unchanged are copied byte for byte. InvalidArgument if a tensor
// type cannot be dequantized.
Status QuantizeModel(const GgufFile& in, const QuantRecipe& recipe, const std::filesystem::path& out);

}  // namespace flotilla::model
