#include "flotilla/model/kv_cache.h"

#include <cstdlib>
#include <limits>
#include <string>

namespace flotilla::model {

KvCache::KvCache(int64_t n_layers, int64_t n_ctx, int64_t kv_dim)
    : n_layers_(n_layers), n_ctx_(n_ctx), kv_dim_(kv_dim), v_stride_((n_ctx + 7) / 8 * 8) {}

void KvCache::Free::operator()(float* p) const { std::free(p); }

Result<std::unique_ptr<KvCache>> KvCache::Create(int64_t n_layers, int64_t n_ctx, int64_t kv_dim, size_t max_bytes) {
  if (n_layers <= 0 || n_ctx <= 0 || kv_dim <= 0) {
    return InvalidArgumentError("KV cache sizes must be positive (layers " + std::to_string(n_layers) + ", n_ctx " +
                                std::to_string(n_ctx) + ", kv_dim " + std::to_string(kv_dim) + ")");
  }
  // 2 caches x layers x ctx x kv_dim floats, checked against overflow before multiplying.
  const double bytes = static_cast<double>(n_layers) * static_cast<double>(kv_dim) *
                       (static_cast<double>(n_ctx) + static_cast<double>(n_ctx + 7)) * static_cast<double>(sizeof(float));
  if (bytes > static_cast<double>(max_bytes)) {
    return ResourceExhaustedError("KV cache of " + std::to_string(static_cast<uint64_t>(bytes / (1 << 20))) +
                                  " MiB (n_ctx " + std::to_string(n_ctx) + ") exceeds the limit of " +
                                  std::to_string(max_bytes >> 20) + " MiB; use a smaller context");
  }
  std::unique_ptr<KvCache> c(new KvCache(n_layers, n_ctx, kv_dim));
  const auto n = static_cast<size_t>(n_layers * n_ctx * kv_dim);
  const auto n_v = static_cast<size_t>(n_layers * kv_dim * c->v_stride_);
  // Keys: no zero fill, so untouched positions never become resident. Values: zeroed,
  // because P·V reads columns up to the next multiple of 8 (with zero weights), and a
  // never-written float could be NaN (0 * NaN = NaN).
  c->k_ = std::make_unique_for_overwrite<float[]>(n);
  // calloc: fresh pages from the OS are already zero, so nothing is written up front.
  c->v_.reset(static_cast<float*>(std::calloc(n_v, sizeof(float))));
  if (c->v_ == nullptr) return ResourceExhaustedError("cannot allocate the KV cache");
  return c;
}

}  // namespace flotilla::model
