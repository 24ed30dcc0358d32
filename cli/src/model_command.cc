// `flotilla model ...`: model file tools and inference, thin over flotilla_model.
//   create    random seeded llama model (named config + overrides)
//   quantize  re-quantize with a recipe
//   info      metadata, tensors, config
//   generate  prompt → text with sampling, tokens/s
//   bench     llama-bench-style pp/tg throughput, peak RSS, decode weight GB/s
#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "command_registry.h"
#include "lora_options.h"
#include "flotilla/model/adapter_file.h"
#include "flotilla/model/cpu_features.h"
#include "flotilla/model/gguf.h"
#include "flotilla/model/inference.h"
#include "flotilla/model/llama_model.h"
#include "flotilla/model/model_bench.h"
#include "flotilla/model/model_config.h"
#include "flotilla/model/model_file.h"
#include "flotilla/model/sampler.h"
#include "flotilla/model/tensor_types.h"

namespace flotilla::cli {
namespace {

using namespace flotilla::model;

constexpr double kMiB = 1024.0 * 1024.0;

int Fail(const Status& s) {
  std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
  return 1;
}

// ---- create ---------------------------------------------------------------------------

struct CreateOptions {
  std::string config = "tiny";
  std::optional<int64_t> dim, layers, heads, kv_heads, ffn, vocab, ctx;
  std::optional<float> rope_theta;
  bool untied = false;
  uint64_t seed = 1;
  std::string out;
  std::string type = "f32";
  std::string name;
};

int RunCreate(const CreateOptions& o) {
  Result<ModelConfig> c = NamedConfig(o.config);
  if (!c.ok()) return Fail(c.status());
  ModelConfig config = *c;
  if (o.dim) config.dim = *o.dim;
  if (o.layers) config.n_layers = *o.layers;
  if (o.heads) config.n_heads = *o.heads;
  if (o.kv_heads) config.n_kv_heads = *o.kv_heads;
  if (o.ffn) config.ffn_dim = *o.ffn;
  if (o.vocab) config.vocab_size = *o.vocab;
  if (o.ctx) config.context_length = *o.ctx;
  if (o.rope_theta) config.rope_theta = *o.rope_theta;
  config.tied_output = !o.untied;
  Result<GgmlType> type = ParseTypeName(o.type);
  if (!type.ok()) return Fail(type.status());
  RandomModelOptions ro;
  ro.seed = o.seed;
  ro.weight_type = *type;
  ro.name = o.name.empty() ? "flotilla-random-" + o.config : o.name;
  if (Status s = WriteRandomModel(config, ro, o.out); !s.ok()) return Fail(s);
  std::printf("wrote %s: %s config, %.2f M parameters, %s weights, seed %llu, %.2f MiB\n", o.out.c_str(),
              o.config.c_str(), static_cast<double>(config.ParameterCount()) / 1e6, std::string(TypeName(*type)).c_str(),
              static_cast<unsigned long long>(o.seed),
              static_cast<double>(std::filesystem::file_size(o.out)) / kMiB);
  return 0;
}

// ---- quantize -------------------------------------------------------------------------

int RunQuantize(const std::string& in, const std::string& out, const std::string& recipe_name) {
  Result<QuantRecipe> recipe = NamedRecipe(recipe_name);
  if (!recipe.ok()) return Fail(recipe.status());
  Result<std::unique_ptr<GgufFile>> f = GgufFile::Open(in);
  if (!f.ok()) return Fail(f.status());
  if (Status s = QuantizeModel(**f, *recipe, out); !s.ok()) return Fail(s);
  std::printf("wrote %s (%s): %.2f MiB -> %.2f MiB\n", out.c_str(), recipe->name.c_str(),
              static_cast<double>(std::filesystem::file_size(in)) / kMiB,
              static_cast<double>(std::filesystem::file_size(out)) / kMiB);
  return 0;
}

// ---- info -----------------------------------------------------------------------------

std::string ValueSummary(const GgufValue& v) {
  switch (v.type()) {
    case GgufType::kString: {
      std::string s(v.GetString().value());
      if (s.size() > 60) s = s.substr(0, 57) + "...";
      return "\"" + s + "\"";
    }
    case GgufType::kArray:
      return "array<" + std::string(GgufTypeName(v.array_type())) + ">[" + std::to_string(v.array_size()) + "]";
    case GgufType::kF32:
    case GgufType::kF64: return std::to_string(v.GetFloat().value());
    case GgufType::kBool: return v.GetBool().value() ? "true" : "false";
    default: {
      if (Result<int64_t> i = v.GetInt(); i.ok()) return std::to_string(*i);
      if (Result<uint64_t> u = v.GetUInt(); u.ok()) return std::to_string(*u);
      return "?";
    }
  }
}

int RunInfo(const std::string& path, bool show_tensors) {
  Result<std::unique_ptr<GgufFile>> f = GgufFile::Open(path);
  if (!f.ok()) return Fail(f.status());
  const GgufFile& file = **f;
  std::printf("file: %s\n  GGUF v%u, %.2f MiB, alignment %u, %zu metadata keys, %zu tensors\n", path.c_str(),
              file.version(), static_cast<double>(file.file_size()) / kMiB, file.alignment(), file.metadata().size(),
              file.tensors().size());
  std::printf("metadata:\n");
  for (const auto& [key, value] : file.metadata()) {
    std::printf("  %-42s %-7s %s\n", key.c_str(), std::string(GgufTypeName(value.type())).c_str(),
                ValueSummary(value).c_str());
  }
  std::map<std::string, std::pair<int, uint64_t>> by_type;
  for (const GgufTensor& t : file.tensors()) {
    auto& e = by_type[std::string(TypeName(t.type))];
    ++e.first;
    e.second += t.n_bytes;
  }
  std::printf("tensors by type:\n");
  for (const auto& [type, e] : by_type) {
    std::printf("  %-6s %4d tensors %10.2f MiB\n", type.c_str(), e.first, static_cast<double>(e.second) / kMiB);
  }
  if (show_tensors) {
    std::printf("tensors:\n");
    for (const GgufTensor& t : file.tensors()) {
      std::string shape;
      for (int64_t d : t.shape()) shape += (shape.empty() ? "" : " x ") + std::to_string(d);
      std::printf("  %-28s %-5s [%s] %zu bytes\n", t.name.c_str(), std::string(TypeName(t.type)).c_str(),
                  shape.c_str(), t.n_bytes);
    }
  }
  Result<std::unique_ptr<LlamaModel>> m = LlamaModel::FromGguf(std::move(*f));
  if (!m.ok()) {
    std::printf("llama model: not loadable: %s\n", m.status().ToString().c_str());
    return 1;
  }
  const ModelConfig& c = (*m)->config();
  std::printf(
      "llama model: %s, dim %lld, %lld layers, %lld heads / %lld kv heads (head_dim %lld), ffn %lld, vocab %lld, "
      "ctx %lld, rope theta %g, rms eps %g, %s output\n",
      (*m)->TypeLabel().c_str(), static_cast<long long>(c.dim), static_cast<long long>(c.n_layers),
      static_cast<long long>(c.n_heads), static_cast<long long>(c.n_kv_heads), static_cast<long long>(c.head_dim()),
      static_cast<long long>(c.ffn_dim), static_cast<long long>(c.vocab_size),
      static_cast<long long>(c.context_length), static_cast<double>(c.rope_theta), static_cast<double>(c.rms_eps),
      c.tied_output ? "tied" : "untied");
  std::printf("  %.2f M parameters, tensors %.2f MiB, %.2f MiB read per decoded token\n",
              static_cast<double>((*m)->ParameterCount()) / 1e6, static_cast<double>((*m)->TensorBytes()) / kMiB,
              static_cast<double>((*m)->DecodeWeightBytes()) / kMiB);
  return 0;
}

// ---- shared inference options ------------------------------------------------------------

struct RunOptions {
  int threads = 0;
  std::string cpu_path;  // "" = best
};

Status ApplyCpuPath(const std::string& name, std::optional<CpuPath>* out) {
  if (name.empty()) return Status::Ok();
  FLT_ASSIGN_OR_RETURN(CpuPath p, ParseCpuPath(name));
  if (!IsCpuPathSupported(p)) {
    return FailedPreconditionError("CPU path '" + name + "' is not supported here");
  }
  *out = p;
  return Status::Ok();
}

// ---- generate -------------------------------------------------------------------------

struct GenOptions {
  std::string model;
  std::string prompt;
  int64_t n = 64;
  int64_t ctx = 0;
  float temp = 0.8f;
  int32_t top_k = 40;
  float top_p = 0.95f;
  float repeat_penalty = 1.0f;
  int32_t repeat_last_n = 64;
  std::optional<uint64_t> seed;
  bool no_bos = false;
  bool ignore_eos = false;
  std::vector<std::string> loras;  // --lora FILE[:scale]
  RunOptions run;
};

int RunGenerate(const GenOptions& o) {
  Result<std::unique_ptr<LlamaModel>> m = LlamaModel::Open(o.model);
  if (!m.ok()) return Fail(m.status());
  const LlamaModel& model = **m;
  InferenceOptions io;
  io.n_threads = o.run.threads;
  io.n_ctx = o.ctx;
  if (Status s = ApplyCpuPath(o.run.cpu_path, &io.cpu_path); !s.ok()) return Fail(s);
  Result<std::unique_ptr<InferenceSession>> session = InferenceSession::Create(model, io);
  if (!session.ok()) return Fail(session.status());
  Result<std::unique_ptr<LoadedLoras>> loras = LoadLoras(model, o.model, o.loras);
  if (!loras.ok()) return Fail(loras.status());
  if (!(*loras)->applier.empty()) (*session)->set_adapter(&(*loras)->applier);
  SamplerParams sp;
  sp.temperature = o.temp;
  sp.top_k = o.top_k;
  sp.top_p = o.top_p;
  sp.repeat_penalty = o.repeat_penalty;
  sp.repeat_last_n = o.repeat_last_n;
  sp.seed = o.seed;
  Result<std::unique_ptr<Sampler>> sampler = Sampler::Create(sp, model.config().vocab_size);
  if (!sampler.ok()) return Fail(sampler.status());

  const std::vector<int32_t> prompt = model.tokenizer().Encode(o.prompt, !o.no_bos);
  if (prompt.empty()) return Fail(InvalidArgumentError("the prompt encodes to no tokens (use text or drop --no-bos)"));
  GenerateOptions go;
  go.max_tokens = o.n;
  go.stop_at_eos = !o.ignore_eos;
  std::fwrite(o.prompt.data(), 1, o.prompt.size(), stdout);
  Result<GenerateResult> r = Generate(**session, **sampler, prompt, go, [](int32_t, std::string_view piece) {
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
    return true;
  });
  std::printf("\n");
  if (!r.ok()) return Fail(r.status());
  const double gen_tps = r->decode_seconds > 0 ? static_cast<double>(r->tokens.size()) / r->decode_seconds : 0;
  const double pp_tps = r->prefill_seconds > 0 ? static_cast<double>(r->prompt_tokens) / r->prefill_seconds : 0;
  std::fprintf(stderr,
               "prompt: %lld tokens, %.1f tokens/s | generated: %zu tokens, %.1f tokens/s | stop: %s | seed %llu, "
               "%d threads, cpu path %s\n",
               static_cast<long long>(r->prompt_tokens), pp_tps, r->tokens.size(), gen_tps,
               std::string(ToString(r->stop_reason)).c_str(), static_cast<unsigned long long>((*sampler)->seed()),
               (*session)->n_threads(), std::string(ToString((*session)->cpu_path())).c_str());
  return 0;
}

// ---- bench ----------------------------------------------------------------------------

struct BenchCliOptions {
  std::string model;
  int64_t n_prompt = 128;
  int64_t n_gen = 64;
  int reps = 5;
  std::vector<int> threads;
  std::vector<std::string> cpu_paths;
  std::string lora;          // adapter measured next to the plain base
  float lora_scale = 1.0f;
};

int RunBenchCommand(const BenchCliOptions& o) {
  const uint64_t rss_before = CurrentRssBytes();
  Result<std::unique_ptr<LlamaModel>> m = LlamaModel::Open(o.model);
  if (!m.ok()) return Fail(m.status());
  const LlamaModel& model = **m;
  std::vector<CpuPath> paths;
  for (const std::string& name : o.cpu_paths) {
    std::optional<CpuPath> p;
    if (Status s = ApplyCpuPath(name, &p); !s.ok()) return Fail(s);
    paths.push_back(*p);
  }
  if (paths.empty()) paths.push_back(ActiveCpuPath());
  std::vector<int> threads = o.threads;
  if (threads.empty()) threads.push_back(ThreadPool::DefaultThreadCount());
  std::string base_sha256;
  if (!o.lora.empty()) {
    Result<std::string> h = ModelFileSha256(o.model);  // an adapter for another base is refused
    if (!h.ok()) return Fail(h.status());
    base_sha256 = std::move(*h);
  }

  std::string label = std::string(model.name());
  if (label.empty()) label = "llama";
  label += " " + model.TypeLabel();
  double best_tg = 0;
  bool header_done = false;
  for (CpuPath p : paths) {
    for (int t : threads) {
      BenchOptions bo;
      bo.n_prompt = o.n_prompt;
      bo.n_gen = o.n_gen;
      bo.repetitions = o.reps;
      bo.n_threads = t;
      bo.cpu_path = p;
      Result<std::vector<BenchResult>> results = RunBench(model, bo);
      if (!results.ok()) return Fail(results.status());
      if (!o.lora.empty()) {
        // The same tests with the adapter applied, printed under the plain ones.
        bo.adapter_path = o.lora;
        bo.adapter_scale = o.lora_scale;
        bo.base_sha256 = base_sha256;
        Result<std::vector<BenchResult>> with = RunBench(model, bo);
        if (!with.ok()) return Fail(with.status().WithContext("adapter " + o.lora));
        results->insert(results->end(), with->begin(), with->end());
      }
      if (!header_done) {
        std::printf("| %-28s | %10s | %8s | %-16s | %7s | %11s | %20s |\n", "model", "size", "params", "backend",
                    "threads", "test", "t/s");
        std::printf("| %s | %s | %s | %s | %s | %s | %s |\n", std::string(28, '-').c_str(),
                    std::string(10, '-').c_str(), std::string(8, '-').c_str(), std::string(16, '-').c_str(),
                    std::string(7, '-').c_str(), std::string(11, '-').c_str(), std::string(20, '-').c_str());
        header_done = true;
      }
      for (const BenchResult& r : *results) {
        const std::string backend = "CPU (" + std::string(ToString(r.cpu_path)) + ")";
        const std::string test = r.test + (r.with_adapter ? "+lora" : "");
        char tps[64];
        std::snprintf(tps, sizeof tps, "%.2f ± %.2f", r.median, r.stddev);
        std::printf("| %-28s | %6.2f MiB | %6.2f M | %-16s | %7d | %11s | %20s |\n", label.c_str(),
                    static_cast<double>(model.TensorBytes()) / kMiB, static_cast<double>(model.ParameterCount()) / 1e6,
                    backend.c_str(), r.n_threads, test.c_str(), tps);
        if (r.test.rfind("tg", 0) == 0 && !r.with_adapter) best_tg = std::max(best_tg, r.median);
      }
      if (!o.lora.empty()) {
        // Adapter cost per test: the relative slowdown of the medians.
        for (const BenchResult& plain : *results) {
          if (plain.with_adapter) continue;
          for (const BenchResult& lora : *results) {
            if (lora.with_adapter && lora.test == plain.test && plain.median > 0) {
              std::printf("  %s: adapter (scale %g) costs %+.1f%% t/s\n", plain.test.c_str(),
                          static_cast<double>(o.lora_scale), 100.0 * (lora.median / plain.median - 1.0));
            }
          }
        }
      }
      std::fflush(stdout);
    }
  }
  const uint64_t file_bytes = model.file().file_size();
  const uint64_t kv_bytes = 2 * static_cast<uint64_t>(model.config().n_layers * (o.n_prompt + o.n_gen) *
                                                      model.config().kv_dim()) *
                            sizeof(float);
  std::printf("\ncpu path: %s (best available: %s; force one with --cpu-path)\n",
              std::string(ToString(paths.back())).c_str(), std::string(ToString(BestCpuPath())).c_str());
  std::printf("peak RSS: %.1f MiB (model file %.1f MiB mapped, KV cache %.1f MiB, model-owned copies %.1f MiB, "
              "process before loading %.1f MiB)\n",
              static_cast<double>(PeakRssBytes()) / kMiB, static_cast<double>(file_bytes) / kMiB,
              static_cast<double>(kv_bytes) / kMiB, static_cast<double>(model.OwnedBytes()) / kMiB,
              static_cast<double>(rss_before) / kMiB);
  if (best_tg > 0) {
    const double bytes = static_cast<double>(model.DecodeWeightBytes());
    std::printf("decode: %.2f MiB of weights per token x %.1f t/s = %.2f GB/s effective weight bandwidth\n",
                bytes / kMiB, best_tg, bytes * best_tg / 1e9);
  }
  return 0;
}

void AddRunOptions(CLI::App* cmd, RunOptions* r) {
  cmd->add_option("-t,--threads", r->threads, "Threads (0 = all cores)")->capture_default_str();
  cmd->add_option("--cpu-path", r->cpu_path, "Force a kernel path: scalar|avx2|avx512vnni|neon|neon-dotprod");
}

CommandRegistration model_registration("model", [](CLI::App& root) {
  CLI::App* model = root.add_subcommand("model", "LLM model files and on-device inference (GGUF, llama)");
  model->require_subcommand(1);

  auto co = std::make_shared<CreateOptions>();
  CLI::App* create = model->add_subcommand("create", "Write a llama model with random, seeded weights (test data)");
  create->add_option("--config", co->config, "Named config: tiny|train|15m|110m")->capture_default_str();
  create->add_option("--dim", co->dim, "Override: embedding size");
  create->add_option("--layers", co->layers, "Override: number of layers");
  create->add_option("--heads", co->heads, "Override: attention heads");
  create->add_option("--kv-heads", co->kv_heads, "Override: KV heads (divides heads)");
  create->add_option("--ffn", co->ffn, "Override: feed-forward size");
  create->add_option("--vocab", co->vocab, "Override: vocabulary size (259 = byte vocabulary)");
  create->add_option("--ctx", co->ctx, "Override: context length");
  create->add_option("--rope-theta", co->rope_theta, "Override: RoPE base");
  create->add_flag("--untied", co->untied, "Write a separate output.weight");
  create->add_option("--seed", co->seed, "Weight seed")->capture_default_str();
  create->add_option("--type", co->type, "Matrix type: f32|f16|bf16|q8_0|q4_0")->capture_default_str();
  create->add_option("--name", co->name, "general.name");
  create->add_option("--out", co->out, "Output .gguf file")->required();
  create->callback([co] { ExitCode() = RunCreate(*co); });

  auto qo = std::make_shared<std::array<std::string, 3>>();
  (*qo)[2] = "q8_0";
  CLI::App* quantize = model->add_subcommand("quantize", "Re-quantize a model with a recipe");
  quantize->add_option("in", (*qo)[0], "Input .gguf")->required();
  quantize->add_option("out", (*qo)[1], "Output .gguf")->required();
  quantize->add_option("--type", (*qo)[2], "Recipe: f32|f16|bf16|q8_0|q4_0|q4_0-mixed|q4_k-mixed")
      ->capture_default_str();
  quantize->callback([qo] { ExitCode() = RunQuantize((*qo)[0], (*qo)[1], (*qo)[2]); });

  auto io = std::make_shared<std::pair<std::string, bool>>();
  CLI::App* info = model->add_subcommand("info", "Show a model's metadata, tensors and config");
  info->add_option("file", io->first, "Model .gguf")->required();
  info->add_flag("--tensors", io->second, "List every tensor");
  info->callback([io] { ExitCode() = RunInfo(io->first, io->second); });

  auto go = std::make_shared<GenOptions>();
  CLI::App* gen = model->add_subcommand("generate", "Generate text from a prompt");
  gen->add_option("file", go->model, "Model .gguf")->required();
  gen->add_option("--prompt", go->prompt, "Prompt text")->required();
  gen->add_option("-n,--max-tokens", go->n, "Tokens to generate")->capture_default_str();
  gen->add_option("--ctx", go->ctx, "Context size (0 = the model's)")->capture_default_str();
  gen->add_option("--temp", go->temp, "Temperature (0 = greedy)")->capture_default_str();
  gen->add_option("--top-k", go->top_k, "Top-k (0 = off)")->capture_default_str();
  gen->add_option("--top-p", go->top_p, "Top-p (1 = off)")->capture_default_str();
  gen->add_option("--repeat-penalty", go->repeat_penalty, "Repetition penalty (1 = off)")->capture_default_str();
  gen->add_option("--repeat-last-n", go->repeat_last_n, "Window of the repetition penalty")->capture_default_str();
  gen->add_option("--seed", go->seed, "Sampling seed (default: random); not for security");
  gen->add_flag("--no-bos", go->no_bos, "Do not prepend BOS");
  gen->add_flag("--ignore-eos", go->ignore_eos, "Keep generating past EOS");
  gen->add_option("--lora", go->loras, "LoRA adapter FILE[:scale] (repeatable)");
  AddRunOptions(gen, &go->run);
  gen->callback([go] { ExitCode() = RunGenerate(*go); });

  auto bo = std::make_shared<BenchCliOptions>();
  CLI::App* bench = model->add_subcommand("bench", "Measure prompt (pp) and generation (tg) tokens/s like llama-bench");
  bench->add_option("file", bo->model, "Model .gguf")->required();
  bench->add_option("-p,--n-prompt", bo->n_prompt, "Prompt tokens (0 = skip)")->capture_default_str();
  bench->add_option("-n,--n-gen", bo->n_gen, "Generated tokens (0 = skip)")->capture_default_str();
  bench->add_option("-r,--repetitions", bo->reps, "Repetitions (median and stddev over them)")->capture_default_str();
  bench->add_option("-t,--threads", bo->threads, "Thread counts, comma-separated (default: all cores)")
      ->delimiter(',');
  bench->add_option("--cpu-path", bo->cpu_paths,
                    "Kernel paths, comma-separated: scalar|avx2|avx512vnni|neon|neon-dotprod (default: best)")
      ->delimiter(',');
  bench->add_option("--lora", bo->lora, "LoRA adapter .gguf: also measure with it applied (rows marked +lora)");
  bench->add_option("--lora-scale", bo->lora_scale, "Scale of the --lora adapter")->capture_default_str();
  bench->callback([bo] { ExitCode() = RunBenchCommand(*bo); });
});

}  // namespace
}  // namespace flotilla::cli
