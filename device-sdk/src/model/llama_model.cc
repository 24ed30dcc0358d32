#include "flotilla/model/llama_model.h"

#include <cctype>
#include <cstring>
#include <map>

#include "flotilla/core/check.h"
#include "flotilla/model/quant.h"
#include "flotilla/model/tensor_types.h"

namespace flotilla::model {
namespace {

std::string ShapeString(const GgufTensor& t) {
  std::string s;
  for (int64_t d : t.shape()) s += (s.empty() ? "" : ", ") + std::to_string(d);
  return "[" + s + "]";
}

}  // namespace

LlamaModel::~LlamaModel() = default;

Result<std::unique_ptr<LlamaModel>> LlamaModel::Open(const std::filesystem::path& path) {
  Result<std::unique_ptr<GgufFile>> file = GgufFile::Open(path);
  if (!file.ok()) return file.status().WithContext("while opening model " + path.string());
  Result<std::unique_ptr<LlamaModel>> model = FromGguf(std::move(*file));
  if (!model.ok()) return model.status().WithContext("while loading model " + path.string());
  return model;
}

Result<std::unique_ptr<LlamaModel>> LlamaModel::FromGguf(std::unique_ptr<GgufFile> file) {
  if (file == nullptr) return InvalidArgumentError("null GGUF file");
  std::unique_ptr<LlamaModel> m(new LlamaModel());
  m->file_ = std::move(file);
  FLT_RETURN_IF_ERROR(m->Load());
  return m;
}

Result<WeightMatrix> LlamaModel::Matrix(std::string_view name) {
  FLT_ASSIGN_OR_RETURN(const GgufTensor* t, file_->GetTensor(name));
  if (t->n_dims != 2) return InvalidArgumentError("tensor '" + std::string(name) + "' is not a matrix");
  WeightMatrix w;
  w.type = t->type;
  w.data = t->data;
  w.cols = t->ne[0];
  w.rows = t->ne[1];
  if (t->type == GgmlType::kBF16) {
    // No BF16 kernels: widen once (exact) so the matrix runs on the F32 kernels.
    const size_t n = static_cast<size_t>(t->n_elements);
    auto copy = std::make_unique_for_overwrite<float[]>(n);
    FLT_RETURN_IF_ERROR(Dequantize(GgmlType::kBF16, t->bytes(), std::span<float>(copy.get(), n)));
    w.type = GgmlType::kF32;
    w.data = copy.get();
    owned_bytes_ += n * sizeof(float);
    owned_.push_back(std::move(copy));
  }
  Status s = ValidateWeight(w);
  if (!s.ok()) {
    return InvalidArgumentError("tensor '" + std::string(name) + "' (" + std::string(TypeName(t->type)) + ", shape " +
                                ShapeString(*t) + ") cannot be used as a weight matrix: " + s.message());
  }
  return w;
}

Result<const float*> LlamaModel::Vector(std::string_view name) {
  FLT_ASSIGN_OR_RETURN(const GgufTensor* t, file_->GetTensor(name));
  if (t->type == GgmlType::kF32) return reinterpret_cast<const float*>(t->data);
  if (t->type != GgmlType::kF16 && t->type != GgmlType::kBF16) {
    return InvalidArgumentError("norm tensor '" + std::string(name) + "' has type " + std::string(TypeName(t->type)) +
                                ", expected f32, f16 or bf16");
  }
  const size_t n = static_cast<size_t>(t->n_elements);
  auto copy = std::make_unique_for_overwrite<float[]>(n);
  FLT_RETURN_IF_ERROR(Dequantize(t->type, t->bytes(), std::span<float>(copy.get(), n)));
  const float* p = copy.get();
  owned_bytes_ += n * sizeof(float);
  owned_.push_back(std::move(copy));
  return p;
}

Status LlamaModel::Load() {
  FLT_ASSIGN_OR_RETURN(config_, ReadLlamaConfig(*file_));
  FLT_RETURN_IF_ERROR(CheckLlamaTensors(config_, *file_));
  if (const GgufValue* v = file_->Find(kKeyName)) {
    if (Result<std::string_view> s = v->GetString(); s.ok()) name_ = std::string(*s);
  }
  FLT_ASSIGN_OR_RETURN(tokenizer_, Tokenizer::FromGguf(*file_));
  if (tokenizer_->vocab_size() != config_.vocab_size) {
    return InvalidArgumentError("tokenizer has " + std::to_string(tokenizer_->vocab_size()) +
                                " tokens but the model's vocab_size is " + std::to_string(config_.vocab_size));
  }
  for (const GgufTensor& t : file_->tensors()) tensor_bytes_ += t.n_bytes;

  FLT_ASSIGN_OR_RETURN(token_embd_, Matrix(kTokenEmbdName));
  if (!Traits(token_embd_.type).can_dequantize) {
    return InvalidArgumentError("token_embd.weight type " + std::string(TypeName(token_embd_.type)) +
                                " cannot be dequantized for embedding lookup");
  }
  FLT_ASSIGN_OR_RETURN(output_norm_, Vector(kOutputNormName));
  if (config_.tied_output) {
    output_ = token_embd_;
  } else {
    FLT_ASSIGN_OR_RETURN(output_, Matrix(kOutputName));
  }
  layers_.resize(static_cast<size_t>(config_.n_layers));
  uint64_t bytes = RowBytes(output_.type, output_.cols) * static_cast<uint64_t>(output_.rows);
  for (int64_t l = 0; l < config_.n_layers; ++l) {
    LlamaLayerWeights& w = layers_[static_cast<size_t>(l)];
    FLT_ASSIGN_OR_RETURN(w.attn_norm, Vector(LayerTensorName(l, LlamaTensor::kAttnNorm)));
    FLT_ASSIGN_OR_RETURN(w.wq, Matrix(LayerTensorName(l, LlamaTensor::kAttnQ)));
    FLT_ASSIGN_OR_RETURN(w.wk, Matrix(LayerTensorName(l, LlamaTensor::kAttnK)));
    FLT_ASSIGN_OR_RETURN(w.wv, Matrix(LayerTensorName(l, LlamaTensor::kAttnV)));
    FLT_ASSIGN_OR_RETURN(w.wo, Matrix(LayerTensorName(l, LlamaTensor::kAttnOutput)));
    FLT_ASSIGN_OR_RETURN(w.ffn_norm, Vector(LayerTensorName(l, LlamaTensor::kFfnNorm)));
    FLT_ASSIGN_OR_RETURN(w.gate, Matrix(LayerTensorName(l, LlamaTensor::kFfnGate)));
    FLT_ASSIGN_OR_RETURN(w.up, Matrix(LayerTensorName(l, LlamaTensor::kFfnUp)));
    FLT_ASSIGN_OR_RETURN(w.down, Matrix(LayerTensorName(l, LlamaTensor::kFfnDown)));
    for (const WeightMatrix* m : {&w.wq, &w.wk, &w.wv, &w.wo, &w.gate, &w.up, &w.down}) {
      bytes += RowBytes(m->type, m->cols) * static_cast<uint64_t>(m->rows);
    }
  }
  decode_weight_bytes_ = bytes;
  return Status::Ok();
}

void LlamaModel::EmbedToken(int32_t token, float* out) const {
  FLT_CHECK(token >= 0 && token < config_.vocab_size);
  const size_t row_bytes = RowBytes(token_embd_.type, token_embd_.cols);
  const auto* row = static_cast<const uint8_t*>(token_embd_.data) + static_cast<size_t>(token) * row_bytes;
  FLT_CHECK_OK(Dequantize(token_embd_.type, ByteSpan(row, row_bytes),
                          std::span<float>(out, static_cast<size_t>(config_.dim))));
}

std::string LlamaModel::TypeLabel() const {
  if (const GgufValue* v = file_->Find(kKeyFileType)) {
    if (Result<uint64_t> ft = v->GetUInt(); ft.ok()) {
      switch (static_cast<LlamaFileType>(*ft)) {
        case LlamaFileType::kAllF32: return "F32";
        case LlamaFileType::kMostlyF16: return "F16";
        case LlamaFileType::kMostlyQ4_0: return "Q4_0";
        case LlamaFileType::kMostlyQ8_0: return "Q8_0";
        case LlamaFileType::kMostlyQ4_K_M: return "Q4_K_M";
        case LlamaFileType::kMostlyQ6_K: return "Q6_K";
        case LlamaFileType::kMostlyBF16: return "BF16";
      }
    }
  }
  // Most common matrix type by bytes.
  std::map<std::string, uint64_t> by_type;
  for (const GgufTensor& t : file_->tensors()) {
    if (t.n_dims >= 2) by_type[std::string(TypeName(t.type))] += t.n_bytes;
  }
  std::string best = "?";
  uint64_t most = 0;
  for (const auto& [name, bytes] : by_type) {
    if (bytes > most) {
      most = bytes;
      best = name;
    }
  }
  for (char& c : best) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return best;
}

}  // namespace flotilla::model
