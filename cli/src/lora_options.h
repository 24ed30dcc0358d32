// `--lora FILE[:scale]` for the model commands (generate, merge): parsing and loading
// adapters against a base model. Implemented in adapter_command.cc.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "flotilla/core/status.h"
#include "flotilla/model/llama_model.h"
#include "flotilla/model/lora.h"

namespace flotilla::cli {

struct LoraSpec {
  std::string path;
  float scale = 1.0f;
};
// "a.gguf" or "a.gguf:0.5" (the part after the last ':' is a scale only if it parses as
// a finite number, so paths with colons still work). InvalidArgument for an empty path.
Result<LoraSpec> ParseLoraSpec(std::string_view arg);

// Adapters loaded for one base, with an applier holding them at their scales (the
// adapters are owned here; keep this alive while a session uses the applier).
struct LoadedLoras {
  std::vector<std::unique_ptr<model::LoraAdapter>> adapters;
  std::vector<float> scales;
  model::LoraApplier applier;
};
// Loads every spec with LoadAdapter; an adapter that records a base hash must match the
// SHA-256 of `base_path` (computed once, only when some adapter records one).
Result<std::unique_ptr<LoadedLoras>> LoadLoras(const model::LlamaModel& base, const std::filesystem::path& base_path,
                                               const std::vector<std::string>& specs);

}  // namespace flotilla::cli
