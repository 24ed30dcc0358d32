#include "flotilla/model/model_bench.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <optional>

#include "flotilla/model/adapter_file.h"
#include "flotilla/model/inference.h"
#include "flotilla/model/lora.h"
#include "flotilla/model/model_file.h"

namespace flotilla::model {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

}  // namespace

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 == 1 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

double SampleStddev(const std::vector<double>& v) {
  if (v.size() < 2) return 0;
  double mean = 0;
  for (double x : v) mean += x;
  mean /= static_cast<double>(v.size());
  double ss = 0;
  for (double x : v) ss += (x - mean) * (x - mean);
  return std::sqrt(ss / static_cast<double>(v.size() - 1));
}

uint64_t PeakRssBytes() {
  rusage ru{};
  if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
  return static_cast<uint64_t>(ru.ru_maxrss) * 1024;  // Linux reports KiB
}

uint64_t CurrentRssBytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  unsigned long size = 0, resident = 0;
  const int got = std::fscanf(f, "%lu %lu", &size, &resident);
  std::fclose(f);
  if (got != 2) return 0;
  return static_cast<uint64_t>(resident) * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

Result<std::vector<BenchResult>> RunBench(const LlamaModel& model, const BenchOptions& o) {
  if (o.n_prompt < 0 || o.n_gen < 0 || o.n_prompt + o.n_gen == 0) {
    return InvalidArgumentError("bench needs n_prompt >= 0, n_gen >= 0 and at least one of them > 0");
  }
  if (o.repetitions < 1) return InvalidArgumentError("repetitions must be >= 1");
  const int64_t n_ctx = o.n_prompt + o.n_gen;
  if (n_ctx > model.config().context_length) {
    return InvalidArgumentError("pp" + std::to_string(o.n_prompt) + " + tg" + std::to_string(o.n_gen) +
                                " needs a context of " + std::to_string(n_ctx) + " but the model's is " +
                                std::to_string(model.config().context_length));
  }
  InferenceOptions io;
  io.n_threads = o.n_threads;
  io.n_ctx = n_ctx;
  io.n_batch = std::max<int64_t>(o.n_prompt, 1);
  io.cpu_path = o.cpu_path;
  FLT_ASSIGN_OR_RETURN(auto session, InferenceSession::Create(model, io));
  std::optional<LoraAdapter> adapter;
  LoraApplier applier;
  if (!o.adapter_path.empty()) {
    if (!std::isfinite(o.adapter_scale)) return InvalidArgumentError("adapter scale must be finite");
    FLT_ASSIGN_OR_RETURN(LoraAdapter a, LoadAdapter(o.adapter_path, model, o.base_sha256));
    adapter.emplace(std::move(a));
    applier.Add(&*adapter, o.adapter_scale);
    session->set_adapter(&applier);
  }

  SplitMix64 rng(o.seed);
  std::vector<int32_t> tokens(static_cast<size_t>(std::max(o.n_prompt, o.n_gen)));
  const auto vocab = static_cast<uint64_t>(model.config().vocab_size);
  for (int32_t& t : tokens) t = static_cast<int32_t>(rng.Next() % vocab);

  std::vector<BenchResult> results;
  auto make = [&](const char* prefix, int64_t n) {
    BenchResult r;
    r.test = prefix + std::to_string(n);
    r.n_threads = session->n_threads();
    r.cpu_path = session->cpu_path();
    r.n_tokens = n;
    r.with_adapter = adapter.has_value();
    return r;
  };
  if (o.n_prompt > 0) {
    BenchResult r = make("pp", o.n_prompt);
    const std::span<const int32_t> prompt(tokens.data(), static_cast<size_t>(o.n_prompt));
    for (int rep = o.warmup ? -1 : 0; rep < o.repetitions; ++rep) {
      session->Reset();
      const auto t0 = Clock::now();
      FLT_RETURN_IF_ERROR(session->Eval(prompt));
      const double s = Seconds(t0, Clock::now());
      if (rep >= 0) r.tokens_per_second.push_back(static_cast<double>(o.n_prompt) / s);
    }
    results.push_back(std::move(r));
  }
  if (o.n_gen > 0) {
    BenchResult r = make("tg", o.n_gen);
    for (int rep = o.warmup ? -1 : 0; rep < o.repetitions; ++rep) {
      session->Reset();
      const auto t0 = Clock::now();
      for (int64_t i = 0; i < o.n_gen; ++i) {
        FLT_RETURN_IF_ERROR(session->Eval(std::span<const int32_t>(&tokens[static_cast<size_t>(i)], 1)));
      }
      const double s = Seconds(t0, Clock::now());
      if (rep >= 0) r.tokens_per_second.push_back(static_cast<double>(o.n_gen) / s);
    }
    results.push_back(std::move(r));
  }
  for (BenchResult& r : results) {
    r.median = Median(r.tokens_per_second);
    r.stddev = SampleStddev(r.tokens_per_second);
  }
  return results;
}

}  // namespace flotilla::model
