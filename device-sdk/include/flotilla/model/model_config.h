// Llama-architecture hyperparameters, the named configs of the engine, and the llama.cpp
// GGUF conventions: metadata keys, tensor names/shapes (ggml ne order) and the Q/K row
// permutation between HF (rotate-half) and llama.cpp (adjacent-pair RoPE) layouts.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flotilla/core/status.h"
#include "flotilla/model/gguf.h"

namespace flotilla::model {

struct ModelConfig {
  int64_t dim = 0;         // n_embd
  int64_t n_layers = 0;    // block_count
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;  // == n_heads without GQA
  int64_t ffn_dim = 0;     // n_ff
  int64_t vocab_size = 0;
  int64_t context_length = 0;
  float rope_theta = 10000.0f;
  float rms_eps = 1e-5f;
  bool tied_output = true;  // no output.weight: the output projection reuses token_embd

  int64_t head_dim() const { return n_heads > 0 ? dim / n_heads : 0; }
  int64_t kv_dim() const { return head_dim() * n_kv_heads; }
  // InvalidArgument unless all sizes are positive, dim % n_heads == 0, head_dim is even,
  // n_heads % n_kv_heads == 0 and rope_theta/rms_eps are positive and finite.
  Status Validate() const;
  // Weights and norm vectors (output counted only when untied).
  int64_t ParameterCount() const;
};

// "tiny", "train", "15m", "110m" (issue 3). NotFound for anything else.
Result<ModelConfig> NamedConfig(std::string_view name);
std::span<const std::string_view> NamedConfigNames();

// Keys ----------------------------------------------------------------------------------
inline constexpr std::string_view kKeyArchitecture = "general.architecture";
inline constexpr std::string_view kKeyName = "general.name";
inline constexpr std::string_view kKeyFileType = "general.file_type";
inline constexpr std::string_view kKeyQuantizationVersion = "general.quantization_version";

// llama_ftype values for general.file_type.
enum class LlamaFileType : uint32_t {
  kAllF32 = 0,
  kMostlyF16 = 1,
  kMostlyQ4_0 = 2,
  kMostlyQ8_0 = 7,
  kMostlyQ4_K_M = 15,
  kMostlyQ6_K = 18,
  kMostlyBF16 = 32,
};

// Writes general.architecture = "llama" and the llama.* hyperparameter keys (u32 counts
// and f32 floats, as llama.cpp's converters write them).
void WriteLlamaConfig(const ModelConfig& config, GgufWriter& writer);
// Reads the llama.* keys (u32 or u64 counts accepted; scalar, not per-layer, values),
// vocab size from llama.vocab_size or the tokenizer.ggml.tokens length, tied_output from
// the absence of output.weight. InvalidArgument if the architecture is not llama or a
// required key is missing/malformed; the result is Validate()d.
Result<ModelConfig> ReadLlamaConfig(const GgufFile& file);

// Tensor names --------------------------------------------------------------------------
enum class LlamaTensor { kAttnNorm, kAttnQ, kAttnK, kAttnV, kAttnOutput, kFfnNorm, kFfnGate, kFfnUp, kFfnDown };
inline constexpr std::string_view kTokenEmbdName = "token_embd.weight";
inline constexpr std::string_view kOutputNormName = "output_norm.weight";
inline constexpr std::string_view kOutputName = "output.weight";
// "blk.<layer>.attn_q.weight" etc.
std::string LayerTensorName(int64_t layer, LlamaTensor which);

struct TensorSpec {
  std::string name;
  std::vector<int64_t> ne;  // ggml order: ne[0] = input features (row length)
  bool is_norm;             // 1-D norm weight (kept F32 by quantization recipes)
};
// All tensors of a llama model in llama.cpp's file order (token_embd, per-layer, then
// output_norm, output).
std::vector<TensorSpec> LlamaTensorSpecs(const ModelConfig& config);
// InvalidArgument naming the first tensor that is missing or has the wrong shape.
Status CheckLlamaTensors(const ModelConfig& config, const GgufFile& file);

// Q/K permutation (reference 1.3) on a row-major [n_head*head_dim, n_in] matrix:
// HfToLlama applies convert_hf_to_gguf.py's permute (rotate-half → adjacent pairs),
// LlamaToHf inverts it. Sizes must match (FLT_CHECK); head_dim must be even.
void PermuteQKHfToLlama(std::span<const float> in, std::span<float> out, int64_t n_head, int64_t n_in);
void PermuteQKLlamaToHf(std::span<const float> in, std::span<float> out, int64_t n_head, int64_t n_in);

}  // namespace flotilla::model
