// LoRA adapters: y = W x + s · B (A x) on chosen projections, s = scale · alpha / rank.
//
// Storage follows PEFT and llama.cpp's adapter files (reference gguf-and-quant §3.1):
// for a base matrix W with `out` rows of `in` inputs, A is [rank x in] row-major (PEFT
// lora_A.weight, GGUF ne = [in, rank]) and B is [out x rank] row-major (lora_B.weight,
// GGUF ne = [rank, out]).
//
// Frozen-A mode (the default for federated rounds, FFA-LoRA): A is regenerated from a
// 64-bit seed and never trained or transmitted; only B trains. The stream is ChaCha20
// (RFC 8439) keyed from the seed, so every platform regenerates the same A bit for bit:
//   key   = "flotilla/lora-a/v1" (18 bytes) || seed (8 bytes, little-endian) || 6 zero bytes
//   nonce = layer (u32 LE) || projection index (u32 LE, q=0 … down=6) || 0 (u32)
//   block counter starts at 0; word i = bytes [4i, 4i+4) of the keystream, little-endian
//   A[j] = bound · ((word_j >> 8) · 2^-23 − 1),  bound = 1 / sqrt(in)   (j row-major)
// i.e. uniform in [-bound, bound) like PEFT's kaiming_uniform(a = sqrt(5)). Golden
// values are checked in (lora_test.cc).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flotilla/core/random.h"
#include "flotilla/core/status.h"
#include "flotilla/model/inference.h"
#include "flotilla/model/model_config.h"

namespace flotilla::model {

inline constexpr int kNumProjections = 7;  // Projection::kQ .. kDown, in that order
int ProjectionIndex(Projection p);
// "q", "k", "v", "o", "gate", "up", "down".
std::string_view ProjectionShortName(Projection p);
// Comma-separated short names ("q,k,v,o"); also "all" and "attn" (= q,k,v,o). InvalidArgument
// for an unknown or repeated name or an empty list.
Result<std::vector<Projection>> ParseProjections(std::string_view list);
std::string FormatProjections(std::span<const Projection> targets);
// The base tensor a projection adapts, e.g. "blk.3.attn_q.weight".
std::string ProjectionTensorName(int64_t layer, Projection p);
// Input and output sizes of a projection's matrix under `config`.
int64_t ProjectionInDim(const ModelConfig& config, Projection p);
int64_t ProjectionOutDim(const ModelConfig& config, Projection p);

struct LoraConfig {
  int64_t rank = 8;
  float alpha = 16.0f;  // s = alpha / rank
  std::vector<Projection> targets = {Projection::kQ, Projection::kK, Projection::kV, Projection::kO};
  bool frozen_a = true;
  uint64_t a_seed = 0;  // frozen-A seed (recorded in the adapter file)
  // InvalidArgument for rank < 1 or > 1024, non-finite alpha, empty targets.
  Status Validate() const;
};

// One adapted matrix.
struct LoraMatrix {
  int64_t layer = 0;
  Projection proj = Projection::kQ;
  int64_t in_dim = 0;
  int64_t out_dim = 0;
  int64_t rank = 0;
  std::vector<float> a;  // [rank x in_dim]
  std::vector<float> b;  // [out_dim x rank]
};

// An adapter for one base model: one LoraMatrix per (layer, target), ordered by layer
// then by Projection. Plain value type (copyable).
class LoraAdapter {
 public:
  // A from the frozen-A stream when config.frozen_a, else uniform [-1/sqrt(in), 1/sqrt(in))
  // from `rng` (a CSPRNG in production; required then, may be null in frozen-A mode);
  // B = 0. InvalidArgument for a bad config or targets the model lacks.
  static Result<LoraAdapter> Create(const ModelConfig& model, const LoraConfig& config, Random* rng = nullptr);

  const LoraConfig& config() const { return config_; }
  // alpha / rank.
  float scale() const { return config_.alpha / static_cast<float>(config_.rank); }
  std::vector<LoraMatrix>& matrices() { return matrices_; }
  const std::vector<LoraMatrix>& matrices() const { return matrices_; }
  // nullptr if (layer, p) is not adapted.
  LoraMatrix* Find(int64_t layer, Projection p);
  const LoraMatrix* Find(int64_t layer, Projection p) const;

  // The trainable parameters as one flat vector (B of every matrix in order; with A
  // first per matrix when not frozen_a), and back. SetTrainable: InvalidArgument on a
  // size mismatch or a non-finite value (adapter unchanged). For aggregation.
  int64_t TrainableCount() const;
  std::vector<float> FlattenTrainable() const;
  Status SetTrainable(std::span<const float> values);

  // Free-form provenance kept in the adapter file (flotilla.adapter.*).
  std::string base_hash;  // hex SHA-256 of the base model file ("" = unknown)
  uint64_t version = 0;   // adapter version (coordinator's registry)
  std::string name;

 private:
  LoraConfig config_;
  std::vector<LoraMatrix> matrices_;
  int64_t layer_count_ = 0;
  std::vector<int32_t> index_;  // [layer * kNumProjections + proj] -> matrix index or -1
  friend Result<LoraAdapter> MakeLoraAdapter(const ModelConfig&, const LoraConfig&, std::vector<LoraMatrix>);
};

// Builds an adapter from given matrices (adapter files use it). InvalidArgument for
// duplicate or missing (layer, target) pairs or shapes that do not match `model`.
Result<LoraAdapter> MakeLoraAdapter(const ModelConfig& model, const LoraConfig& config,
                                    std::vector<LoraMatrix> matrices);

// The frozen-A values of one matrix (see the file comment). out.size() = rank * in_dim.
void GenerateFrozenA(uint64_t seed, int64_t layer, Projection p, int64_t rank, int64_t in_dim, std::span<float> out);

// The RFC 8439 §2.3 ChaCha20 block function (20 rounds): 64 keystream bytes for
// (key, counter, nonce). Exposed for the known-answer test of the frozen-A stream.
void ChaCha20Block(std::span<const uint8_t, 32> key, uint32_t counter, std::span<const uint8_t, 12> nonce,
                   std::span<uint8_t, 64> out);

// Applies any number of adapters during inference (InferenceSession::set_adapter), each
// with a user scale (llama.cpp's --lora-scaled): y += user_scale · alpha/rank · B(A x).
// The adapters are not owned and must outlive the applier; they may be changed between
// Evals (the applier reads them on every call). Not thread-safe (one session).
class LoraApplier final : public ProjectionAdapter {
 public:
  void Add(const LoraAdapter* adapter, float user_scale = 1.0f);
  void Clear();
  bool empty() const { return entries_.empty(); }
  void Apply(int64_t layer, Projection p, const float* x, int64_t n, int64_t in_dim, float* y, int64_t ldy,
             int64_t out_dim, const ComputeContext& ctx) override;

 private:
  struct Entry {
    const LoraAdapter* adapter;
    float user_scale;
  };
  std::vector<Entry> entries_;
  std::vector<float> ax_;  // scratch: A x [n x rank], then B(A x) [n x out_dim]
};

}  // namespace flotilla::model
