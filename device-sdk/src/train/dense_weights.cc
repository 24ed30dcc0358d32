// DenseLlamaWeights: owned F32 copies of every llama tensor for full-weight training.
#include <cmath>
#include <algorithm>
#include <cstring>

#include "flotilla/core/check.h"
#include "flotilla/model/gguf.h"
#include "flotilla/model/model_config.h"
#include "flotilla/model/model_file.h"
#include "flotilla/model/quant.h"
#include "flotilla/model/train.h"

namespace flotilla::model {
namespace {

// std 0.02 (GPT-2's initialiser) as a uniform: U(-a, a) has std a/sqrt(3).
constexpr float kInitStd = 0.02f;

bool IsResidualOutput(const std::string& name) {
  return name.ends_with(".attn_output.weight") || name.ends_with(".ffn_down.weight");
}

int64_t Elements(const TensorSpec& spec) {
  int64_t n = 1;
  for (int64_t d : spec.ne) n *= d;
  return n;
}

}  // namespace

Result<std::unique_ptr<DenseLlamaWeights>> DenseLlamaWeights::Init(const ModelConfig& config, uint64_t seed) {
  FLT_RETURN_IF_ERROR(config.Validate());
  std::unique_ptr<DenseLlamaWeights> w(new DenseLlamaWeights());
  w->config_ = config;
  const float bound = kInitStd * std::sqrt(3.0f);
  const float residual_scale = 1.0f / std::sqrt(2.0f * static_cast<float>(config.n_layers));
  for (const TensorSpec& spec : LlamaTensorSpecs(config)) {
    std::vector<float> v(static_cast<size_t>(Elements(spec)));
    if (spec.is_norm) {
      std::fill(v.begin(), v.end(), 1.0f);
    } else {
      // Per-tensor stream as in RandomTensorValues: a tensor's values do not depend on
      // which other tensors the config has.
      SplitMix64 rng(SplitMix64(seed ^ Fnv1a64(spec.name)).Next());
      const float scale = bound * (IsResidualOutput(spec.name) ? residual_scale : 1.0f);
      for (float& x : v) x = scale * rng.NextSymmetric();
    }
    w->names_.push_back(spec.name);
    w->values_.push_back(std::move(v));
  }
  return w;
}

Result<std::unique_ptr<DenseLlamaWeights>> DenseLlamaWeights::FromModel(const LlamaModel& model) {
  std::unique_ptr<DenseLlamaWeights> w(new DenseLlamaWeights());
  w->config_ = model.config();
  const GgufFile& file = model.file();
  for (const TensorSpec& spec : LlamaTensorSpecs(w->config_)) {
    FLT_ASSIGN_OR_RETURN(const GgufTensor* t, file.GetTensor(spec.name));
    if (t->n_elements != Elements(spec)) {
      return InvalidArgumentError("tensor '" + spec.name + "' has " + std::to_string(t->n_elements) +
                                  " elements, expected " + std::to_string(Elements(spec)));
    }
    Result<std::vector<float>> values = DequantizeToFloats(t->type, t->bytes(), t->n_elements);
    if (!values.ok()) return values.status().WithContext("tensor '" + spec.name + "'");
    w->names_.push_back(spec.name);
    w->values_.push_back(std::move(*values));
  }
  return w;
}

std::span<float> DenseLlamaWeights::Tensor(std::string_view name) {
  for (size_t i = 0; i < names_.size(); ++i) {
    if (names_[i] == name) return values_[i];
  }
  return {};
}

std::span<const float> DenseLlamaWeights::Tensor(std::string_view name) const {
  return const_cast<DenseLlamaWeights*>(this)->Tensor(name);
}

Status DenseLlamaWeights::Save(const std::filesystem::path& path, const Vocabulary& vocab,
                               const std::string& name) const {
  FLT_RETURN_IF_ERROR(vocab.Validate());
  if (static_cast<int64_t>(vocab.tokens.size()) != config_.vocab_size) {
    return InvalidArgumentError("vocabulary has " + std::to_string(vocab.tokens.size()) +
                                " tokens but the model's vocab_size is " + std::to_string(config_.vocab_size));
  }
  GgufWriter writer;
  writer.SetString(std::string(kKeyArchitecture), "llama");
  writer.SetString(std::string(kKeyName), name);
  WriteLlamaConfig(config_, writer);
  writer.SetU32(std::string(kKeyFileType), static_cast<uint32_t>(LlamaFileType::kAllF32));
  WriteVocabulary(vocab, writer);
  const std::vector<TensorSpec> specs = LlamaTensorSpecs(config_);
  FLT_CHECK(specs.size() == names_.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    FLT_CHECK(specs[i].name == names_[i]);
    // Borrowed: the writer only reads the bytes inside WriteFile below.
    const auto* bytes = reinterpret_cast<const uint8_t*>(values_[i].data());
    FLT_RETURN_IF_ERROR(
        writer.AddTensorView(specs[i].name, GgmlType::kF32, specs[i].ne, ByteSpan(bytes, values_[i].size() * 4)));
  }
  return writer.WriteFile(path);
}

}  // namespace flotilla::model
