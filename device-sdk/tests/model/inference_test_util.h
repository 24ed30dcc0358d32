// Test support for the inference tests: random model files per (config, recipe), cached
// for the test binary's lifetime, and an independent plain reference forward pass
// (weights dequantized with the reference dequantizers, naive loops, double math).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "flotilla/core/file.h"
#include "flotilla/model/gguf.h"
#include "flotilla/model/model_config.h"
#include "flotilla/model/model_file.h"
#include "flotilla/model/quant.h"

namespace flotilla::model::testing {

inline const std::filesystem::path& TestDir() {
  static TempDir* dir = [] {
    Result<TempDir> d = TempDir::Create("flotilla-infer-test");
    FLT_CHECK_OK(d.status());
    return new TempDir(std::move(*d));  // lives until exit
  }();
  return dir->path();
}

// Random model file for a named config, F32 then re-quantized with `recipe` ("f32",
// "q8_0", "q4_0", "q4_k-mixed", ...). Cached per (config, recipe, seed, tied).
inline std::filesystem::path ModelPath(const std::string& config_name, const std::string& recipe,
                                       uint64_t seed = 7, bool tied = true) {
  static std::map<std::string, std::filesystem::path> cache;
  const std::string key = config_name + "-" + recipe + "-" + std::to_string(seed) + (tied ? "" : "-untied");
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  Result<ModelConfig> config = NamedConfig(config_name);
  FLT_CHECK_OK(config.status());
  config->tied_output = tied;
  const std::filesystem::path f32 =
      TestDir() / (config_name + "-f32-" + std::to_string(seed) + (tied ? "" : "-untied") + ".gguf");
  if (!std::filesystem::exists(f32)) {
    RandomModelOptions options;
    options.seed = seed;
    FLT_CHECK_OK(WriteRandomModel(*config, options, f32));
  }
  std::filesystem::path out = f32;
  if (recipe != "f32") {
    out = TestDir() / (key + ".gguf");
    Result<std::unique_ptr<GgufFile>> in = GgufFile::Open(f32);
    FLT_CHECK_OK(in.status());
    Result<QuantRecipe> r = NamedRecipe(recipe);
    FLT_CHECK_OK(r.status());
    FLT_CHECK_OK(QuantizeModel(**in, *r, out));
  }
  cache[key] = out;
  return out;
}

// Copies `in` into a writer (metadata and tensor views), letting `edit` change it first.
// The views borrow `in`: write the result before `in` goes away.
inline void CopyModel(const GgufFile& in, GgufWriter& w, const std::function<bool(const GgufTensor&)>& keep = {}) {
  for (const auto& [key, value] : in.metadata()) w.Set(key, value);
  for (const GgufTensor& t : in.tensors()) {
    if (keep && !keep(t)) continue;
    FLT_CHECK_OK(w.AddTensorView(t.name, t.type, t.shape(), t.bytes()));
  }
}

// ---- Reference forward ------------------------------------------------------------------

struct RefLayer {
  std::vector<float> attn_norm, wq, wk, wv, wo, ffn_norm, gate, up, down;
};

struct RefModel {
  ModelConfig c;
  std::vector<float> embd, out_norm, output;
  std::vector<RefLayer> layers;
};

inline std::vector<float> RefTensor(const GgufFile& f, const std::string& name) {
  const GgufTensor* t = f.FindTensor(name);
  FLT_CHECK(t != nullptr);
  Result<std::vector<float>> v = DequantizeToFloats(t->type, t->bytes(), t->n_elements);
  FLT_CHECK_OK(v.status());
  return std::move(*v);
}

inline RefModel LoadRef(const GgufFile& f) {
  RefModel m;
  Result<ModelConfig> c = ReadLlamaConfig(f);
  FLT_CHECK_OK(c.status());
  m.c = *c;
  m.embd = RefTensor(f, std::string(kTokenEmbdName));
  m.out_norm = RefTensor(f, std::string(kOutputNormName));
  m.output = m.c.tied_output ? m.embd : RefTensor(f, std::string(kOutputName));
  for (int64_t l = 0; l < m.c.n_layers; ++l) {
    RefLayer L;
    L.attn_norm = RefTensor(f, LayerTensorName(l, LlamaTensor::kAttnNorm));
    L.wq = RefTensor(f, LayerTensorName(l, LlamaTensor::kAttnQ));
    L.wk = RefTensor(f, LayerTensorName(l, LlamaTensor::kAttnK));
    L.wv = RefTensor(f, LayerTensorName(l, LlamaTensor::kAttnV));
    L.wo = RefTensor(f, LayerTensorName(l, LlamaTensor::kAttnOutput));
    L.ffn_norm = RefTensor(f, LayerTensorName(l, LlamaTensor::kFfnNorm));
    L.gate = RefTensor(f, LayerTensorName(l, LlamaTensor::kFfnGate));
    L.up = RefTensor(f, LayerTensorName(l, LlamaTensor::kFfnUp));
    L.down = RefTensor(f, LayerTensorName(l, LlamaTensor::kFfnDown));
    m.layers.push_back(std::move(L));
  }
  return m;
}

using DVec = std::vector<double>;

// y[rows] = W[rows x cols] . x
inline DVec RefMatVec(const std::vector<float>& w, const DVec& x, int64_t rows) {
  const auto cols = static_cast<int64_t>(x.size());
  DVec y(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    double s = 0;
    for (int64_t i = 0; i < cols; ++i) s += static_cast<double>(w[static_cast<size_t>(r * cols + i)]) * x[static_cast<size_t>(i)];
    y[static_cast<size_t>(r)] = s;
  }
  return y;
}

inline DVec RefRmsNorm(const DVec& x, const std::vector<float>& w, double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double scale = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + eps);
  DVec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * scale * static_cast<double>(w[i]);
  return y;
}

// Adjacent-pair RoPE on every head of v (n_heads x head_dim) at position pos.
inline void RefRope(DVec& v, int64_t n_heads, int64_t hd, int64_t pos, double theta) {
  for (int64_t h = 0; h < n_heads; ++h) {
    for (int64_t i = 0; i < hd / 2; ++i) {
      const double a = static_cast<double>(pos) * std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(hd));
      double& x0 = v[static_cast<size_t>(h * hd + 2 * i)];
      double& x1 = v[static_cast<size_t>(h * hd + 2 * i + 1)];
      const double r0 = x0 * std::cos(a) - x1 * std::sin(a);
      const double r1 = x0 * std::sin(a) + x1 * std::cos(a);
      x0 = r0;
      x1 = r1;
    }
  }
}

// Optional extra term per projection (for adapter tests): y += extra(layer, which, x).
using RefExtra = std::function<void(int64_t layer, int which, const DVec& x, DVec& y)>;

// Logits of every position of `tokens` (a fresh sequence), computed token by token.
inline std::vector<DVec> RefForward(const RefModel& m, const std::vector<int32_t>& tokens, const RefExtra& extra = {}) {
  const ModelConfig& c = m.c;
  const int64_t hd = c.head_dim(), kv_dim = c.kv_dim(), group = c.n_heads / c.n_kv_heads;
  std::vector<std::vector<DVec>> kc(static_cast<size_t>(c.n_layers)), vc(static_cast<size_t>(c.n_layers));
  std::vector<DVec> all;
  auto add_extra = [&](int64_t l, int which, const DVec& x, DVec& y) {
    if (extra) extra(l, which, x, y);
  };
  for (size_t pos = 0; pos < tokens.size(); ++pos) {
    DVec x(static_cast<size_t>(c.dim));
    for (int64_t i = 0; i < c.dim; ++i) x[static_cast<size_t>(i)] = m.embd[static_cast<size_t>(tokens[pos] * c.dim + i)];
    for (int64_t l = 0; l < c.n_layers; ++l) {
      const RefLayer& L = m.layers[static_cast<size_t>(l)];
      DVec xn = RefRmsNorm(x, L.attn_norm, c.rms_eps);
      DVec q = RefMatVec(L.wq, xn, c.dim), k = RefMatVec(L.wk, xn, kv_dim), v = RefMatVec(L.wv, xn, kv_dim);
      add_extra(l, 0, xn, q);
      add_extra(l, 1, xn, k);
      add_extra(l, 2, xn, v);
      RefRope(q, c.n_heads, hd, static_cast<int64_t>(pos), c.rope_theta);
      RefRope(k, c.n_kv_heads, hd, static_cast<int64_t>(pos), c.rope_theta);
      kc[static_cast<size_t>(l)].push_back(k);
      vc[static_cast<size_t>(l)].push_back(v);
      DVec att(static_cast<size_t>(c.dim), 0.0);
      for (int64_t h = 0; h < c.n_heads; ++h) {
        const int64_t off = (h / group) * hd;
        DVec s(pos + 1);
        double mx = -1e300;
        for (size_t j = 0; j <= pos; ++j) {
          double d = 0;
          for (int64_t i = 0; i < hd; ++i) d += q[static_cast<size_t>(h * hd + i)] * kc[static_cast<size_t>(l)][j][static_cast<size_t>(off + i)];
          s[j] = d / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (double& e : s) sum += (e = std::exp(e - mx));
        for (size_t j = 0; j <= pos; ++j) {
          for (int64_t i = 0; i < hd; ++i) {
            att[static_cast<size_t>(h * hd + i)] += s[j] / sum * vc[static_cast<size_t>(l)][j][static_cast<size_t>(off + i)];
          }
        }
      }
      DVec o = RefMatVec(L.wo, att, c.dim);
      add_extra(l, 3, att, o);
      for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];
      xn = RefRmsNorm(x, L.ffn_norm, c.rms_eps);
      DVec g = RefMatVec(L.gate, xn, c.ffn_dim), u = RefMatVec(L.up, xn, c.ffn_dim);
      add_extra(l, 4, xn, g);
      add_extra(l, 5, xn, u);
      DVec a(g.size());
      for (size_t i = 0; i < a.size(); ++i) a[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
      DVec d = RefMatVec(L.down, a, c.dim);
      add_extra(l, 6, a, d);
      for (size_t i = 0; i < x.size(); ++i) x[i] += d[i];
    }
    all.push_back(RefMatVec(m.output, RefRmsNorm(x, m.out_norm, c.rms_eps), c.vocab_size));
  }
  return all;
}

// max |a - b| / rms(b): the logit error relative to the logits' scale.
inline double RelativeError(std::span<const float> a, const DVec& b) {
  double max_diff = 0, ss = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    max_diff = std::max(max_diff, std::abs(static_cast<double>(a[i]) - b[i]));
    ss += b[i] * b[i];
  }
  return max_diff / std::sqrt(ss / static_cast<double>(b.size()));
}

// Seeded token ids in [3, vocab) (skips <unk>/<s>/</s>).
inline std::vector<int32_t> TestTokens(int64_t vocab, size_t n, uint64_t seed) {
  SplitMix64 rng(seed);
  std::vector<int32_t> t(n);
  for (int32_t& id : t) id = static_cast<int32_t>(3 + rng.Next() % static_cast<uint64_t>(vocab - 3));
  return t;
}

}  // namespace flotilla::model::testing
