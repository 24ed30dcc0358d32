// LoRA adapter files in llama.cpp's GGUF layout (reference gguf-and-quant §3.1), so
// `llama-cli --lora` can load what Flotilla trains and Flotilla can load PEFT-converted
// adapters:
//   general.type = "adapter", general.architecture = "llama", adapter.type = "lora",
//   adapter.lora.alpha (f32); tensors "<base>.lora_a" (ne = [in, rank]) and
//   "<base>.lora_b" (ne = [rank, out]), F32.
// plus Flotilla's own keys (ignored by llama.cpp):
//   flotilla.adapter.version (u32 = 1, the layout version), flotilla.adapter.frozen_a
//   (bool), flotilla.adapter.a_seed (u64), flotilla.adapter.base_sha256 (string, hex),
//   flotilla.adapter.targets (string "q,k,v,o"), flotilla.adapter.adapter_version (u64),
//   general.name.
#pragma once

#include <filesystem>
#include <string>

#include "flotilla/core/status.h"
#include "flotilla/model/gguf.h"
#include "flotilla/model/llama_model.h"
#include "flotilla/model/lora.h"
#include "flotilla/model/model_file.h"

namespace flotilla::model {

// Hex SHA-256 of a model file's bytes (the identity adapters and OTA targets refer to).
// Streams the file. NotFound/PermissionDenied for I/O errors.
Result<std::string> ModelFileSha256(const std::filesystem::path& path);

// Writes `adapter` atomically (temp file + rename). Round-trip exact (F32 tensors).
Status SaveAdapter(const LoraAdapter& adapter, const std::filesystem::path& path);

// Reads and validates an adapter against `base`: general.type/adapter.type/architecture,
// every tensor pair present, F32 (F16 also accepted and widened), shapes as above
// (llama.cpp's "lora_a tensor is not transposed" rule), base tensors existing, one
// rank for all matrices, finite values. If the file records a base hash and
// `base_sha256` is non-empty they must be equal (FailedPrecondition "adapter is for
// base …, this base is …"). Frozen-A files: A is regenerated and must equal the stored
// A (files made elsewhere without A are refused). InvalidArgument naming the key or
// tensor for anything malformed.
Result<LoraAdapter> LoadAdapter(const std::filesystem::path& path, const LlamaModel& base,
                                const std::string& base_sha256 = {});
// Same, from an already opened file (the fuzz target uses OpenFromMemory).
Result<LoraAdapter> ReadAdapter(const GgufFile& file, const LlamaModel& base, const std::string& base_sha256 = {});

// Folds adapters into the base: W' = W + Σ user_scale_i · alpha_i/rank_i · B_i A_i,
// computed in F32 from the dequantized W, and writes a complete model to `out` with the
// base's metadata, re-quantized per `recipe` (e.g. NamedRecipe("q8_0"); "f32" keeps
// the merged values exactly). Tensors no adapter touches are copied byte for byte when
// the recipe leaves their type unchanged. general.name gets a "+lora" suffix.
struct MergeInput {
  const LoraAdapter* adapter;
  float user_scale = 1.0f;
};
Status MergeAdapters(const LlamaModel& base, std::span<const MergeInput> adapters, const QuantRecipe& recipe,
                     const std::filesystem::path& out);

}  // namespace flotilla::model
