// Training-engine benchmark (issue 4 performance goals):
//  1. LoRA rank 8 on q,k,v,o of the 15m and 110m configs in Q4_0 and Q8_0, sequence 128,
//     2 threads: training tokens/s (ForwardBackward) next to the engine's own prefill
//     tokens/s (InferenceSession, RunBench pp128), and their ratio (goal >= 1/3).
//  2. Peak RSS while training 110m Q4_0 at sequence 256 with a memory budget (goal <=
//     file size + 120 MB), measured in a child process so nothing else counts.
//
//   train_bench [--models=15m,110m] [--types=q4_0,q8_0] [--seq=128] [--threads=2]
//               [--reps=5] [--dir=DIR] [--no-rss] [--profile]
//   train_bench --rss-child FILE SEQ BUDGET   (internal: the RSS measurement)
//
// Models are random (the speed does not depend on the values), written once to --dir
// (default: a temporary directory). Every figure is the median of --reps timed runs after
// one warm-up run.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "flotilla/core/file.h"
#include "flotilla/model/inference.h"
#include "flotilla/model/lora.h"
#include "flotilla/model/model_bench.h"
#include "flotilla/model/model_file.h"
#include "flotilla/model/tensor_types.h"
#include "flotilla/model/train.h"

extern char** environ;

namespace flotilla::model {
namespace {

struct Options {
  std::vector<std::string> models = {"15m", "110m"};
  std::vector<std::string> types = {"q4_0", "q8_0"};
  int64_t seq = 128;
  int threads = 2;
  int reps = 5;
  std::string dir;
  bool rss = true;
};

std::vector<std::string> Split(std::string_view s) {
  std::vector<std::string> out;
  while (!s.empty()) {
    const size_t comma = s.find(',');
    out.emplace_back(s.substr(0, comma));
    if (comma == std::string_view::npos) break;
    s.remove_prefix(comma + 1);
  }
  return out;
}

[[noreturn]] void Die(const std::string& what, const Status& s) {
  std::fprintf(stderr, "train_bench: %s: %s\n", what.c_str(), s.ToString().c_str());
  std::exit(1);
}

std::filesystem::path ModelFile(const std::filesystem::path& dir, const std::string& config, const std::string& type) {
  const std::filesystem::path path = dir / ("bench-" + config + "-" + type + ".gguf");
  if (std::filesystem::exists(path)) return path;
  Result<ModelConfig> c = NamedConfig(config);
  if (!c.ok()) Die(config, c.status());
  Result<GgmlType> t = ParseTypeName(type);
  if (!t.ok()) Die(type, t.status());
  RandomModelOptions o;
  o.seed = 1;
  o.weight_type = *t;
  if (Status s = WriteRandomModel(*c, o, path); !s.ok()) Die("writing " + path.string(), s);
  return path;
}

std::vector<int32_t> Tokens(int64_t vocab, int64_t n, uint64_t seed) {
  SplitMix64 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int32_t& id : t) id = static_cast<int32_t>(3 + rng.Next() % static_cast<uint64_t>(vocab - 3));
  return t;
}

LoraAdapter BenchAdapter(const ModelConfig& c) {
  LoraConfig lc;
  lc.rank = 8;
  lc.alpha = 16.0f;
  lc.targets = {Projection::kQ, Projection::kK, Projection::kV, Projection::kO};
  lc.frozen_a = true;
  lc.a_seed = 42;
  Result<LoraAdapter> a = LoraAdapter::Create(c, lc);
  if (!a.ok()) Die("adapter", a.status());
  // Non-zero B, as after a few steps (B = 0 would not change the work done).
  SplitMix64 rng(7);
  for (LoraMatrix& m : a->matrices()) {
    for (float& v : m.b) v = 0.01f * rng.NextSymmetric();
  }
  return std::move(*a);
}

// Seconds of one ForwardBackward over `tokens` (next-token targets).
double TrainSeconds(TrainEngine& engine, const std::vector<int32_t>& tokens) {
  std::vector<int32_t> targets(tokens.begin() + 1, tokens.end());
  targets.push_back(tokens.front());
  const auto t0 = std::chrono::steady_clock::now();
  Result<LossSum> l = engine.ForwardBackward(tokens, targets);
  if (!l.ok()) Die("ForwardBackward", l.status());
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Seconds of one prefill (a batched Eval of `tokens` on an empty cache), as RunBench's pp.
double PrefillSeconds(InferenceSession& session, const std::vector<int32_t>& tokens) {
  session.Reset();
  const auto t0 = std::chrono::steady_clock::now();
  if (Status s = session.Eval(tokens); !s.ok()) Die("Eval", s);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Median training tokens/s of ForwardBackward over `reps` runs (after one warm-up).
double TrainTokensPerSecond(TrainEngine& engine, const std::vector<int32_t>& tokens, int reps) {
  std::vector<double> tps;
  for (int r = 0; r <= reps; ++r) {
    const double s = TrainSeconds(engine, tokens);
    if (r > 0) tps.push_back(static_cast<double>(tokens.size()) / s);
  }
  return Median(tps);
}

// Peak resident set of this process image (VmHWM). Not getrusage: its maxrss survives
// exec, so a child spawned from a big parent would report the parent's peak.
uint64_t PeakRssOfThisImage() {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return 0;
  char line[256];
  unsigned long long kb = 0;
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::sscanf(line, "VmHWM: %llu kB", &kb) == 1) break;
  }
  std::fclose(f);
  return kb * 1024;
}

int RssChild(const std::string& file, int64_t seq, uint64_t budget) {
  Result<std::unique_ptr<LlamaModel>> model = LlamaModel::Open(file);
  if (!model.ok()) Die(file, model.status());
  LoraAdapter adapter = BenchAdapter((*model)->config());
  TrainEngineOptions o;
  o.n_threads = 2;
  o.max_seq_len = seq;
  o.memory_budget_bytes = budget;
  Result<std::unique_ptr<TrainEngine>> engine = TrainEngine::CreateLora(**model, adapter, o);
  if (!engine.ok()) Die("engine", engine.status());
  const std::vector<int32_t> tokens = Tokens((*model)->config().vocab_size, seq, 3);
  const double tps = TrainTokensPerSecond(**engine, tokens, 2);
  std::printf("%llu %llu %d %.1f\n", static_cast<unsigned long long>(PeakRssOfThisImage()),
              static_cast<unsigned long long>((*engine)->buffer_bytes()), (*engine)->recomputes() ? 1 : 0, tps);
  return 0;
}

// Runs this executable with --rss-child and returns its single output line.
std::string RunChild(const std::vector<std::string>& args) {
  int fds[2];
  if (pipe(fds) != 0) return "";
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  posix_spawn_file_actions_addclose(&fa, fds[0]);
  std::vector<char*> argv;
  std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  argv.push_back(self.data());
  std::vector<std::string> copy = args;
  for (std::string& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, self.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  close(fds[1]);
  std::string out;
  char buf[256];
  ssize_t got = 0;
  while (rc == 0 && (got = read(fds[0], buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(got));
  close(fds[0]);
  int status = 0;
  if (rc == 0) waitpid(pid, &status, 0);
  return out;
}

int Main(int argc, char** argv) {
  if (argc == 5 && std::string_view(argv[1]) == "--rss-child") {
    return RssChild(argv[2], std::atoll(argv[3]), std::strtoull(argv[4], nullptr, 10));
  }
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto value = [&](std::string_view key) { return a.substr(key.size()); };
    if (a.starts_with("--models=")) {
      o.models = Split(value("--models="));
    } else if (a.starts_with("--types=")) {
      o.types = Split(value("--types="));
    } else if (a.starts_with("--seq=")) {
      o.seq = std::atoll(std::string(value("--seq=")).c_str());
    } else if (a.starts_with("--threads=")) {
      o.threads = std::atoi(std::string(value("--threads=")).c_str());
    } else if (a.starts_with("--reps=")) {
      o.reps = std::atoi(std::string(value("--reps=")).c_str());
    } else if (a.starts_with("--dir=")) {
      o.dir = std::string(value("--dir="));
    } else if (a == "--no-rss") {
      o.rss = false;
    } else {
      std::fprintf(stderr, "usage: train_bench [--models=15m,110m] [--types=q4_0,q8_0] [--seq=128] [--threads=2] "
                           "[--reps=5] [--dir=DIR] [--no-rss]\n");
      return 2;
    }
  }
  std::optional<TempDir> tmp;
  std::filesystem::path dir = o.dir;
  if (dir.empty()) {
    Result<TempDir> t = TempDir::Create("flotilla-train-bench");
    if (!t.ok()) Die("temp dir", t.status());
    tmp.emplace(std::move(*t));
    dir = tmp->path();
  }
  std::printf("cpu path: %s, %d threads, LoRA rank 8 on q,k,v,o, frozen A, sequence %lld, median of %d\n\n",
              std::string(ToString(ActiveCpuPath())).c_str(), o.threads, static_cast<long long>(o.seq), o.reps);
  std::printf(
      "| model | type | prefill pp%lld t/s | prefill, all logits t/s | train t/s | ratio | goal >= 0.333 | ratio to "
      "all-logits prefill | engine buffers |\n",
      static_cast<long long>(o.seq));
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  for (const std::string& config : o.models) {
    for (const std::string& type : o.types) {
      const std::filesystem::path file = ModelFile(dir, config, type);
      Result<std::unique_ptr<LlamaModel>> model = LlamaModel::Open(file);
      if (!model.ok()) Die(file.string(), model.status());
      LoraAdapter adapter = BenchAdapter((*model)->config());
      TrainEngineOptions to;
      to.n_threads = o.threads;
      to.max_seq_len = o.seq;
      Result<std::unique_ptr<TrainEngine>> engine = TrainEngine::CreateLora(**model, adapter, to);
      if (!engine.ok()) Die("engine", engine.status());
      InferenceOptions io;
      io.n_threads = o.threads;
      io.n_ctx = o.seq;
      Result<std::unique_ptr<InferenceSession>> session = InferenceSession::Create(**model, io);
      if (!session.ok()) Die("session", session.status());
      // Training needs the logits of every position; prefill keeps only the last row. The
      // all-logits prefill is the forward work a training step cannot skip (for 15m the
      // 32000 x 288 output matrix is 60% of the forward), so it is reported alongside.
      io.all_logits = true;
      Result<std::unique_ptr<InferenceSession>> session_all = InferenceSession::Create(**model, io);
      if (!session_all.ok()) Die("session", session_all.status());
      const std::vector<int32_t> tokens = Tokens((*model)->config().vocab_size, o.seq, 11);
      // Prefill and training runs alternate, so load from other processes on a shared
      // machine hits both alike; the ratio is the median of the per-pair ratios.
      std::vector<double> pp, pa, tr, ratio, ratio_all;
      for (int r = 0; r <= o.reps; ++r) {
        const double p_s = PrefillSeconds(**session, tokens);
        const double a_s = PrefillSeconds(**session_all, tokens);
        const double t_s = TrainSeconds(**engine, tokens);
        if (r == 0) continue;  // warm-up
        pp.push_back(static_cast<double>(o.seq) / p_s);
        pa.push_back(static_cast<double>(o.seq) / a_s);
        tr.push_back(static_cast<double>(o.seq) / t_s);
        ratio.push_back(p_s / t_s);
        ratio_all.push_back(a_s / t_s);
      }
      const double prefill = Median(pp);
      const double train = Median(tr);
      const double r = Median(ratio);
      std::printf("| %s | %s | %.0f | %.0f | %.0f | %.3f | %s | %.3f | %.1f MiB |\n", config.c_str(), type.c_str(), prefill,
                  Median(pa), train, r, r >= 1.0 / 3.0 ? "met" : "missed", Median(ratio_all),
                  static_cast<double>((*engine)->buffer_bytes()) / 1048576.0);
      std::fflush(stdout);
    }
  }
  if (o.rss) {
    // Training 110m Q4_0 at sequence 256, batch 1, with a budget that forces per-layer
    // recomputation (the engine reports what it holds).
    const std::filesystem::path file = ModelFile(dir, "110m", "q4_0");
    const uint64_t budget = 96ull << 20;
    const std::string line = RunChild({"--rss-child", file.string(), "256", std::to_string(budget)});
    unsigned long long rss = 0, bytes = 0;
    int recompute = 0;
    double tps = 0;
    if (std::sscanf(line.c_str(), "%llu %llu %d %lf", &rss, &bytes, &recompute, &tps) != 4) {
      std::fprintf(stderr, "train_bench: the RSS child failed: '%s'\n", line.c_str());
      return 1;
    }
    const double file_mb = static_cast<double>(std::filesystem::file_size(file)) / 1e6;
    std::printf("\npeak RSS, 110m Q4_0 LoRA training at sequence 256 (budget %llu MiB, %s): %.1f MB = file %.1f MB + "
                "%.1f MB (goal <= +120 MB: %s); engine buffers %.1f MB; %.0f train t/s\n",
                static_cast<unsigned long long>(budget >> 20), recompute ? "recomputing layers" : "storing all",
                static_cast<double>(rss) / 1e6, file_mb, static_cast<double>(rss) / 1e6 - file_mb,
                static_cast<double>(rss) / 1e6 - file_mb <= 120.0 ? "met" : "missed", static_cast<double>(bytes) / 1e6,
                tps);
  }
  return 0;
}

}  // namespace
}  // namespace flotilla::model

int main(int argc, char** argv) { return flotilla::model::Main(argc, argv); }
