// `flotilla model merge` and `flotilla model adapter {info,create}`: LoRA adapter files,
// thin over flotilla_model (adapter_file.h, lora.h). Also the `--lora FILE[:scale]`
// loading shared with `model generate` (lora_options.h).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "command_registry.h"
#include "flotilla/core/random.h"
#include "flotilla/model/adapter_file.h"
#include "flotilla/model/gguf.h"
#include "flotilla/model/llama_model.h"
#include "flotilla/model/lora.h"
#include "flotilla/model/model_config.h"
#include "flotilla/model/model_file.h"
#include "lora_options.h"

namespace flotilla::cli {

using namespace flotilla::model;

namespace {

constexpr double kMiB = 1024.0 * 1024.0;
constexpr std::string_view kBaseShaKey = "flotilla.adapter.base_sha256";

int Fail(const Status& s) {
  std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
  return 1;
}

double FileMiB(const std::filesystem::path& p) {
  std::error_code ec;
  const auto n = std::filesystem::file_size(p, ec);
  return ec ? 0.0 : static_cast<double>(n) / kMiB;
}

}  // namespace

Result<LoraSpec> ParseLoraSpec(std::string_view arg) {
  LoraSpec spec;
  spec.path = std::string(arg);
  if (const size_t colon = arg.rfind(':'); colon != std::string_view::npos && colon + 1 < arg.size()) {
    const std::string tail(arg.substr(colon + 1));
    char* end = nullptr;
    const float v = std::strtof(tail.c_str(), &end);
    if (end == tail.c_str() + tail.size() && std::isfinite(v)) {
      spec.path = std::string(arg.substr(0, colon));
      spec.scale = v;
    }
  }
  if (spec.path.empty()) return InvalidArgumentError("--lora '" + std::string(arg) + "' has no file name");
  return spec;
}

Result<std::unique_ptr<LoadedLoras>> LoadLoras(const LlamaModel& base, const std::filesystem::path& base_path,
                                               const std::vector<std::string>& specs) {
  auto out = std::make_unique<LoadedLoras>();
  std::optional<std::string> base_hash;  // computed on first need: it reads the whole file
  for (const std::string& arg : specs) {
    FLT_ASSIGN_OR_RETURN(LoraSpec spec, ParseLoraSpec(arg));
    Result<std::unique_ptr<GgufFile>> file = GgufFile::Open(spec.path);
    if (!file.ok()) return file.status().WithContext("loading adapter " + spec.path);
    std::string hash;
    if ((*file)->Find(kBaseShaKey) != nullptr) {
      if (!base_hash) {
        FLT_ASSIGN_OR_RETURN(std::string h, ModelFileSha256(base_path));
        base_hash = std::move(h);
      }
      hash = *base_hash;
    }
    Result<LoraAdapter> adapter = ReadAdapter(**file, base, hash);
    if (!adapter.ok()) return adapter.status().WithContext("loading adapter " + spec.path);
    out->adapters.push_back(std::make_unique<LoraAdapter>(std::move(*adapter)));
    out->scales.push_back(spec.scale);
    out->applier.Add(out->adapters.back().get(), spec.scale);
  }
  return out;
}

namespace {

// ---- merge ------------------------------------------------------------------------------

struct MergeCliOptions {
  std::string model;
  std::vector<std::string> adapters;
  std::string type = "q8_0";
  std::string out;
};

int RunMerge(const MergeCliOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  Result<QuantRecipe> recipe = NamedRecipe(o.type);
  if (!recipe.ok()) return Fail(recipe.status());
  Result<std::unique_ptr<LlamaModel>> base = LlamaModel::Open(o.model);
  if (!base.ok()) return Fail(base.status());
  Result<std::unique_ptr<LoadedLoras>> loras = LoadLoras(**base, o.model, o.adapters);
  if (!loras.ok()) return Fail(loras.status());
  std::vector<MergeInput> inputs;
  for (size_t i = 0; i < (*loras)->adapters.size(); ++i) {
    inputs.push_back({(*loras)->adapters[i].get(), (*loras)->scales[i]});
  }
  if (Status s = MergeAdapters(**base, inputs, *recipe, o.out); !s.ok()) return Fail(s);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("wrote %s: %s + %zu adapter(s), recipe %s, %.2f MiB, %.2f s\n", o.out.c_str(), o.model.c_str(),
              inputs.size(), recipe->name.c_str(), FileMiB(o.out), secs);
  for (size_t i = 0; i < inputs.size(); ++i) {
    const LoraConfig& c = inputs[i].adapter->config();
    std::printf("  %s: rank %lld, alpha %g, targets %s, scale %g\n", o.adapters[i].c_str(),
                static_cast<long long>(c.rank), static_cast<double>(c.alpha), FormatProjections(c.targets).c_str(),
                static_cast<double>(inputs[i].user_scale));
  }
  return 0;
}

// ---- adapter info -------------------------------------------------------------------------

// Projection of a base tensor name ("blk.3.attn_q.weight"), from the name alone.
std::optional<Projection> ProjectionOfName(std::string_view base_name, int64_t* layer) {
  if (!base_name.starts_with("blk.")) return std::nullopt;
  const size_t dot = base_name.find('.', 4);
  if (dot == std::string_view::npos || dot == 4) return std::nullopt;
  int64_t l = 0;
  for (size_t i = 4; i < dot; ++i) {
    if (base_name[i] < '0' || base_name[i] > '9' || i - 4 > 8) return std::nullopt;
    l = l * 10 + (base_name[i] - '0');
  }
  for (int i = 0; i < kNumProjections; ++i) {
    const auto p = static_cast<Projection>(i);
    if (ProjectionTensorName(l, p) == base_name) {
      *layer = l;
      return p;
    }
  }
  return std::nullopt;
}

int RunAdapterInfo(const std::string& path, const std::string& model_path) {
  Result<std::unique_ptr<GgufFile>> f = GgufFile::Open(path);
  if (!f.ok()) return Fail(f.status());
  const GgufFile& file = **f;
  auto str = [&](std::string_view key) -> std::string {
    const GgufValue* v = file.Find(key);
    if (v == nullptr) return "-";
    Result<std::string_view> s = v->GetString();
    return s.ok() ? std::string(*s) : "(not a string)";
  };
  auto uint = [&](std::string_view key) -> std::optional<uint64_t> {
    const GgufValue* v = file.Find(key);
    if (v == nullptr) return std::nullopt;
    Result<uint64_t> u = v->GetUInt();
    return u.ok() ? std::optional<uint64_t>(*u) : std::nullopt;
  };
  std::set<int64_t> layers;
  std::set<int> targets;
  int64_t rank = 0, a_params = 0, b_params = 0;
  bool mixed_rank = false;
  for (const GgufTensor& t : file.tensors()) {
    const std::string_view n = t.name;
    const bool is_a = n.ends_with(".lora_a");
    if (!is_a && !n.ends_with(".lora_b")) continue;
    (is_a ? a_params : b_params) += t.n_elements;
    int64_t layer = 0;
    if (auto p = ProjectionOfName(n.substr(0, n.size() - 7), &layer)) {
      layers.insert(layer);
      targets.insert(ProjectionIndex(*p));
    }
    if (is_a) {
      if (rank != 0 && t.ne[1] != rank) mixed_rank = true;
      if (rank == 0) rank = t.ne[1];
    }
  }
  std::vector<Projection> target_list;
  for (int i : targets) target_list.push_back(static_cast<Projection>(i));
  double alpha = 0;
  if (Result<double> a = file.GetFloat("adapter.lora.alpha"); a.ok()) alpha = *a;
  bool frozen = false;
  if (Result<bool> b = file.GetBool("flotilla.adapter.frozen_a"); b.ok()) frozen = *b;

  std::printf("adapter: %s (GGUF v%u, %.2f MiB, %zu tensors)\n", path.c_str(), file.version(), FileMiB(path),
              file.tensors().size());
  std::printf("  kind:             general.type %s, adapter.type %s, architecture %s\n", str("general.type").c_str(),
              str("adapter.type").c_str(), str("general.architecture").c_str());
  std::printf("  name:             %s\n", str("general.name").c_str());
  std::printf("  rank:             %lld%s\n", static_cast<long long>(rank), mixed_rank ? " (differs between matrices!)" : "");
  if (alpha == 0) {
    std::printf("  alpha:            absent (scale 1)\n");
  } else {
    std::printf("  alpha:            %g (scale alpha/rank = %g)\n", alpha, rank > 0 ? alpha / static_cast<double>(rank) : 0.0);
  }
  std::printf("  targets:          %s on %zu layer(s)\n", FormatProjections(target_list).c_str(), layers.size());
  if (frozen) {
    const std::optional<uint64_t> seed = uint("flotilla.adapter.a_seed");
    std::printf("  frozen A:         yes, seed %s\n", seed ? std::to_string(*seed).c_str() : "(missing)");
  } else {
    std::printf("  frozen A:         no (A trained and stored)\n");
  }
  std::printf("  base sha256:      %s\n", str(kBaseShaKey).c_str());
  const std::optional<uint64_t> version = uint("flotilla.adapter.adapter_version");
  const std::optional<uint64_t> layout = uint("flotilla.adapter.version");
  std::printf("  adapter version:  %s\n", version ? std::to_string(*version).c_str() : "-");
  std::printf("  layout version:   %s\n", layout ? std::to_string(*layout).c_str() : "- (not written by Flotilla)");
  std::printf("  parameters:       %lld (A %lld, B %lld); trainable %lld\n",
              static_cast<long long>(a_params + b_params), static_cast<long long>(a_params),
              static_cast<long long>(b_params), static_cast<long long>(frozen ? b_params : a_params + b_params));

  if (model_path.empty()) return 0;
  Result<std::unique_ptr<LlamaModel>> base = LlamaModel::Open(model_path);
  if (!base.ok()) return Fail(base.status());
  Result<std::unique_ptr<LoadedLoras>> loaded = LoadLoras(**base, model_path, {path});
  if (!loaded.ok()) return Fail(loaded.status());
  std::printf("  valid for base:   %s\n", model_path.c_str());
  return 0;
}

// ---- adapter create -------------------------------------------------------------------------

struct CreateAdapterOptions {
  std::string model;
  int64_t rank = 8;
  float alpha = 16.0f;
  std::string targets = "q,k,v,o";
  std::optional<uint64_t> seed;
  bool trainable_a = false;
  uint64_t version = 0;
  std::string name;
  std::string out;
};

int RunAdapterCreate(const CreateAdapterOptions& o) {
  Result<std::unique_ptr<LlamaModel>> base = LlamaModel::Open(o.model);
  if (!base.ok()) return Fail(base.status());
  Result<std::vector<Projection>> targets = ParseProjections(o.targets);
  if (!targets.ok()) return Fail(targets.status());
  LoraConfig c;
  c.rank = o.rank;
  c.alpha = o.alpha;
  c.targets = *targets;
  c.frozen_a = !o.trainable_a;
  // A coordinator draws the frozen-A seed of each adapter version from the CSPRNG.
  c.a_seed = o.seed ? *o.seed : OsRandom().NextU64();
  Result<LoraAdapter> adapter = LoraAdapter::Create((*base)->config(), c, &OsRandom());
  if (!adapter.ok()) return Fail(adapter.status());
  Result<std::string> hash = ModelFileSha256(o.model);
  if (!hash.ok()) return Fail(hash.status());
  adapter->base_hash = *hash;
  adapter->version = o.version;
  adapter->name = o.name;
  if (Status s = SaveAdapter(*adapter, o.out); !s.ok()) return Fail(s);
  std::printf("wrote %s: rank %lld, alpha %g, targets %s, %s, %lld trainable parameters, base %s, %.2f MiB\n",
              o.out.c_str(), static_cast<long long>(c.rank), static_cast<double>(c.alpha),
              FormatProjections(adapter->config().targets).c_str(),
              c.frozen_a ? ("frozen A seed " + std::to_string(c.a_seed)).c_str() : "trainable A",
              static_cast<long long>(adapter->TrainableCount()), hash->c_str(), FileMiB(o.out));
  return 0;
}

CommandRegistration merge_registration("model.merge", [](CLI::App& model) {
  auto o = std::make_shared<MergeCliOptions>();
  CLI::App* merge = model.add_subcommand("merge", "Fold LoRA adapters into a base model and re-quantize it");
  merge->add_option("--model", o->model, "Base model .gguf")->required();
  merge->add_option("--adapter", o->adapters, "Adapter FILE[:scale] (repeatable)")->required();
  merge->add_option("--type", o->type, "Recipe of the output: f32|f16|bf16|q8_0|q4_0|q4_0-mixed|q4_k-mixed")
      ->capture_default_str();
  merge->add_option("--out", o->out, "Output model .gguf")->required();
  merge->callback([o] { ExitCode() = RunMerge(*o); });
});

CommandRegistration adapter_registration("model.adapter", [](CLI::App& model) {
  CLI::App* adapter = model.add_subcommand("adapter", "LoRA adapter files (llama.cpp GGUF layout)");
  adapter->require_subcommand(1);

  auto io = std::make_shared<std::pair<std::string, std::string>>();
  CLI::App* info = adapter->add_subcommand("info", "Show an adapter's rank, alpha, targets, frozen-A seed, base hash");
  info->add_option("file", io->first, "Adapter .gguf")->required();
  info->add_option("--model", io->second, "Also validate against this base model (shapes, hash)");
  info->callback([io] { ExitCode() = RunAdapterInfo(io->first, io->second); });

  auto co = std::make_shared<CreateAdapterOptions>();
  CLI::App* create = adapter->add_subcommand("create", "Write an untrained adapter (B = 0) for a base model");
  create->add_option("--model", co->model, "Base model .gguf (its SHA-256 is recorded)")->required();
  create->add_option("--rank", co->rank, "LoRA rank")->capture_default_str();
  create->add_option("--alpha", co->alpha, "LoRA alpha (scale = alpha / rank)")->capture_default_str();
  create->add_option("--targets", co->targets, "Projections: q,k,v,o,gate,up,down | attn | all")
      ->capture_default_str();
  create->add_option("--seed", co->seed, "Frozen-A seed (default: random from the OS CSPRNG)");
  create->add_flag("--trainable-a", co->trainable_a, "Random trainable A instead of frozen A (FedIT-style)");
  create->add_option("--version", co->version, "Adapter version recorded in the file")->capture_default_str();
  create->add_option("--name", co->name, "general.name");
  create->add_option("--out", co->out, "Output adapter .gguf")->required();
  create->callback([co] { ExitCode() = RunAdapterCreate(*co); });
});

}  // namespace
}  // namespace flotilla::cli
