// Kernel benchmark: matvec (decode) weight bandwidth and batched matmul (prefill)
// throughput per weight type, CPU path and thread count, at the shapes of the 15m and
// 110m llama configs, plus the per-token matmul cost of those models.
//
//   kernels_bench [--paths=avx2,avx512vnni] [--types=q8_0,q4_0] [--threads=1,2]
//                 [--tokens=128] [--reps=5] [--min-ms=40] [--models-only]
//
// Every figure is the median of --reps samples; a sample repeats the call for at least
// --min-ms. Weights are random (content does not change the speed of these kernels).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "flotilla/model/cpu_features.h"
#include "flotilla/model/kernels.h"
#include "flotilla/model/thread_pool.h"

namespace flotilla::model {
namespace {

struct Options {
  std::vector<CpuPath> paths;
  std::vector<GgmlType> types = {GgmlType::kF32, GgmlType::kF16, GgmlType::kQ8_0,
                                 GgmlType::kQ4_0, GgmlType::kQ4_K, GgmlType::kQ6_K};
  std::vector<int> threads = {1, 2};
  int64_t tokens = 128;
  int reps = 5;
  double min_ms = 40;
  bool models_only = false;
};

struct Shape {
  const char* name;
  int64_t rows;
  int64_t cols;
};

// rows x cols of W (y = W x): the matrices of one layer of each config, and the output.
constexpr Shape k15m[] = {{"15m attn 288x288", 288, 288},
                          {"15m ffn-up 768x288", 768, 288},
                          {"15m ffn-down 288x768", 288, 768},
                          {"15m output 32000x288", 32000, 288}};
constexpr Shape k110m[] = {{"110m attn 768x768", 768, 768},
                           {"110m ffn-up 2048x768", 2048, 768},
                           {"110m ffn-down 768x2048", 768, 2048},
                           {"110m output 32000x768", 32000, 768}};

const char* TypeName(GgmlType t) {
  switch (t) {
    case GgmlType::kF32: return "f32";
    case GgmlType::kF16: return "f16";
    case GgmlType::kQ8_0: return "q8_0";
    case GgmlType::kQ4_0: return "q4_0";
    case GgmlType::kQ4_K: return "q4_k";
    case GgmlType::kQ6_K: return "q6_k";
    default: return "?";
  }
}

bool ParseType(std::string_view s, GgmlType* t) {
  for (GgmlType c : {GgmlType::kF32, GgmlType::kF16, GgmlType::kQ8_0, GgmlType::kQ4_0, GgmlType::kQ4_K,
                     GgmlType::kQ6_K}) {
    if (s == TypeName(c)) {
      *t = c;
      return true;
    }
  }
  return false;
}

std::vector<std::string> Split(std::string_view s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t comma = s.find(',', start);
    const size_t end = comma == std::string_view::npos ? s.size() : comma;
    if (end > start) out.emplace_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

// Random bytes are valid blocks except for the fp16 scales, which must not be NaN/inf
// (that would only slow nothing, but keeps outputs finite).
std::vector<unsigned char> RandomWeights(GgmlType t, int64_t rows, int64_t cols, std::mt19937& rng) {
  const size_t rb = RowBytes(t, cols);
  std::vector<unsigned char> w(rb * static_cast<size_t>(rows));
  for (unsigned char& b : w) b = static_cast<unsigned char>(rng() & 0x3f);  // small codes/scales
  return w;
}

double MedianSeconds(const Options& o, const auto& fn) {
  fn();  // warm up (pages, caches, thread wake-up)
  std::vector<double> samples;
  for (int r = 0; r < o.reps; ++r) {
    int iters = 0;
    const auto start = std::chrono::steady_clock::now();
    double elapsed = 0;
    do {
      fn();
      ++iters;
      elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    } while (elapsed * 1e3 < o.min_ms);
    samples.push_back(elapsed / iters);
  }
  std::sort(samples.begin(), samples.end());
  return samples[samples.size() / 2];
}

struct Timing {
  double matvec_s;
  double matmul_s;  // for o.tokens tokens
};

Timing TimeShape(const Options& o, const KernelTable& k, ThreadPool* pool, GgmlType t, const Shape& s,
                 std::mt19937& rng) {
  const std::vector<unsigned char> wbytes = RandomWeights(t, s.rows, s.cols, rng);
  const WeightMatrix w{t, wbytes.data(), s.rows, s.cols};
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(o.tokens * s.cols));
  for (float& v : x) v = dist(rng);
  std::vector<float> y(static_cast<size_t>(o.tokens * s.rows));
  const ComputeContext ctx{&k, pool};
  Timing tm{};
  tm.matvec_s = MedianSeconds(o, [&] { MatVec(w, x.data(), y.data(), ctx); });
  tm.matmul_s = MedianSeconds(o, [&] { MatMul(w, x.data(), o.tokens, y.data(), ctx); });
  return tm;
}

void Run(const Options& o) {
  std::printf("kernels_bench: best path %s, prefill batch %lld tokens, median of %d\n",
              std::string(ToString(BestCpuPath())).c_str(), static_cast<long long>(o.tokens), o.reps);
  std::printf("%-12s %-5s %-3s %-24s %12s %12s %14s\n", "path", "type", "thr", "shape", "matvec GB/s",
              "matvec us", "matmul GOP/s");
  std::mt19937 rng(42);
  for (CpuPath p : o.paths) {
    const KernelTable* k = GetKernelTable(p);
    if (k == nullptr) continue;
    for (int threads : o.threads) {
      auto pool = ThreadPool::Create(threads);
      if (!pool.ok()) continue;
      for (GgmlType t : o.types) {
        for (const auto* model : {&k15m, &k110m}) {
          // Per-token cost of the model's matmuls: 4 attn + 2 up + 1 down per layer.
          const int layers = model == &k15m ? 6 : 12;
          double decode_s = 0, prefill_s = 0, weight_bytes = 0;
          bool whole_model = true;
          for (const Shape& s : *model) {
            if (s.cols % BlockSize(t) != 0) {  // e.g. K-quants need cols % 256 == 0
              whole_model = false;
              continue;
            }
            const Timing tm = TimeShape(o, *k, pool->get(), t, s, rng);
            const double bytes = static_cast<double>(RowBytes(t, s.cols)) * static_cast<double>(s.rows);
            const double ops = 2.0 * static_cast<double>(s.rows) * static_cast<double>(s.cols) * static_cast<double>(o.tokens);
            if (!o.models_only) {
              std::printf("%-12s %-5s %-3d %-24s %12.2f %12.1f %14.1f\n", std::string(ToString(p)).c_str(),
                          TypeName(t), threads, s.name, bytes / tm.matvec_s * 1e-9, tm.matvec_s * 1e6,
                          ops / tm.matmul_s * 1e-9);
            }
            const bool output = s.rows == 32000;
            // Per layer: q, k, v, o (attn); gate, up (ffn-up); down.
            const int count = output ? 1 : (std::strstr(s.name, "attn") ? 4 : (std::strstr(s.name, "up") ? 2 : 1)) * layers;
            decode_s += count * tm.matvec_s;
            weight_bytes += count * bytes;
            // A prompt of o.tokens tokens needs the logits of its last token only (as
            // llama.cpp's pp benchmark): one output matvec per prompt.
            prefill_s += (output ? tm.matvec_s : count * tm.matmul_s) / static_cast<double>(o.tokens);
          }
          if (whole_model) {
            std::printf("%-12s %-5s %-3d %-24s matmuls only: decode %.0f t/s (%.1f GB/s), prefill %.0f t/s\n",
                        std::string(ToString(p)).c_str(), TypeName(t), threads, model == &k15m ? "== 15m model" : "== 110m model",
                        1.0 / decode_s, weight_bytes / decode_s * 1e-9, 1.0 / prefill_s);
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace flotilla::model

int main(int argc, char** argv) {
  using namespace flotilla::model;
  Options o;
  o.paths = SupportedCpuPaths();
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto value = [&](std::string_view key) -> std::string_view {
      return a.substr(0, key.size()) == key ? a.substr(key.size()) : std::string_view{};
    };
    if (auto v = value("--paths="); !v.empty()) {
      o.paths.clear();
      for (const std::string& s : Split(v)) {
        auto p = ParseCpuPath(s);
        if (!p.ok()) {
          std::fprintf(stderr, "%s\n", p.status().ToString().c_str());
          return 2;
        }
        if (!IsCpuPathSupported(*p)) {
          std::fprintf(stderr, "path %s not supported on this CPU\n", s.c_str());
          return 2;
        }
        o.paths.push_back(*p);
      }
    } else if (auto v2 = value("--types="); !v2.empty()) {
      o.types.clear();
      for (const std::string& s : Split(v2)) {
        GgmlType t;
        if (!ParseType(s, &t)) {
          std::fprintf(stderr, "unknown type %s\n", s.c_str());
          return 2;
        }
        o.types.push_back(t);
      }
    } else if (auto v3 = value("--threads="); !v3.empty()) {
      o.threads.clear();
      for (const std::string& s : Split(v3)) o.threads.push_back(std::atoi(s.c_str()));
    } else if (auto v4 = value("--tokens="); !v4.empty()) {
      o.tokens = std::atoll(std::string(v4).c_str());
    } else if (auto v5 = value("--reps="); !v5.empty()) {
      o.reps = std::max(1, std::atoi(std::string(v5).c_str()));
    } else if (auto v6 = value("--min-ms="); !v6.empty()) {
      o.min_ms = std::atof(std::string(v6).c_str());
    } else if (a == "--models-only") {
      o.models_only = true;
    } else {
      std::fprintf(stderr, "usage: %s [--paths=..] [--types=..] [--threads=..] [--tokens=N] [--reps=N] [--min-ms=X] [--models-only]\n", argv[0]);
      return 2;
    }
  }
  Run(o);
  return 0;
}
