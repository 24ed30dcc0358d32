#include "flotilla/protocol/replay_window.h"

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "flotilla/core/testing/fake_clock.h"
#include "flotilla/core/testing/seeded_random.h"

namespace flotilla::protocol {
namespace {

using std::chrono::milliseconds;

ReplayWindow::Options Opts(int64_t window_ms, size_t capacity) {
  ReplayWindow::Options o;
  o.window = milliseconds(window_ms);
  o.capacity = capacity;
  return o;
}

// 16 bytes, like the random ids envelopes carry.
std::string Id(int i) {
  std::string id = "id-" + std::to_string(i);
  id.resize(ReplayWindow::kMaxMessageIdBytes, 'x');
  return id;
}

TEST(ReplayWindowTest, RepeatIsDetected) {
  ReplayWindow w(Opts(60'000, 100));
  const int64_t now = 1'000'000;
  EXPECT_TRUE(w.Check("dev-1", Id(1), now, now).ok());
  Status again = w.Check("dev-1", Id(1), now, now);
  EXPECT_EQ(again.code(), StatusCode::kAlreadyExists) << again.ToString();
  // The same id from another sender is another message.
  EXPECT_TRUE(w.Check("dev-2", Id(1), now, now).ok());
  // Keys cannot collide across the sender/id boundary.
  EXPECT_TRUE(w.Check("ab", "c", now, now).ok());
  EXPECT_TRUE(w.Check("a", "bc", now, now).ok());
  EXPECT_EQ(w.size(), 4u);
}

TEST(ReplayWindowTest, OlderThanWindowIsRefused) {
  ReplayWindow w(Opts(60'000, 100));
  const int64_t now = 1'000'000;
  EXPECT_TRUE(w.Check("d", Id(1), now - 60'000, now).ok());  // at the edge
  EXPECT_EQ(w.Check("d", Id(2), now - 60'001, now).code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(w.Check("d", Id(3), now + 60'001, now).code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(w.Check("d", Id(4), INT64_MIN, now).code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(w.Check("d", Id(5), INT64_MAX, now).code(), StatusCode::kDeadlineExceeded);
}

TEST(ReplayWindowTest, ExpiredEntriesAreForgottenButTheirReplaysStillRefused) {
  ReplayWindow w(Opts(1'000, 100));
  int64_t now = 5'000;
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(w.Check("d", Id(i), now, now).ok());
  EXPECT_EQ(w.size(), 10u);
  now += 1'001;
  EXPECT_TRUE(w.Check("d", Id(100), now, now).ok());
  EXPECT_EQ(w.size(), 1u);  // the ten old ids were dropped
  EXPECT_EQ(w.Check("d", Id(3), 5'000, now).code(), StatusCode::kDeadlineExceeded);
}

TEST(ReplayWindowTest, ClockSteppingBackDoesNotReopenForgottenIds) {
  ReplayWindow w(Opts(1'000, 100));
  ASSERT_TRUE(w.Check("d", Id(1), 5'000, 5'000).ok());
  ASSERT_TRUE(w.Check("d", Id(2), 9'000, 9'000).ok());  // forgets Id(1)
  // The wall clock jumps back to 5'500: Id(1) at 5'000 would look fresh again.
  EXPECT_EQ(w.Check("d", Id(1), 5'000, 5'500).code(), StatusCode::kDeadlineExceeded);
}

TEST(ReplayWindowTest, EvictionNeverReopensAReplay) {
  ReplayWindow w(Opts(60'000, 4));
  const int64_t now = 100'000;
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(w.Check("d", Id(i), now - 100 + i, now).ok());
  EXPECT_EQ(w.eviction_floor_ms(), INT64_MIN);
  // A fifth message forces the oldest (ts now-100) out.
  ASSERT_TRUE(w.Check("d", Id(4), now, now).ok());
  EXPECT_EQ(w.size(), 4u);
  EXPECT_EQ(w.eviction_floor_ms(), now - 100);
  // Its replay is refused although it is no longer remembered.
  Status replay = w.Check("d", Id(0), now - 100, now);
  EXPECT_EQ(replay.code(), StatusCode::kResourceExhausted) << replay.ToString();
  // So is any new message not newer than the forgotten one...
  EXPECT_EQ(w.Check("d", Id(50), now - 200, now).code(), StatusCode::kResourceExhausted);
  // ...while remembered ones are still detected as replays and newer ones pass.
  EXPECT_EQ(w.Check("d", Id(1), now - 99, now).code(), StatusCode::kAlreadyExists);
  EXPECT_TRUE(w.Check("d", Id(51), now - 50, now).ok());
}

TEST(ReplayWindowTest, AMessageOlderThanAllEntriesOfAFullWindowIsRememberedByTheFloor) {
  ReplayWindow w(Opts(60'000, 2));
  const int64_t now = 100'000;
  ASSERT_TRUE(w.Check("d", Id(1), now - 10, now).ok());
  ASSERT_TRUE(w.Check("d", Id(2), now - 5, now).ok());
  ASSERT_TRUE(w.Check("d", Id(3), now - 20, now).ok());  // evicted at once
  EXPECT_EQ(w.eviction_floor_ms(), now - 20);
  EXPECT_FALSE(w.Check("d", Id(3), now - 20, now).ok());
  EXPECT_EQ(w.Check("d", Id(1), now - 10, now).code(), StatusCode::kAlreadyExists);
}

TEST(ReplayWindowTest, MemoryIsBoundedByCapacity) {
  ReplayWindow w(Opts(3'600'000, 1000));
  const int64_t now = 10'000'000;
  for (int i = 0; i < 20'000; ++i) {
    ASSERT_TRUE(w.Check("d", Id(i), now - 20'000 + i, now).ok()) << i;
    ASSERT_LE(w.size(), 1000u);
  }
}

TEST(ReplayWindowTest, RefusesIdsLongerThanItStoresAndForgetsSendersWithTheirEntries) {
  ReplayWindow w(Opts(1'000, 4));
  const int64_t now = 100'000;
  EXPECT_EQ(w.Check("d", std::string(ReplayWindow::kMaxMessageIdBytes + 1, 'a'), now, now).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(w.size(), 0u);
  // Many senders come and go: expired entries take their senders with them, and a
  // returning sender's old ids are still told apart from other senders' equal ids.
  for (int round = 0; round < 50; ++round) {
    const int64_t t = now + round * 2'000;  // each round expires the previous one
    for (int d = 0; d < 4; ++d) {
      ASSERT_TRUE(w.Check("dev-" + std::to_string(round * 4 + d), Id(0), t, t).ok()) << round << "/" << d;
    }
    EXPECT_EQ(w.Check("dev-" + std::to_string(round * 4), Id(0), t, t).code(), StatusCode::kAlreadyExists);
    EXPECT_LE(w.size(), 4u);
  }
  EXPECT_TRUE(w.Check("", "", now + 200'000, now + 200'000).ok());  // empty sender and id are values too
  EXPECT_EQ(w.Check("", "", now + 200'000, now + 200'000).code(), StatusCode::kAlreadyExists);
}

TEST(ReplayWindowTest, ChecksWithAnOpenedEnvelopeAndClock) {
  flotilla::testing::FakeClock clock;
  ReplayWindow w;
  OpenedEnvelope env;
  env.sender_id = "dev-1";
  env.message_id = std::string(16, 'a');
  env.timestamp_ms = clock.NowUnixMillis();
  EXPECT_TRUE(w.Check(env, clock).ok());
  EXPECT_EQ(w.Check(env, clock).code(), StatusCode::kAlreadyExists);
}

TEST(ReplayWindowTest, ConcurrentDuplicatesAreAcceptedExactlyOnce) {
  ReplayWindow w(Opts(60'000, 100'000));
  const int64_t now = 1'000'000;
  constexpr int kIds = 2000;
  std::atomic<int> accepted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kIds; ++i) {
        const int id = (i * 7 + t * 13) % kIds;  // different orders per thread
        if (w.Check("dev", Id(id), now - (id % 1000), now).ok()) accepted.fetch_add(1);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(accepted.load(), kIds);
  EXPECT_EQ(w.size(), static_cast<size_t>(kIds));
}

// Plain reference: every accepted (key, ts) in a map, the same rules by linear scans.
class ReferenceWindow {
 public:
  ReferenceWindow(int64_t window, size_t capacity) : window_(window), capacity_(capacity) {}
  StatusCode Check(const std::string& key, int64_t ts, int64_t now) {
    latest_ = std::max(latest_, now);
    if (ts < latest_ - window_ || ts > latest_ + window_) return StatusCode::kDeadlineExceeded;
    for (auto it = seen_.begin(); it != seen_.end();) it = it->second < latest_ - window_ ? seen_.erase(it) : ++it;
    if (ts <= floor_) return StatusCode::kResourceExhausted;
    if (seen_.count(key)) return StatusCode::kAlreadyExists;
    seen_[key] = ts;
    while (seen_.size() > capacity_) {
      auto oldest = seen_.begin();
      for (auto it = seen_.begin(); it != seen_.end(); ++it) {
        if (it->second < oldest->second) oldest = it;
      }
      floor_ = std::max(floor_, oldest->second);
      seen_.erase(oldest);
    }
    return StatusCode::kOk;
  }

 private:
  int64_t window_;
  size_t capacity_;
  int64_t latest_ = INT64_MIN;
  int64_t floor_ = INT64_MIN;
  std::map<std::string, int64_t> seen_;
};

TEST(ReplayWindowTest, MatchesAPlainReferenceOnRandomTraffic) {
  flotilla::testing::SeededRandom rng(99);
  for (size_t capacity : {1u, 3u, 16u}) {
    ReplayWindow w(Opts(500, capacity));
    ReferenceWindow ref(500, capacity);
    int64_t now = 10'000;
    int outcomes[5] = {};
    for (int step = 0; step < 6000; ++step) {
      now += static_cast<int64_t>(rng.Uniform(40)) - 5;  // mostly forward, sometimes back
      // Distinct timestamps per id, so ties in eviction order cannot differ.
      const int id = static_cast<int>(rng.Uniform(200));
      const int64_t ts = id + (now / 600) * 600;
      const std::string key = std::to_string(id % 2) + "/" + Id(id);
      const StatusCode want = ref.Check(key, ts, now);
      const StatusCode got = w.Check(std::to_string(id % 2), Id(id), ts, now).code();
      ASSERT_EQ(got, want) << "step " << step << " capacity " << capacity;
      outcomes[want == StatusCode::kOk ? 0 : want == StatusCode::kAlreadyExists ? 1
                                                : want == StatusCode::kDeadlineExceeded ? 2 : 3]++;
    }
    // The traffic exercised every outcome, so the comparison means something.
    for (int i = 0; i < 3; ++i) EXPECT_GT(outcomes[i], 0) << "outcome " << i << " capacity " << capacity;
  }
}

}  // namespace
}  // namespace flotilla::protocol
