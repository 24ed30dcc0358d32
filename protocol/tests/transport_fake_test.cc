// Topic rules of transport.h and the InMemoryBroker/InMemoryTransport fake.
#include <atomic>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "flotilla/core/file.h"
#include "flotilla/protocol/testing/in_memory_transport.h"
#include "flotilla/protocol/transport.h"

namespace flotilla::protocol {
namespace {

using testing::InMemoryBroker;
using testing::InMemoryTransport;
using testing::InMemoryTransportOptions;

TEST(TopicMatchTest, FollowsMqttRules) {
  struct Case {
    const char* filter;
    const char* topic;
    bool match;
  };
  const Case cases[] = {
      {"fl/v1/d/a/up/presence", "fl/v1/d/a/up/presence", true},
      {"fl/v1/d/a/up/presence", "fl/v1/d/a/up/presencex", false},
      {"fl/v1/d/+/up/#", "fl/v1/d/dev-7/up/event/round-join", true},
      {"fl/v1/d/+/up/#", "fl/v1/d/dev-7/up", true},  // '#' also matches the parent level
      {"fl/v1/d/+/up/#", "fl/v1/d/dev-7/dn/cmd/x", false},
      {"fl/v1/d/+/up/#", "fl/v1/d/up", false},
      {"fl/v1/g/#", "fl/v1/g/all/dn/round", true},
      {"fl/v1/g/+", "fl/v1/g/all/dn/round", false},
      {"+/+", "a/b", true},
      {"+/+", "a/b/c", false},
      {"+", "a", true},
      {"+", "", true},
      {"a/+/c", "a//c", true},  // empty levels are levels
      {"#", "a/b/c", true},
      {"#", "$SYS/broker/uptime", false},  // '$' topics are not matched by leading wildcards
      {"+/broker/uptime", "$SYS/broker/uptime", false},
      {"$SYS/#", "$SYS/broker/uptime", true},
      {"a/b", "a/b/c", false},
      {"a/b/c", "a/b", false},
      {"a/#", "a", true},
      {"a/#", "ab", false},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(TopicMatchesFilter(c.filter, c.topic), c.match) << "filter '" << c.filter << "' topic '" << c.topic << "'";
  }
}

TEST(TopicMatchTest, ValidatesNamesAndFilters) {
  EXPECT_TRUE(ValidateTopicName("fl/v1/d/a/up/presence").ok());
  EXPECT_EQ(ValidateTopicName("").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateTopicName("fl/+/x").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateTopicName("fl/#").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateTopicName(std::string("a\0b", 3)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateTopicName(std::string(65536, 'a')).code(), StatusCode::kInvalidArgument);

  for (const char* ok : {"#", "+", "a/+/c", "a/#", "+/+/#", "fl/v1/d/+/up/#"})
    EXPECT_TRUE(ValidateTopicFilter(ok).ok()) << ok;
  for (const char* bad : {"", "a/#/c", "a#", "a/b#", "a+/b", "a/+b", "##", "a/#/"})
    EXPECT_EQ(ValidateTopicFilter(bad).code(), StatusCode::kInvalidArgument) << bad;
}

TEST(TransportTest, ConnectionStateNames) {
  EXPECT_EQ(ToString(ConnectionState::kDisconnected), "disconnected");
  EXPECT_EQ(ToString(ConnectionState::kConnecting), "connecting");
  EXPECT_EQ(ToString(ConnectionState::kConnected), "connected");
  EXPECT_EQ(ToString(ConnectionState::kReconnecting), "reconnecting");
}

class FakeTransportTest : public ::testing::Test {
 protected:
  std::unique_ptr<InMemoryTransport> Client(const std::string& id, size_t max_payload = kDefaultMaxPayloadBytes,
                                            size_t queue = 4096) {
    InMemoryTransportOptions o;
    o.client_id = id;
    o.max_payload_size = max_payload;
    o.queue_capacity = queue;
    return std::make_unique<InMemoryTransport>(broker_, o);
  }
  std::shared_ptr<InMemoryBroker> broker_ = std::make_shared<InMemoryBroker>();
};

TEST_F(FakeTransportTest, DeliversOnlyInsidePollOnTheOwnerThread) {
  auto dev = Client("dev-1");
  auto coord = Client("coordinator");
  ASSERT_TRUE(dev->Connect().ok());
  ASSERT_TRUE(coord->Connect().ok());
  ASSERT_TRUE(coord->Subscribe("fl/v1/d/+/up/#", 1).ok());
  std::vector<Message> got;
  std::thread::id handler_thread;
  coord->SetMessageHandler([&](const Message& m) {
    got.push_back(m);
    handler_thread = std::this_thread::get_id();
  });

  std::thread publisher([&] {
    PublishOptions po;
    po.response_topic = "fl/v1/d/dev-1/dn/res";
    po.correlation_data = ToBytes("c1");
    ASSERT_TRUE(dev->Publish("fl/v1/d/dev-1/up/event/round-join", "hello", po).ok());
  });
  publisher.join();
  EXPECT_TRUE(got.empty()) << "handlers must not run outside Poll";
  coord->Drain();  // consumes the connect state events and the message
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(handler_thread, std::this_thread::get_id());
  EXPECT_EQ(got[0].topic, "fl/v1/d/dev-1/up/event/round-join");
  EXPECT_EQ(AsStringView(got[0].payload), "hello");
  EXPECT_EQ(got[0].response_topic, "fl/v1/d/dev-1/dn/res");
  EXPECT_EQ(got[0].correlation_data, ToBytes("c1"));
  EXPECT_FALSE(got[0].retained);
  EXPECT_EQ(coord->stats().received, 1u);
  EXPECT_EQ(dev->stats().published, 1u);
}

TEST_F(FakeTransportTest, RetainedMessagesReachLateSubscribersAndEmptyPayloadClears) {
  auto dev = Client("dev-1");
  auto coord = Client("coordinator");
  ASSERT_TRUE(dev->Connect().ok());
  PublishOptions retain;
  retain.retain = true;
  ASSERT_TRUE(dev->Publish("fl/v1/d/dev-1/up/presence", "online", retain).ok());
  ASSERT_TRUE(broker_->Retained("fl/v1/d/dev-1/up/presence").has_value());

  std::vector<Message> got;
  coord->SetMessageHandler([&](const Message& m) { got.push_back(m); });
  ASSERT_TRUE(coord->Subscribe("fl/v1/d/+/up/presence", 1).ok());  // before connect: sent on connect
  ASSERT_TRUE(coord->Connect().ok());
  coord->Drain();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(got[0].retained);
  EXPECT_EQ(AsStringView(got[0].payload), "online");

  ASSERT_TRUE(dev->Publish("fl/v1/d/dev-1/up/presence", "", retain).ok());
  EXPECT_FALSE(broker_->Retained("fl/v1/d/dev-1/up/presence").has_value());
  EXPECT_EQ(broker_->retained_count(), 0u);
}

TEST_F(FakeTransportTest, WillIsPublishedOnDropButNotOnCleanDisconnect) {
  InMemoryTransportOptions o;
  o.client_id = "dev-1";
  Message will;
  will.topic = "fl/v1/d/dev-1/up/presence";
  will.payload = ToBytes("offline");
  will.retained = true;
  o.will = will;
  auto dev = std::make_unique<InMemoryTransport>(broker_, o);
  auto coord = Client("coordinator");
  ASSERT_TRUE(coord->Connect().ok());
  ASSERT_TRUE(coord->Subscribe("fl/v1/d/+/up/presence", 1).ok());
  std::vector<std::string> got;
  coord->SetMessageHandler([&](const Message& m) { got.emplace_back(AsStringView(m.payload)); });

  ASSERT_TRUE(dev->Connect().ok());
  ASSERT_TRUE(dev->Disconnect().ok());
  coord->Drain();
  EXPECT_TRUE(got.empty());

  ASSERT_TRUE(dev->Connect().ok());
  std::vector<std::pair<ConnectionState, StatusCode>> states;
  dev->SetConnectionStateHandler([&](ConnectionState s, const Status& c) { states.emplace_back(s, c.code()); });
  dev->DropConnection();
  coord->Drain();
  ASSERT_EQ(got, std::vector<std::string>{"offline"});
  EXPECT_TRUE(broker_->Retained("fl/v1/d/dev-1/up/presence").has_value());
  dev->Drain();
  ASSERT_FALSE(states.empty());
  EXPECT_EQ(states.back().first, ConnectionState::kDisconnected);
  EXPECT_EQ(states.back().second, StatusCode::kUnavailable);
  EXPECT_EQ(dev->Publish("fl/v1/d/dev-1/up/x", "y", {}).code(), StatusCode::kUnavailable);
}

TEST_F(FakeTransportTest, EnforcesPayloadLimitOnSendAndReceive) {
  auto big = Client("big", 1024);
  auto small = Client("small", 100);
  ASSERT_TRUE(big->Connect().ok());
  ASSERT_TRUE(small->Connect().ok());
  ASSERT_TRUE(small->Subscribe("t/#", 1).ok());
  size_t delivered = 0;
  small->SetMessageHandler([&](const Message&) { ++delivered; });

  const Bytes over(1025, 7);
  Status s = big->Publish("t/a", over, {});
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("1025"), std::string::npos) << s.ToString();
  EXPECT_EQ(broker_->deliveries(), 0u) << "nothing may be sent";

  ASSERT_TRUE(big->Publish("t/a", Bytes(101, 1), {}).ok());  // fine for big, too big for small
  ASSERT_TRUE(big->Publish("t/a", Bytes(100, 1), {}).ok());
  small->Drain();
  EXPECT_EQ(delivered, 1u);
  EXPECT_EQ(small->stats().dropped_oversize, 1u);
  EXPECT_EQ(big->stats().publish_failures, 1u);
}

TEST_F(FakeTransportTest, RefusesQos2AndBadTopics) {
  auto c = Client("c");
  ASSERT_TRUE(c->Connect().ok());
  PublishOptions q2;
  q2.qos = 2;
  EXPECT_EQ(c->Publish("a/b", "x", q2).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c->Publish("a/+", "x", {}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c->Subscribe("a/#/b", 1).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c->Subscribe("a/b", 2).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c->Unsubscribe("never/subscribed").code(), StatusCode::kNotFound);
}

TEST_F(FakeTransportTest, FullQueueDropsMessagesButNeverTheLatestState) {
  auto pub = Client("pub");
  auto sub = Client("sub", kDefaultMaxPayloadBytes, /*queue=*/2);
  ASSERT_TRUE(pub->Connect().ok());
  ASSERT_TRUE(sub->Connect().ok());  // queues kConnecting + kConnected: queue now full
  ASSERT_TRUE(sub->Subscribe("t", 0).ok());
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(pub->Publish("t", "m", {}).ok());
  EXPECT_EQ(sub->stats().dropped_queue_full, 5u);
  EXPECT_EQ(sub->stats().received, 0u);

  sub->DropConnection();  // state event refused by the full queue: must be coalesced
  std::vector<ConnectionState> states;
  sub->SetConnectionStateHandler([&](ConnectionState s, const Status&) { states.push_back(s); });
  sub->Drain();
  ASSERT_FALSE(states.empty());
  EXPECT_EQ(states.back(), ConnectionState::kDisconnected);
}

// ---- TransportInbox with a memory budget: payloads beyond it wait in a spool file ----

Message Numbered(int producer, int i, size_t size) {
  Message m;
  m.topic = "fl/v1/d/dev-" + std::to_string(producer) + "/up/x";
  m.payload.assign(size, static_cast<uint8_t>(i * 7 + producer));
  m.payload[0] = static_cast<uint8_t>(i & 0xff);
  m.payload[1] = static_cast<uint8_t>(i >> 8);
  m.qos = 1;
  m.response_topic = "r/" + std::to_string(i);
  m.correlation_data = ToBytes("c" + std::to_string(i));
  return m;
}

TEST(TransportInboxTest, ParksPayloadsBeyondTheBudgetAndDeliversAllInOrder) {
  auto dir = TempDir::Create("inbox");
  ASSERT_TRUE(dir.ok());
  constexpr size_t kBudget = 10000;
  TransportInbox inbox(1000, kBudget, dir->path());
  for (int round = 0; round < 2; ++round) {  // the second round reuses the emptied spool
    for (int i = 0; i < 200; ++i) {
      ASSERT_TRUE(inbox.PushMessage(Numbered(0, i, 1000)));
      ASSERT_LE(inbox.bytes_in_memory(), kBudget);
    }
    EXPECT_EQ(inbox.parked(), (round + 1) * (200u - kBudget / 1020));
    std::vector<Message> got;
    inbox.Dispatch(std::chrono::milliseconds(0), 1000, [&](const Message& m) { got.push_back(m); }, nullptr,
                   ConnectionState::kConnected);
    ASSERT_EQ(got.size(), 200u);
    for (int i = 0; i < 200; ++i) {
      const Message want = Numbered(0, i, 1000);
      EXPECT_EQ(got[i].topic, want.topic);
      EXPECT_EQ(got[i].payload, want.payload) << "message " << i;
      EXPECT_EQ(got[i].qos, 1);
      EXPECT_EQ(got[i].response_topic, want.response_topic);
      EXPECT_EQ(got[i].correlation_data, want.correlation_data);
    }
    EXPECT_EQ(inbox.bytes_in_memory(), 0u);
    EXPECT_EQ(inbox.dropped(), 0u);
  }
  EXPECT_TRUE(std::filesystem::is_empty(dir->path()));  // the spool file is anonymous
}

TEST(TransportInboxTest, ConcurrentProducersStayWithinTheBudgetAndLoseNothing) {
  constexpr size_t kBudget = 64 * 1024;
  constexpr int kProducers = 4, kEach = 500;
  TransportInbox inbox(100000, kBudget);
  std::atomic<bool> over_budget{false};
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (int i = 0; i < kEach; ++i) {
        EXPECT_TRUE(inbox.PushMessage(Numbered(p, i, 100 + (i * 37) % 3000)));
        if (inbox.bytes_in_memory() > kBudget) over_budget = true;
      }
    });
  }
  std::vector<int> next(kProducers, 0);
  int received = 0;
  while (received < kProducers * kEach) {
    inbox.Dispatch(std::chrono::milliseconds(100), 64, [&](const Message& m) {
      const int p = m.topic[12] - '0';  // "fl/v1/d/dev-P/..."
      const int i = m.payload[0] | (m.payload[1] << 8);
      EXPECT_EQ(i, next[p]) << "producer " << p << " out of order";
      next[p] = i + 1;
      EXPECT_EQ(m.payload, Numbered(p, i, 100 + (i * 37) % 3000).payload);
      ++received;
    }, nullptr, ConnectionState::kConnected);
  }
  for (auto& t : producers) t.join();
  EXPECT_FALSE(over_budget.load());
  EXPECT_GT(inbox.parked(), 0u);
  EXPECT_EQ(inbox.dropped(), 0u);
}

TEST(TransportInboxTest, WithoutAWritableSpoolMessagesStayInMemory) {
  TransportInbox inbox(100, 1000, "/nonexistent/flotilla-inbox");
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(inbox.PushMessage(Numbered(0, i, 500)));
  EXPECT_EQ(inbox.parked(), 0u);
  EXPECT_GT(inbox.bytes_in_memory(), 1000u);  // over the budget rather than lost
  int got = 0;
  inbox.Dispatch(std::chrono::milliseconds(0), 100, [&](const Message& m) {
    EXPECT_EQ(m.payload, Numbered(0, got, 500).payload);
    ++got;
  }, nullptr, ConnectionState::kConnected);
  EXPECT_EQ(got, 20);

  TransportInbox unlimited(100);  // no budget: nothing is ever parked
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(unlimited.PushMessage(Numbered(0, i, 5000)));
  EXPECT_EQ(unlimited.parked(), 0u);
}

TEST_F(FakeTransportTest, UnsubscribeStopsDelivery) {
  auto pub = Client("pub");
  auto sub = Client("sub");
  ASSERT_TRUE(pub->Connect().ok());
  ASSERT_TRUE(sub->Connect().ok());
  ASSERT_TRUE(sub->Subscribe("t/+", 1).ok());
  ASSERT_TRUE(sub->Subscribe("t/#", 1).ok());  // overlapping filters: still one copy
  size_t n = 0;
  sub->SetMessageHandler([&](const Message&) { ++n; });
  ASSERT_TRUE(pub->Publish("t/1", "a", {}).ok());
  sub->Drain();
  EXPECT_EQ(n, 1u);
  ASSERT_TRUE(sub->Unsubscribe("t/+").ok());
  ASSERT_TRUE(sub->Unsubscribe("t/#").ok());
  ASSERT_TRUE(pub->Publish("t/1", "b", {}).ok());
  sub->Drain();
  EXPECT_EQ(n, 1u);
}

TEST_F(FakeTransportTest, BrokerRestartLosesRetainedAndClientsRestoreSubscriptions) {
  auto pub = Client("pub");
  auto sub = Client("sub");
  ASSERT_TRUE(pub->Connect().ok());
  ASSERT_TRUE(sub->Connect().ok());
  ASSERT_TRUE(sub->Subscribe("fl/v1/g/#", 1).ok());
  PublishOptions retain;
  retain.retain = true;
  ASSERT_TRUE(pub->Publish("fl/v1/d/x/dn/desired", "v1", retain).ok());
  std::vector<ConnectionState> states;
  std::vector<std::string> got;
  sub->SetConnectionStateHandler([&](ConnectionState s, const Status&) { states.push_back(s); });
  sub->SetMessageHandler([&](const Message& m) { got.push_back(m.topic); });
  sub->Drain();
  states.clear();

  broker_->Restart();
  EXPECT_EQ(broker_->retained_count(), 0u);
  ASSERT_TRUE(pub->Publish("fl/v1/g/all/dn/round", "r1", {}).ok());
  sub->Drain();
  EXPECT_EQ(states, (std::vector<ConnectionState>{ConnectionState::kReconnecting, ConnectionState::kConnected}));
  EXPECT_EQ(got, std::vector<std::string>{"fl/v1/g/all/dn/round"});
  EXPECT_EQ(sub->stats().reconnects, 1u);
  EXPECT_EQ(sub->stats().resubscribes, 1u);
}

TEST_F(FakeTransportTest, SecondClientWithSameIdTakesOverTheSession) {
  auto first = Client("dev-1");
  auto second = Client("dev-1");
  ASSERT_TRUE(first->Connect().ok());
  ASSERT_TRUE(second->Connect().ok());
  EXPECT_EQ(first->state(), ConnectionState::kDisconnected);
  EXPECT_EQ(second->state(), ConnectionState::kConnected);
  EXPECT_EQ(broker_->connected_clients(), 1u);
  first.reset();  // must not remove the new owner's session
  EXPECT_EQ(broker_->connected_clients(), 1u);
}

TEST_F(FakeTransportTest, ConcurrentPublishersAllArrive) {
  auto coord = Client("coordinator", kDefaultMaxPayloadBytes, 100000);
  ASSERT_TRUE(coord->Connect().ok());
  ASSERT_TRUE(coord->Subscribe("fl/v1/d/+/up/#", 1).ok());
  constexpr int kThreads = 4;
  constexpr int kEach = 500;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto dev = Client("dev-" + std::to_string(t));
      ASSERT_TRUE(dev->Connect().ok());
      for (int i = 0; i < kEach; ++i)
        ASSERT_TRUE(dev->Publish("fl/v1/d/dev-" + std::to_string(t) + "/up/telemetry", std::to_string(i), {}).ok());
    });
  }
  for (auto& th : threads) th.join();
  size_t n = 0;
  coord->SetMessageHandler([&](const Message&) { ++n; });
  while (coord->Drain() > 0) {
  }
  EXPECT_EQ(n, static_cast<size_t>(kThreads * kEach));
}

}  // namespace
}  // namespace flotilla::protocol
