// MqttTransport behaviour that needs no broker, and the generated Mosquitto files.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <set>

#include <gtest/gtest.h>

#include "flotilla/core/testing/seeded_random.h"
#include "flotilla/protocol/mosquitto_broker.h"
#include "flotilla/protocol/mqtt_transport.h"

namespace flotilla::protocol {
namespace {

MqttTransportOptions Plain(const std::string& id, const std::string& uri = "tcp://127.0.0.1:1") {
  MqttTransportOptions o;
  o.server_uri = uri;
  o.client_id = id;
  return o;
}

TEST(MqttTransportOptionsTest, RejectsInvalidOptions) {
  auto bad = [](MqttTransportOptions o) { return MqttTransport::Create(std::move(o)).status().code(); };
  EXPECT_EQ(bad(Plain("c", "http://127.0.0.1:1")), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad(Plain("c", "ssl://127.0.0.1:1")), StatusCode::kInvalidArgument);  // no tls options
  EXPECT_EQ(bad(Plain("")), StatusCode::kInvalidArgument);
  MqttTransportOptions tls_on_tcp = Plain("c");
  tls_on_tcp.tls = MqttTlsOptions{};
  EXPECT_EQ(bad(tls_on_tcp), StatusCode::kInvalidArgument);
  MqttTransportOptions cert_without_key = Plain("c", "ssl://127.0.0.1:1");
  cert_without_key.tls = MqttTlsOptions{"ca.pem", "dev.pem", "", true};
  EXPECT_EQ(bad(cert_without_key), StatusCode::kInvalidArgument);
  MqttTransportOptions backoff = Plain("c");
  backoff.reconnect_min_backoff_low = std::chrono::seconds(5);
  backoff.reconnect_min_backoff_high = std::chrono::seconds(2);
  EXPECT_EQ(bad(backoff), StatusCode::kInvalidArgument);
  MqttTransportOptions will = Plain("c");
  will.will = MqttWill{"fl/v1/d/+/up/presence", ToBytes("offline"), true, 1, 0};
  EXPECT_EQ(bad(will), StatusCode::kInvalidArgument);  // wildcard in the Will topic
  EXPECT_TRUE(MqttTransport::Create(Plain("ok")).ok());
}

TEST(MqttTransportOptionsTest, ReconnectBackoffIsJitteredPerClientWithinBounds) {
  testing::SeededRandom rng(42);
  std::set<int64_t> firsts;
  for (int i = 0; i < 40; ++i) {
    MqttTransportOptions o = Plain("c" + std::to_string(i));
    o.reconnect_min_backoff_low = std::chrono::seconds(2);
    o.reconnect_min_backoff_high = std::chrono::seconds(5);
    o.reconnect_max_backoff = std::chrono::seconds(120);
    o.random = &rng;
    auto t = MqttTransport::Create(o);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    const auto [first, max] = (*t)->reconnect_backoff();
    EXPECT_GE(first.count(), 2);
    EXPECT_LE(first.count(), 5);
    EXPECT_GE(max.count(), 120);
    EXPECT_LE(max.count(), 150);
    firsts.insert(first.count());
  }
  EXPECT_EQ(firsts.size(), 4u) << "40 clients should cover every second in [2, 5]";
}

TEST(MqttTransportOptionsTest, RefusesBadPublishesLocallyBeforeConnecting) {
  MqttTransportOptions o = Plain("c");
  o.max_payload_size = 1000;
  auto t = MqttTransport::Create(o);
  ASSERT_TRUE(t.ok());
  MqttTransport& c = **t;
  EXPECT_EQ(c.state(), ConnectionState::kDisconnected);
  EXPECT_EQ(c.max_payload_size(), 1000u);
  Status over = c.Publish("fl/v1/d/c/up/x", Bytes(1001, 0), {});
  EXPECT_EQ(over.code(), StatusCode::kResourceExhausted) << over.ToString();
  EXPECT_NE(over.message().find("1001"), std::string::npos);
  EXPECT_NE(over.message().find("nothing was sent"), std::string::npos);
  PublishOptions q2;
  q2.qos = 2;
  EXPECT_EQ(c.Publish("a/b", "x", q2).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c.Publish("a/#", "x", {}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c.Publish("a/b", "x", {}).code(), StatusCode::kUnavailable);  // not connected
  EXPECT_EQ(c.stats().publish_failures, 4u);
  EXPECT_EQ(c.stats().published, 0u);
  // Subscriptions before connecting are remembered (sent on connect); bad ones refused.
  EXPECT_TRUE(c.Subscribe("fl/v1/d/c/dn/#", 1).ok());
  EXPECT_EQ(c.Subscribe("fl/#/x", 1).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(c.Unsubscribe("fl/v1/d/c/dn/#").ok());
  EXPECT_EQ(c.Unsubscribe("fl/v1/d/c/dn/#").code(), StatusCode::kNotFound);
  // Disconnect without a connection, twice: harmless.
  EXPECT_TRUE(c.Disconnect().ok());
  EXPECT_TRUE(c.Disconnect().ok());
}

TEST(MqttTransportOptionsTest, ConnectToAClosedPortFailsWithUnavailable) {
  // A bound but non-listening socket: connections to it are refused, and no one else can
  // take the port while we hold it.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  MqttTransportOptions o = Plain("c", "tcp://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)));
  o.connect_timeout = std::chrono::seconds(5);
  auto t = MqttTransport::Create(o);
  ASSERT_TRUE(t.ok());
  std::vector<std::pair<ConnectionState, Status>> states;
  (*t)->SetConnectionStateHandler([&](ConnectionState s, const Status& c) { states.emplace_back(s, c); });
  Status s = (*t)->Connect();
  ::close(fd);
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_EQ((*t)->state(), ConnectionState::kDisconnected);
  (*t)->Drain();
  ASSERT_FALSE(states.empty());
  EXPECT_EQ(states.front().first, ConnectionState::kConnecting);
  EXPECT_EQ(states.back().first, ConnectionState::kDisconnected);
  EXPECT_FALSE(states.back().second.ok());
  EXPECT_TRUE((*t)->Disconnect().ok());
}

TEST(MqttTransportOptionsTest, RaiseFileDescriptorLimitReachesTheHardLimit) {
  rlimit before{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &before), 0);
  auto raised = RaiseFileDescriptorLimit();
  ASSERT_TRUE(raised.ok()) << raised.status().ToString();
  EXPECT_EQ(*raised, static_cast<uint64_t>(before.rlim_max));
  rlimit after{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &after), 0);
  EXPECT_EQ(after.rlim_cur, after.rlim_max);
}

TEST(MosquittoConfigTest, PlainConfigHasTheRequiredSettings) {
  MosquittoBrokerOptions o;
  const std::string conf = RenderMosquittoConfig(o, 40001, 0, "/w/mosquitto.log", "/w/acl");
  for (const char* line :
       {"per_listener_settings true\n", "persistence false\n", "max_inflight_messages 0\n",
        "max_queued_messages 10000\n", "message_size_limit 131072\n", "max_packet_size 262144\n",
        "set_tcp_nodelay true\n", "log_dest file /w/mosquitto.log\n", "listener 40001 127.0.0.1\n",
        "allow_anonymous true\n"}) {
    EXPECT_NE(conf.find(line), std::string::npos) << "missing: " << line << "in\n" << conf;
  }
  EXPECT_EQ(conf.find("require_certificate"), std::string::npos);
  EXPECT_EQ(conf.find("acl_file"), std::string::npos);
}

TEST(MosquittoConfigTest, TlsListenerRequiresCertificatesAndAcl) {
  MosquittoBrokerOptions o;
  o.tls = MosquittoTlsListenerOptions{"/w/ca.crt", "/w/srv.crt", "/w/srv.key", "coordinator"};
  o.extra_config_lines = {"# extra"};
  const std::string conf = RenderMosquittoConfig(o, 40001, 40002, "/w/log", "/w/acl");
  const size_t tls = conf.find("listener 40002 127.0.0.1\n");
  ASSERT_NE(tls, std::string::npos) << conf;
  const std::string tls_block = conf.substr(tls);
  for (const char* line :
       {"cafile /w/ca.crt\n", "certfile /w/srv.crt\n", "keyfile /w/srv.key\n", "require_certificate true\n",
        "use_identity_as_username true\n", "use_username_as_clientid true\n", "allow_anonymous false\n",
        "acl_file /w/acl\n", "# extra\n"}) {
    EXPECT_NE(tls_block.find(line), std::string::npos) << "missing in TLS listener: " << line;
  }
  // The plain listener stays anonymous-only and comes first.
  EXPECT_LT(conf.find("listener 40001 127.0.0.1\nallow_anonymous true\n"), tls);
}

TEST(MosquittoConfigTest, AclConfinesDevicesToTheirOwnTopics) {
  const std::string acl = RenderMosquittoAcl("coord-1");
  for (const char* line : {"pattern write fl/v1/d/%u/up/#\n", "pattern write fl/v1/d/%u/rs/#\n",
                           "pattern read fl/v1/d/%u/dn/#\n", "pattern read fl/v1/g/#\n", "user coord-1\n",
                           "topic readwrite fl/v1/#\n"}) {
    EXPECT_NE(acl.find(line), std::string::npos) << "missing: " << line;
  }
  EXPECT_EQ(acl.find("pattern read fl/v1/d/%u/up"), std::string::npos) << "devices do not read their own uplink";
  EXPECT_EQ(acl.find("readwrite fl/v1/d/%u"), std::string::npos);
  // Patterns come before the user block (they apply to everyone).
  EXPECT_LT(acl.find("pattern read fl/v1/g/#"), acl.find("user coord-1"));
}

}  // namespace
}  // namespace flotilla::protocol
