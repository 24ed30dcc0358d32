#include "flotilla/model/adapter_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <map>
#include <utility>

#include "flotilla/core/bytes.h"
#include "flotilla/core/check.h"
#include "flotilla/model/quant.h"
#include "flotilla/model/tensor_types.h"

namespace flotilla::model {
namespace {

// ---- SHA-256 (FIPS 180-4) ----------------------------------------------------------------
// The engine must build with nothing but core (the aarch64 ENGINE_ONLY build has no
// mbedTLS/OpenSSL), and the model file hash is its only use of a digest, so a small
// portable implementation lives here. Checked against the FIPS 180-4 example vectors.

class Sha256 {
 public:
  void Update(const uint8_t* data, size_t n) {
    total_ += n;
    if (buffered_ > 0) {
      const size_t take = std::min(n, sizeof(buf_) - buffered_);
      std::memcpy(buf_ + buffered_, data, take);
      buffered_ += take;
      data += take;
      n -= take;
      if (buffered_ < sizeof(buf_)) return;
      Compress(buf_);
      buffered_ = 0;
    }
    for (; n >= 64; data += 64, n -= 64) Compress(data);
    std::memcpy(buf_, data, n);
    buffered_ = n;
  }

  std::array<uint8_t, 32> Final() {
    const uint64_t bits = total_ * 8;
    const uint8_t pad = 0x80;
    Update(&pad, 1);
    const uint8_t zero[64] = {};
    Update(zero, (buffered_ <= 56 ? 56 : 120) - buffered_);
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
    Update(len, 8);
    std::array<uint8_t, 32> out;
    for (int i = 0; i < 8; ++i) {
      for (int j = 0; j < 4; ++j) out[static_cast<size_t>(4 * i + j)] = static_cast<uint8_t>(h_[i] >> (24 - 8 * j));
    }
    return out;
  }

 private:
  static uint32_t Rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

  void Compress(const uint8_t* p) {
    static constexpr uint32_t kK[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
    uint32_t w[64];
    for (int i = 0; i < 16; ++i) {
      w[i] = static_cast<uint32_t>(p[4 * i]) << 24 | static_cast<uint32_t>(p[4 * i + 1]) << 16 |
             static_cast<uint32_t>(p[4 * i + 2]) << 8 | static_cast<uint32_t>(p[4 * i + 3]);
    }
    for (int i = 16; i < 64; ++i) {
      const uint32_t s0 = Rotr(w[i - 15], 7) ^ Rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const uint32_t s1 = Rotr(w[i - 2], 17) ^ Rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
    for (int i = 0; i < 64; ++i) {
      const uint32_t t1 = h + (Rotr(e, 6) ^ Rotr(e, 11) ^ Rotr(e, 25)) + ((e & f) ^ (~e & g)) + kK[i] + w[i];
      const uint32_t t2 = (Rotr(a, 2) ^ Rotr(a, 13) ^ Rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      h = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    h_[0] += a;
    h_[1] += b;
    h_[2] += c;
    h_[3] += d;
    h_[4] += e;
    h_[5] += f;
    h_[6] += g;
    h_[7] += h;
  }

  uint32_t h_[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  uint8_t buf_[64] = {};
  size_t buffered_ = 0;
  uint64_t total_ = 0;
};

Status ErrnoError(const std::string& what, const std::filesystem::path& path) {
  const int e = errno;
  std::string msg = what + " " + path.string() + ": " + std::strerror(e);
  if (e == ENOENT) return NotFoundError(std::move(msg));
  if (e == EACCES || e == EPERM) return PermissionDeniedError(std::move(msg));
  return UnavailableError(std::move(msg));
}

// ---- Adapter file layout --------------------------------------------------------------------

constexpr std::string_view kKeyGeneralType = "general.type";
constexpr std::string_view kKeyAdapterType = "adapter.type";
constexpr std::string_view kKeyAlpha = "adapter.lora.alpha";
constexpr std::string_view kKeyLayoutVersion = "flotilla.adapter.version";
constexpr std::string_view kKeyFrozenA = "flotilla.adapter.frozen_a";
constexpr std::string_view kKeySeed = "flotilla.adapter.a_seed";
constexpr std::string_view kKeyBaseSha = "flotilla.adapter.base_sha256";
constexpr std::string_view kKeyTargets = "flotilla.adapter.targets";
constexpr std::string_view kKeyAdapterVersion = "flotilla.adapter.adapter_version";
constexpr uint32_t kLayoutVersion = 1;
constexpr std::string_view kSuffixA = ".lora_a";
constexpr std::string_view kSuffixB = ".lora_b";

constexpr std::array<Projection, kNumProjections> kAllProjections = {
    Projection::kQ, Projection::kK, Projection::kV, Projection::kO, Projection::kGate, Projection::kUp,
    Projection::kDown};

ByteSpan FloatBytes(const std::vector<float>& v) {
  return {reinterpret_cast<const uint8_t*>(v.data()), v.size() * sizeof(float)};
}

// (layer, projection) of a base tensor name like "blk.3.attn_q.weight"; false for any
// other tensor (token_embd, norms, output).
bool ParseProjectionTensor(std::string_view name, int64_t n_layers, int64_t* layer, Projection* proj) {
  if (!name.starts_with("blk.")) return false;
  size_t i = 4;
  int64_t l = 0;
  const size_t digits_begin = i;
  while (i < name.size() && name[i] >= '0' && name[i] <= '9' && i - digits_begin < 9) l = l * 10 + (name[i++] - '0');
  if (i == digits_begin || l >= n_layers) return false;
  for (Projection p : kAllProjections) {
    if (ProjectionTensorName(l, p) == name) {
      *layer = l;
      *proj = p;
      return true;
    }
  }
  return false;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'F') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// The architecture the base model declares (LlamaModel accepts only "llama").
std::string BaseArchitecture(const LlamaModel& base) {
  Result<std::string_view> arch = base.file().GetString(kKeyArchitecture);
  return arch.ok() ? std::string(*arch) : std::string("llama");
}

// One lora_a/lora_b tensor widened to F32 and checked for finite values.
Result<std::vector<float>> ReadFactor(const GgufTensor& t) {
  if (t.type != GgmlType::kF32 && t.type != GgmlType::kF16) {
    return InvalidArgumentError("adapter tensor '" + t.name + "' has type " + std::string(TypeName(t.type)) +
                                " (LoRA factors must be f32 or f16)");
  }
  Result<std::vector<float>> v = DequantizeToFloats(t.type, t.bytes(), t.n_elements);
  if (!v.ok()) return v.status().WithContext("adapter tensor '" + t.name + "'");
  for (size_t i = 0; i < v->size(); ++i) {
    if (!std::isfinite((*v)[i])) {
      return InvalidArgumentError("adapter tensor '" + t.name + "' has a non-finite value at element " +
                                  std::to_string(i));
    }
  }
  return v;
}

// Checks that `adapter` fits `config` (every matrix inside the model with its shapes).
Status CheckAdapterFits(const LoraAdapter& adapter, const ModelConfig& config) {
  for (const LoraMatrix& m : adapter.matrices()) {
    if (m.layer < 0 || m.layer >= config.n_layers || m.in_dim != ProjectionInDim(config, m.proj) ||
        m.out_dim != ProjectionOutDim(config, m.proj)) {
      return InvalidArgumentError("adapter matrix for '" + ProjectionTensorName(m.layer, m.proj) +
                                  "' does not fit the base model (different layer count or sizes)");
    }
  }
  return Status::Ok();
}

}  // namespace

Result<std::string> ModelFileSha256(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("cannot open", path);
  Sha256 sha;
  std::vector<uint8_t> buf(size_t{1} << 20);
  Status status;
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      status = ErrnoError("cannot read", path);
      break;
    }
    if (n == 0) break;
    sha.Update(buf.data(), static_cast<size_t>(n));
  }
  ::close(fd);
  FLT_RETURN_IF_ERROR(status);
  const std::array<uint8_t, 32> digest = sha.Final();
  return ToHex(digest);
}

Status SaveAdapter(const LoraAdapter& adapter, const std::filesystem::path& path) {
  const LoraConfig& c = adapter.config();
  FLT_RETURN_IF_ERROR(c.Validate());
  GgufWriter w;
  w.SetString(std::string(kKeyArchitecture), "llama");
  w.SetString(std::string(kKeyGeneralType), "adapter");
  if (!adapter.name.empty()) w.SetString(std::string(kKeyName), adapter.name);
  w.SetString(std::string(kKeyAdapterType), "lora");
  w.SetF32(std::string(kKeyAlpha), c.alpha);
  w.SetU32(std::string(kKeyLayoutVersion), kLayoutVersion);
  w.SetBool(std::string(kKeyFrozenA), c.frozen_a);
  w.Set(std::string(kKeySeed), GgufValue::U64(c.a_seed));
  if (!adapter.base_hash.empty()) w.SetString(std::string(kKeyBaseSha), Lower(adapter.base_hash));
  w.SetString(std::string(kKeyTargets), FormatProjections(c.targets));
  w.Set(std::string(kKeyAdapterVersion), GgufValue::U64(adapter.version));
  for (const LoraMatrix& m : adapter.matrices()) {
    const std::string base = ProjectionTensorName(m.layer, m.proj);
    const std::array<int64_t, 2> ne_a = {m.in_dim, m.rank};
    const std::array<int64_t, 2> ne_b = {m.rank, m.out_dim};
    FLT_RETURN_IF_ERROR(w.AddTensorView(base + std::string(kSuffixA), GgmlType::kF32, ne_a, FloatBytes(m.a)));
    FLT_RETURN_IF_ERROR(w.AddTensorView(base + std::string(kSuffixB), GgmlType::kF32, ne_b, FloatBytes(m.b)));
  }
  return w.WriteFile(path).WithContext("saving adapter " + path.string());
}

Result<LoraAdapter> ReadAdapter(const GgufFile& file, const LlamaModel& base, const std::string& base_sha256) {
  // Kind and architecture.
  const GgufValue* type = file.Find(kKeyGeneralType);
  if (type == nullptr) return InvalidArgumentError("general.type is missing: not a LoRA adapter file");
  FLT_ASSIGN_OR_RETURN(std::string_view type_str, file.GetString(kKeyGeneralType));
  if (type_str != "adapter") {
    return InvalidArgumentError("general.type is '" + std::string(type_str) +
                                "', expected 'adapter': not a LoRA adapter file");
  }
  if (file.Find(kKeyAdapterType) == nullptr) return InvalidArgumentError("adapter.type is missing");
  FLT_ASSIGN_OR_RETURN(std::string_view adapter_type, file.GetString(kKeyAdapterType));
  if (adapter_type != "lora") {
    return InvalidArgumentError("adapter.type is '" + std::string(adapter_type) + "', only 'lora' is supported");
  }
  if (file.Find(kKeyArchitecture) == nullptr) return InvalidArgumentError("general.architecture is missing");
  FLT_ASSIGN_OR_RETURN(std::string_view arch, file.GetString(kKeyArchitecture));
  const std::string base_arch = BaseArchitecture(base);
  if (arch != base_arch) {
    return InvalidArgumentError("general.architecture is '" + std::string(arch) + "' but the base model is '" +
                                base_arch + "'");
  }

  // Flotilla's keys (all optional: PEFT-converted adapters have none).
  if (file.Find(kKeyLayoutVersion) != nullptr) {
    FLT_ASSIGN_OR_RETURN(uint64_t layout, file.GetUInt(kKeyLayoutVersion));
    if (layout != kLayoutVersion) {
      return UnimplementedError(std::string(kKeyLayoutVersion) + " is " + std::to_string(layout) +
                                ", this build reads version " + std::to_string(kLayoutVersion));
    }
  }
  LoraConfig config;
  config.frozen_a = false;
  if (file.Find(kKeyFrozenA) != nullptr) {
    FLT_ASSIGN_OR_RETURN(config.frozen_a, file.GetBool(kKeyFrozenA));
  }
  if (file.Find(kKeySeed) != nullptr) {
    FLT_ASSIGN_OR_RETURN(config.a_seed, file.GetUInt(kKeySeed));
  } else if (config.frozen_a) {
    return InvalidArgumentError(std::string(kKeyFrozenA) + " is set but " + std::string(kKeySeed) + " is missing");
  }
  std::string file_hash;
  if (file.Find(kKeyBaseSha) != nullptr) {
    FLT_ASSIGN_OR_RETURN(std::string_view h, file.GetString(kKeyBaseSha));
    file_hash = Lower(h);
  }
  uint64_t adapter_version = 0;
  if (file.Find(kKeyAdapterVersion) != nullptr) {
    FLT_ASSIGN_OR_RETURN(adapter_version, file.GetUInt(kKeyAdapterVersion));
  }
  std::string name;
  if (file.Find(kKeyName) != nullptr) {
    FLT_ASSIGN_OR_RETURN(std::string_view n, file.GetString(kKeyName));
    name = std::string(n);
  }
  if (!file_hash.empty() && !base_sha256.empty() && file_hash != Lower(base_sha256)) {
    return FailedPreconditionError("adapter is for base " + file_hash + ", this base is " + Lower(base_sha256));
  }

  // Pair up the tensors by base name.
  struct Pair {
    const GgufTensor* a = nullptr;
    const GgufTensor* b = nullptr;
  };
  std::map<std::string, Pair> pairs;  // ordered: deterministic error messages
  for (const GgufTensor& t : file.tensors()) {
    const std::string_view n = t.name;
    if (n.ends_with(kSuffixA)) {
      pairs[std::string(n.substr(0, n.size() - kSuffixA.size()))].a = &t;
    } else if (n.ends_with(kSuffixB)) {
      pairs[std::string(n.substr(0, n.size() - kSuffixB.size()))].b = &t;
    } else {
      return InvalidArgumentError("adapter tensor '" + t.name + "' is neither a .lora_a nor a .lora_b tensor");
    }
  }
  if (pairs.empty()) return InvalidArgumentError("adapter file has no LoRA tensors");

  const ModelConfig& mc = base.config();
  std::vector<LoraMatrix> matrices;
  std::array<bool, kNumProjections> targeted{};
  std::string rank_from;  // the tensor that fixed the rank
  int64_t rank = 0;
  for (const auto& [base_name, pair] : pairs) {
    if (pair.a == nullptr) return InvalidArgumentError("adapter has '" + base_name + ".lora_b' but no lora_a");
    if (pair.b == nullptr) return InvalidArgumentError("adapter has '" + base_name + ".lora_a' but no lora_b");
    const GgufTensor* w = base.file().FindTensor(base_name);
    if (w == nullptr) {
      return InvalidArgumentError("adapter tensor '" + base_name +
                                  ".lora_a' adapts a tensor the base model does not have (adapter for another model?)");
    }
    int64_t layer = 0;
    Projection proj = Projection::kQ;
    if (!ParseProjectionTensor(base_name, mc.n_layers, &layer, &proj)) {
      return UnimplementedError("adapter adapts '" + base_name +
                                "': only the q, k, v, o, gate, up and down projections can be adapted");
    }
    const GgufTensor& a = *pair.a;
    const GgufTensor& b = *pair.b;
    if (a.n_dims != 2 || b.n_dims != 2) {
      return InvalidArgumentError("adapter tensors of '" + base_name + "' must be 2-D (got " +
                                  std::to_string(a.n_dims) + "-D lora_a, " + std::to_string(b.n_dims) + "-D lora_b)");
    }
    // llama.cpp's rules (llama-adapter.cpp), with its messages.
    if (w->ne[0] != a.ne[0] || w->ne[1] != b.ne[1]) {
      return InvalidArgumentError("tensor '" + base_name + "' has incorrect shape (hint: maybe LoRA A/B are transposed): " +
                                  "base [" + std::to_string(w->ne[0]) + ", " + std::to_string(w->ne[1]) +
                                  "], lora_a [" + std::to_string(a.ne[0]) + ", " + std::to_string(a.ne[1]) +
                                  "], lora_b [" + std::to_string(b.ne[0]) + ", " + std::to_string(b.ne[1]) + "]");
    }
    if (a.ne[1] != b.ne[0]) {
      return InvalidArgumentError("lora_a tensor of '" + base_name +
                                  "' is not transposed (hint: adapter from \"finetune\" example is no longer "
                                  "supported): lora_a ne1 = " + std::to_string(a.ne[1]) +
                                  ", lora_b ne0 = " + std::to_string(b.ne[0]));
    }
    if (rank == 0) {
      rank = a.ne[1];
      rank_from = base_name;
      config.rank = rank;
      if (rank < 1 || rank > 1024) {
        return InvalidArgumentError("adapter rank " + std::to_string(rank) + " of '" + base_name +
                                    "' is out of range [1, 1024]");
      }
    } else if (a.ne[1] != rank) {
      return InvalidArgumentError("adapter rank differs between matrices: '" + base_name + "' has rank " +
                                  std::to_string(a.ne[1]) + ", '" + rank_from + "' has rank " + std::to_string(rank));
    }
    LoraMatrix m;
    m.layer = layer;
    m.proj = proj;
    m.in_dim = a.ne[0];
    m.out_dim = b.ne[1];
    m.rank = rank;
    FLT_ASSIGN_OR_RETURN(m.a, ReadFactor(a));
    FLT_ASSIGN_OR_RETURN(m.b, ReadFactor(b));
    targeted[static_cast<size_t>(ProjectionIndex(proj))] = true;
    matrices.push_back(std::move(m));
  }
  config.targets.clear();
  for (Projection p : kAllProjections) {
    if (targeted[static_cast<size_t>(ProjectionIndex(p))]) config.targets.push_back(p);
  }
  if (file.Find(kKeyTargets) != nullptr) {
    FLT_ASSIGN_OR_RETURN(std::string_view listed, file.GetString(kKeyTargets));
    Result<std::vector<Projection>> parsed = ParseProjections(listed);
    if (!parsed.ok()) return parsed.status().WithContext("reading " + std::string(kKeyTargets));
    if (*parsed != config.targets) {
      return InvalidArgumentError(std::string(kKeyTargets) + " says '" + std::string(listed) +
                                  "' but the tensors adapt '" + FormatProjections(config.targets) + "'");
    }
  }

  // adapter.lora.alpha absent (or 0) means "no alpha scaling" in llama.cpp: s = user scale.
  double alpha = 0;
  if (file.Find(kKeyAlpha) != nullptr) {
    FLT_ASSIGN_OR_RETURN(alpha, file.GetFloat(kKeyAlpha));
    if (!std::isfinite(alpha)) return InvalidArgumentError(std::string(kKeyAlpha) + " is not finite");
  }
  config.alpha = alpha == 0 ? static_cast<float>(rank) : static_cast<float>(alpha);

  if (config.frozen_a) {
    std::vector<float> want;
    for (const LoraMatrix& m : matrices) {
      want.resize(m.a.size());
      GenerateFrozenA(config.a_seed, m.layer, m.proj, m.rank, m.in_dim, want);
      if (std::memcmp(want.data(), m.a.data(), want.size() * sizeof(float)) != 0) {
        return InvalidArgumentError("frozen-A tensor '" + ProjectionTensorName(m.layer, m.proj) +
                                    ".lora_a' differs from the stream of seed " + std::to_string(config.a_seed) +
                                    " (corrupt file or another generator)");
      }
    }
  }

  Result<LoraAdapter> adapter = MakeLoraAdapter(mc, config, std::move(matrices));
  if (!adapter.ok()) return adapter.status().WithContext("checking the adapter against the base model");
  adapter->base_hash = file_hash;
  adapter->version = adapter_version;
  adapter->name = std::move(name);
  return adapter;
}

Result<LoraAdapter> LoadAdapter(const std::filesystem::path& path, const LlamaModel& base,
                                const std::string& base_sha256) {
  Result<std::unique_ptr<GgufFile>> file = GgufFile::Open(path);
  if (!file.ok()) return file.status().WithContext("loading adapter " + path.string());
  Result<LoraAdapter> adapter = ReadAdapter(**file, base, base_sha256);
  if (!adapter.ok()) return adapter.status().WithContext("loading adapter " + path.string());
  return adapter;
}

// ---- Merge ----------------------------------------------------------------------------------

Status MergeAdapters(const LlamaModel& base, std::span<const MergeInput> adapters, const QuantRecipe& recipe,
                     const std::filesystem::path& out) {
  const ModelConfig& mc = base.config();
  for (const MergeInput& in : adapters) {
    if (in.adapter == nullptr) return InvalidArgumentError("merge input without an adapter");
    if (!std::isfinite(in.user_scale)) return InvalidArgumentError("merge scale is not finite");
    FLT_RETURN_IF_ERROR(CheckAdapterFits(*in.adapter, mc));
  }
  const GgufFile& file = base.file();

  // Stage 1: the merged model with adapted matrices in F32, every other tensor borrowed
  // from the base as is. Stage 2 hands it to QuantizeModel, so the recipe's per-tensor
  // types and the byte-for-byte copy of unchanged tensors are exactly `model quantize`'s.
  GgufWriter merged;
  for (const auto& [key, value] : file.metadata()) merged.Set(key, value);
  merged.SetString(std::string(kKeyName), (base.name().empty() ? std::string("model") : std::string(base.name())) + "+lora");
  FLT_RETURN_IF_ERROR(merged.SetAlignment(file.alignment()));
  std::vector<std::vector<float>> owned;  // F32 values of the adapted matrices
  owned.reserve(file.tensors().size());
  for (const GgufTensor& t : file.tensors()) {
    int64_t layer = 0;
    Projection proj = Projection::kQ;
    std::vector<std::pair<const LoraMatrix*, float>> terms;
    if (ParseProjectionTensor(t.name, mc.n_layers, &layer, &proj)) {
      for (const MergeInput& in : adapters) {
        const LoraMatrix* m = in.adapter->Find(layer, proj);
        if (m != nullptr && in.user_scale != 0.0f) terms.emplace_back(m, in.user_scale * in.adapter->scale());
      }
    }
    if (terms.empty()) {
      FLT_RETURN_IF_ERROR(merged.AddTensorView(t.name, t.type, t.shape(), t.bytes()));
      continue;
    }
    Result<std::vector<float>> w = DequantizeToFloats(t.type, t.bytes(), t.n_elements);
    if (!w.ok()) return w.status().WithContext("tensor '" + t.name + "'");
    const int64_t in_dim = t.ne[0];
    const int64_t out_dim = t.ne[1];
    // W[o, :] += s · Σ_r B[o, r] · A[r, :], one output row at a time (A stays in cache).
    for (const auto& [m, s] : terms) {
      FLT_CHECK(m->in_dim == in_dim && m->out_dim == out_dim);
      for (int64_t o = 0; o < out_dim; ++o) {
        float* row = w->data() + o * in_dim;
        for (int64_t r = 0; r < m->rank; ++r) {
          const float c = s * m->b[static_cast<size_t>(o * m->rank + r)];
          if (c == 0.0f) continue;
          const float* a_row = m->a.data() + r * in_dim;
          for (int64_t i = 0; i < in_dim; ++i) row[i] += c * a_row[i];
        }
      }
    }
    owned.push_back(std::move(*w));
    FLT_RETURN_IF_ERROR(merged.AddTensorView(t.name, GgmlType::kF32, t.shape(), FloatBytes(owned.back())));
  }
  FLT_ASSIGN_OR_RETURN(Bytes buffer, merged.WriteToBuffer());
  owned.clear();
  owned.shrink_to_fit();
  FLT_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> staged, GgufFile::OpenFromMemory(buffer));
  return QuantizeModel(*staged, recipe, out).WithContext("writing merged model " + out.string());
}

}  // namespace flotilla::model
