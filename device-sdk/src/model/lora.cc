#include "flotilla/model/lora.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <utility>

#include "flotilla/core/check.h"

namespace flotilla::model {
namespace {

constexpr std::array<Projection, kNumProjections> kAllProjections = {
    Projection::kQ, Projection::kK, Projection::kV, Projection::kO, Projection::kGate, Projection::kUp,
    Projection::kDown};
constexpr int64_t kMaxRank = 1024;

// Domain-separation prefix of the frozen-A key (lora.h); changing it changes every A.
constexpr std::string_view kFrozenAKeyPrefix = "flotilla/lora-a/v1";
static_assert(kFrozenAKeyPrefix.size() == 18);

inline uint32_t LoadLe32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 | static_cast<uint32_t>(p[2]) << 16 |
         static_cast<uint32_t>(p[3]) << 24;
}
inline void StoreLe32(uint32_t v, uint8_t* p) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
  p[2] = static_cast<uint8_t>(v >> 16);
  p[3] = static_cast<uint8_t>(v >> 24);
}

inline uint32_t Rotl(uint32_t v, int c) { return (v << c) | (v >> (32 - c)); }

inline void QuarterRound(uint32_t& a, uint32_t& b, uint32_t& c, uint32_t& d) {
  a += b;
  d = Rotl(d ^ a, 16);
  c += d;
  b = Rotl(b ^ c, 12);
  a += b;
  d = Rotl(d ^ a, 8);
  c += d;
  b = Rotl(b ^ c, 7);
}

// The 16 output words of one block (RFC 8439 §2.3: 20 rounds, then add the input state).
void ChaCha20Words(const uint32_t key[8], uint32_t counter, const uint32_t nonce[3], uint32_t out[16]) {
  uint32_t in[16] = {0x61707865, 0x3320646e, 0x79622d32, 0x6b206574, key[0], key[1], key[2], key[3],
                     key[4],     key[5],     key[6],     key[7],     counter, nonce[0], nonce[1], nonce[2]};
  uint32_t x[16];
  std::memcpy(x, in, sizeof(x));
  for (int i = 0; i < 10; ++i) {
    QuarterRound(x[0], x[4], x[8], x[12]);
    QuarterRound(x[1], x[5], x[9], x[13]);
    QuarterRound(x[2], x[6], x[10], x[14]);
    QuarterRound(x[3], x[7], x[11], x[15]);
    QuarterRound(x[0], x[5], x[10], x[15]);
    QuarterRound(x[1], x[6], x[11], x[12]);
    QuarterRound(x[2], x[7], x[8], x[13]);
    QuarterRound(x[3], x[4], x[9], x[14]);
  }
  for (int i = 0; i < 16; ++i) out[i] = x[i] + in[i];
}

// Uniform in [-bound, bound) from the top 24 bits of a word. Every step is exact in
// float except the final product, which IEEE rounds identically on every platform.
inline float UniformFromWord(uint32_t word, float bound) {
  const int32_t centered = static_cast<int32_t>(word >> 8) - (int32_t{1} << 23);
  return bound * (static_cast<float>(centered) * 0x1p-23f);
}

// 1/sqrt(in): correctly rounded sqrt and division, so identical everywhere.
inline float InitBound(int64_t in_dim) { return 1.0f / std::sqrt(static_cast<float>(in_dim)); }

bool ValidProjection(Projection p) {
  const int i = static_cast<int>(p);
  return i >= 0 && i < kNumProjections;
}

std::string MatrixLabel(int64_t layer, Projection p) { return ProjectionTensorName(layer, p); }

}  // namespace

// ---- Projections ---------------------------------------------------------------------

int ProjectionIndex(Projection p) { return static_cast<int>(p); }

std::string_view ProjectionShortName(Projection p) { return ToString(p); }

Result<std::vector<Projection>> ParseProjections(std::string_view list) {
  std::array<bool, kNumProjections> seen{};
  std::vector<Projection> out;
  auto add = [&](Projection p) -> Status {
    if (seen[static_cast<size_t>(ProjectionIndex(p))]) {
      return InvalidArgumentError("projection '" + std::string(ProjectionShortName(p)) + "' listed twice in '" +
                                  std::string(list) + "'");
    }
    seen[static_cast<size_t>(ProjectionIndex(p))] = true;
    out.push_back(p);
    return Status::Ok();
  };
  size_t pos = 0;
  while (pos <= list.size()) {
    size_t comma = list.find(',', pos);
    if (comma == std::string_view::npos) comma = list.size();
    std::string_view name = list.substr(pos, comma - pos);
    while (!name.empty() && (name.front() == ' ' || name.front() == '\t')) name.remove_prefix(1);
    while (!name.empty() && (name.back() == ' ' || name.back() == '\t')) name.remove_suffix(1);
    if (name.empty()) {
      return InvalidArgumentError("empty projection name in '" + std::string(list) +
                                  "' (expected a comma-separated list of q, k, v, o, gate, up, down, attn, all)");
    }
    if (name == "all" || name == "attn") {
      for (Projection p : kAllProjections) {
        if (name == "attn" && ProjectionIndex(p) > ProjectionIndex(Projection::kO)) break;
        FLT_RETURN_IF_ERROR(add(p));
      }
    } else {
      bool found = false;
      for (Projection p : kAllProjections) {
        if (name == ProjectionShortName(p)) {
          FLT_RETURN_IF_ERROR(add(p));
          found = true;
          break;
        }
      }
      if (!found) {
        return InvalidArgumentError("unknown projection '" + std::string(name) +
                                    "' (known: q, k, v, o, gate, up, down, attn, all)");
      }
    }
    pos = comma + 1;
  }
  std::sort(out.begin(), out.end(), [](Projection a, Projection b) { return ProjectionIndex(a) < ProjectionIndex(b); });
  return out;
}

std::string FormatProjections(std::span<const Projection> targets) {
  std::string out;
  for (Projection p : targets) {
    if (!out.empty()) out += ',';
    out += ProjectionShortName(p);
  }
  return out;
}

std::string ProjectionTensorName(int64_t layer, Projection p) {
  static constexpr std::array<LlamaTensor, kNumProjections> kTensor = {
      LlamaTensor::kAttnQ,   LlamaTensor::kAttnK, LlamaTensor::kAttnV,  LlamaTensor::kAttnOutput,
      LlamaTensor::kFfnGate, LlamaTensor::kFfnUp, LlamaTensor::kFfnDown};
  return LayerTensorName(layer, kTensor[static_cast<size_t>(ProjectionIndex(p))]);
}

int64_t ProjectionInDim(const ModelConfig& config, Projection p) {
  switch (p) {
    case Projection::kO: return config.n_heads * config.head_dim();
    case Projection::kDown: return config.ffn_dim;
    default: return config.dim;
  }
}

int64_t ProjectionOutDim(const ModelConfig& config, Projection p) {
  switch (p) {
    case Projection::kQ: return config.n_heads * config.head_dim();
    case Projection::kK:
    case Projection::kV: return config.kv_dim();
    case Projection::kGate:
    case Projection::kUp: return config.ffn_dim;
    default: return config.dim;
  }
}

// ---- Config ----------------------------------------------------------------------------

Status LoraConfig::Validate() const {
  if (rank < 1 || rank > kMaxRank) {
    return InvalidArgumentError("LoRA rank " + std::to_string(rank) + " out of range [1, " +
                                std::to_string(kMaxRank) + "]");
  }
  if (!std::isfinite(alpha)) return InvalidArgumentError("LoRA alpha is not finite");
  if (targets.empty()) return InvalidArgumentError("LoRA adapter has no target projections");
  std::array<bool, kNumProjections> seen{};
  for (Projection p : targets) {
    if (!ValidProjection(p)) return InvalidArgumentError("LoRA target projection out of range");
    auto& s = seen[static_cast<size_t>(ProjectionIndex(p))];
    if (s) return InvalidArgumentError("LoRA target '" + std::string(ProjectionShortName(p)) + "' listed twice");
    s = true;
  }
  return Status::Ok();
}

// ---- Frozen A --------------------------------------------------------------------------

void ChaCha20Block(std::span<const uint8_t, 32> key, uint32_t counter, std::span<const uint8_t, 12> nonce,
                   std::span<uint8_t, 64> out) {
  uint32_t k[8];
  uint32_t n[3];
  for (int i = 0; i < 8; ++i) k[i] = LoadLe32(key.data() + 4 * i);
  for (int i = 0; i < 3; ++i) n[i] = LoadLe32(nonce.data() + 4 * i);
  uint32_t words[16];
  ChaCha20Words(k, counter, n, words);
  for (int i = 0; i < 16; ++i) StoreLe32(words[i], out.data() + 4 * i);
}

void GenerateFrozenA(uint64_t seed, int64_t layer, Projection p, int64_t rank, int64_t in_dim, std::span<float> out) {
  FLT_CHECK(rank >= 1 && in_dim >= 1 && layer >= 0 && layer <= std::numeric_limits<uint32_t>::max());
  FLT_CHECK(static_cast<int64_t>(out.size()) == rank * in_dim);
  // Beyond 2^32 blocks the counter would wrap and repeat the stream.
  FLT_CHECK(static_cast<uint64_t>(out.size()) / 16 < (uint64_t{1} << 32));
  uint8_t key_bytes[32] = {};
  std::memcpy(key_bytes, kFrozenAKeyPrefix.data(), kFrozenAKeyPrefix.size());
  for (int i = 0; i < 8; ++i) key_bytes[18 + i] = static_cast<uint8_t>(seed >> (8 * i));
  uint32_t key[8];
  for (int i = 0; i < 8; ++i) key[i] = LoadLe32(key_bytes + 4 * i);
  const uint32_t nonce[3] = {static_cast<uint32_t>(layer), static_cast<uint32_t>(ProjectionIndex(p)), 0};

  const float bound = InitBound(in_dim);
  uint32_t words[16];
  const size_t total = out.size();
  uint32_t counter = 0;
  for (size_t j = 0; j < total; j += 16, ++counter) {
    ChaCha20Words(key, counter, nonce, words);
    const size_t m = std::min<size_t>(16, total - j);
    for (size_t i = 0; i < m; ++i) out[j + i] = UniformFromWord(words[i], bound);
  }
}

// ---- Adapter ---------------------------------------------------------------------------

Result<LoraAdapter> LoraAdapter::Create(const ModelConfig& model, const LoraConfig& config, Random* rng) {
  FLT_RETURN_IF_ERROR(config.Validate());
  FLT_RETURN_IF_ERROR(model.Validate());
  if (!config.frozen_a && rng == nullptr) {
    return InvalidArgumentError("LoRA adapter with trainable A needs a random source for its initialisation");
  }
  std::vector<Projection> targets = config.targets;
  std::sort(targets.begin(), targets.end(),
            [](Projection a, Projection b) { return ProjectionIndex(a) < ProjectionIndex(b); });
  std::vector<LoraMatrix> matrices;
  matrices.reserve(static_cast<size_t>(model.n_layers) * targets.size());
  for (int64_t layer = 0; layer < model.n_layers; ++layer) {
    for (Projection p : targets) {
      LoraMatrix m;
      m.layer = layer;
      m.proj = p;
      m.in_dim = ProjectionInDim(model, p);
      m.out_dim = ProjectionOutDim(model, p);
      m.rank = config.rank;
      m.a.resize(static_cast<size_t>(m.rank * m.in_dim));
      m.b.assign(static_cast<size_t>(m.out_dim * m.rank), 0.0f);
      if (config.frozen_a) {
        GenerateFrozenA(config.a_seed, layer, p, m.rank, m.in_dim, m.a);
      } else {
        const float bound = InitBound(m.in_dim);
        for (float& v : m.a) v = UniformFromWord(rng->NextU32(), bound);
      }
      matrices.push_back(std::move(m));
    }
  }
  return MakeLoraAdapter(model, config, std::move(matrices));
}

Result<LoraAdapter> MakeLoraAdapter(const ModelConfig& model, const LoraConfig& config,
                                    std::vector<LoraMatrix> matrices) {
  FLT_RETURN_IF_ERROR(config.Validate());
  FLT_RETURN_IF_ERROR(model.Validate());
  LoraAdapter adapter;
  adapter.config_ = config;
  std::sort(adapter.config_.targets.begin(), adapter.config_.targets.end(),
            [](Projection a, Projection b) { return ProjectionIndex(a) < ProjectionIndex(b); });
  std::array<bool, kNumProjections> targeted{};
  for (Projection p : config.targets) targeted[static_cast<size_t>(ProjectionIndex(p))] = true;

  adapter.layer_count_ = model.n_layers;
  adapter.index_.assign(static_cast<size_t>(model.n_layers * kNumProjections), -1);
  std::sort(matrices.begin(), matrices.end(), [](const LoraMatrix& a, const LoraMatrix& b) {
    return a.layer != b.layer ? a.layer < b.layer : ProjectionIndex(a.proj) < ProjectionIndex(b.proj);
  });
  for (size_t i = 0; i < matrices.size(); ++i) {
    const LoraMatrix& m = matrices[i];
    if (m.layer < 0 || m.layer >= model.n_layers) {
      return InvalidArgumentError("LoRA matrix for layer " + std::to_string(m.layer) + " but the model has " +
                                  std::to_string(model.n_layers) + " layers");
    }
    if (!ValidProjection(m.proj)) return InvalidArgumentError("LoRA matrix with an invalid projection");
    const std::string label = MatrixLabel(m.layer, m.proj);
    if (!targeted[static_cast<size_t>(ProjectionIndex(m.proj))]) {
      return InvalidArgumentError("LoRA matrix '" + label + "' adapts a projection that is not among the targets (" +
                                  FormatProjections(config.targets) + ")");
    }
    const int64_t in = ProjectionInDim(model, m.proj);
    const int64_t out = ProjectionOutDim(model, m.proj);
    if (m.in_dim != in || m.out_dim != out || m.rank != config.rank) {
      return InvalidArgumentError("LoRA matrix '" + label + "' has shape in=" + std::to_string(m.in_dim) +
                                  " out=" + std::to_string(m.out_dim) + " rank=" + std::to_string(m.rank) +
                                  ", expected in=" + std::to_string(in) + " out=" + std::to_string(out) +
                                  " rank=" + std::to_string(config.rank));
    }
    if (m.a.size() != static_cast<size_t>(m.rank * m.in_dim) || m.b.size() != static_cast<size_t>(m.out_dim * m.rank)) {
      return InvalidArgumentError("LoRA matrix '" + label + "' has A/B buffers of the wrong size");
    }
    int32_t& slot = adapter.index_[static_cast<size_t>(m.layer * kNumProjections + ProjectionIndex(m.proj))];
    if (slot >= 0) return InvalidArgumentError("LoRA matrix '" + label + "' given twice");
    slot = static_cast<int32_t>(i);
  }
  for (int64_t layer = 0; layer < model.n_layers; ++layer) {
    for (Projection p : adapter.config_.targets) {
      if (adapter.index_[static_cast<size_t>(layer * kNumProjections + ProjectionIndex(p))] < 0) {
        return InvalidArgumentError("LoRA matrix '" + MatrixLabel(layer, p) + "' is missing");
      }
    }
  }
  adapter.matrices_ = std::move(matrices);
  return adapter;
}

LoraMatrix* LoraAdapter::Find(int64_t layer, Projection p) {
  return const_cast<LoraMatrix*>(std::as_const(*this).Find(layer, p));
}

const LoraMatrix* LoraAdapter::Find(int64_t layer, Projection p) const {
  if (layer < 0 || layer >= layer_count_ || !ValidProjection(p)) return nullptr;
  const int32_t i = index_[static_cast<size_t>(layer * kNumProjections + ProjectionIndex(p))];
  return i < 0 ? nullptr : &matrices_[static_cast<size_t>(i)];
}

int64_t LoraAdapter::TrainableCount() const {
  int64_t n = 0;
  for (const LoraMatrix& m : matrices_) {
    n += static_cast<int64_t>(m.b.size());
    if (!config_.frozen_a) n += static_cast<int64_t>(m.a.size());
  }
  return n;
}

std::vector<float> LoraAdapter::FlattenTrainable() const {
  std::vector<float> out;
  out.reserve(static_cast<size_t>(TrainableCount()));
  for (const LoraMatrix& m : matrices_) {
    if (!config_.frozen_a) out.insert(out.end(), m.a.begin(), m.a.end());
    out.insert(out.end(), m.b.begin(), m.b.end());
  }
  return out;
}

Status LoraAdapter::SetTrainable(std::span<const float> values) {
  if (static_cast<int64_t>(values.size()) != TrainableCount()) {
    return InvalidArgumentError("adapter has " + std::to_string(TrainableCount()) + " trainable values, got " +
                                std::to_string(values.size()));
  }
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) {
      return InvalidArgumentError("trainable value " + std::to_string(i) + " is not finite");
    }
  }
  const float* src = values.data();
  for (LoraMatrix& m : matrices_) {
    if (!config_.frozen_a) {
      std::copy(src, src + m.a.size(), m.a.begin());
      src += m.a.size();
    }
    std::copy(src, src + m.b.size(), m.b.begin());
    src += m.b.size();
  }
  return Status::Ok();
}

// ---- Applier ---------------------------------------------------------------------------

void LoraApplier::Add(const LoraAdapter* adapter, float user_scale) {
  FLT_CHECK(adapter != nullptr);
  entries_.push_back({adapter, user_scale});
}

void LoraApplier::Clear() { entries_.clear(); }

void LoraApplier::Apply(int64_t layer, Projection p, const float* x, int64_t n, int64_t in_dim, float* y,
                        int64_t ldy, int64_t out_dim, const ComputeContext& ctx) {
  if (n <= 0) return;
  const KernelTable& k = ctx.kernels != nullptr ? *ctx.kernels : ActiveKernels();
  for (const Entry& e : entries_) {
    const LoraMatrix* m = e.adapter->Find(layer, p);
    if (m == nullptr) continue;
    FLT_CHECK_MSG(m->in_dim == in_dim && m->out_dim == out_dim, "LoRA adapter does not match the model's shapes");
    const float s = e.user_scale * e.adapter->scale();
    if (s == 0.0f) continue;
    const size_t ax_size = static_cast<size_t>(n * m->rank);
    const size_t need = ax_size + static_cast<size_t>(n * out_dim);
    if (ax_.size() < need) ax_.resize(need);  // grows to the largest chunk once, then steady
    float* ax = ax_.data();
    float* bax = ax_.data() + ax_size;
    // The rank is far below the row grain, so this runs on one thread: it is ~rank/out
    // of the base matmul's work.
    MatMul(WeightMatrix{GgmlType::kF32, m->a.data(), m->rank, m->in_dim}, x, n, ax, ctx);
    // Scaling the r-wide intermediate instead of the out-wide result is cheaper.
    k.scale(ax, s, ax, static_cast<int64_t>(ax_size));
    MatMul(WeightMatrix{GgmlType::kF32, m->b.data(), m->out_dim, m->rank}, ax, n, bax, ctx);
    for (int64_t t = 0; t < n; ++t) k.axpy(1.0f, bax + t * out_dim, y + t * ldy, out_dim);
  }
}

}  // namespace flotilla::model
