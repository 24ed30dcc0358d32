// DeviceEndpoint over the in-memory broker: enrolment round trip, presence (incl. the
// Will), reported state, and refusals (unknown, revoked, forged, replayed, wrong topic).
#include "flotilla/coordinator/device_endpoint.h"

#include <gtest/gtest.h>

#include "flotilla/protocol/testing/in_memory_transport.h"
#include "pki_test_util.h"

namespace flotilla::coordinator {
namespace {

using protocol::testing::InMemoryBroker;
using protocol::testing::InMemoryTransport;
using testutil::Must;
using testutil::TestFleet;

protocol::testing::InMemoryTransportOptions Options(std::string id, std::optional<protocol::Message> will = {}) {
  protocol::testing::InMemoryTransportOptions o;
  o.client_id = std::move(id);
  o.will = std::move(will);
  return o;
}

class DeviceEndpointTest : public testutil::StoreFixture {
 protected:
  DeviceEndpointTest()
      : broker_(std::make_shared<InMemoryBroker>()),
        coordinator_(broker_, Options("coordinator")),
        enrolment_(*store_, fleet_.ca_pem(), {}, RealClock()),
        endpoint_(coordinator_, *store_, enrolment_, fleet_.coordinator_signer(), RealClock(),
                  security::SystemCsprng()) {
    EXPECT_TRUE(coordinator_.Connect().ok());
    EXPECT_TRUE(endpoint_.Start().ok());
    endpoint_.SetUplinkHandler([this](const protocol::Topic& t, const protocol::OpenedEnvelope&) { uplinks_.push_back(t); });
  }

  std::unique_ptr<InMemoryTransport> DeviceTransport(const std::string& id) {
    auto t = std::make_unique<InMemoryTransport>(broker_, Options(id));
    EXPECT_TRUE(t->Connect().ok());
    return t;
  }

  template <typename Msg>
  void Send(const testutil::TestDevice& d, InMemoryTransport& t, const protocol::Topic& topic, const Msg& msg,
            bool retain = false) {
    Bytes wire = TestFleet::Seal(*d.signer, msg, RealClock());
    protocol::PublishOptions po;
    po.retain = retain;
    ASSERT_TRUE(t.Publish(Must(protocol::FormatTopic(topic)), wire, po).ok());
    coordinator_.Drain();
  }

  void Enrol(const testutil::TestDevice& d, InMemoryTransport& t) {
    Send(d, t, protocol::Topic::Event(d.id, "enrol"), TestFleet::RequestFor(d));
  }

  static v1::Presence Presence(v1::PresenceState s, const std::string& session) {
    v1::Presence p;
    p.set_state(s);
    p.set_session_id(session);
    p.set_timestamp_ms(RealClock().NowUnixMillis());
    return p;
  }

  TestFleet fleet_;
  std::shared_ptr<InMemoryBroker> broker_;
  InMemoryTransport coordinator_;
  Enrolment enrolment_;
  DeviceEndpoint endpoint_;
  std::vector<protocol::Topic> uplinks_;
};

TEST_F(DeviceEndpointTest, EnrolmentIsAnsweredWithASignedResponse) {
  auto& d = fleet_.Device("dev-1");
  auto t = DeviceTransport("dev-1");
  std::vector<protocol::Message> got;
  t->SetMessageHandler([&](const protocol::Message& m) { got.push_back(m); });
  ASSERT_TRUE(t->Subscribe("fl/v1/d/dev-1/dn/#", 1).ok());
  Enrol(d, *t);
  t->Drain();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].topic, "fl/v1/d/dev-1/dn/cmd/enrolment");
  security::KeyRing ring;
  ring.Add("coordinator", fleet_.coordinator_public_key());
  protocol::OpenOptions oo;
  oo.recipients = {"dev-1"};
  auto env = Must(protocol::Open(got[0].payload, ring, RealClock(), oo));
  auto resp = Must(protocol::UnpackPayload<v1::EnrolmentResponse>(env));
  EXPECT_TRUE(resp.accepted()) << resp.reason();
  EXPECT_EQ(Must(store_->GetDevice("dev-1")).status, DeviceStatus::kActive);
  EXPECT_EQ(endpoint_.stats().enrolments, 1u);
}

TEST_F(DeviceEndpointTest, PresenceReportedAndTheWillUpdateTheStore) {
  auto& d = fleet_.Device("dev-1");
  auto t = DeviceTransport("dev-1");
  // Before enrolment the device is unknown: refused, nothing stored.
  Send(d, *t, protocol::Topic::Presence("dev-1"), Presence(v1::PRESENCE_STATE_ONLINE, "s1"));
  EXPECT_EQ(endpoint_.stats().refused, 1u);
  Enrol(d, *t);
  Send(d, *t, protocol::Topic::Presence("dev-1"), Presence(v1::PRESENCE_STATE_ONLINE, "s1"), true);
  EXPECT_EQ(Must(store_->GetDevice("dev-1")).presence, PresenceState::kOnline);
  v1::ReportedState rs;
  rs.set_adapter_version("adapter-3");
  rs.set_timestamp_ms(RealClock().NowUnixMillis());
  rs.mutable_eligibility()->set_charging(true);
  Send(d, *t, protocol::Topic::Reported("dev-1"), rs, true);
  DeviceRecord rec = Must(store_->GetDevice("dev-1"));
  v1::ReportedState back;
  ASSERT_TRUE(back.ParseFromArray(rec.reported_state.data(), static_cast<int>(rec.reported_state.size())));
  EXPECT_EQ(back.adapter_version(), "adapter-3");
  // A pre-signed OFFLINE as the Will: the broker publishes it when the link dies.
  Bytes will = TestFleet::Seal(*d.signer, Presence(v1::PRESENCE_STATE_OFFLINE, "s1"), RealClock());
  protocol::Message will_msg;
  will_msg.topic = "fl/v1/d/dev-1/up/presence";
  will_msg.payload = will;
  will_msg.qos = 1;
  will_msg.retained = true;
  auto t2 = std::make_unique<InMemoryTransport>(broker_, Options("dev-1b", will_msg));
  ASSERT_TRUE(t2->Connect().ok());
  t2->DropConnection();
  coordinator_.Drain();
  EXPECT_EQ(Must(store_->GetDevice("dev-1")).presence, PresenceState::kOffline);
  EXPECT_TRUE(uplinks_.empty());
  v1::RoundResponse rr;
  rr.set_round_id("r-1");
  Send(d, *t, protocol::Topic::Event("dev-1", "round"), rr);
  ASSERT_EQ(uplinks_.size(), 1u);  // handed to the round engine's hook
}

TEST_F(DeviceEndpointTest, RevokedForgedReplayedAndMisroutedMessagesAreDropped) {
  auto& d1 = fleet_.Device("dev-1");
  auto& d2 = fleet_.Device("dev-2");
  auto t1 = DeviceTransport("dev-1");
  auto t2 = DeviceTransport("dev-2");
  Enrol(d1, *t1);
  Enrol(d2, *t2);
  const uint64_t refused0 = endpoint_.stats().refused;
  // dev-2 signs a presence and publishes it on dev-1's topic (no ACLs in the fake broker).
  Send(d2, *t2, protocol::Topic::Presence("dev-1"), Presence(v1::PRESENCE_STATE_ONLINE, "x"));
  EXPECT_EQ(Must(store_->GetDevice("dev-1")).presence, PresenceState::kUnknown);
  // Replay of dev-1's own message.
  Bytes wire = TestFleet::Seal(*d1.signer, Presence(v1::PRESENCE_STATE_ONLINE, "s1"), RealClock());
  ASSERT_TRUE(t1->Publish("fl/v1/d/dev-1/up/presence", wire, {}).ok());
  coordinator_.Drain();
  EXPECT_EQ(Must(store_->GetDevice("dev-1")).presence, PresenceState::kOnline);
  ASSERT_TRUE(store_->SetPresence("dev-1", PresenceState::kOffline, "s1", RealClock().NowUnixMillis() + 1).ok());
  ASSERT_TRUE(t1->Publish("fl/v1/d/dev-1/up/presence", wire, {}).ok());
  coordinator_.Drain();
  EXPECT_EQ(Must(store_->GetDevice("dev-1")).presence, PresenceState::kOffline);
  // Garbage.
  ASSERT_TRUE(t1->Publish("fl/v1/d/dev-1/up/reported", std::string_view("junk"), {}).ok());
  coordinator_.Drain();
  // Revoked device.
  ASSERT_TRUE(store_->RevokeDevice("dev-2", "lost", "cli").ok());
  Send(d2, *t2, protocol::Topic::Presence("dev-2"), Presence(v1::PRESENCE_STATE_ONLINE, "s9"));
  EXPECT_EQ(Must(store_->GetDevice("dev-2")).presence, PresenceState::kUnknown);
  EXPECT_EQ(endpoint_.stats().refused, refused0 + 4);
}

}  // namespace
}  // namespace flotilla::coordinator
