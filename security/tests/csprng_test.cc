#include "flotilla/security/csprng.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <set>
#include <thread>
#include <vector>

#include "test_util.h"

namespace flotilla::security {
namespace {

TEST(CtrDrbgTest, DistinctOutputs) {
  Result<std::unique_ptr<CtrDrbg>> a = CtrDrbg::Open();
  Result<std::unique_ptr<CtrDrbg>> b = CtrDrbg::Open();
  FLT_ASSERT_OK(a);
  FLT_ASSERT_OK(b);
  std::set<Bytes> seen;
  for (int i = 0; i < 100; ++i) {
    Bytes x(32), y(32);
    (*a)->Fill(x);
    (*b)->Fill(y);
    EXPECT_TRUE(seen.insert(x).second);
    EXPECT_TRUE(seen.insert(y).second);
  }
  Bytes z(32);
  SystemCsprng().Fill(z);
  EXPECT_TRUE(seen.insert(z).second);
  FLT_EXPECT_OK((*a)->Reseed());
}

TEST(CtrDrbgTest, LargeFillsCrossTheRequestLimitAndLookRandom) {
  Bytes big(100000, 0);
  SystemCsprng().Fill(big);
  // Byte histogram: each value ~ 390 times; a stuck or zero region would blow this up.
  std::vector<int> hist(256, 0);
  for (uint8_t b : big) hist[b]++;
  for (int c : hist) {
    EXPECT_GT(c, 250);
    EXPECT_LT(c, 550);
  }
  // The tail (past the 1024-byte DRBG request limit) was written too.
  EXPECT_NE(Bytes(big.end() - 64, big.end()), Bytes(64, 0));
}

TEST(CtrDrbgTest, ThreadSafeConcurrentFills) {
  constexpr int kThreads = 4, kPerThread = 500;
  std::vector<std::vector<Bytes>> out(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        Bytes b(48);
        SystemCsprng().Fill(b);
        out[static_cast<size_t>(t)].push_back(std::move(b));
      }
    });
  }
  for (auto& th : threads) th.join();
  std::set<Bytes> all;
  for (const auto& v : out) all.insert(v.begin(), v.end());
  EXPECT_EQ(all.size(), static_cast<size_t>(kThreads * kPerThread));
}

TEST(CtrDrbgTest, ForkedChildDoesNotRepeatParentStream) {
  Result<std::unique_ptr<CtrDrbg>> drbg = CtrDrbg::Open();
  FLT_ASSERT_OK(drbg);
  Bytes warm(16);
  (*drbg)->Fill(warm);
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    Bytes child(32);
    (*drbg)->Fill(child);
    const ssize_t w = write(fds[1], child.data(), child.size());
    _exit(w == 32 ? 0 : 1);
  }
  close(fds[1]);
  Bytes parent(32), child(32);
  (*drbg)->Fill(parent);
  ASSERT_EQ(read(fds[0], child.data(), child.size()), 32);
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_NE(parent, child);
}

}  // namespace
}  // namespace flotilla::security
