#include <gtest/gtest.h>

#include <filesystem>
#include <set>
#include <thread>

#include "flotilla/core/bounded_queue.h"
#include "flotilla/core/bytes.h"
#include "flotilla/core/check.h"
#include "flotilla/core/file.h"
#include "flotilla/core/log.h"
#include "flotilla/core/random.h"
#include "flotilla/core/spool.h"
#include "flotilla/core/testing/fake_clock.h"
#include "flotilla/core/testing/seeded_random.h"

namespace flotilla {
namespace {

TEST(SpoolTest, ReadsBackWhatWasAppendedAndLeavesNoFile) {
  auto dir = TempDir::Create("spool");
  ASSERT_TRUE(dir.ok());
  auto spool = Spool::Create(dir->path());
  ASSERT_TRUE(spool.ok()) << spool.status().ToString();
  EXPECT_TRUE(std::filesystem::is_empty(dir->path()));  // anonymous: nothing to clean up
  const Bytes a = {1, 2, 3}, b(100000, 0xab);
  auto at_a = (*spool)->Append(a);
  auto at_b = (*spool)->Append(b);
  ASSERT_TRUE(at_a.ok() && at_b.ok());
  EXPECT_EQ(*at_a, 0u);
  EXPECT_EQ(*at_b, 3u);
  EXPECT_EQ((*spool)->size(), 100003u);
  EXPECT_EQ((*spool)->Read(*at_a, 3).value(), a);
  EXPECT_EQ((*spool)->Read(*at_b, b.size()).value(), b);
  EXPECT_EQ((*spool)->Read(2, 2).value(), (Bytes{3, 0xab}));
  EXPECT_EQ((*spool)->Read(100000, 4).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ((*spool)->Read(200000, 0).status().code(), StatusCode::kOutOfRange);
}

TEST(SpoolTest, ConcurrentAppendsNeverOverlap) {
  auto spool = Spool::Create();
  ASSERT_TRUE(spool.ok());
  std::vector<std::vector<std::pair<uint64_t, uint8_t>>> got(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        const auto tag = static_cast<uint8_t>(t * 50 + i % 50);
        got[t].emplace_back((*spool)->Append(Bytes(37, tag)).value(), tag);
      }
    });
  }
  for (auto& th : threads) th.join();
  for (const auto& records : got) {
    for (const auto& [offset, tag] : records) EXPECT_EQ((*spool)->Read(offset, 37).value(), Bytes(37, tag));
  }
  EXPECT_EQ((*spool)->size(), 4u * 200 * 37);
}

TEST(SpoolTest, ClearEmptiesTheFileAndStartsOffsetsOver) {
  auto spool = Spool::Create();
  ASSERT_TRUE(spool.ok());
  ASSERT_TRUE((*spool)->Append(Bytes(5000, 1)).ok());
  ASSERT_TRUE((*spool)->Clear().ok());
  EXPECT_EQ((*spool)->size(), 0u);
  EXPECT_EQ((*spool)->Read(0, 1).status().code(), StatusCode::kOutOfRange);  // old offsets are gone
  EXPECT_EQ((*spool)->Append(Bytes{7, 8}).value(), 0u);
  EXPECT_EQ((*spool)->Read(0, 2).value(), (Bytes{7, 8}));
}

TEST(HexTest, RoundTripsAndRejectsGarbage) {
  Bytes b = {0x00, 0x7f, 0xab, 0xff};
  EXPECT_EQ(ToHex(b), "007fabff");
  auto back = FromHex("007FABff");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, b);
  EXPECT_EQ(FromHex("abc").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(FromHex("zz").status().code(), StatusCode::kInvalidArgument);
}

TEST(ConstantTimeEqualTest, ComparesContentAndLength) {
  Bytes a = {1, 2, 3}, b = {1, 2, 3}, c = {1, 2, 4}, d = {1, 2};
  EXPECT_TRUE(ConstantTimeEqual(a, b));
  EXPECT_FALSE(ConstantTimeEqual(a, c));
  EXPECT_FALSE(ConstantTimeEqual(a, d));
}

TEST(BoundedQueueTest, RefusesWhenFullWithoutBlocking) {
  BoundedQueue<int> q(2);
  EXPECT_TRUE(q.TryPush(1));
  EXPECT_TRUE(q.TryPush(2));
  EXPECT_FALSE(q.TryPush(3));
  EXPECT_EQ(q.dropped(), 1u);
  EXPECT_EQ(q.TryPop().value(), 1);
  EXPECT_EQ(q.TryPop().value(), 2);
  EXPECT_FALSE(q.TryPop().has_value());
}

TEST(BoundedQueueTest, PopWakesOnPushFromAnotherThread) {
  BoundedQueue<int> q(4);
  std::thread t([&] { q.TryPush(9); });
  auto v = q.PopFor(std::chrono::seconds(5));
  t.join();
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(*v, 9);
}

TEST(BoundedQueueTest, CloseReleasesWaiters) {
  BoundedQueue<int> q(1);
  q.Close();
  EXPECT_FALSE(q.PopFor(std::chrono::seconds(5)).has_value());
  EXPECT_FALSE(q.TryPush(1));
}

TEST(RandomTest, OsRandomProducesDistinctValues) {
  std::set<uint64_t> seen;
  for (int i = 0; i < 1000; ++i) seen.insert(OsRandom().NextU64());
  EXPECT_EQ(seen.size(), 1000u);
}

TEST(RandomTest, UniformStaysInRangeAndCoversIt) {
  testing::SeededRandom r(1);
  std::vector<int> counts(7, 0);
  for (int i = 0; i < 7000; ++i) {
    uint64_t v = r.Uniform(7);
    ASSERT_LT(v, 7u);
    counts[v]++;
  }
  for (int c : counts) EXPECT_GT(c, 800);
  double d = r.UniformDouble();
  EXPECT_GE(d, 0.0);
  EXPECT_LT(d, 1.0);
}

TEST(RandomTest, SeededRandomIsReproducible) {
  testing::SeededRandom a(42), b(42), c(43);
  uint64_t va = a.NextU64();
  EXPECT_EQ(va, b.NextU64());
  EXPECT_NE(va, c.NextU64());
}

TEST(FakeClockTest, AdvancesBothClocks) {
  testing::FakeClock clock;
  auto w0 = clock.Now();
  auto s0 = clock.SteadyNow();
  clock.Advance(std::chrono::seconds(3));
  EXPECT_EQ(clock.Now() - w0, std::chrono::seconds(3));
  EXPECT_EQ(clock.SteadyNow() - s0, std::chrono::seconds(3));
  EXPECT_EQ(clock.NowUnixMillis(), 1'700'000'003'000);
}

TEST(FileTest, AtomicWriteThenReadBack) {
  auto dir = TempDir::Create("core_test");
  ASSERT_TRUE(dir.ok()) << dir.status().ToString();
  auto path = dir->path() / "a.bin";
  ASSERT_TRUE(WriteFileAtomic(path, std::string_view("hello"), 0600).ok());
  ASSERT_TRUE(WriteFileAtomic(path, std::string_view("world!"), 0600).ok());
  auto s = ReadFileString(path);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(*s, "world!");
  EXPECT_EQ(std::filesystem::status(path).permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  EXPECT_EQ(ReadFileString(path, 3).status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(ReadFileString(dir->path() / "missing").status().code(), StatusCode::kNotFound);
}

TEST(FileTest, TempDirIsRemoved) {
  std::filesystem::path p;
  {
    auto dir = TempDir::Create();
    ASSERT_TRUE(dir.ok());
    p = dir->path();
    ASSERT_TRUE(WriteFileAtomic(p / "x", std::string_view("1")).ok());
  }
  EXPECT_FALSE(std::filesystem::exists(p));
}

class CapturingSink : public LogSink {
 public:
  void Write(LogLevel, std::string_view component, std::string_view message) override {
    lines.push_back(std::string(component) + ":" + std::string(message));
  }
  std::vector<std::string> lines;
};

TEST(LogTest, FiltersByLevelAndFormats) {
  auto sink = std::make_shared<CapturingSink>();
  SetLogSink(sink);
  SetLogLevel(LogLevel::kWarn);
  FLT_LOG(kInfo, "t") << "hidden";
  FLT_LOG(kError, "t") << "shown " << 3;
  SetLogLevel(LogLevel::kInfo);
  SetLogSink(nullptr);
  ASSERT_EQ(sink->lines.size(), 1u);
  EXPECT_EQ(sink->lines[0], "t:shown 3");
  LogLevel l;
  EXPECT_TRUE(ParseLogLevel("debug", &l));
  EXPECT_EQ(l, LogLevel::kDebug);
  EXPECT_FALSE(ParseLogLevel("loud", &l));
}

TEST(CheckDeathTest, CheckAbortsWithMessage) { EXPECT_DEATH(FLT_CHECK_MSG(1 + 1 == 3, "math broke"), "math broke"); }

}  // namespace
}  // namespace flotilla
