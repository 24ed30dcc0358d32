#include "flotilla/model/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace flotilla::model {
namespace {

TEST(ThreadPoolTest, RejectsBadThreadCounts) {
  EXPECT_FALSE(ThreadPool::Create(0).ok());
  EXPECT_FALSE(ThreadPool::Create(1000).ok());
  EXPECT_GE(ThreadPool::DefaultThreadCount(), 1);
}

TEST(ThreadPoolTest, CoversEveryIndexExactlyOnceWithAlignedRanges) {
  for (int threads : {1, 2, 3, 5}) {
    auto pool = ThreadPool::Create(threads);
    ASSERT_TRUE(pool.ok());
    EXPECT_EQ((*pool)->num_threads(), threads);
    for (int64_t n : {1, 2, 15, 16, 17, 100, 1001}) {
      for (int64_t grain : {1, 4, 16}) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        std::atomic<bool> misaligned{false};
        (*pool)->ParallelFor(n, grain, [&](int64_t b, int64_t e) {
          if (b % grain != 0 || (e % grain != 0 && e != n) || b >= e) misaligned = true;
          for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)].fetch_add(1);
        });
        EXPECT_FALSE(misaligned.load()) << "n=" << n << " grain=" << grain;
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[static_cast<size_t>(i)].load(), 1) << i;
      }
    }
  }
}

TEST(ThreadPoolTest, ManySmallCallsAndUsesWorkers) {
  auto pool = ThreadPool::Create(2);
  ASSERT_TRUE(pool.ok());
  std::atomic<int64_t> total{0};
  for (int call = 0; call < 20000; ++call) {
    (*pool)->ParallelFor(64, 16, [&](int64_t b, int64_t e) { total.fetch_add(e - b); });
  }
  EXPECT_EQ(total.load(), 20000 * 64);
  // Some range must eventually run on a thread other than the caller.
  const auto caller = std::this_thread::get_id();
  std::atomic<bool> other{false};
  for (int call = 0; call < 1000 && !other; ++call) {
    (*pool)->ParallelFor(64, 1, [&](int64_t, int64_t) {
      if (std::this_thread::get_id() != caller) other = true;
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    });
  }
  EXPECT_TRUE(other.load());
}

TEST(ThreadPoolTest, NullPoolRunsInline) {
  int64_t seen_b = -1, seen_e = -1;
  int calls = 0;
  ParallelFor(nullptr, 10, 4, [&](int64_t b, int64_t e) {
    seen_b = b;
    seen_e = e;
    ++calls;
  });
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(seen_b, 0);
  EXPECT_EQ(seen_e, 10);
  ParallelFor(nullptr, 0, 4, [&](int64_t, int64_t) { ++calls; });
  EXPECT_EQ(calls, 1);
}

// The pool is created inside the death statement, so the forked child owns its threads
// (and the "threadsafe" re-exec style, which qemu-user cannot do, is not needed).
void NestedParallelFor() {
  auto pool = ThreadPool::Create(2);
  ThreadPool* p = pool->get();
  p->ParallelFor(4, 1, [p](int64_t, int64_t) { p->ParallelFor(2, 1, [](int64_t, int64_t) {}); });
}

TEST(ThreadPoolDeathTest, NestedCallAborts) { EXPECT_DEATH(NestedParallelFor(), "inside a parallel-for"); }

}  // namespace
}  // namespace flotilla::model
