#include "flotilla/model/thread_pool.h"

#include <string>
#include <system_error>

#include "flotilla/core/check.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FLT_CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define FLT_CPU_RELAX() __asm__ volatile("yield" ::: "memory")
#else
#define FLT_CPU_RELAX() \
  do {                  \
  } while (0)
#endif

namespace flotilla::model {
namespace {
// Spin iterations before a thread blocks in the kernel (~50-100 us): decode issues a
// parallel-for every few microseconds, so workers stay hot during generation but go to
// sleep when the model is idle.
constexpr int kSpinIterations = 1 << 14;
constexpr int64_t kMaxChunks = 0xffff;
thread_local bool t_inside_pool = false;

constexpr uint32_t Gen(uint64_t s) { return static_cast<uint32_t>(s >> 32); }
constexpr uint32_t Chunks(uint64_t s) { return static_cast<uint32_t>((s >> 16) & 0xffffu); }
constexpr uint32_t Next(uint64_t s) { return static_cast<uint32_t>(s & 0xffffu); }
}  // namespace

Result<std::unique_ptr<ThreadPool>> ThreadPool::Create(int n_threads) {
  if (n_threads < 1 || n_threads > 256) {
    return InvalidArgumentError("thread count must be in [1, 256], got " + std::to_string(n_threads));
  }
  std::unique_ptr<ThreadPool> pool(new ThreadPool());
  try {
    for (int i = 0; i < n_threads - 1; ++i) pool->workers_.emplace_back([p = pool.get()] { p->WorkerLoop(); });
  } catch (const std::system_error& e) {
    return InternalError(std::string("cannot start kernel worker thread: ") + e.what());
  }
  return pool;
}

int ThreadPool::DefaultThreadCount() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n > 256 ? 256 : n);
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
    state_.fetch_add(uint64_t{1} << 32);  // a new generation with no chunks wakes everyone
  }
  job_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::RunChunks(uint32_t gen) {
  uint64_t s = state_.load(std::memory_order_acquire);
  for (;;) {
    if (Gen(s) != gen || Next(s) >= Chunks(s)) return;
    if (!state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
    // Chunk Next(s) of `gen` is ours; the job cannot change until we report it done.
    const int64_t begin = static_cast<int64_t>(Next(s)) * chunk_;
    const int64_t end = begin + chunk_ < n_ ? begin + chunk_ : n_;
    fn_(ctx_, begin, end);
    const uint32_t finished = done_.fetch_add(1) + 1;
    if (finished == Chunks(s) && caller_sleeping_.load()) {
      std::lock_guard<std::mutex> lock(mu_);
      done_cv_.notify_one();
    }
    s = state_.load(std::memory_order_acquire);
  }
}

void ThreadPool::WorkerLoop() {
  t_inside_pool = true;
  uint32_t seen = 0;  // generation 0 is "no job yet"; a job may be published before we run
  for (;;) {
    uint32_t g = Gen(state_.load(std::memory_order_acquire));
    for (int i = 0; g == seen && i < kSpinIterations; ++i) {
      FLT_CPU_RELAX();
      g = Gen(state_.load(std::memory_order_acquire));
    }
    if (g == seen) {
      // seq_cst pairs with the publisher: it either sees us sleeping or we see its job.
      std::unique_lock<std::mutex> lock(mu_);
      sleeping_workers_.fetch_add(1);
      job_cv_.wait(lock, [&] { return Gen(state_.load()) != seen; });
      sleeping_workers_.fetch_sub(1);
      g = Gen(state_.load());
    }
    seen = g;
    if (stop_.load()) return;
    RunChunks(g);
  }
}

void ThreadPool::ParallelForRaw(int64_t n, int64_t grain, RangeFn fn, void* ctx) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  FLT_CHECK_MSG(!t_inside_pool, "ThreadPool::ParallelFor called from inside a parallel-for");
  if (workers_.empty()) {
    fn(ctx, 0, n);
    return;
  }
  const bool was_busy = busy_.exchange(true, std::memory_order_acquire);
  FLT_CHECK_MSG(!was_busy, "ThreadPool::ParallelFor called concurrently from two threads");

  // A few chunks per thread balance load when another process steals a core; each chunk
  // is a whole number of grains so kernels see aligned row tiles.
  const int64_t units = (n + grain - 1) / grain;
  const int64_t threads = num_threads();
  int64_t target_chunks = units < threads * 4 ? units : threads * 4;
  if (target_chunks > kMaxChunks) target_chunks = kMaxChunks;
  const int64_t units_per_chunk = (units + target_chunks - 1) / target_chunks;
  fn_ = fn;
  ctx_ = ctx;
  n_ = n;
  chunk_ = units_per_chunk * grain;
  const auto n_chunks = static_cast<uint32_t>((n + chunk_ - 1) / chunk_);
  done_.store(0, std::memory_order_relaxed);
  const uint32_t gen = Gen(state_.load(std::memory_order_relaxed)) + 1;
  state_.store((static_cast<uint64_t>(gen) << 32) | (static_cast<uint64_t>(n_chunks) << 16));
  if (sleeping_workers_.load() > 0) {
    std::lock_guard<std::mutex> lock(mu_);
    job_cv_.notify_all();
  }

  t_inside_pool = true;
  RunChunks(gen);
  t_inside_pool = false;

  // Only chunks that workers actually claimed can still be running.
  bool finished = done_.load(std::memory_order_acquire) == n_chunks;
  for (int i = 0; !finished && i < kSpinIterations; ++i) {
    FLT_CPU_RELAX();
    finished = done_.load(std::memory_order_acquire) == n_chunks;
  }
  if (!finished) {
    std::unique_lock<std::mutex> lock(mu_);
    caller_sleeping_.store(true);
    done_cv_.wait(lock, [&] { return done_.load() == n_chunks; });
    caller_sleeping_.store(false);
  }
  busy_.store(false, std::memory_order_release);
}

}  // namespace flotilla::model
