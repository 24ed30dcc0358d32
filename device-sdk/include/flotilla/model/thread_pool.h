// A small fixed thread pool for the kernels: N-1 workers plus the calling thread run a
// parallel-for over an index range (matrix rows). Built for many tiny calls per token:
// workers spin briefly between calls, then block; a call allocates nothing.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

#include "flotilla/core/status.h"

namespace flotilla::model {

class ThreadPool {
 public:
  using RangeFn = void (*)(void* ctx, int64_t begin, int64_t end);

  // n_threads counts the caller: 1 means no worker threads (everything runs inline).
  // InvalidArgument if n_threads < 1 or > 256; Internal if a thread cannot be started.
  static Result<std::unique_ptr<ThreadPool>> Create(int n_threads);
  // Default thread count: std::thread::hardware_concurrency() (at least 1).
  static int DefaultThreadCount();

  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(ctx, begin, end) on disjoint ranges covering [0, n); every range except
  // the last starts and ends on a multiple of `grain` (>= 1). Returns when all ranges
  // are done. Each index is handled by exactly one call, so a kernel that writes only
  // the outputs of its own indices gives results independent of the thread count.
  // One caller at a time (FLT_CHECK), and never from inside fn (no nesting).
  void ParallelForRaw(int64_t n, int64_t grain, RangeFn fn, void* ctx);

  // Convenience wrapper: f(begin, end). `f` is called by reference, never copied.
  template <typename F>
  void ParallelFor(int64_t n, int64_t grain, F&& f) {
    using Fn = std::remove_reference_t<F>;
    ParallelForRaw(
        n, grain, [](void* ctx, int64_t b, int64_t e) { (*static_cast<Fn*>(ctx))(b, e); },
        const_cast<std::remove_const_t<Fn>*>(&f));
  }

 private:
  explicit ThreadPool() = default;
  void WorkerLoop();
  // Claims and runs chunks of generation `gen` until none is left.
  void RunChunks(uint32_t gen);

  std::vector<std::thread> workers_;
  // The current job. Written by the caller before it publishes state_, read by a thread
  // only after it has claimed a chunk (so the job cannot be replaced meanwhile).
  RangeFn fn_ = nullptr;
  void* ctx_ = nullptr;
  int64_t n_ = 0;
  int64_t chunk_ = 0;  // indices per chunk (a multiple of grain)
  // generation (32 bits) | chunk count (16) | next chunk to claim (16). Claiming is a CAS
  // on the whole word, so a thread that wakes late can never take a chunk of a newer job,
  // and the caller never waits for a worker that did not take part.
  alignas(64) std::atomic<uint64_t> state_{0};
  alignas(64) std::atomic<uint32_t> done_{0};  // chunks finished in the current job
  std::atomic<bool> busy_{false};
  std::atomic<bool> stop_{false};
  // Blocking after the spin phase. (Not std::atomic::wait: libstdc++ 12 can lose its
  // wake-ups.) The counters let the fast path skip the mutex when nobody sleeps.
  std::mutex mu_;
  std::condition_variable job_cv_;   // workers wait for a new generation
  std::condition_variable done_cv_;  // the caller waits for done_ == chunk count
  std::atomic<int> sleeping_workers_{0};
  std::atomic<bool> caller_sleeping_{false};
};

// Runs f(begin, end) over [0, n) on `pool`, or inline as one range if pool is null.
template <typename F>
void ParallelFor(ThreadPool* pool, int64_t n, int64_t grain, F&& f) {
  if (n <= 0) return;
  if (pool == nullptr || pool->num_threads() == 1) {
    f(int64_t{0}, n);
    return;
  }
  pool->ParallelFor(n, grain, f);
}

}  // namespace flotilla::model
