// A loaded llama-architecture model: the memory-mapped GGUF file, its hyperparameters,
// tokenizer and typed views of every weight. Weights are used in place from the mapping
// (zero-copy) except BF16 matrices and non-F32 norm vectors, which the kernels cannot
// read directly and are widened to F32 once at load time.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "flotilla/core/status.h"
#include "flotilla/model/gguf.h"
#include "flotilla/model/kernels.h"
#include "flotilla/model/model_config.h"
#include "flotilla/model/tokenizer.h"

namespace flotilla::model {

// Views of one transformer block's weights (into the mapping or the model's own copies).
// Matrices follow kernels.h: `rows` output features of `cols` inputs (ggml ne1 x ne0).
struct LlamaLayerWeights {
  const float* attn_norm = nullptr;  // [dim]
  WeightMatrix wq;                   // [n_heads*head_dim x dim], Q rows in adjacent-pair RoPE order
  WeightMatrix wk;                   // [kv_dim x dim], same order
  WeightMatrix wv;                   // [kv_dim x dim]
  WeightMatrix wo;                   // [dim x n_heads*head_dim]
  const float* ffn_norm = nullptr;   // [dim]
  WeightMatrix gate;                 // [ffn x dim] (w1)
  WeightMatrix up;                   // [ffn x dim] (w3)
  WeightMatrix down;                 // [dim x ffn] (w2)
};

// Immutable after Open: every accessor is thread-safe, and any number of
// InferenceSessions may share one model.
class LlamaModel {
 public:
  // Maps `path` and validates it: architecture llama, hyperparameters (ReadLlamaConfig),
  // every tensor present with the expected shape, matrix types among F32/F16/BF16/Q8_0/
  // Q4_0/Q4_K/Q6_K, norm types F32/F16/BF16, tokenizer consistent with vocab_size.
  // NotFound/PermissionDenied for I/O, InvalidArgument/Unimplemented (naming the key or
  // tensor) for anything else.
  static Result<std::unique_ptr<LlamaModel>> Open(const std::filesystem::path& path);
  // Same checks on an already opened file; the model takes ownership of it.
  static Result<std::unique_ptr<LlamaModel>> FromGguf(std::unique_ptr<GgufFile> file);

  ~LlamaModel();
  LlamaModel(const LlamaModel&) = delete;
  LlamaModel& operator=(const LlamaModel&) = delete;

  const ModelConfig& config() const { return config_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const GgufFile& file() const { return *file_; }
  // general.name, or "" when absent.
  std::string_view name() const { return name_; }

  const LlamaLayerWeights& layer(int64_t i) const { return layers_[static_cast<size_t>(i)]; }
  // token_embd as a [vocab x dim] matrix (rows are tokens).
  const WeightMatrix& token_embedding() const { return token_embd_; }
  const float* output_norm() const { return output_norm_; }
  // The output projection [vocab x dim]: token_embd itself when the output is tied.
  const WeightMatrix& output() const { return output_; }

  // Writes the embedding row of `token` (dequantized) to out[dim]. REQUIRES: 0 <= token
  // < vocab_size (FLT_CHECK; InferenceSession validates ids first). Allocates nothing.
  void EmbedToken(int32_t token, float* out) const;

  // Bytes of the matrices one decoded token reads (all layers + output projection; the
  // embedding lookup reads one row and is left out). For the decode GB/s figure.
  uint64_t DecodeWeightBytes() const { return decode_weight_bytes_; }
  // Total bytes of all tensor data in the file.
  uint64_t TensorBytes() const { return tensor_bytes_; }
  // Bytes the model allocated beyond the mapping (BF16 → F32 and norm conversions).
  uint64_t OwnedBytes() const { return owned_bytes_; }
  int64_t ParameterCount() const { return config_.ParameterCount(); }
  // "Q8_0", "Q4_0", "F32", ... from general.file_type, else the type of most weights.
  std::string TypeLabel() const;

 private:
  LlamaModel() = default;
  Status Load();
  Result<WeightMatrix> Matrix(std::string_view name);
  Result<const float*> Vector(std::string_view name);

  std::unique_ptr<GgufFile> file_;
  ModelConfig config_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::string name_;
  std::vector<LlamaLayerWeights> layers_;
  WeightMatrix token_embd_;
  WeightMatrix output_;
  const float* output_norm_ = nullptr;
  std::vector<std::unique_ptr<float[]>> owned_;  // widened BF16 matrices / non-F32 norms
  uint64_t decode_weight_bytes_ = 0;
  uint64_t tensor_bytes_ = 0;
  uint64_t owned_bytes_ = 0;
};

}  // namespace flotilla::model
