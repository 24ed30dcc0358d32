#include "flotilla/device/sample_store.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "flotilla/core/file.h"
#include "flotilla/core/sqlite.h"
#include "flotilla/core/testing/fake_clock.h"

namespace flotilla::device {
namespace {

// Named result: a range-for over `*store->Read()` would dangle (the Result is a temporary).
std::vector<StoredSample> ReadAll(SampleStore& store) {
  auto r = store.Read();
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? std::move(*r) : std::vector<StoredSample>{};
}

class SampleStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = TempDir::Create("sample_store");
    ASSERT_TRUE(d.ok());
    dir_.emplace(std::move(*d));
    path_ = dir_->path() / "samples.sqlite";
  }

  std::unique_ptr<SampleStore> MustOpen(SampleStoreOptions o = {}) {
    if (o.clock == nullptr) o.clock = &clock_;
    auto s = SampleStore::Open(path_, o);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? std::move(*s) : nullptr;
  }

  int64_t Now() const { return clock_.NowUnixMillis(); }

  testing::FakeClock clock_;
  std::optional<TempDir> dir_;
  std::filesystem::path path_;
};

TEST_F(SampleStoreTest, AppendsAndReadsBackInTimeOrder) {
  auto store = MustOpen();
  ASSERT_TRUE(store);
  auto a = store->Append("turn on the lights", Now() + 20, "command");
  auto b = store->Append("what is the weather", Now() + 10);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE(b.ok());
  EXPECT_NE(*a, *b);
  auto all = store->Read();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].text, "what is the weather");  // older timestamp first
  EXPECT_FALSE((*all)[0].label.has_value());
  EXPECT_EQ((*all)[1].text, "turn on the lights");
  EXPECT_EQ((*all)[1].label, "command");
  EXPECT_EQ((*all)[1].timestamp_ms, Now() + 20);
  EXPECT_EQ((*all)[1].id, *a);

  auto st = store->Stats();
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->count, 2);
  EXPECT_EQ(st->bytes, 18 + 19);
  EXPECT_EQ(st->oldest_ms, Now() + 10);
  EXPECT_EQ(st->newest_ms, Now() + 20);
  EXPECT_EQ(st->train_count + st->held_out_count, 2);

  auto cmd = store->Stats("command");
  ASSERT_TRUE(cmd.ok());
  EXPECT_EQ(cmd->count, 1);
  SampleQuery q;
  q.label = "command";
  EXPECT_EQ(store->Read(q)->size(), 1u);
  q.label = "nope";
  EXPECT_TRUE(store->Read(q)->empty());
  q = {};
  q.limit = 1;
  EXPECT_EQ(store->Read(q)->size(), 1u);
}

TEST_F(SampleStoreTest, RejectsBadSamplesWithClearErrorsAndStoresNothing) {
  SampleStoreOptions o;
  o.max_text_bytes = 10;
  o.max_label_bytes = 4;
  auto store = MustOpen(o);
  ASSERT_TRUE(store);
  auto empty = store->Append("", Now());
  EXPECT_EQ(empty.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(empty.status().message().find("empty"), std::string::npos);
  auto big = store->Append("01234567890", Now());
  EXPECT_EQ(big.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(big.status().message().find("11 bytes"), std::string::npos) << big.status().message();
  auto bad = store->Append("ok\xC3(", Now());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("offset 2"), std::string::npos) << bad.status().message();
  EXPECT_EQ(store->Append("ok", Now(), "").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store->Append("ok", Now(), "toolong").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store->Append("ok", Now(), "\xFF").status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(store->Append("ok ünï", Now()).ok());  // 9 bytes of valid UTF-8

  // A batch is all or nothing and the error names the bad sample.
  const NewSample batch[] = {{"fine", Now(), std::nullopt}, {"", Now(), std::nullopt}};
  auto r = store->AppendBatch(batch);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("sample 1"), std::string::npos) << r.status().message();
  EXPECT_EQ(store->Stats()->count, 1);
}

TEST_F(SampleStoreTest, RejectsBadOptions) {
  SampleStoreOptions o;
  o.held_out_fraction = 1.0;
  EXPECT_EQ(SampleStore::Open(path_, o).status().code(), StatusCode::kInvalidArgument);
  o = {};
  o.held_out_fraction = -0.1;
  EXPECT_EQ(SampleStore::Open(path_, o).status().code(), StatusCode::kInvalidArgument);
  o = {};
  o.max_total_bytes = 100;
  o.max_text_bytes = 200;
  EXPECT_EQ(SampleStore::Open(path_, o).status().code(), StatusCode::kInvalidArgument);
  o = {};
  o.max_age_ms = -1;
  EXPECT_EQ(SampleStore::Open(path_, o).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(SampleStoreTest, SizeRetentionDropsOldestFirst) {
  SampleStoreOptions o;
  o.max_total_bytes = 100;
  o.max_text_bytes = 50;
  auto store = MustOpen(o);
  ASSERT_TRUE(store);
  std::vector<int64_t> ids;
  for (int i = 0; i < 10; ++i) {
    // 20 bytes each, timestamps increasing.
    auto id = store->Append(std::string(19, 'a' + static_cast<char>(i)) + "!", Now() + i);
    ASSERT_TRUE(id.ok());
    ids.push_back(*id);
    auto st = store->Stats();
    EXPECT_LE(st->bytes, 100);
  }
  auto all = store->Read();
  ASSERT_EQ(all->size(), 5u);
  for (size_t i = 0; i < 5; ++i) EXPECT_EQ((*all)[i].id, ids[5 + i]);
  // A back-dated sample is the oldest: it is the one dropped.
  auto old = store->Append(std::string(20, 'z'), Now() - 1000);
  ASSERT_TRUE(old.ok());
  all = store->Read();
  ASSERT_EQ(all->size(), 5u);
  EXPECT_EQ((*all)[0].id, ids[5]);
}

TEST_F(SampleStoreTest, AgeRetentionOnAppendAndOnDemand) {
  SampleStoreOptions o;
  o.max_age_ms = 60'000;
  auto store = MustOpen(o);
  ASSERT_TRUE(store);
  ASSERT_TRUE(store->Append("first", Now()).ok());
  clock_.Advance(std::chrono::seconds(30));
  ASSERT_TRUE(store->Append("second", Now()).ok());
  clock_.Advance(std::chrono::seconds(40));  // "first" is now 70 s old
  EXPECT_EQ(*store->ApplyRetention(), 1);
  auto texts = store->Read();
  ASSERT_EQ(texts->size(), 1u);
  EXPECT_EQ((*texts)[0].text, "second");
  clock_.Advance(std::chrono::seconds(40));
  ASSERT_TRUE(store->Append("third", Now()).ok());  // applies retention too
  texts = store->Read();
  ASSERT_EQ(texts->size(), 1u);
  EXPECT_EQ((*texts)[0].text, "third");
  auto stale = store->Append("stale", Now() - 61'000);
  EXPECT_EQ(stale.status().code(), StatusCode::kOutOfRange);
}

TEST_F(SampleStoreTest, SplitIsDeterministicStableAndRoughlyTheFraction) {
  SampleStoreOptions o;
  o.held_out_fraction = 0.2;
  std::vector<NewSample> batch;
  std::vector<std::string> texts;
  for (int i = 0; i < 2000; ++i) texts.push_back("sample number " + std::to_string(i));
  for (int i = 0; i < 2000; ++i) batch.push_back({texts[static_cast<size_t>(i)], Now() + i, std::nullopt});
  std::set<int64_t> held;
  {
    auto store = MustOpen(o);
    ASSERT_TRUE(store);
    ASSERT_TRUE(store->AppendBatch(batch).ok());
    for (const StoredSample& s : ReadAll(*store)) {
      EXPECT_EQ(s.held_out, store->IsHeldOut(s.id));
      if (s.held_out) held.insert(s.id);
    }
    EXPECT_NEAR(static_cast<double>(held.size()), 400.0, 60.0);  // ~3.4 sigma
    auto st = store->Stats();
    EXPECT_EQ(st->held_out_count, static_cast<int64_t>(held.size()));
    EXPECT_EQ(static_cast<int64_t>(store->HeldOutTexts()->size()), st->held_out_count);
    EXPECT_EQ(static_cast<int64_t>(store->TrainTexts()->size()), st->train_count);
    // Removing samples does not move the others.
    for (int64_t id = 1; id <= 500; ++id) ASSERT_TRUE(store->Remove(id).ok());
    EXPECT_EQ(store->Remove(1).code(), StatusCode::kNotFound);
    for (const StoredSample& s : ReadAll(*store)) EXPECT_EQ(s.held_out, held.count(s.id) == 1);
  }
  // Reopened: same salt, same split.
  auto again = MustOpen(o);
  ASSERT_TRUE(again);
  for (const StoredSample& s : ReadAll(*again)) EXPECT_EQ(s.held_out, held.count(s.id) == 1);
  // A larger fraction only adds held-out samples.
  again.reset();
  o.held_out_fraction = 0.5;
  auto wider = MustOpen(o);
  for (const StoredSample& s : ReadAll(*wider)) {
    if (held.count(s.id)) {
      EXPECT_TRUE(s.held_out);
    }
  }
  // Another store gets another salt, so another split of the same ids.
  auto other_dir = TempDir::Create("sample_store_other");
  ASSERT_TRUE(other_dir.ok());
  o.held_out_fraction = 0.2;
  o.clock = &clock_;
  auto other = SampleStore::Open(other_dir->path() / "s.sqlite", o);
  ASSERT_TRUE(other.ok());
  int same = 0;
  for (int64_t id = 1; id <= 2000; ++id) same += (*other)->IsHeldOut(id) == (held.count(id) == 1);
  EXPECT_LT(same, 1900);
}

TEST_F(SampleStoreTest, LabelFilterAppliesToSplitReads) {
  auto store = MustOpen();
  ASSERT_TRUE(store);
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(store->Append("text " + std::to_string(i), Now() + i, i % 2 ? "odd" : "even").ok());
  }
  auto odd_train = store->TrainTexts("odd");
  auto odd_held = store->HeldOutTexts("odd");
  ASSERT_TRUE(odd_train.ok() && odd_held.ok());
  EXPECT_EQ(odd_train->size() + odd_held->size(), 100u);
  for (const std::string& t : *odd_train) EXPECT_EQ((std::stoi(t.substr(5)) % 2), 1);
  auto st = store->Stats("odd");
  EXPECT_EQ(st->train_count, static_cast<int64_t>(odd_train->size()));
  EXPECT_EQ(*store->Clear(), 200);
  EXPECT_EQ(store->Stats()->count, 0);
  EXPECT_EQ(store->Stats()->bytes, 0);
}

TEST_F(SampleStoreTest, ConcurrentAppendsFromSeveralThreads) {
  auto store = MustOpen();
  ASSERT_TRUE(store);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        EXPECT_TRUE(store->Append("t" + std::to_string(t) + " " + std::to_string(i), Now() + i).ok());
        if (i % 10 == 0) {
          EXPECT_TRUE(store->Stats().ok());
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(store->Stats()->count, 200);
}

// The file survives a process killed in the middle of appending: it opens, passes the
// integrity check, the byte totals kept by triggers match the rows, and appends go on.
TEST_F(SampleStoreTest, ReopensAfterProcessIsKilledMidAppend) {
  {
    auto store = MustOpen();  // create the schema before forking
    ASSERT_TRUE(store);
  }
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    SampleStoreOptions o;
    o.max_total_bytes = 200'000;  // retention deletes run too
    auto s = SampleStore::Open(path_, o);
    if (!s.ok()) _exit(2);
    std::vector<std::string> texts(20, std::string(1000, 'x'));
    std::vector<NewSample> batch;
    for (const std::string& t : texts) batch.push_back({t, 0, "bulk"});
    for (int64_t i = 0;; ++i) {
      for (NewSample& n : batch) n.timestamp_ms = 1'700'000'000'000 + i;
      if (!(*s)->AppendBatch(batch).ok()) _exit(3);
    }
  }
  // Kill it once it has committed a few batches.
  auto reader = MustOpen();
  ASSERT_TRUE(reader);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (reader->Stats()->count < 200 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  int wstatus = 0;
  ASSERT_EQ(waitpid(pid, &wstatus, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(wstatus)) << "child exited early with " << WEXITSTATUS(wstatus);
  reader.reset();

  auto db = sqlite::Database::Open(path_);
  ASSERT_TRUE(db.ok());
  EXPECT_TRUE((*db)->IntegrityCheck().ok());
  auto q = (*db)->Prepare(
      "SELECT (SELECT count FROM totals), (SELECT COUNT(*) FROM samples),"
      " (SELECT bytes FROM totals), (SELECT COALESCE(SUM(LENGTH(CAST(text AS BLOB))), 0) FROM samples)");
  ASSERT_TRUE(q.ok());
  ASSERT_TRUE(*q->Step());
  EXPECT_GE(q->ColumnInt(1), 200);
  EXPECT_EQ(q->ColumnInt(1) % 20, 0);  // whole batches only
  EXPECT_EQ(q->ColumnInt(0), q->ColumnInt(1));
  EXPECT_EQ(q->ColumnInt(2), q->ColumnInt(3));
  db->reset();

  auto store = MustOpen();
  ASSERT_TRUE(store);
  EXPECT_TRUE(store->Append("after the crash", Now()).ok());
}

}  // namespace
}  // namespace flotilla::device
