// libFuzzer target for LoRA adapter files (ReadAdapter over GgufFile::OpenFromMemory)
// against a small in-memory base model. Any input must yield OK or a Status.
//
// Input modes (first byte): even = the rest is a raw GGUF file; odd = the rest is a list
// of (u16 offset, u8 value) patches applied to a valid adapter, then an optional
// truncation (u16) — so short runs from an empty corpus still reach the validation logic
// past the GGUF header (tensor pairing, shapes, ranks, frozen-A, values).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "flotilla/core/check.h"
#include "flotilla/core/file.h"
#include "flotilla/model/adapter_file.h"
#include "flotilla/model/gguf.h"
#include "flotilla/model/llama_model.h"
#include "flotilla/model/lora.h"
#include "flotilla/model/model_config.h"
#include "flotilla/model/model_file.h"

namespace {

using namespace flotilla::model;

struct Fixture {
  flotilla::Bytes base_bytes;
  std::unique_ptr<LlamaModel> base;
  flotilla::Bytes adapter_bytes;
};

const Fixture& GetFixture() {
  static Fixture* f = [] {
    auto* fx = new Fixture;
    ModelConfig config = *NamedConfig("tiny");
    GgufWriter w;
    FLT_CHECK_OK(BuildRandomModel(config, RandomModelOptions{}, w));
    fx->base_bytes = *w.WriteToBuffer();
    auto file = GgufFile::OpenFromMemory(fx->base_bytes);
    FLT_CHECK_OK(file.status());
    auto model = LlamaModel::FromGguf(std::move(*file));
    FLT_CHECK_OK(model.status());
    fx->base = std::move(*model);
    LoraConfig lc;
    lc.rank = 2;
    lc.targets = {Projection::kQ, Projection::kV};
    lc.a_seed = 3;
    auto adapter = LoraAdapter::Create(config, lc);
    FLT_CHECK_OK(adapter.status());
    adapter->base_hash = std::string(64, 'a');
    // Serialize through the real writer (SaveAdapter only writes files).
    auto dir = flotilla::TempDir::Create("flotilla-adapter-fuzz");
    FLT_CHECK_OK(dir.status());
    FLT_CHECK_OK(SaveAdapter(*adapter, dir->path() / "seed.gguf"));
    auto bytes = flotilla::ReadFileBytes(dir->path() / "seed.gguf");
    FLT_CHECK_OK(bytes.status());
    fx->adapter_bytes = std::move(*bytes);
    return fx;
  }();
  return *f;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Fixture& fx = GetFixture();
  if (size == 0) return 0;
  std::vector<uint8_t> buf;  // operator new: aligned enough for OpenFromMemory
  if ((data[0] & 1) == 0) {
    buf.assign(data + 1, data + size);
  } else {
    buf = fx.adapter_bytes;
    size_t i = 1;
    for (; i + 3 <= size; i += 3) {
      const size_t off = (static_cast<size_t>(data[i]) | static_cast<size_t>(data[i + 1]) << 8) % buf.size();
      buf[off] = data[i + 2];
    }
    if (size - i == 2) buf.resize((static_cast<size_t>(data[i]) | static_cast<size_t>(data[i + 1]) << 8) % buf.size());
  }
  GgufLimits limits;
  limits.max_metadata_bytes = 1 << 20;
  auto file = GgufFile::OpenFromMemory(buf, limits);
  if (!file.ok()) return 0;
  for (const std::string& hash : {std::string(), std::string(64, 'a')}) {
    auto adapter = ReadAdapter(**file, *fx.base, hash);
    if (!adapter.ok()) continue;
    // A loaded adapter must be usable: apply it to one token of every adapted projection.
    LoraApplier applier;
    applier.Add(&*adapter, 1.0f);
    std::vector<float> x(256, 0.25f), y(256, 0.0f);
    for (const LoraMatrix& m : adapter->matrices()) {
      FLT_CHECK(m.in_dim <= 256 && m.out_dim <= 256);
      applier.Apply(m.layer, m.proj, x.data(), 1, m.in_dim, y.data(), m.out_dim, m.out_dim, {});
    }
  }
  return 0;
}
