// Trainer: AdamW over a TrainEngine with accumulation, clipping, warm-up + cosine,
// deterministic window order, cancellation, checkpoint state; and Evaluate.
#include "flotilla/model/trainer.h"

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numbers>
#include <string>
#include <string_view>

#include "flotilla/core/check.h"
#include "flotilla/core/file.h"
#include "flotilla/core/log.h"
#include "flotilla/model/model_file.h"
#include "train/trainer_internal.h"

// The AdamW loop is explicit 4-lane SIMD on the baseline ISAs: with -fmath-errno (the
// default) GCC keeps a scalar errno path for sqrt that blocks auto-vectorizing it (~3x).
#if defined(__SSE2__)
#include <emmintrin.h>
#define FLT_ADAMW_SSE2 1
#elif defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#define FLT_ADAMW_NEON 1
#endif

namespace flotilla::model {

// ---- TokenDataset -----------------------------------------------------------------------

std::vector<std::string> SplitNonEmptyLines(std::string_view text) {
  std::vector<std::string> lines;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    if (end > pos) lines.emplace_back(text.substr(pos, end - pos));
    pos = end + 1;
  }
  return lines;
}

TokenDataset TokenDataset::FromTexts(const Tokenizer& tokenizer, std::span<const std::string> texts) {
  std::vector<int32_t> tokens;
  for (const std::string& text : texts) {
    if (text.empty()) continue;
    std::vector<int32_t> ids = tokenizer.Encode(text, /*add_bos=*/false);
    tokens.push_back(tokenizer.bos_id());
    tokens.insert(tokens.end(), ids.begin(), ids.end());
    tokens.push_back(tokenizer.eos_id());
  }
  return TokenDataset(std::move(tokens));
}

int64_t TokenDataset::NumWindows(int64_t seq_len) const {
  if (seq_len < 1 || size() < 2) return 0;
  return (size() - 1 + seq_len - 1) / seq_len;  // the last window may be shorter
}

std::span<const int32_t> TokenDataset::Window(int64_t i, int64_t seq_len) const {
  FLT_CHECK(i >= 0 && i < NumWindows(seq_len));
  const int64_t begin = i * seq_len;
  const int64_t end = std::min(size(), begin + seq_len + 1);
  return std::span<const int32_t>(tokens_).subspan(static_cast<size_t>(begin), static_cast<size_t>(end - begin));
}

namespace train_internal {
namespace {

class EngineGradientSource final : public GradientSource {
 public:
  explicit EngineGradientSource(TrainEngine& engine) : engine_(engine) {}
  Result<LossSum> ForwardBackward(std::span<const int32_t> tokens, std::span<const int32_t> targets) override {
    return engine_.ForwardBackward(tokens, targets);
  }
  Result<LossSum> Forward(std::span<const int32_t> tokens, std::span<const int32_t> targets) override {
    return engine_.Forward(tokens, targets);
  }
  std::span<const ParamTensor> params() const override { return engine_.params(); }
  void ZeroGrad() override { engine_.ZeroGrad(); }
  int64_t max_seq_len() const override { return engine_.max_seq_len(); }

 private:
  TrainEngine& engine_;
};

// Forward-only source over an InferenceSession (evaluation through the inference path).
class InferenceLossSource final : public GradientSource {
 public:
  explicit InferenceLossSource(std::unique_ptr<InferenceSession> session) : session_(std::move(session)) {}
  Result<LossSum> ForwardBackward(std::span<const int32_t>, std::span<const int32_t>) override {
    return UnimplementedError("the inference path has no backward pass");
  }
  Result<LossSum> Forward(std::span<const int32_t> tokens, std::span<const int32_t> targets) override {
    if (tokens.size() != targets.size()) return InvalidArgumentError("tokens and targets differ in length");
    const int64_t vocab = session_->model().config().vocab_size;
    for (int32_t t : targets) {
      if (t >= vocab) return InvalidArgumentError("target id " + std::to_string(t) + " is outside the vocabulary");
    }
    session_->Reset();
    FLT_RETURN_IF_ERROR(session_->Eval(tokens));
    LossSum out;
    for (size_t i = 0; i < targets.size(); ++i) {
      if (targets[i] < 0) continue;
      const std::span<const float> z = session_->logits(static_cast<int64_t>(i));
      float mx = z[0];
      for (float x : z) mx = std::max(mx, x);
      double sum = 0;
      for (float x : z) sum += std::exp(static_cast<double>(x - mx));
      out.loss_sum += std::log(sum) + static_cast<double>(mx - z[static_cast<size_t>(targets[i])]);
      out.n_tokens += 1;
    }
    return out;
  }
  std::span<const ParamTensor> params() const override { return {}; }
  void ZeroGrad() override {}
  int64_t max_seq_len() const override { return session_->n_ctx(); }

 private:
  std::unique_ptr<InferenceSession> session_;
};

}  // namespace

std::unique_ptr<GradientSource> EngineSource(TrainEngine& engine) {
  return std::make_unique<EngineGradientSource>(engine);
}

double LearningRate(const TrainerOptions& o, int64_t step) {
  const double peak = static_cast<double>(o.adamw.learning_rate);
  if (step < o.warmup_steps) return peak * static_cast<double>(step + 1) / static_cast<double>(o.warmup_steps);
  const double span = static_cast<double>(std::max<int64_t>(1, o.steps - o.warmup_steps));
  const double progress = std::clamp(static_cast<double>(step - o.warmup_steps) / span, 0.0, 1.0);
  const double floor = peak * static_cast<double>(o.min_lr_ratio);
  return floor + (peak - floor) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

void AdamWUpdate(const AdamWOptions& o, double lr, int64_t t, bool decay, float grad_scale, std::span<float> value,
                 std::span<const float> grad, std::span<float> m, std::span<float> v) {
  FLT_CHECK(grad.size() == value.size() && m.size() == value.size() && v.size() == value.size());
  const double td = static_cast<double>(t);
  const auto step_size = static_cast<float>(lr / (1.0 - std::pow(static_cast<double>(o.beta1), td)));
  const auto inv_bc2_sqrt = static_cast<float>(1.0 / std::sqrt(1.0 - std::pow(static_cast<double>(o.beta2), td)));
  const float decay_factor = decay ? static_cast<float>(1.0 - lr * static_cast<double>(o.weight_decay)) : 1.0f;
  const float b1 = o.beta1, b2 = o.beta2, c1 = 1.0f - o.beta1, c2 = 1.0f - o.beta2, eps = o.eps;
  float* p = value.data();
  const float* g = grad.data();
  float* mm = m.data();
  float* vv = v.data();
  const size_t n = value.size();
  size_t i = 0;
  // The vector bodies do the same operations in the same order as the scalar tail, so
  // every element gets the same result whichever path handles it.
#if defined(FLT_ADAMW_SSE2)
  const __m128 vs = _mm_set1_ps(grad_scale), vb1 = _mm_set1_ps(b1), vc1 = _mm_set1_ps(c1), vb2 = _mm_set1_ps(b2),
               vc2 = _mm_set1_ps(c2), vinv = _mm_set1_ps(inv_bc2_sqrt), veps = _mm_set1_ps(eps),
               vstep = _mm_set1_ps(step_size), vdecay = _mm_set1_ps(decay_factor);
  for (; i + 4 <= n; i += 4) {
    const __m128 gi = _mm_mul_ps(_mm_loadu_ps(g + i), vs);
    const __m128 mi = _mm_add_ps(_mm_mul_ps(vb1, _mm_loadu_ps(mm + i)), _mm_mul_ps(vc1, gi));
    const __m128 vi = _mm_add_ps(_mm_mul_ps(vb2, _mm_loadu_ps(vv + i)), _mm_mul_ps(_mm_mul_ps(vc2, gi), gi));
    _mm_storeu_ps(mm + i, mi);
    _mm_storeu_ps(vv + i, vi);
    const __m128 den = _mm_add_ps(_mm_mul_ps(_mm_sqrt_ps(vi), vinv), veps);
    _mm_storeu_ps(p + i, _mm_sub_ps(_mm_mul_ps(_mm_loadu_ps(p + i), vdecay), _mm_div_ps(_mm_mul_ps(vstep, mi), den)));
  }
#elif defined(FLT_ADAMW_NEON)
  const float32x4_t vs = vdupq_n_f32(grad_scale), vb1 = vdupq_n_f32(b1), vc1 = vdupq_n_f32(c1), vb2 = vdupq_n_f32(b2),
                    vc2 = vdupq_n_f32(c2), vinv = vdupq_n_f32(inv_bc2_sqrt), veps = vdupq_n_f32(eps),
                    vstep = vdupq_n_f32(step_size), vdecay = vdupq_n_f32(decay_factor);
  for (; i + 4 <= n; i += 4) {
    const float32x4_t gi = vmulq_f32(vld1q_f32(g + i), vs);
    const float32x4_t mi = vaddq_f32(vmulq_f32(vb1, vld1q_f32(mm + i)), vmulq_f32(vc1, gi));
    const float32x4_t vi = vaddq_f32(vmulq_f32(vb2, vld1q_f32(vv + i)), vmulq_f32(vmulq_f32(vc2, gi), gi));
    vst1q_f32(mm + i, mi);
    vst1q_f32(vv + i, vi);
    const float32x4_t den = vaddq_f32(vmulq_f32(vsqrtq_f32(vi), vinv), veps);
    vst1q_f32(p + i, vsubq_f32(vmulq_f32(vld1q_f32(p + i), vdecay), vdivq_f32(vmulq_f32(vstep, mi), den)));
  }
#endif
  for (; i < n; ++i) {
    const float gi = g[i] * grad_scale;
    const float mi = b1 * mm[i] + c1 * gi;
    const float vi = b2 * vv[i] + (c2 * gi) * gi;
    mm[i] = mi;
    vv[i] = vi;
    p[i] = p[i] * decay_factor - (step_size * mi) / (std::sqrt(vi) * inv_bc2_sqrt + eps);
  }
}

double GlobalGradNorm(std::span<const ParamTensor> params) {
  double total = 0;
  for (const ParamTensor& p : params) {
    // Float partial sums in 8 lanes keep the loop vectorizable; each tensor's sum is
    // then added in double. Deterministic: fixed order, independent of threads.
    float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    double tensor_sum = 0;
    const float* g = p.grad;
    int64_t i = 0;
    // Flush the float lanes every 4096 elements so their rounding error stays small.
    while (i < p.size) {
      const int64_t end = std::min(p.size, i + 4096);
      for (; i + 8 <= end; i += 8) {
        for (int k = 0; k < 8; ++k) lanes[k] += g[i + k] * g[i + k];
      }
      for (; i < end; ++i) lanes[0] += g[i] * g[i];
      for (float& l : lanes) {
        tensor_sum += static_cast<double>(l);
        l = 0;
      }
    }
    total += tensor_sum;
  }
  return std::sqrt(total);
}

std::vector<int64_t> WindowOrder(uint64_t seed, int64_t epoch, int64_t n) {
  std::vector<int64_t> order(static_cast<size_t>(std::max<int64_t>(n, 0)));
  for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  SplitMix64 rng(SplitMix64(seed ^ Fnv1a64("flotilla/trainer/window-order")).Next() +
                 static_cast<uint64_t>(epoch) * 0x9e3779b97f4a7c15ULL);
  for (int64_t i = n - 1; i > 0; --i) {
    // Modulo bias is < (i+1)/2^64: irrelevant for a data order.
    const auto j = static_cast<int64_t>(rng.Next() % static_cast<uint64_t>(i + 1));
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
  }
  return order;
}

Result<EvalResult> EvaluateSource(GradientSource& source, const TokenDataset& data, int64_t seq_len,
                                  int64_t max_windows) {
  if (seq_len < 1 || seq_len > source.max_seq_len()) {
    return InvalidArgumentError("eval seq_len " + std::to_string(seq_len) + " is outside [1, " +
                                std::to_string(source.max_seq_len()) + "]");
  }
  if (max_windows < 0) return InvalidArgumentError("max_windows must be >= 0");
  const int64_t n = data.NumWindows(seq_len);
  if (n == 0) return InvalidArgumentError("evaluation data has fewer than 2 tokens");
  const int64_t count = max_windows == 0 ? n : std::min(n, max_windows);
  double loss = 0;
  int64_t tokens = 0;
  for (int64_t k = 0; k < count; ++k) {
    // A subset is spread evenly over the data rather than taken from its start.
    const int64_t w = count == n ? k : k * n / count;
    const std::span<const int32_t> win = data.Window(w, seq_len);
    Result<LossSum> r = source.Forward(win.first(win.size() - 1), win.subspan(1));
    if (!r.ok()) return r.status().WithContext("evaluation window " + std::to_string(w));
    loss += r->loss_sum;
    tokens += r->n_tokens;
  }
  if (tokens == 0) return InvalidArgumentError("evaluation data has no target tokens");
  EvalResult result;
  result.n_tokens = tokens;
  result.mean_loss = loss / static_cast<double>(tokens);
  result.perplexity = std::exp(result.mean_loss);
  return result;
}

}  // namespace train_internal

// ---- Trainer ---------------------------------------------------------------------------

namespace {

// Checkpoint state layout (little-endian), version 1:
//   "FLTTRST\0" | u32 version | u32 0 | i64 step | i64 windows consumed | i64 tokens |
//   u64 seed | u32 n_params | per param: u32 name length, name, i64 size |
//   i64 n_losses, f64 × n_losses | per param: f32 m[size], f32 v[size] |
//   u64 FNV-1a-64 of every byte before it.
constexpr char kStateMagic[8] = {'F', 'L', 'T', 'T', 'R', 'S', 'T', '\0'};
constexpr uint32_t kStateVersion = 1;

class StateWriter {
 public:
  template <typename T>
  void Put(T v) {
    static_assert(std::is_trivially_copyable_v<T>);
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    out_.insert(out_.end(), p, p + sizeof(T));
  }
  void PutBytes(const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    out_.insert(out_.end(), p, p + n);
  }
  Bytes& bytes() { return out_; }

 private:
  Bytes out_;
};

class StateReader {
 public:
  explicit StateReader(ByteSpan in) : in_(in) {}
  template <typename T>
  Result<T> Get(std::string_view what) {
    T v;
    FLT_RETURN_IF_ERROR(GetBytes(&v, sizeof(T), what));
    return v;
  }
  Status GetBytes(void* out, size_t n, std::string_view what) {
    if (in_.size() - pos_ < n) {
      return DataLossError("trainer state truncated at byte " + std::to_string(pos_) + " reading " + std::string(what));
    }
    if (n > 0) std::memcpy(out, in_.data() + pos_, n);
    pos_ += n;
    return Status::Ok();
  }
  size_t remaining() const { return in_.size() - pos_; }

 private:
  ByteSpan in_;
  size_t pos_ = 0;
};

uint64_t Fnv1a64Bytes(ByteSpan b) {
  return Fnv1a64(AsStringView(b));
}

}  // namespace

class Trainer::Impl {
 public:
  Impl(std::unique_ptr<train_internal::GradientSource> source, const TrainerOptions& options)
      : source_(std::move(source)), options_(options) {
    for (const ParamTensor& p : source_->params()) {
      m_.emplace_back(static_cast<size_t>(p.size), 0.0f);
      v_.emplace_back(static_cast<size_t>(p.size), 0.0f);
    }
  }

  static std::unique_ptr<Trainer> Wrap(std::unique_ptr<Impl> impl) {
    return std::unique_ptr<Trainer>(new Trainer(std::move(impl)));
  }

  Result<TrainReport> Run(const TokenDataset& data, const ProgressCallback& progress,
                          const std::atomic<bool>* cancel);
  Status SaveState(const std::filesystem::path& path) const;
  Status LoadState(const std::filesystem::path& path);

  int64_t step() const { return step_; }
  int64_t tokens() const { return tokens_; }
  const std::vector<double>& losses() const { return losses_; }
  const TrainerOptions& options() const { return options_; }

 private:
  // The window the cursor points at; advances the cursor.
  int64_t NextWindow(int64_t n_windows);
  // Rolls back a partly accumulated step so that Run can redo it from the same windows.
  void AbandonStep(int64_t cursor) {
    consumed_ = cursor;
    source_->ZeroGrad();
  }

  std::unique_ptr<train_internal::GradientSource> source_;
  TrainerOptions options_;
  std::vector<std::vector<float>> m_, v_;  // Adam moments, one per param
  int64_t step_ = 0;
  int64_t consumed_ = 0;  // windows consumed over all epochs (the data cursor)
  int64_t tokens_ = 0;    // target tokens trained on
  std::vector<double> losses_;
  // Cached permutation of the current epoch.
  int64_t order_epoch_ = -1;
  int64_t order_n_ = -1;
  std::vector<int64_t> order_;
};

int64_t Trainer::Impl::NextWindow(int64_t n_windows) {
  const int64_t epoch = consumed_ / n_windows;
  if (epoch != order_epoch_ || n_windows != order_n_) {
    order_ = train_internal::WindowOrder(options_.seed, epoch, n_windows);
    order_epoch_ = epoch;
    order_n_ = n_windows;
  }
  const int64_t w = order_[static_cast<size_t>(consumed_ % n_windows)];
  ++consumed_;
  return w;
}

Result<TrainReport> Trainer::Impl::Run(const TokenDataset& data, const ProgressCallback& progress,
                                       const std::atomic<bool>* cancel) {
  const int64_t seq = options_.seq_len;
  if (data.size() < seq + 1) {
    return InvalidArgumentError("training data has " + std::to_string(data.size()) +
                                " tokens, fewer than one window of seq_len + 1 = " + std::to_string(seq + 1));
  }
  const int64_t n_windows = data.NumWindows(seq);
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  auto cancelled = [&] { return cancel != nullptr && cancel->load(std::memory_order_relaxed); };
  TrainReport report;
  const std::span<const ParamTensor> params = source_->params();

  while (step_ < options_.steps) {
    const int64_t cursor = consumed_;
    source_->ZeroGrad();
    double loss_sum = 0;
    int64_t n_tokens = 0;
    for (int64_t a = 0; a < options_.accumulation; ++a) {
      if (cancelled()) {
        AbandonStep(cursor);
        return CancelledError("training cancelled during step " + std::to_string(step_ + 1) + " (" +
                              std::to_string(step_) + " steps done)");
      }
      for (int64_t b = 0; b < options_.micro_batch; ++b) {
        const int64_t w = NextWindow(n_windows);
        const std::span<const int32_t> win = data.Window(w, seq);
        Result<LossSum> r = source_->ForwardBackward(win.first(win.size() - 1), win.subspan(1));
        if (!r.ok()) {
          AbandonStep(cursor);
          return r.status().WithContext("training window " + std::to_string(w) + " at step " +
                                        std::to_string(step_ + 1));
        }
        loss_sum += r->loss_sum;
        n_tokens += r->n_tokens;
      }
    }
    if (n_tokens == 0) {
      AbandonStep(cursor);
      return InvalidArgumentError("a training step had no target tokens");
    }
    // The step's objective is the mean token loss: scale the summed gradients by
    // 1/n_tokens, then clip the global norm of that mean gradient.
    const double inv_tokens = 1.0 / static_cast<double>(n_tokens);
    const double grad_norm = train_internal::GlobalGradNorm(params) * inv_tokens;
    if (!std::isfinite(grad_norm) || !std::isfinite(loss_sum)) {
      AbandonStep(cursor);
      return InternalError("non-finite loss or gradient at step " + std::to_string(step_ + 1) +
                           " (learning rate too high?)");
    }
    double scale = inv_tokens;
    const auto clip = static_cast<double>(options_.grad_clip);
    if (clip > 0 && grad_norm > clip) scale *= clip / grad_norm;
    const double lr = train_internal::LearningRate(options_, step_);
    for (size_t i = 0; i < params.size(); ++i) {
      const ParamTensor& p = params[i];
      const auto n = static_cast<size_t>(p.size);
      train_internal::AdamWUpdate(options_.adamw, lr, step_ + 1, p.weight_decay, static_cast<float>(scale),
                                  {p.value, n}, {p.grad, n}, m_[i], v_[i]);
    }
    ++step_;
    tokens_ += n_tokens;
    const double mean_loss = loss_sum * inv_tokens;
    losses_.push_back(mean_loss);
    report.steps += 1;
    report.tokens += n_tokens;
    if (progress) {
      TrainProgress pr;
      pr.step = step_;
      pr.total_steps = options_.steps;
      pr.loss = mean_loss;
      pr.learning_rate = lr;
      pr.grad_norm = grad_norm;
      pr.tokens = tokens_;
      pr.seconds = elapsed();
      if (!progress(pr)) {
        return CancelledError("training cancelled by the progress callback after step " + std::to_string(step_));
      }
    }
  }
  report.seconds = elapsed();
  report.tokens_per_second = report.seconds > 0 ? static_cast<double>(report.tokens) / report.seconds : 0;
  report.loss_curve = losses_;
  return report;
}

Status Trainer::Impl::SaveState(const std::filesystem::path& path) const {
  StateWriter w;
  w.PutBytes(kStateMagic, sizeof(kStateMagic));
  w.Put<uint32_t>(kStateVersion);
  w.Put<uint32_t>(0);
  w.Put<int64_t>(step_);
  w.Put<int64_t>(consumed_);
  w.Put<int64_t>(tokens_);
  w.Put<uint64_t>(options_.seed);
  const std::span<const ParamTensor> params = source_->params();
  w.Put<uint32_t>(static_cast<uint32_t>(params.size()));
  for (const ParamTensor& p : params) {
    w.Put<uint32_t>(static_cast<uint32_t>(p.name.size()));
    w.PutBytes(p.name.data(), p.name.size());
    w.Put<int64_t>(p.size);
  }
  w.Put<int64_t>(static_cast<int64_t>(losses_.size()));
  w.PutBytes(losses_.data(), losses_.size() * sizeof(double));
  for (size_t i = 0; i < params.size(); ++i) {
    w.PutBytes(m_[i].data(), m_[i].size() * sizeof(float));
    w.PutBytes(v_[i].data(), v_[i].size() * sizeof(float));
  }
  w.Put<uint64_t>(Fnv1a64Bytes(w.bytes()));
  return WriteFileAtomic(path, w.bytes());
}

Status Trainer::Impl::LoadState(const std::filesystem::path& path) {
  FLT_ASSIGN_OR_RETURN(Bytes bytes, ReadFileBytes(path, size_t{1} << 34));
  const std::string where = "trainer state '" + path.string() + "'";
  if (bytes.size() < sizeof(kStateMagic) + 8 || std::memcmp(bytes.data(), kStateMagic, sizeof(kStateMagic)) != 0) {
    return InvalidArgumentError(where + " is not a Flotilla trainer state file (bad magic)");
  }
  const ByteSpan body(bytes.data(), bytes.size() - 8);
  uint64_t stored_sum;
  std::memcpy(&stored_sum, bytes.data() + body.size(), 8);
  if (Fnv1a64Bytes(body) != stored_sum) return DataLossError(where + " is corrupt (checksum mismatch)");

  StateReader r(body);
  char magic[8];
  FLT_RETURN_IF_ERROR(r.GetBytes(magic, sizeof(magic), "magic"));
  FLT_ASSIGN_OR_RETURN(uint32_t version, r.Get<uint32_t>("version"));
  if (version != kStateVersion) {
    return InvalidArgumentError(where + " has version " + std::to_string(version) + ", this build reads " +
                                std::to_string(kStateVersion));
  }
  FLT_ASSIGN_OR_RETURN(uint32_t reserved, r.Get<uint32_t>("reserved"));
  (void)reserved;
  FLT_ASSIGN_OR_RETURN(int64_t step, r.Get<int64_t>("step"));
  FLT_ASSIGN_OR_RETURN(int64_t consumed, r.Get<int64_t>("data cursor"));
  FLT_ASSIGN_OR_RETURN(int64_t tokens, r.Get<int64_t>("token count"));
  FLT_ASSIGN_OR_RETURN(uint64_t seed, r.Get<uint64_t>("seed"));
  if (step < 0 || consumed < 0 || tokens < 0) return InvalidArgumentError(where + " has a negative counter");
  if (seed != options_.seed) {
    FLT_LOG(kWarn, "trainer") << where << " was written with seed " << seed << ", continuing with seed "
                              << options_.seed << " (window order changes)";
  }
  const std::span<const ParamTensor> params = source_->params();
  FLT_ASSIGN_OR_RETURN(uint32_t n_params, r.Get<uint32_t>("parameter count"));
  if (n_params != params.size()) {
    return InvalidArgumentError(where + " has " + std::to_string(n_params) + " parameter tensors, the model has " +
                                std::to_string(params.size()));
  }
  for (const ParamTensor& p : params) {
    FLT_ASSIGN_OR_RETURN(uint32_t len, r.Get<uint32_t>("parameter name length"));
    if (len > r.remaining()) return DataLossError(where + " truncated in the parameter table");
    std::string name(len, '\0');
    FLT_RETURN_IF_ERROR(r.GetBytes(name.data(), len, "parameter name"));
    FLT_ASSIGN_OR_RETURN(int64_t size, r.Get<int64_t>("parameter size"));
    if (name != p.name || size != p.size) {
      return InvalidArgumentError(where + " is for parameter '" + name + "' of " + std::to_string(size) +
                                  " values, the model has '" + p.name + "' of " + std::to_string(p.size));
    }
  }
  FLT_ASSIGN_OR_RETURN(int64_t n_losses, r.Get<int64_t>("loss count"));
  if (n_losses < 0 || static_cast<uint64_t>(n_losses) > r.remaining() / sizeof(double)) {
    return DataLossError(where + " has a bad loss-curve length");
  }
  std::vector<double> losses(static_cast<size_t>(n_losses));
  FLT_RETURN_IF_ERROR(r.GetBytes(losses.data(), losses.size() * sizeof(double), "loss curve"));
  std::vector<std::vector<float>> m(params.size()), v(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    m[i].resize(static_cast<size_t>(params[i].size));
    v[i].resize(static_cast<size_t>(params[i].size));
    FLT_RETURN_IF_ERROR(r.GetBytes(m[i].data(), m[i].size() * sizeof(float), "first moments"));
    FLT_RETURN_IF_ERROR(r.GetBytes(v[i].data(), v[i].size() * sizeof(float), "second moments"));
  }
  if (r.remaining() != 0) return DataLossError(where + " has " + std::to_string(r.remaining()) + " trailing bytes");
  // Everything parsed: commit.
  step_ = step;
  consumed_ = consumed;
  tokens_ = tokens;
  losses_ = std::move(losses);
  m_ = std::move(m);
  v_ = std::move(v);
  return Status::Ok();
}

namespace train_internal {

Result<std::unique_ptr<Trainer>> CreateTrainer(std::unique_ptr<GradientSource> source, const TrainerOptions& o) {
  FLT_CHECK(source != nullptr);
  auto bad = [](const std::string& what) { return InvalidArgumentError("trainer options: " + what); };
  if (o.steps < 1) return bad("steps must be >= 1, got " + std::to_string(o.steps));
  if (o.warmup_steps < 0) return bad("warmup_steps must be >= 0");
  if (o.seq_len < 1 || o.seq_len > source->max_seq_len()) {
    return bad("seq_len " + std::to_string(o.seq_len) + " is outside [1, " + std::to_string(source->max_seq_len()) +
               "]");
  }
  if (o.micro_batch < 1) return bad("micro_batch must be >= 1");
  if (o.accumulation < 1) return bad("accumulation must be >= 1");
  const AdamWOptions& a = o.adamw;
  if (!(a.learning_rate > 0) || !std::isfinite(a.learning_rate)) return bad("learning rate must be positive");
  if (!(a.beta1 >= 0 && a.beta1 < 1) || !(a.beta2 >= 0 && a.beta2 < 1)) return bad("betas must be in [0, 1)");
  if (!(a.eps > 0) || !std::isfinite(a.eps)) return bad("eps must be positive");
  if (!(a.weight_decay >= 0) || !std::isfinite(a.weight_decay)) return bad("weight_decay must be >= 0");
  if (!(o.min_lr_ratio >= 0 && o.min_lr_ratio <= 1)) return bad("min_lr_ratio must be in [0, 1]");
  if (!std::isfinite(o.grad_clip)) return bad("grad_clip must be finite");
  if (source->params().empty()) return bad("the model has no trainable parameters");
  return Trainer::Impl::Wrap(std::make_unique<Trainer::Impl>(std::move(source), o));
}

}  // namespace train_internal

Trainer::Trainer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Trainer::~Trainer() = default;

Result<std::unique_ptr<Trainer>> Trainer::Create(TrainEngine& engine, const TrainerOptions& options) {
  return train_internal::CreateTrainer(train_internal::EngineSource(engine), options);
}

Result<TrainReport> Trainer::Run(const TokenDataset& data, const ProgressCallback& progress,
                                 const std::atomic<bool>* cancel) {
  return impl_->Run(data, progress, cancel);
}

int64_t Trainer::step() const { return impl_->step(); }
int64_t Trainer::tokens() const { return impl_->tokens(); }
const std::vector<double>& Trainer::loss_curve() const { return impl_->losses(); }

double Trainer::LearningRateAt(int64_t step) const { return train_internal::LearningRate(impl_->options(), step); }

Status Trainer::SaveState(const std::filesystem::path& path) const { return impl_->SaveState(path); }
Status Trainer::LoadState(const std::filesystem::path& path) { return impl_->LoadState(path); }

double UnigramPerplexity(const TokenDataset& train, const TokenDataset& held_out, int64_t vocab_size) {
  std::vector<double> counts(static_cast<size_t>(vocab_size), 1.0);
  auto in_vocab = [&](int32_t t) { return t >= 0 && t < vocab_size; };
  for (int32_t t : train.tokens()) {
    FLT_CHECK(in_vocab(t));
    counts[static_cast<size_t>(t)] += 1;
  }
  const double total = static_cast<double>(train.size() + vocab_size);
  const std::vector<int32_t>& held = held_out.tokens();
  if (held.size() < 2) return 1.0;
  double loss = 0;
  for (size_t i = 1; i < held.size(); ++i) {
    FLT_CHECK(in_vocab(held[i]));
    loss -= std::log(counts[static_cast<size_t>(held[i])] / total);
  }
  return std::exp(loss / static_cast<double>(held.size() - 1));
}

Result<EvalResult> Evaluate(TrainEngine& engine, const TokenDataset& data, int64_t seq_len, int64_t max_windows) {
  return train_internal::EvaluateSource(*train_internal::EngineSource(engine), data, seq_len, max_windows);
}

Result<EvalResult> Evaluate(const LlamaModel& model, ProjectionAdapter* adapter, const TokenDataset& data,
                            int64_t seq_len, int64_t max_windows, int n_threads) {
  if (seq_len < 1 || seq_len > model.config().context_length) {
    return InvalidArgumentError("eval seq_len " + std::to_string(seq_len) + " is outside [1, " +
                                std::to_string(model.config().context_length) + "]");
  }
  InferenceOptions io;
  io.n_threads = n_threads;
  io.n_ctx = seq_len;
  io.n_batch = seq_len;
  io.all_logits = true;
  FLT_ASSIGN_OR_RETURN(std::unique_ptr<InferenceSession> session, InferenceSession::Create(model, io));
  session->set_adapter(adapter);
  train_internal::InferenceLossSource source(std::move(session));
  return train_internal::EvaluateSource(source, data, seq_len, max_windows);
}

}  // namespace flotilla::model
