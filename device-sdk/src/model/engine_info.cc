#include "flotilla/model/quant_blocks.h"

namespace flotilla::model {
// Keeps flotilla_model non-empty while its parts land; reports the quant format version.
uint32_t QuantFormatVersion() { return kQuantFormatVersion; }
}  // namespace flotilla::model
