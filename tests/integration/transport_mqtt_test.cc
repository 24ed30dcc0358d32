// MqttTransport against a real Mosquitto started by MosquittoBroker: round trip,
// retained + Will, reconnect after a broker restart, payload limits, mTLS with ACLs.
#include <map>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "flotilla/core/file.h"
#include "flotilla/protocol/mosquitto_broker.h"
#include "flotilla/protocol/mqtt_transport.h"
#include "test_pki.h"
#include "transport_test_support.h"

namespace flotilla::protocol {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testsupport::PollUntil;

constexpr milliseconds kWait{10000};

// Collects what a transport delivers (on the polling thread).
struct Inbox {
  explicit Inbox(Transport& t) {
    t.SetMessageHandler([this](const Message& m) { messages.push_back(m); });
    t.SetConnectionStateHandler([this](ConnectionState s, const Status& c) { states.emplace_back(s, c); });
  }
  size_t Count(std::string_view topic) const {
    size_t n = 0;
    for (const Message& m : messages) n += m.topic == topic ? 1 : 0;
    return n;
  }
  std::vector<Message> messages;
  std::vector<std::pair<ConnectionState, Status>> states;
};

std::unique_ptr<MqttTransport> MakeClient(const std::string& uri, const std::string& id,
                                          const std::function<void(MqttTransportOptions&)>& tweak = {}) {
  MqttTransportOptions o;
  o.server_uri = uri;
  o.client_id = id;
  o.reconnect_min_backoff_low = seconds(1);
  o.reconnect_min_backoff_high = seconds(1);
  o.reconnect_max_backoff = seconds(2);
  if (tweak) tweak(o);
  auto t = MqttTransport::Create(o);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return t.ok() ? std::move(*t) : nullptr;
}

PublishOptions Acked(bool retain = false) {
  PublishOptions p;
  p.qos = 1;
  p.retain = retain;
  p.ack_timeout = milliseconds(5000);
  return p;
}

// Connects all in one burst: Paho's receive thread notices a new socket only after its
// 1 s poll timeout, so sequential Connect() calls cost ~1-2 s each.
void ConnectAll(const std::vector<MqttTransport*>& clients) {
  for (MqttTransport* c : clients) ASSERT_TRUE(c->StartConnect().ok());
  for (MqttTransport* c : clients) {
    Status s = c->WaitConnected(kWait);
    ASSERT_TRUE(s.ok()) << c->client_id() << ": " << s.ToString();
  }
}

class MqttPlainTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto b = MosquittoBroker::Start({});
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    broker_ = std::move(*b).release();
  }
  static void TearDownTestSuite() {
    delete broker_;
    broker_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(broker_, nullptr); }
  static MosquittoBroker* broker_;
};
MosquittoBroker* MqttPlainTest::broker_ = nullptr;

TEST_F(MqttPlainTest, BrokerHarnessReportsWhereItRuns) {
  EXPECT_GT(broker_->pid(), 0);
  EXPECT_TRUE(broker_->running());
  EXPECT_NE(broker_->plain_port(), 0);
  EXPECT_NE(broker_->plain_port(), 1883);
  EXPECT_EQ(broker_->plain_uri(), "tcp://127.0.0.1:" + std::to_string(broker_->plain_port()));
  EXPECT_TRUE(broker_->tls_uri().empty());
  auto conf = ReadFileString(broker_->config_path());
  ASSERT_TRUE(conf.ok());
  EXPECT_NE(conf->find("max_inflight_messages 0"), std::string::npos);
  EXPECT_TRUE(std::filesystem::exists(broker_->log_path()));
}

TEST_F(MqttPlainTest, PublishSubscribeRoundTripWithProperties) {
  auto dev = MakeClient(broker_->plain_uri(), "rt-dev");
  auto coord = MakeClient(broker_->plain_uri(), "rt-coord");
  ASSERT_TRUE(dev && coord);
  Inbox dev_in(*dev), coord_in(*coord);
  ASSERT_TRUE(coord->Subscribe("fl/v1/d/+/up/#", 1).ok());  // before connect: sent on connect
  ConnectAll({dev.get(), coord.get()});
  ASSERT_TRUE(dev->Subscribe("fl/v1/d/rt-dev/dn/#", 1).ok());

  PublishOptions req = Acked();
  req.response_topic = "fl/v1/d/rt-dev/dn/res";
  req.correlation_data = ToBytes("corr-1");
  req.message_expiry_seconds = 30;
  const Bytes payload = {0, 1, 2, 255, 0, 7};  // binary safe
  ASSERT_TRUE(dev->Publish("fl/v1/d/rt-dev/up/req/enrol", payload, req).ok());
  ASSERT_TRUE(PollUntil({coord.get()}, [&] { return !coord_in.messages.empty(); }, kWait));
  const Message& m = coord_in.messages.front();
  EXPECT_EQ(m.topic, "fl/v1/d/rt-dev/up/req/enrol");
  EXPECT_EQ(m.payload, payload);
  EXPECT_EQ(m.qos, 1);
  EXPECT_EQ(m.response_topic, "fl/v1/d/rt-dev/dn/res");
  EXPECT_EQ(m.correlation_data, ToBytes("corr-1"));

  PublishOptions reply = Acked();
  reply.correlation_data = m.correlation_data;
  ASSERT_TRUE(coord->Publish(m.response_topic, "ok", reply).ok());
  ASSERT_TRUE(PollUntil({dev.get()}, [&] { return dev_in.Count("fl/v1/d/rt-dev/dn/res") == 1; }, kWait));
  EXPECT_EQ(AsStringView(dev_in.messages.back().payload), "ok");

  // Connection states reached the owner in order.
  ASSERT_GE(dev_in.states.size(), 2u);
  EXPECT_EQ(dev_in.states[0].first, ConnectionState::kConnecting);
  EXPECT_EQ(dev_in.states[1].first, ConnectionState::kConnected);
  EXPECT_EQ(dev->stats().published, 1u);
  EXPECT_EQ(coord->stats().received, 1u);

  ASSERT_TRUE(dev->Unsubscribe("fl/v1/d/rt-dev/dn/#").ok());
  ASSERT_TRUE(coord->Publish("fl/v1/d/rt-dev/dn/res", "after-unsub", Acked()).ok());
  ASSERT_TRUE(coord->Publish("fl/v1/d/rt-dev/up/marker", "m", Acked()).ok());  // same broker path, arrives later
  ASSERT_TRUE(PollUntil({coord.get(), dev.get()}, [&] { return coord_in.Count("fl/v1/d/rt-dev/up/marker") == 1; }, kWait));
  dev->Drain();
  EXPECT_EQ(dev_in.Count("fl/v1/d/rt-dev/dn/res"), 1u);

  EXPECT_TRUE(dev->Disconnect().ok());
  EXPECT_TRUE(dev->Disconnect().ok());  // twice is fine
  EXPECT_EQ(dev->state(), ConnectionState::kDisconnected);
  EXPECT_EQ(dev->Publish("fl/v1/d/rt-dev/up/x", "late", {}).code(), StatusCode::kUnavailable);
}

TEST_F(MqttPlainTest, PublishWindowDeliversABurstInFull) {
  // A window of 4 with 300 QoS 1 publishes from one thread: Publish waits for PUBACKs as
  // it goes, and every message still arrives once, none refused.
  auto sender = MakeClient(broker_->plain_uri(), "win-send", [](MqttTransportOptions& o) {
    o.max_publishes_in_flight = 4;
  });
  auto receiver = MakeClient(broker_->plain_uri(), "win-recv");
  ASSERT_TRUE(sender && receiver);
  Inbox in(*receiver);
  ASSERT_TRUE(receiver->Subscribe("fl/v1/d/win/up/#", 1).ok());
  ConnectAll({sender.get(), receiver.get()});
  PublishOptions qos1;
  qos1.qos = 1;
  constexpr int kBurst = 300;
  for (int i = 0; i < kBurst; ++i) {
    ASSERT_TRUE(sender->Publish("fl/v1/d/win/up/" + std::to_string(i), Bytes(2048, static_cast<uint8_t>(i)), qos1).ok());
  }
  ASSERT_TRUE(PollUntil({receiver.get()}, [&] { return in.messages.size() >= kBurst; }, kWait));
  std::set<std::string> topics;
  for (const Message& m : in.messages) topics.insert(m.topic);
  EXPECT_EQ(topics.size(), static_cast<size_t>(kBurst));
  EXPECT_EQ(sender->stats().published, static_cast<uint64_t>(kBurst));
  EXPECT_EQ(sender->stats().publish_failures, 0u);
}

TEST_F(MqttPlainTest, InboundBurstBeyondTheMemoryBudgetWaitsInAFileAndArrivesInOrder) {
  // 300 QoS 1 messages of 2 KiB reach a receiver that does not poll, through a budget of
  // 8 KiB: almost all are parked in the spill file, then delivered in order, intact.
  auto dir = TempDir::Create("inbox-spill");
  ASSERT_TRUE(dir.ok());
  auto sender = MakeClient(broker_->plain_uri(), "spill-send");
  auto receiver = MakeClient(broker_->plain_uri(), "spill-recv", [&](MqttTransportOptions& o) {
    o.queue_memory_budget = 8 * 1024;
    o.queue_spill_dir = dir->path();
  });
  ASSERT_TRUE(sender && receiver);
  Inbox in(*receiver);
  ASSERT_TRUE(receiver->Subscribe("fl/v1/d/spill/up/#", 1).ok());
  ConnectAll({sender.get(), receiver.get()});
  receiver->Drain();
  PublishOptions qos1;
  qos1.qos = 1;
  constexpr int kBurst = 300;
  auto payload_of = [](int i) {
    Bytes b(2048, static_cast<uint8_t>(i * 13));
    b[0] = static_cast<uint8_t>(i & 0xff);
    b[1] = static_cast<uint8_t>(i >> 8);
    return b;
  };
  for (int i = 0; i < kBurst; ++i) ASSERT_TRUE(sender->Publish("fl/v1/d/spill/up/m", payload_of(i), qos1).ok());
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  while (receiver->stats().received < kBurst && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // queued, not polled
  }
  ASSERT_EQ(receiver->stats().received, static_cast<uint64_t>(kBurst));
  EXPECT_GE(receiver->stats().parked, static_cast<uint64_t>(kBurst - 8));
  EXPECT_TRUE(std::filesystem::is_empty(dir->path()));  // anonymous file
  receiver->Drain();
  ASSERT_EQ(in.messages.size(), static_cast<size_t>(kBurst));
  for (int i = 0; i < kBurst; ++i) EXPECT_EQ(in.messages[i].payload, payload_of(i)) << "message " << i;
  EXPECT_EQ(receiver->stats().dropped_queue_full, 0u);
}

TEST_F(MqttPlainTest, RetainedPresenceAndWillOnAbruptConnectionLoss) {
  auto relay = testsupport::TcpRelay::Start(broker_->plain_port());
  ASSERT_TRUE(relay.ok()) << relay.status().ToString();
  const std::string presence = "fl/v1/d/will-dev/up/presence";
  auto dev = MakeClient((*relay)->uri(), "will-dev", [&](MqttTransportOptions& o) {
    o.will = MqttWill{presence, ToBytes("offline"), /*retain=*/true, /*qos=*/1, /*delay=*/0};
    o.automatic_reconnect = false;
  });
  auto clean = MakeClient(broker_->plain_uri(), "will-clean", [&](MqttTransportOptions& o) {
    o.will = MqttWill{"fl/v1/d/will-clean/up/presence", ToBytes("offline"), true, 1, 0};
  });
  auto coord = MakeClient(broker_->plain_uri(), "will-coord");
  ASSERT_TRUE(dev && clean && coord);
  Inbox dev_in(*dev), coord_in(*coord);
  ConnectAll({dev.get(), clean.get(), coord.get()});
  ASSERT_TRUE(coord->Subscribe("fl/v1/d/+/up/presence", 1).ok());

  ASSERT_TRUE(dev->Publish(presence, "online", Acked(/*retain=*/true)).ok());
  ASSERT_TRUE(PollUntil({coord.get()}, [&] { return coord_in.Count(presence) == 1; }, kWait));
  EXPECT_EQ(AsStringView(coord_in.messages.back().payload), "online");

  // A clean DISCONNECT discards the Will.
  ASSERT_TRUE(clean->Disconnect().ok());
  // The device's link dies without DISCONNECT: the broker publishes its Will.
  (*relay)->Sever();
  ASSERT_TRUE(PollUntil({coord.get()}, [&] { return coord_in.Count(presence) == 2; }, kWait))
      << "Will not received";
  EXPECT_EQ(AsStringView(coord_in.messages.back().payload), "offline");
  EXPECT_EQ(coord_in.Count("fl/v1/d/will-clean/up/presence"), 0u);

  // The device notices: connection lost, and (no auto reconnect) disconnected.
  ASSERT_TRUE(PollUntil({dev.get()}, [&] { return dev->state() == ConnectionState::kDisconnected; }, kWait));
  dev->Drain();
  ASSERT_FALSE(dev_in.states.empty());
  EXPECT_EQ(dev_in.states.back().first, ConnectionState::kDisconnected);
  EXPECT_EQ(dev_in.states.back().second.code(), StatusCode::kUnavailable);

  // The Will was retained: a late subscriber learns the device is offline.
  auto late = MakeClient(broker_->plain_uri(), "will-late");
  Inbox late_in(*late);
  ASSERT_TRUE(late->Subscribe(presence, 1).ok());
  ASSERT_TRUE(late->Connect().ok());
  ASSERT_TRUE(PollUntil({late.get()}, [&] { return late_in.Count(presence) == 1; }, kWait));
  EXPECT_TRUE(late_in.messages.back().retained);
  EXPECT_EQ(AsStringView(late_in.messages.back().payload), "offline");
  // Clean up the retained message so other tests start from an empty store.
  ASSERT_TRUE(late->Publish(presence, "", Acked(true)).ok());
}

TEST_F(MqttPlainTest, PayloadLimitsHoldLocallyAndAtTheBroker) {
  constexpr size_t kBig = 256 * 1024;
  auto sender = MakeClient(broker_->plain_uri(), "lim-send", [](MqttTransportOptions& o) { o.max_payload_size = kBig; });
  auto normal = MakeClient(broker_->plain_uri(), "lim-normal");
  auto receiver = MakeClient(broker_->plain_uri(), "lim-recv", [](MqttTransportOptions& o) { o.max_payload_size = kBig; });
  auto tiny = MakeClient(broker_->plain_uri(), "lim-tiny", [](MqttTransportOptions& o) { o.max_payload_size = 1024; });
  ASSERT_TRUE(sender && normal && receiver && tiny);
  Inbox recv_in(*receiver), tiny_in(*tiny);
  ConnectAll({sender.get(), normal.get(), receiver.get(), tiny.get()});
  ASSERT_TRUE(receiver->Subscribe("lim/#", 1).ok());
  ASSERT_TRUE(tiny->Subscribe("lim/#", 1).ok());

  // 1) Local: the default 128 KiB cap refuses before anything is sent.
  Status local = normal->Publish("lim/local", Bytes(kDefaultMaxPayloadBytes + 1, 1), Acked());
  EXPECT_EQ(local.code(), StatusCode::kResourceExhausted) << local.ToString();
  EXPECT_NE(local.message().find("131073"), std::string::npos) << local.ToString();
  ASSERT_TRUE(normal->Publish("lim/max", Bytes(kDefaultMaxPayloadBytes, 2), Acked()).ok());  // exactly the cap

  // 2) Broker: a client configured with a bigger local limit sends 200 KiB; Mosquitto's
  //    message_size_limit drops it and answers the QoS 1 PUBACK with an error.
  Status broker_side = sender->Publish("lim/broker", Bytes(200 * 1024, 3), Acked());
  EXPECT_FALSE(broker_side.ok()) << "message_size_limit did not refuse 200 KiB";
  ASSERT_TRUE(sender->Publish("lim/marker", "m", Acked()).ok());
  ASSERT_TRUE(PollUntil({receiver.get(), tiny.get()}, [&] { return recv_in.Count("lim/marker") == 1; }, kWait));
  EXPECT_EQ(recv_in.Count("lim/local"), 0u);
  EXPECT_EQ(recv_in.Count("lim/broker"), 0u) << "the broker forwarded an over-limit payload";
  EXPECT_EQ(recv_in.Count("lim/max"), 1u);

  // 3) Receive side: the 128 KiB message is over `tiny`'s 1 KiB limit: dropped, counted.
  ASSERT_TRUE(PollUntil({tiny.get()}, [&] { return tiny_in.Count("lim/marker") == 1; }, kWait));
  EXPECT_EQ(tiny_in.Count("lim/max"), 0u);
  EXPECT_EQ(tiny->stats().dropped_oversize, 1u);
}

// Runs last in this suite's file order: restarts the shared broker.
TEST_F(MqttPlainTest, ClientReconnectsAfterBrokerRestartAndSubscriptionsWorkAgain) {
  auto dev = MakeClient(broker_->plain_uri(), "rs-dev");
  auto coord = MakeClient(broker_->plain_uri(), "rs-coord");
  ASSERT_TRUE(dev && coord);
  Inbox dev_in(*dev), coord_in(*coord);
  ConnectAll({dev.get(), coord.get()});
  ASSERT_TRUE(dev->Subscribe("fl/v1/d/rs-dev/dn/#", 1).ok());
  ASSERT_TRUE(dev->Subscribe("fl/v1/g/all/dn/round", 1).ok());
  ASSERT_TRUE(coord->Publish("fl/v1/d/rs-dev/dn/cmd/ping", "before", Acked()).ok());
  ASSERT_TRUE(PollUntil({dev.get()}, [&] { return dev_in.Count("fl/v1/d/rs-dev/dn/cmd/ping") == 1; }, kWait));

  const uint16_t port = broker_->plain_port();
  const pid_t old_pid = broker_->pid();
  ASSERT_TRUE(broker_->Restart().ok());
  EXPECT_EQ(broker_->plain_port(), port);
  EXPECT_NE(broker_->pid(), old_pid);

  // Both see the loss, then reconnect on their own (back-off 1 s).
  ASSERT_TRUE(PollUntil({dev.get(), coord.get()},
                        [&] {
                          return dev->stats().reconnects >= 1 && coord->stats().reconnects >= 1 &&
                                 dev->state() == ConnectionState::kConnected &&
                                 coord->state() == ConnectionState::kConnected;
                        },
                        milliseconds(20000)))
      << "dev " << ToString(dev->state()) << ", coord " << ToString(coord->state());
  ASSERT_TRUE(dev->WaitConnected(kWait).ok());  // also waits for the restored subscriptions
  bool saw_reconnecting = false;
  for (const auto& [s, cause] : dev_in.states) saw_reconnecting |= s == ConnectionState::kReconnecting;
  EXPECT_TRUE(saw_reconnecting);
  EXPECT_EQ(dev->stats().resubscribes, 2u);  // clean session after a restart: both restored

  ASSERT_TRUE(coord->Publish("fl/v1/d/rs-dev/dn/cmd/ping", "after", Acked()).ok());
  ASSERT_TRUE(coord->Publish("fl/v1/g/all/dn/round", "round-1", Acked()).ok());
  ASSERT_TRUE(PollUntil({dev.get()},
                        [&] {
                          return dev_in.Count("fl/v1/d/rs-dev/dn/cmd/ping") == 2 &&
                                 dev_in.Count("fl/v1/g/all/dn/round") == 1;
                        },
                        kWait))
      << "subscriptions did not work after the restart";
}

// ---- mTLS --------------------------------------------------------------------------

class MqttTlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto dir = TempDir::Create("flotilla-mtls");
    ASSERT_TRUE(dir.ok());
    dir_ = new TempDir(std::move(*dir));
    auto pki = testsupport::TestPki::Create(dir_->path());
    ASSERT_TRUE(pki.ok()) << pki.status().ToString();
    pki_ = new testsupport::TestPki(std::move(*pki));
    MosquittoBrokerOptions o;
    o.tls = MosquittoTlsListenerOptions{pki_->ca_cert, pki_->broker_cert, pki_->broker_key, "coordinator"};
    auto b = MosquittoBroker::Start(o);
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    broker_ = std::move(*b).release();
  }
  static void TearDownTestSuite() {
    delete broker_;
    delete pki_;
    delete dir_;
  }
  void SetUp() override { ASSERT_NE(broker_, nullptr); }

  std::unique_ptr<MqttTransport> TlsClient(const std::string& name, bool with_cert = true) {
    MqttTlsOptions tls;
    tls.ca_file = pki_->ca_cert.string();
    if (with_cert) {
      auto files = pki_->IssueClient(name);
      EXPECT_TRUE(files.ok()) << files.status().ToString();
      if (!files.ok()) return nullptr;
      tls.cert_file = files->first.string();
      tls.key_file = files->second.string();
    }
    return MakeClient(broker_->tls_uri(), name, [&](MqttTransportOptions& o) { o.tls = tls; });
  }

  static TempDir* dir_;
  static testsupport::TestPki* pki_;
  static MosquittoBroker* broker_;
};
TempDir* MqttTlsTest::dir_ = nullptr;
testsupport::TestPki* MqttTlsTest::pki_ = nullptr;
MosquittoBroker* MqttTlsTest::broker_ = nullptr;

TEST_F(MqttTlsTest, DeviceMayOnlyUseItsOwnTopics) {
  auto dev1 = TlsClient("dev-1");
  auto dev2 = TlsClient("dev-2");
  auto coord = TlsClient("coordinator");
  ASSERT_TRUE(dev1 && dev2 && coord);
  Inbox dev1_in(*dev1), dev2_in(*dev2), coord_in(*coord);
  ConnectAll({dev1.get(), dev2.get(), coord.get()});
  ASSERT_TRUE(coord->Subscribe("fl/v1/d/+/up/#", 1).ok());
  ASSERT_TRUE(dev1->Subscribe("fl/v1/d/dev-1/dn/#", 1).ok());
  ASSERT_TRUE(dev1->Subscribe("fl/v1/g/+/dn/round", 1).ok());
  ASSERT_TRUE(dev2->Subscribe("fl/v1/d/dev-2/dn/#", 1).ok());

  // Own uplink: allowed and delivered.
  ASSERT_TRUE(dev1->Publish("fl/v1/d/dev-1/up/event/round-join", "mine", Acked()).ok());
  ASSERT_TRUE(PollUntil({coord.get()}, [&] { return coord_in.Count("fl/v1/d/dev-1/up/event/round-join") == 1; }, kWait));

  // Another device's uplink: the broker answers PUBACK "not authorized".
  Status forged = dev1->Publish("fl/v1/d/dev-2/up/event/round-join", "forged", Acked());
  EXPECT_EQ(forged.code(), StatusCode::kPermissionDenied) << forged.ToString();
  // Another device's downlink (as if commanding it): refused as well.
  Status cross = dev1->Publish("fl/v1/d/dev-2/dn/cmd/reboot", "forged", Acked());
  EXPECT_EQ(cross.code(), StatusCode::kPermissionDenied) << cross.ToString();
  // Reading another device's downlink: Mosquitto 2.0 grants the SUBSCRIBE (0x87 only for
  // some plugins) and applies the read ACL to every message instead; either way nothing
  // of dev-2's may reach dev-1 (checked below).
  Status snoop = dev1->Subscribe("fl/v1/d/dev-2/dn/#", 1);
  EXPECT_TRUE(snoop.ok() || snoop.code() == StatusCode::kPermissionDenied) << snoop.ToString();

  // Coordinator → device and group downlinks work.
  ASSERT_TRUE(coord->Publish("fl/v1/d/dev-1/dn/cmd/ping", "hi", Acked()).ok());
  ASSERT_TRUE(coord->Publish("fl/v1/g/all/dn/round", "round", Acked()).ok());
  ASSERT_TRUE(coord->Publish("fl/v1/d/dev-2/dn/cmd/ping", "marker", Acked()).ok());
  ASSERT_TRUE(dev1->Publish("fl/v1/d/dev-1/up/event/marker", "m", Acked()).ok());
  ASSERT_TRUE(PollUntil({dev1.get(), dev2.get(), coord.get()},
                        [&] {
                          return dev1_in.Count("fl/v1/d/dev-1/dn/cmd/ping") == 1 &&
                                 dev1_in.Count("fl/v1/g/all/dn/round") == 1 &&
                                 dev2_in.Count("fl/v1/d/dev-2/dn/cmd/ping") == 1 &&
                                 coord_in.Count("fl/v1/d/dev-1/up/event/marker") == 1;
                        },
                        kWait));
  // The forged messages never arrived anywhere.
  EXPECT_EQ(coord_in.Count("fl/v1/d/dev-2/up/event/round-join"), 0u);
  EXPECT_EQ(dev2_in.Count("fl/v1/d/dev-2/dn/cmd/reboot"), 0u);
  EXPECT_EQ(dev1_in.messages.size(), 2u) << "dev-1 must not see dev-2's downlink";
}

TEST_F(MqttTlsTest, ClientWithoutCertificateCannotConnect) {
  auto anon = TlsClient("anon", /*with_cert=*/false);
  ASSERT_TRUE(anon);
  Status s = anon->Connect();
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(anon->state(), ConnectionState::kDisconnected);
  EXPECT_EQ(anon->Publish("fl/v1/d/anon/up/x", "x", {}).code(), StatusCode::kUnavailable);
}

TEST_F(MqttTlsTest, CertificateFromAnotherCaIsRejected) {
  auto other_dir = TempDir::Create("flotilla-mtls-other");
  ASSERT_TRUE(other_dir.ok());
  auto other = testsupport::TestPki::Create(other_dir->path());
  ASSERT_TRUE(other.ok());
  auto files = other->IssueClient("dev-1");  // right CN, wrong CA
  ASSERT_TRUE(files.ok());
  MqttTlsOptions tls{pki_->ca_cert.string(), files->first.string(), files->second.string(), true};
  auto rogue = MakeClient(broker_->tls_uri(), "dev-1", [&](MqttTransportOptions& o) { o.tls = tls; });
  ASSERT_TRUE(rogue);
  EXPECT_FALSE(rogue->Connect().ok());
}

TEST_F(MqttTlsTest, ClientRefusesABrokerItDoesNotTrust) {
  auto other_dir = TempDir::Create("flotilla-mtls-other");
  ASSERT_TRUE(other_dir.ok());
  auto other = testsupport::TestPki::Create(other_dir->path());
  ASSERT_TRUE(other.ok());
  auto files = pki_->IssueClient("dev-9");
  ASSERT_TRUE(files.ok());
  // Valid client certificate, but the client trusts a different CA than the broker's.
  MqttTlsOptions tls{other->ca_cert.string(), files->first.string(), files->second.string(), true};
  auto c = MakeClient(broker_->tls_uri(), "dev-9", [&](MqttTransportOptions& o) { o.tls = tls; });
  ASSERT_TRUE(c);
  EXPECT_FALSE(c->Connect().ok());
}

}  // namespace
}  // namespace flotilla::protocol
