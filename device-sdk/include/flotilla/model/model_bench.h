// llama-bench-style throughput measurement of a model: prompt processing (ppN: one
// batched Eval of N tokens on an empty cache) and text generation (tgN: N one-token
// Evals from an empty cache), repeated, reported as median ± sample stddev in tokens/s.
// `flotilla model bench` prints these; the library form lets tests and tools reuse it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "flotilla/core/status.h"
#include "flotilla/model/cpu_features.h"
#include "flotilla/model/llama_model.h"

namespace flotilla::model {

struct BenchOptions {
  int64_t n_prompt = 128;  // 0: skip the pp test
  int64_t n_gen = 64;      // 0: skip the tg test
  int repetitions = 5;
  int n_threads = 0;       // 0: ThreadPool::DefaultThreadCount()
  CpuPath cpu_path = CpuPath::kScalar;
  bool warmup = true;      // one untimed run of each test first
  uint64_t seed = 1;       // token ids (test data)
  // A LoRA adapter applied during both tests (empty: the base alone), at adapter_scale.
  // It is loaded with LoadAdapter against `model`; if the file records a base hash and
  // base_sha256 (hex of the model file) is given, they must match.
  std::filesystem::path adapter_path;
  float adapter_scale = 1.0f;
  std::string base_sha256;
};

struct BenchResult {
  std::string test;                    // "pp128", "tg64"
  bool with_adapter = false;           // measured with BenchOptions::adapter_path applied
  int n_threads = 0;
  CpuPath cpu_path = CpuPath::kScalar;
  int64_t n_tokens = 0;
  std::vector<double> tokens_per_second;  // one per repetition
  double median = 0;
  double stddev = 0;  // sample standard deviation (0 for one repetition)
};

// Runs the pp and tg tests for one (threads, cpu_path) setting. The session's context is
// n_prompt + n_gen (at most the model's). InvalidArgument for bad options or a context
// the model cannot hold; FailedPrecondition for an unavailable CPU path; LoadAdapter's
// errors for a bad adapter file.
Result<std::vector<BenchResult>> RunBench(const LlamaModel& model, const BenchOptions& options);

// Peak resident set size of this process in bytes (getrusage ru_maxrss); 0 if unknown.
uint64_t PeakRssBytes();
// Current resident set size in bytes (/proc/self/statm); 0 if unknown.
uint64_t CurrentRssBytes();

// "1.23 ± 0.04"-style helpers used by the CLI table.
double Median(std::vector<double> v);
double SampleStddev(const std::vector<double>& v);

}  // namespace flotilla::model
