// The attention key/value cache of one inference session, F32. Per layer, keys (after
// RoPE) are a [n_ctx x kv_dim] block, one row per position, so the scores q·K^T are one
// GEMM over rows; values are stored transposed, [kv_dim x n_ctx], so P·V is one GEMM
// over value rows too (llama.cpp's non-flash layout). The forward pass writes keys
// straight into the rows of new positions and scatters values into their columns.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "flotilla/core/check.h"
#include "flotilla/core/status.h"

namespace flotilla::model {

// Not thread-safe; owned by one InferenceSession.
class KvCache {
 public:
  // InvalidArgument for non-positive sizes; ResourceExhausted if the cache would exceed
  // `max_bytes`. Keys are reserved untouched (pages become resident as positions fill);
  // values are zeroed, because the P·V product reads whole 8-column groups.
  static Result<std::unique_ptr<KvCache>> Create(int64_t n_layers, int64_t n_ctx, int64_t kv_dim,
                                                 size_t max_bytes = size_t{8} << 30);

  int64_t n_layers() const { return n_layers_; }
  int64_t n_ctx() const { return n_ctx_; }
  int64_t kv_dim() const { return kv_dim_; }
  // Floats per transposed value row: n_ctx rounded up to a multiple of 8, so reads of a
  // whole 8-column group at the end of the context stay inside the row.
  int64_t v_stride() const { return v_stride_; }
  size_t bytes() const {
    return static_cast<size_t>(n_layers_ * kv_dim_ * (n_ctx_ + v_stride_)) * sizeof(float);
  }

  // Positions [0, size()) hold valid entries.
  int64_t size() const { return size_; }
  // Marks positions [0, n) valid (after the forward pass wrote them). REQUIRES n <= n_ctx.
  void set_size(int64_t n) {
    FLT_CHECK(n >= 0 && n <= n_ctx_);
    size_ = n;
  }
  void Clear() { size_ = 0; }

  // Key row of `pos` in `layer` (kv_dim floats); rows of consecutive positions are adjacent.
  float* k(int64_t layer, int64_t pos) { return k_.get() + Offset(layer, pos); }
  const float* k(int64_t layer, int64_t pos) const { return k_.get() + Offset(layer, pos); }
  // Transposed values of `layer`: element (d, pos) at [d * v_stride() + pos].
  float* v_t(int64_t layer) { return v_.get() + static_cast<size_t>(layer * kv_dim_ * v_stride_); }
  const float* v_t(int64_t layer) const { return v_.get() + static_cast<size_t>(layer * kv_dim_ * v_stride_); }

 private:
  KvCache(int64_t n_layers, int64_t n_ctx, int64_t kv_dim);
  size_t Offset(int64_t layer, int64_t pos) const {
    return static_cast<size_t>((layer * n_ctx_ + pos) * kv_dim_);
  }

  int64_t n_layers_;
  int64_t n_ctx_;
  int64_t kv_dim_;
  int64_t v_stride_;
  int64_t size_ = 0;
  struct Free {
    void operator()(float* p) const;
  };
  std::unique_ptr<float[]> k_;
  std::unique_ptr<float[], Free> v_;
};

}  // namespace flotilla::model
