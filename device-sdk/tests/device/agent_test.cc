// DeviceAgent unit tests against a scripted coordinator on the in-memory transport.
// Whole rounds with the real RoundDriver are in coordinator/tests/rounds.
#include "flotilla/device/agent.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <thread>

#include "device/agent_store.h"
#include "flotilla/core/file.h"
#include "flotilla/core/testing/fake_clock.h"
#include "flotilla/protocol/envelope.h"
#include "flotilla/protocol/payload.h"
#include "flotilla/protocol/testing/fake_signer.h"
#include "flotilla/protocol/testing/in_memory_transport.h"
#include "flotilla/protocol/topics.h"
#include "flotilla/security/hash.h"

namespace flotilla::device {
namespace {

using protocol::testing::FakeSigner;
using protocol::testing::FakeVerifier;
using protocol::testing::InMemoryBroker;
using protocol::testing::InMemoryTransport;
using protocol::testing::InMemoryTransportOptions;

const std::string kModel(32, '\x11');

class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::Create("agent-test");
    ASSERT_TRUE(dir.ok());
    dir_.emplace(std::move(*dir));
    broker_ = std::make_shared<InMemoryBroker>();
    verifier_ = std::make_shared<FakeVerifier>();
    verifier_->Add("coordinator", 7);
    verifier_->Add("dev-1", 101);
    InMemoryTransportOptions o;
    o.client_id = "coordinator";
    coord_ = std::make_unique<InMemoryTransport>(broker_, o);
    ASSERT_TRUE(coord_->Connect().ok());
    coord_->SetMessageHandler([this](const protocol::Message& m) { uplink_.push_back(m); });
    ASSERT_TRUE(coord_->Subscribe("fl/v1/d/+/up/#", 1).ok());
  }

  std::unique_ptr<DeviceAgent> MakeAgent(const std::function<void(DeviceAgentConfig&, DeviceAgentDeps&)>& tweak = {}) {
    DeviceAgentConfig c;
    c.device_id = "dev-1";
    c.data_dir = dir_->path() / "dev-1";
    c.groups = {"g1"};
    c.base_model.set_version("base-1");
    c.base_model.set_sha256(kModel);
    c.firmware_version = "fw-9";
    DeviceAgentDeps d;
    d.transport_factory = [this](const protocol::Message& will) -> Result<std::unique_ptr<protocol::Transport>> {
      InMemoryTransportOptions o;
      o.client_id = "dev-1";
      o.will = will;
      auto t = std::make_unique<InMemoryTransport>(broker_, o);
      device_transport_ = t.get();
      return std::unique_ptr<protocol::Transport>(std::move(t));
    };
    d.signer = std::make_shared<FakeSigner>("dev-1", 101);
    d.verifier = verifier_;
    d.trainer = std::make_shared<SeededLocalTrainer>(1, 10);
    d.clock = &clock_;
    if (tweak) tweak(c, d);
    auto agent = DeviceAgent::Open(std::move(c), std::move(d));
    EXPECT_TRUE(agent.ok()) << agent.status().ToString();
    return agent.ok() ? std::move(*agent) : nullptr;
  }

  // Seals `msg` as the coordinator and publishes it on `topic` for `recipient`.
  template <typename Msg>
  void FromCoordinator(const std::string& topic, const Msg& msg, const std::string& recipient, uint64_t key = 7,
                       const std::string& sender = "coordinator") {
    FakeSigner signer(sender, key);
    auto wire = protocol::SealMessage(signer, msg, recipient, clock_, OsRandom());
    ASSERT_TRUE(wire.ok()) << wire.status().ToString();
    last_wire_ = *wire;
    ASSERT_TRUE(coord_->Publish(topic, *wire, protocol::PublishOptions{}).ok());
  }

  // Drains the coordinator's inbox; returns the uplink messages of `type`.
  std::vector<protocol::OpenedEnvelope> Uplink(protocol::PayloadType type) {
    coord_->Drain();
    std::vector<protocol::OpenedEnvelope> out;
    protocol::OpenOptions oo;
    oo.recipients = {"coordinator"};
    for (const auto& m : uplink_) {
      auto e = protocol::Open(m.payload, *verifier_, clock_, oo);
      if (e.ok() && e->payload_type == type) out.push_back(*e);
    }
    return out;
  }

  v1::RoundAnnouncement Announcement(const std::string& id) {
    v1::RoundAnnouncement a;
    a.set_round_id(id);
    a.set_group("g1");
    a.mutable_base_model()->set_sha256(kModel);
    a.set_check_in_deadline_ms(clock_.NowUnixMillis() + 10000);
    return a;
  }

  std::optional<TempDir> dir_;
  flotilla::testing::FakeClock clock_;
  std::shared_ptr<InMemoryBroker> broker_;
  std::shared_ptr<FakeVerifier> verifier_;
  std::unique_ptr<InMemoryTransport> coord_;
  InMemoryTransport* device_transport_ = nullptr;
  std::vector<protocol::Message> uplink_;
  Bytes last_wire_;
};

TEST_F(AgentTest, PublishesRetainedPresenceAndReportedStateAndLeavesAnOfflineWill) {
  auto agent = MakeAgent();
  ASSERT_TRUE(agent->Connect(std::chrono::seconds(1)).ok());
  protocol::OpenOptions oo;
  oo.recipients = {"coordinator"};
  auto presence = broker_->Retained("fl/v1/d/dev-1/up/presence");
  ASSERT_TRUE(presence.has_value());
  auto env = protocol::Open(presence->payload, *verifier_, clock_, oo);
  ASSERT_TRUE(env.ok());
  auto p = protocol::UnpackPayload<v1::Presence>(*env);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->state(), v1::PRESENCE_STATE_ONLINE);
  const std::string session = p->session_id();
  auto reported = broker_->Retained("fl/v1/d/dev-1/up/reported");
  ASSERT_TRUE(reported.has_value());
  auto renv = protocol::Open(reported->payload, *verifier_, clock_, oo);
  ASSERT_TRUE(renv.ok());
  auto r = protocol::UnpackPayload<v1::ReportedState>(*renv);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->base_model().sha256(), kModel);
  EXPECT_EQ(r->firmware_version(), "fw-9");
  EXPECT_TRUE(r->eligibility().charging());
  ASSERT_EQ(r->groups_size(), 1);

  device_transport_->DropConnection();  // the broker publishes the Will
  presence = broker_->Retained("fl/v1/d/dev-1/up/presence");
  ASSERT_TRUE(presence.has_value());
  env = protocol::Open(presence->payload, *verifier_, clock_, oo);
  ASSERT_TRUE(env.ok());
  p = protocol::UnpackPayload<v1::Presence>(*env);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->state(), v1::PRESENCE_STATE_OFFLINE);
  EXPECT_EQ(p->session_id(), session);
}

TEST_F(AgentTest, ChecksInOnlyWhenTheLocalPolicyAllows) {
  bool charging = false;
  auto agent = MakeAgent([&](DeviceAgentConfig& c, DeviceAgentDeps& d) {
    c.policy.require_charging = true;
    d.eligibility = [&] {
      v1::Eligibility e;
      e.set_charging(charging);
      e.set_battery_percent(50);
      return e;
    };
  });
  ASSERT_TRUE(agent->Connect(std::chrono::seconds(1)).ok());
  FromCoordinator("fl/v1/g/g1/dn/round", Announcement("r1"), "group:g1");
  agent->Poll(std::chrono::milliseconds(0));
  EXPECT_TRUE(Uplink(v1::PAYLOAD_TYPE_ROUND_CHECK_IN).empty());
  charging = true;
  FromCoordinator("fl/v1/g/g1/dn/round", Announcement("r2"), "group:g1");
  agent->Poll(std::chrono::milliseconds(0));
  auto checkins = Uplink(v1::PAYLOAD_TYPE_ROUND_CHECK_IN);
  ASSERT_EQ(checkins.size(), 1u);
  auto c = protocol::UnpackPayload<v1::RoundCheckIn>(checkins[0]);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->round_id(), "r2");
  EXPECT_EQ(agent->status().last_round_state, "checked_in");
  // Another base model: ignored.
  v1::RoundAnnouncement other = Announcement("r3");
  other.mutable_base_model()->set_sha256(std::string(32, '\x22'));
  FromCoordinator("fl/v1/g/g1/dn/round", other, "group:g1");
  agent->Poll(std::chrono::milliseconds(0));
  EXPECT_EQ(Uplink(v1::PAYLOAD_TYPE_ROUND_CHECK_IN).size(), 1u);
}

TEST_F(AgentTest, DeclinesInvitationsItCannotHonour) {
  auto agent = MakeAgent();
  ASSERT_TRUE(agent->Connect(std::chrono::seconds(1)).ok());
  // Not checked in at all.
  v1::RoundInvitation inv;
  inv.set_round_id("r9");
  FromCoordinator("fl/v1/d/dev-1/dn/cmd/round", inv, "dev-1");
  agent->Poll(std::chrono::milliseconds(0));
  // Checked in, but the invitation names another base model.
  FromCoordinator("fl/v1/g/g1/dn/round", Announcement("r1"), "group:g1");
  agent->Poll(std::chrono::milliseconds(0));
  inv.set_round_id("r1");
  inv.mutable_secagg()->set_round_id("r1");
  inv.mutable_training()->set_base_model_sha256(std::string(32, '\x33'));
  inv.mutable_secagg()->set_model_sha256(std::string(32, '\x33'));
  FromCoordinator("fl/v1/d/dev-1/dn/cmd/round", inv, "dev-1");
  agent->Poll(std::chrono::milliseconds(0));
  auto responses = Uplink(v1::PAYLOAD_TYPE_ROUND_RESPONSE);
  ASSERT_EQ(responses.size(), 2u);
  auto r0 = protocol::UnpackPayload<v1::RoundResponse>(responses[0]);
  auto r1 = protocol::UnpackPayload<v1::RoundResponse>(responses[1]);
  ASSERT_TRUE(r0.ok() && r1.ok());
  EXPECT_FALSE(r0->accepted());
  EXPECT_EQ(r0->reason(), v1::DECLINE_REASON_POLICY);
  EXPECT_FALSE(r1->accepted());
  EXPECT_EQ(r1->reason(), v1::DECLINE_REASON_MODEL_MISMATCH);
  EXPECT_EQ(agent->status().last_round_state, "declined");
}

TEST_F(AgentTest, RefusesForgedReplayedAndMisroutedMessages) {
  auto agent = MakeAgent();
  ASSERT_TRUE(agent->Connect(std::chrono::seconds(1)).ok());
  // Signed by a key that is not the coordinator's.
  FromCoordinator("fl/v1/g/g1/dn/round", Announcement("r1"), "group:g1", /*key=*/8);
  // A device (known key) impersonating the coordinator on a downlink.
  FromCoordinator("fl/v1/g/g1/dn/round", Announcement("r2"), "group:g1", 101, "dev-1");
  // Addressed to another device.
  v1::RoundInvitation inv;
  inv.set_round_id("r3");
  FromCoordinator("fl/v1/d/dev-1/dn/cmd/round", inv, "dev-2");
  // Garbage.
  ASSERT_TRUE(coord_->Publish("fl/v1/d/dev-1/dn/cmd/round", std::string_view("garbage"), {}).ok());
  agent->Poll(std::chrono::milliseconds(0));
  AgentStatus st = agent->status();
  EXPECT_EQ(st.messages_rejected, 4u);
  EXPECT_EQ(st.messages_accepted, 0u);
  // A valid announcement, then the same bytes again (QoS 1 redelivery or replay).
  FromCoordinator("fl/v1/g/g1/dn/round", Announcement("r4"), "group:g1");
  ASSERT_TRUE(coord_->Publish("fl/v1/g/g1/dn/round", last_wire_, {}).ok());
  agent->Poll(std::chrono::milliseconds(0));
  st = agent->status();
  EXPECT_EQ(st.messages_accepted, 1u);
  EXPECT_EQ(st.messages_duplicate, 1u);
  EXPECT_EQ(Uplink(v1::PAYLOAD_TYPE_ROUND_CHECK_IN).size(), 1u);
}

TEST_F(AgentTest, EnrolsOnceAndJoinsTheGroupsItIsGiven) {
  auto agent = MakeAgent([](DeviceAgentConfig& c, DeviceAgentDeps&) {
    c.certificate_pem = "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n";
    c.identity_public_key_der = Bytes{1, 2, 3};
    c.enrolment_token = "tok";
  });
  ASSERT_TRUE(agent->Connect(std::chrono::seconds(1)).ok());
  auto requests = Uplink(v1::PAYLOAD_TYPE_ENROLMENT_REQUEST);
  ASSERT_EQ(requests.size(), 1u);
  auto req = protocol::UnpackPayload<v1::EnrolmentRequest>(requests[0]);
  ASSERT_TRUE(req.ok());
  EXPECT_EQ(req->device_id(), "dev-1");
  EXPECT_EQ(req->enrolment_token(), "tok");
  v1::EnrolmentResponse resp;
  resp.set_device_id("dev-1");
  resp.set_accepted(true);
  resp.add_groups("g2");
  FromCoordinator("fl/v1/d/dev-1/dn/cmd/enrolment", resp, "dev-1");
  agent->Poll(std::chrono::milliseconds(0));
  EXPECT_TRUE(agent->status().enrolled);
  // Now announcements to g2 reach it.
  v1::RoundAnnouncement a = Announcement("r-g2");
  a.set_group("g2");
  FromCoordinator("fl/v1/g/g2/dn/round", a, "group:g2");
  agent->Poll(std::chrono::milliseconds(0));
  EXPECT_EQ(Uplink(v1::PAYLOAD_TYPE_ROUND_CHECK_IN).size(), 1u);
  // Re-opened, it does not enrol again.
  agent.reset();
  uplink_.clear();
  agent = MakeAgent([](DeviceAgentConfig& c, DeviceAgentDeps&) { c.certificate_pem = "pem"; });
  ASSERT_TRUE(agent->Connect(std::chrono::seconds(1)).ok());
  EXPECT_TRUE(agent->status().enrolled);
  EXPECT_TRUE(Uplink(v1::PAYLOAD_TYPE_ENROLMENT_REQUEST).empty());
}

TEST_F(AgentTest, ReSendsALostEnrolmentWithBackOffUntilAnswered) {
  // The coordinator was not subscribed when the first request went out: no response.
  auto agent = MakeAgent([](DeviceAgentConfig& c, DeviceAgentDeps&) {
    c.certificate_pem = "pem";
    c.enrolment_retry = std::chrono::seconds(4);
    c.enrolment_retry_max = std::chrono::seconds(10);
  });
  ASSERT_TRUE(agent->Connect(std::chrono::seconds(1)).ok());
  ASSERT_EQ(Uplink(v1::PAYLOAD_TYPE_ENROLMENT_REQUEST).size(), 1u);
  clock_.Advance(std::chrono::milliseconds(1999));  // before the jittered window [2 s, 4 s]
  agent->Poll(std::chrono::milliseconds(0));
  EXPECT_EQ(Uplink(v1::PAYLOAD_TYPE_ENROLMENT_REQUEST).size(), 1u);
  clock_.Advance(std::chrono::milliseconds(2002));
  agent->Poll(std::chrono::milliseconds(0));
  ASSERT_EQ(Uplink(v1::PAYLOAD_TYPE_ENROLMENT_REQUEST).size(), 2u);
  // Doubled: the next one comes no sooner than 4 s later, no later than 8 s.
  clock_.Advance(std::chrono::milliseconds(3999));
  agent->Poll(std::chrono::milliseconds(0));
  EXPECT_EQ(Uplink(v1::PAYLOAD_TYPE_ENROLMENT_REQUEST).size(), 2u);
  clock_.Advance(std::chrono::milliseconds(4002));
  agent->Poll(std::chrono::milliseconds(0));
  ASSERT_EQ(Uplink(v1::PAYLOAD_TYPE_ENROLMENT_REQUEST).size(), 3u);
  v1::EnrolmentResponse resp;
  resp.set_device_id("dev-1");
  resp.set_accepted(true);
  FromCoordinator("fl/v1/d/dev-1/dn/cmd/enrolment", resp, "dev-1");
  agent->Poll(std::chrono::milliseconds(0));
  ASSERT_TRUE(agent->status().enrolled);
  // Answered: no more requests, even well past the longest back-off (10 s).
  clock_.Advance(std::chrono::seconds(25));
  agent->Poll(std::chrono::milliseconds(0));
  EXPECT_EQ(Uplink(v1::PAYLOAD_TYPE_ENROLMENT_REQUEST).size(), 3u);
}

TEST_F(AgentTest, StateSurvivesARestartAndUnfinishedRoundsAreAbandoned) {
  {
    auto agent = MakeAgent();
    ASSERT_TRUE(agent->Connect(std::chrono::seconds(1)).ok());
    FromCoordinator("fl/v1/g/g1/dn/round", Announcement("r1"), "group:g1");
    agent->Poll(std::chrono::milliseconds(0));
    EXPECT_EQ(agent->status().last_round_state, "checked_in");
  }
  {
    auto store = AgentStore::Open(dir_->path() / "dev-1" / "agent.db");
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE((*store)->SaveAdapter({"adapter-7", Bytes(32, 9), {1.5f, -2.0f}}, 1).ok());
  }
  auto agent = MakeAgent();
  const AgentStatus st = agent->status();
  EXPECT_EQ(st.adapter_version, "adapter-7");
  EXPECT_EQ(agent->adapter(), (std::vector<float>{1.5f, -2.0f}));
  agent.reset();
  auto reopened = AgentStore::Open(dir_->path() / "dev-1" / "agent.db");
  ASSERT_TRUE(reopened.ok());
  auto r1 = (*reopened)->GetRound("r1");
  ASSERT_TRUE(r1.ok() && r1->has_value());
  EXPECT_EQ((*r1)->state, "abandoned");
  EXPECT_EQ((*r1)->detail, "agent restarted during the round");
}

TEST_F(AgentTest, RunsOnItsOwnThread) {
  auto agent = MakeAgent();
  ASSERT_TRUE(agent->Start().ok());
  EXPECT_EQ(agent->Start().code(), StatusCode::kFailedPrecondition);
  // Wait (bounded) for the connection, then for the check-in the thread sends.
  for (int i = 0; i < 500 && agent->status().connection != protocol::ConnectionState::kConnected; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  FromCoordinator("fl/v1/g/g1/dn/round", Announcement("r1"), "group:g1");
  std::vector<protocol::OpenedEnvelope> checkins;
  for (int i = 0; i < 500 && checkins.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    checkins = Uplink(v1::PAYLOAD_TYPE_ROUND_CHECK_IN);
  }
  EXPECT_EQ(checkins.size(), 1u);
  agent->Stop();
  EXPECT_EQ(agent->status().last_round_state, "checked_in");
}

TEST(AdapterVectorTest, RoundTripsAndRefusesBadBytes) {
  const std::vector<float> v = {0.0f, -1.25f, 3.5e-7f, 1e30f};
  auto back = DecodeAdapterVector(EncodeAdapterVector(v), 4);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, v);
  EXPECT_FALSE(DecodeAdapterVector(Bytes(7), 0).ok());
  EXPECT_FALSE(DecodeAdapterVector(EncodeAdapterVector(v), 5).ok());
  const std::vector<float> nan = {std::numeric_limits<float>::quiet_NaN()};
  EXPECT_FALSE(DecodeAdapterVector(EncodeAdapterVector(nan)).ok());
}

TEST(WorkerPoolTest, RunsEveryTaskAndDrainsOnDestruction) {
  std::atomic<int> ran{0};
  {
    WorkerPool pool(2);
    EXPECT_EQ(pool.threads(), 2u);
    for (int i = 0; i < 100; ++i) pool.Post([&] { ran.fetch_add(1); });
  }
  EXPECT_EQ(ran.load(), 100);
}

TEST(SeededLocalTrainerTest, IsDeterministicPerRoundAndBounded) {
  SeededLocalTrainer t(5, 40, 0.25f);
  v1::TrainingConfig cfg;
  cfg.set_max_examples(32);
  std::vector<float> global(100, 0.0f);
  auto a = t.Train("r1", cfg, global);
  auto b = t.Train("r1", cfg, global);
  auto c = t.Train("r2", cfg, global);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->delta, b->delta);
  EXPECT_NE(a->delta, c->delta);
  EXPECT_EQ(a->examples, 32u);  // capped by max_examples
  for (float x : a->delta) EXPECT_LE(std::abs(x), 0.25f);
}

// HttpBlobClient against a real cpp-httplib server on loopback.
TEST(HttpBlobClientTest, UploadsWithTheBearerTokenAndFetchesWithLimits) {
  httplib::Server server;
  std::string got_auth, got_body;
  server.Post("/api/v1/uploads/r1/dev-1", [&](const httplib::Request& req, httplib::Response& res) {
    got_auth = req.get_header_value("Authorization");
    got_body = req.body;
    res.set_content(R"({"upload_id":"u-42"})", "application/json");
  });
  server.Get("/adapters/a1.f32", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(std::string(400, 'x'), "application/octet-stream");
  });
  const int port = server.bind_to_any_port("127.0.0.1");
  ASSERT_GT(port, 0);
  std::thread th([&] { server.listen_after_bind(); });
  for (int i = 0; i < 500 && !server.is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  const std::string base = "http://127.0.0.1:" + std::to_string(port);
  HttpBlobClient client({});
  v1::UploadTarget target;
  target.set_url(base + "/api/v1/uploads/r1/dev-1");
  target.set_token("secret");
  target.set_max_bytes(1000);
  const std::string box = "sealed-box-bytes";
  auto claim = client.Upload(target, "r1", "dev-1", AsBytes(box));
  ASSERT_TRUE(claim.ok()) << claim.status().ToString();
  EXPECT_EQ(got_auth, "Bearer secret");
  EXPECT_EQ(got_body, box);
  EXPECT_EQ(claim->upload_id(), "u-42");
  EXPECT_EQ(claim->size(), box.size());
  const security::Sha256Digest d = security::Sha256(AsBytes(box));
  EXPECT_EQ(claim->sha256(), std::string(d.begin(), d.end()));
  EXPECT_EQ(client.Upload(target, "r1", "dev-1", Bytes(1001)).status().code(), StatusCode::kResourceExhausted);

  auto body = client.Fetch(base + "/adapters/a1.f32", 1000);
  ASSERT_TRUE(body.ok()) << body.status().ToString();
  EXPECT_EQ(body->size(), 400u);
  EXPECT_EQ(client.Fetch(base + "/adapters/a1.f32", 100).status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(client.Fetch(base + "/adapters/none.f32", 1000).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(client.Fetch("ftp://x/y", 10).status().code(), StatusCode::kInvalidArgument);
  server.stop();
  th.join();
}

}  // namespace
}  // namespace flotilla::device
