// 1,000 MqttTransport clients in one process against a real Mosquitto: all connect,
// each subscribes to its own dn topic and the group topic, ONE group publish reaches all
// of them (fan-out) and one publish from each reaches a coordinator (fan-in).
// Timings are printed, never asserted (benchmarks: bench/mqtt_bench.cc).
#include <chrono>
#include <cstdio>
#include <set>

#include <gtest/gtest.h>

#include "flotilla/protocol/mosquitto_broker.h"
#include "flotilla/protocol/mqtt_transport.h"
#include "transport_test_support.h"

namespace flotilla::protocol {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kDevices = 1000;

double SecondsSince(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string DeviceId(int i) { return "sim-" + std::to_string(i); }

TEST(MqttScaleTest, ThousandClientsFanOutAndFanIn) {
  auto limit = RaiseFileDescriptorLimit();
  ASSERT_TRUE(limit.ok()) << limit.status().ToString();
  ASSERT_GE(*limit, static_cast<uint64_t>(kDevices + 200))
      << "the hard RLIMIT_NOFILE is too low for 1,000 clients; raise it (ulimit -Hn)";

  auto broker = MosquittoBroker::Start({});
  ASSERT_TRUE(broker.ok()) << broker.status().ToString();
  const std::string uri = (*broker)->plain_uri();

  std::vector<std::unique_ptr<MqttTransport>> devices;
  std::vector<size_t> device_got(kDevices, 0);
  std::vector<Transport*> device_ptrs;
  devices.reserve(kDevices);
  for (int i = 0; i < kDevices; ++i) {
    MqttTransportOptions o;
    o.server_uri = uri;
    o.client_id = DeviceId(i);
    o.keepalive = std::chrono::seconds(300);  // simulator setting: idle keepalives cost CPU
    o.connect_timeout = std::chrono::seconds(30);
    o.queue_capacity = 64;
    auto t = MqttTransport::Create(o);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    (*t)->SetMessageHandler([&device_got, i](const Message&) { ++device_got[static_cast<size_t>(i)]; });
    device_ptrs.push_back(t->get());
    devices.push_back(std::move(*t));
  }
  MqttTransportOptions co;
  co.server_uri = uri;
  co.client_id = "coordinator";
  co.queue_capacity = 2 * kDevices;
  auto coord_or = MqttTransport::Create(co);
  ASSERT_TRUE(coord_or.ok());
  MqttTransport& coord = **coord_or;
  std::set<std::string> uplink_topics;
  coord.SetMessageHandler([&](const Message& m) { uplink_topics.insert(m.topic); });
  ASSERT_TRUE(coord.Connect().ok());
  ASSERT_TRUE(coord.Subscribe("fl/v1/d/+/up/#", 1).ok());

  // Connect: one burst, then wait for each.
  auto t0 = Clock::now();
  for (auto& d : devices) ASSERT_TRUE(d->StartConnect().ok());
  for (auto& d : devices) {
    Status s = d->WaitConnected(std::chrono::seconds(60));
    ASSERT_TRUE(s.ok()) << d->client_id() << ": " << s.ToString();
  }
  const double connect_s = SecondsSince(t0);

  t0 = Clock::now();
  for (int i = 0; i < kDevices; ++i) {
    ASSERT_TRUE(devices[static_cast<size_t>(i)]->Subscribe("fl/v1/d/" + DeviceId(i) + "/dn/#", 1).ok());
    ASSERT_TRUE(devices[static_cast<size_t>(i)]->Subscribe("fl/v1/g/sim/dn/round", 1).ok());
  }
  const double subscribe_s = SecondsSince(t0);

  // Fan-out: ONE publish on the group topic reaches every device.
  t0 = Clock::now();
  PublishOptions acked;
  acked.ack_timeout = std::chrono::seconds(10);
  ASSERT_TRUE(coord.Publish("fl/v1/g/sim/dn/round", "round-1", acked).ok());
  size_t reached = 0;
  const bool all_reached = testsupport::PollUntil(
      device_ptrs,
      [&] {
        reached = 0;
        for (size_t n : device_got) reached += n >= 1 ? 1 : 0;
        return reached == static_cast<size_t>(kDevices);
      },
      std::chrono::seconds(60));
  const double fanout_s = SecondsSince(t0);
  ASSERT_TRUE(all_reached) << "fan-out reached " << reached << " of " << kDevices;
  for (size_t n : device_got) EXPECT_EQ(n, 1u);

  // Fan-in: each device publishes once on its own up topic.
  t0 = Clock::now();
  PublishOptions fire;  // QoS 1 without waiting: the broker still acks, Paho tracks it
  for (int i = 0; i < kDevices; ++i) {
    Status s = devices[static_cast<size_t>(i)]->Publish("fl/v1/d/" + DeviceId(i) + "/up/event/round-join",
                                                        std::to_string(i), fire);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  const bool all_in = testsupport::PollUntil(
      {&coord}, [&] { return uplink_topics.size() == static_cast<size_t>(kDevices); }, std::chrono::seconds(60));
  const double fanin_s = SecondsSince(t0);
  ASSERT_TRUE(all_in) << "fan-in delivered " << uplink_topics.size() << " of " << kDevices;
  EXPECT_EQ(coord.stats().dropped_queue_full, 0u);
  EXPECT_EQ(coord.stats().received, static_cast<uint64_t>(kDevices));

  t0 = Clock::now();
  devices.clear();
  const double teardown_s = SecondsSince(t0);
  std::printf("[ timing ] %d clients: connect %.2f s, subscribe x2 %.2f s, fan-out %.3f s, fan-in %.3f s, "
              "disconnect+destroy %.2f s\n",
              kDevices, connect_s, subscribe_s, fanout_s, fanin_s, teardown_s);
}

}  // namespace
}  // namespace flotilla::protocol
