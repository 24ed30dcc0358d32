// libFuzzer target for the GGUF reader and what is built on its metadata (llama config,
// tokenizer vocabulary, tensor dequantization). Any input must yield OK or a Status.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "flotilla/model/gguf.h"
#include "flotilla/model/model_config.h"
#include "flotilla/model/quant.h"
#include "flotilla/model/tensor_types.h"
#include "flotilla/model/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace flotilla::model;
  // OpenFromMemory needs an 8-byte aligned buffer (operator new gives 16).
  const std::vector<uint8_t> buf(data, data + size);
  GgufLimits limits;
  limits.max_metadata_bytes = 1 << 20;
  auto file = GgufFile::OpenFromMemory(buf, limits);
  if (!file.ok()) return 0;
  const GgufFile& f = **file;
  for (const GgufTensor& t : f.tensors()) {
    if (!Traits(t.type).can_dequantize || t.n_elements > (1 << 16)) continue;
    auto values = DequantizeToFloats(t.type, t.bytes(), t.n_elements);
    (void)values;
  }
  auto config = ReadLlamaConfig(f);
  if (config.ok()) CheckLlamaTensors(*config, f).IgnoreError();
  auto tokenizer = Tokenizer::FromGguf(f);
  if (tokenizer.ok()) {
    const auto ids = (*tokenizer)->Encode("hello w\xC3\xB6rld \xFF", true);
    (void)(*tokenizer)->Decode(ids);
  }
  return 0;
}
