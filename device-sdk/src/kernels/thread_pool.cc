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
thread_local bool t_inside_pool = false;
}  // namespace

Result<std::unique_ptr<ThreadPool>> ThreadPool::Create(int n_threads) {
  if (n_threads < 1 || n_threads > 256) {
    return InvalidArgumentError("thread count must be in [1, 256], got " + std::to_string(n_threads));
  }
  std::unique_ptr<ThreadPool> pool(new ThreadPool(0));
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

ThreadPool::ThreadPool(int /*n_workers*/) {}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  {
    std::lock_guard<std::mutex> lock(mu_);
    generation_.fetch_add(1);
  }
  job_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::RunChunks() {
  for (;;) {
    const int64_t c = next_chunk_.fetch_add(1, std::memory_order_relaxed);
    if (c >= n_chunks_) return;
    const int64_t begin = c * chunk_;
    const int64_t end = begin + chunk_ < n_ ? begin + chunk_ : n_;
    fn_(ctx_, begin, end);
  }
}

void ThreadPool::WorkerLoop() {
  t_inside_pool = true;
  uint32_t seen = generation_.load(std::memory_order_acquire);
  for (;;) {
    uint32_t g = generation_.load(std::memory_order_acquire);
    for (int i = 0; g == seen && i < kSpinIterations; ++i) {
      FLT_CPU_RELAX();
      g = generation_.load(std::memory_order_acquire);
    }
    if (g == seen) {
      // seq_cst pairs with the publisher: it either sees us sleeping or we see its job.
      std::unique_lock<std::mutex> lock(mu_);
      sleeping_workers_.fetch_add(1);
      job_cv_.wait(lock, [&] { return generation_.load() != seen; });
      sleeping_workers_.fetch_sub(1);
      g = generation_.load();
    }
    seen = g;
    if (stop_.load(std::memory_order_acquire)) return;
    RunChunks();
    if (pending_.fetch_sub(1) == 1 && caller_sleeping_.load()) {
      std::lock_guard<std::mutex> lock(mu_);
      done_cv_.notify_one();
    }
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
  const int64_t target_chunks = units < threads * 4 ? units : threads * 4;
  const int64_t units_per_chunk = (units + target_chunks - 1) / target_chunks;
  fn_ = fn;
  ctx_ = ctx;
  n_ = n;
  chunk_ = units_per_chunk * grain;
  n_chunks_ = (n + chunk_ - 1) / chunk_;
  next_chunk_.store(0, std::memory_order_relaxed);
  pending_.store(static_cast<uint32_t>(workers_.size()), std::memory_order_relaxed);
  generation_.fetch_add(1);
  if (sleeping_workers_.load() > 0) {
    std::lock_guard<std::mutex> lock(mu_);
    job_cv_.notify_all();
  }

  t_inside_pool = true;
  RunChunks();
  t_inside_pool = false;

  uint32_t left = pending_.load(std::memory_order_acquire);
  for (int i = 0; left != 0 && i < kSpinIterations; ++i) {
    FLT_CPU_RELAX();
    left = pending_.load(std::memory_order_acquire);
  }
  if (left != 0) {
    std::unique_lock<std::mutex> lock(mu_);
    caller_sleeping_.store(true);
    done_cv_.wait(lock, [&] { return pending_.load() == 0; });
    caller_sleeping_.store(false);
  }
  busy_.store(false, std::memory_order_release);
}

}  // namespace flotilla::model
