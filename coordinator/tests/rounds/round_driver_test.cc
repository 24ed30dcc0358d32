// Whole rounds over the in-memory transport: real DeviceAgents (flotilla_device) and a
// real RoundDriver exchanging signed envelopes through InMemoryBroker, with a FakeClock
// for deadlines. The aggregate is checked against the devices' plaintext inputs.
#include "flotilla/coordinator/round_driver.h"

#include <gtest/gtest.h>

#include <map>
#include <set>

#include "flotilla/core/check.h"
#include "flotilla/core/file.h"
#include "flotilla/core/testing/fake_clock.h"
#include "flotilla/device/agent.h"
#include "flotilla/protocol/envelope.h"
#include "flotilla/protocol/payload.h"
#include "flotilla/protocol/testing/fake_signer.h"
#include "flotilla/protocol/testing/in_memory_transport.h"
#include "flotilla/protocol/topics.h"
#include "round_test_support.h"

namespace flotilla::rounds {
namespace {

using device::AgentStage;
using protocol::testing::FakeSigner;
using protocol::testing::FakeVerifier;
using protocol::testing::InMemoryBroker;
using protocol::testing::InMemoryTransport;
using protocol::testing::InMemoryTransportOptions;
using testing::InProcessBlobs;
using testing::RoundRecorder;

constexpr char kGroup[] = "fleet";
constexpr size_t kTrainable = 48;

std::string DeviceId(uint32_t i) { return "dev-" + std::to_string(i); }

InMemoryTransportOptions Options(std::string id) {
  InMemoryTransportOptions o;
  o.client_id = std::move(id);
  return o;
}

struct FleetOptions {
  uint32_t devices = 10;
  bool worker_pool = false;
  size_t max_inline_envelope_bytes = 64 * 1024;
  // (device index, round) -> stage at which the device silently drops out.
  std::map<uint32_t, AgentStage> drops;
  std::set<uint32_t> not_charging;  // these devices never check in
  size_t coordinator_max_publish = 0;  // 0: the transport's default cap on sends
};

// A coordinator and `devices` agents sharing an InMemoryBroker and a FakeClock.
class Fleet {
 public:
  explicit Fleet(FleetOptions options) : options_(std::move(options)) {
    auto dir = TempDir::Create("rounds-test");
    FLT_CHECK(dir.ok());
    dir_.emplace(std::move(*dir));
    broker_ = std::make_shared<InMemoryBroker>();
    verifier_ = std::make_shared<FakeVerifier>();
    verifier_->Add("coordinator", 7);
    for (uint32_t i = 1; i <= options_.devices; ++i) verifier_->Add(DeviceId(i), 1000 + i);
    auto adapters = DirectoryAdapterRegistry::Open(dir_->path() / "adapters", "http://coord.invalid/adapters", kTrainable);
    FLT_CHECK(adapters.ok());
    adapters_ = std::move(*adapters);
    blobs_ = std::make_shared<InProcessBlobs>(&uploads_, adapters_.get());
    if (options_.worker_pool) pool_ = std::make_unique<device::WorkerPool>(2);
    InMemoryTransportOptions co = Options("coordinator");
    co.max_publish_size = options_.coordinator_max_publish;
    coord_transport_ = std::make_unique<InMemoryTransport>(broker_, co);
    FLT_CHECK(coord_transport_->Connect().ok());
    OpenDriver();
    for (uint32_t i = 1; i <= options_.devices; ++i) agents_.push_back(MakeAgent(i));
    for (auto& a : agents_) FLT_CHECK(a->Connect(std::chrono::seconds(1)).ok());
  }

  // `wrap` may put a fault-injecting journal around the SQLite one.
  void OpenDriver(const std::function<RoundJournal*(RoundJournal*)>& wrap = nullptr) {
    driver_.reset();
    journal_.reset();
    auto journal = SqliteRoundJournal::Open(dir_->path() / "journal.db");
    FLT_CHECK(journal.ok());
    journal_ = std::move(*journal);
    RoundDriverOptions o;
    o.transport = coord_transport_.get();
    o.signer = std::make_shared<FakeSigner>("coordinator", 7);
    o.verifier = verifier_;
    o.device_allowed = [this](std::string_view id) { return revoked_.count(std::string(id)) == 0; };
    o.journal = wrap ? wrap(journal_.get()) : journal_.get();
    o.adapters = adapters_.get();
    o.uploads = &uploads_;
    o.clock = &clock_;
    o.test_hook = [this](const RoundTestRecord& r) { recorder_.Coordinator(r); };
    auto driver = RoundDriver::Open(std::move(o));
    FLT_CHECK(driver.ok());
    driver_ = std::move(*driver);
    FLT_CHECK(driver_->Attach().ok());
  }

  std::unique_ptr<device::DeviceAgent> MakeAgent(uint32_t i) {
    device::DeviceAgentConfig c;
    c.device_id = DeviceId(i);
    c.data_dir = dir_->path() / c.device_id;
    c.groups = {kGroup};
    c.base_model.set_version("base-1");
    c.base_model.set_sha256(std::string(32, '\x5a'));
    c.capabilities.set_ram_bytes(uint64_t{4} << 30);
    c.max_inline_envelope_bytes = options_.max_inline_envelope_bytes;
    device::DeviceAgentDeps d;
    d.transport_factory = [this, id = c.device_id](const protocol::Message& will) -> Result<std::unique_ptr<protocol::Transport>> {
      InMemoryTransportOptions o;
      o.client_id = id;
      o.will = will;
      return std::unique_ptr<protocol::Transport>(std::make_unique<InMemoryTransport>(broker_, o));
    };
    d.signer = std::make_shared<FakeSigner>(c.device_id, 1000 + i);
    d.verifier = verifier_;
    d.peer_verifier = verifier_;
    d.trainer = std::make_shared<device::SeededLocalTrainer>(i, 10 + i, 0.05f);
    d.uploader = blobs_;
    d.fetcher = blobs_;
    d.runner = pool_.get();
    d.clock = &clock_;
    const bool charging = options_.not_charging.count(i) == 0;
    d.eligibility = [charging] {
      v1::Eligibility e;
      e.set_charging(charging);
      e.set_idle(true);
      e.set_unmetered_link(true);
      e.set_battery_percent(90);
      e.set_free_memory_bytes(uint64_t{1} << 30);
      return e;
    };
    d.test_plaintext_hook = [this](const device::PlaintextUpdateRecord& r) { recorder_.Device(r); };
    auto drop = options_.drops.find(i);
    if (drop != options_.drops.end()) {
      d.test_drop_before = [stage = drop->second](std::string_view, AgentStage s) { return s == stage; };
    }
    auto agent = device::DeviceAgent::Open(std::move(c), std::move(d));
    FLT_CHECK(agent.ok());
    return std::move(*agent);
  }

  // Polls everybody until `done` or `rounds` iterations; advances the fake clock by
  // `step` each idle iteration so deadlines pass.
  bool RunUntil(const std::function<bool()>& done, std::chrono::milliseconds step = std::chrono::milliseconds(500),
                int iterations = 4000) {
    for (int it = 0; it < iterations; ++it) {
      size_t events = driver_->Poll(std::chrono::milliseconds(0));
      for (auto& a : agents_) events += a->Poll(std::chrono::milliseconds(0));
      if (done()) return true;
      if (events != 0) continue;
      bool busy = false;
      for (auto& a : agents_) busy = busy || !a->idle();
      if (busy) {
        std::this_thread::sleep_for(std::chrono::microseconds(200));  // a worker is computing
      } else {
        clock_.Advance(step);
      }
    }
    return done();
  }

  RoundSpec Spec(v1::SecAggProfile profile = v1::SEC_AGG_PROFILE_HARDENED) const {
    RoundSpec s;
    s.group = kGroup;
    s.base_model.set_version("base-1");
    s.base_model.set_sha256(std::string(32, '\x5a'));
    s.training.set_local_steps(5);
    s.training.set_max_examples(20);
    s.training.set_mode(v1::LORA_MODE_FROZEN_A);
    s.min_cohort = 3;
    s.target_cohort = options_.devices - static_cast<uint32_t>(options_.not_charging.size());
    s.check_in_timeout = std::chrono::seconds(10);
    s.training_timeout = std::chrono::seconds(20);
    s.stage_timeout = std::chrono::seconds(10);
    s.profile = profile;
    s.max_colluding_fraction = 0.0;
    s.max_dropout_rate = 0.3;
    s.min_survivors = 3;
    return s;
  }

  // Polls until every agent is idle.
  void Settle() {
    RunUntil([&] {
      for (auto& a : agents_) {
        if (!a->idle()) return false;
      }
      return true;
    }, std::chrono::milliseconds(0));
    RunUntil([] { return false; }, std::chrono::milliseconds(0), 5);
  }

  // Runs a round to a terminal state; returns its status.
  RoundStatus Run(const RoundSpec& spec) {
    auto id = driver_->StartRound(spec);
    EXPECT_TRUE(id.ok()) << id.status().ToString();
    if (!id.ok()) return {};
    EXPECT_TRUE(RunUntil([&] { return driver_->idle(); })) << "round did not finish";
    // Let the agents apply the result (adapter fetch) before the test looks.
    Settle();
    return *driver_->status(*id);
  }

  // The exact-sum check: the unmasked ring sum equals the sum of what the survivors encoded.
  void ExpectExactSum(const RoundStatus& st) {
    ASSERT_TRUE(recorder_.HasCoordinator(st.round_id));
    const RoundTestRecord rec = recorder_.coordinator(st.round_id);
    EXPECT_EQ(rec.survivors.size(), st.survivors);
    const std::vector<uint32_t> expected = recorder_.ExpectedSum(st.round_id, rec.survivors);
    ASSERT_EQ(expected.size(), kTrainable + 1);
    EXPECT_EQ(rec.sum, expected);
    // And the decoded mean is the plain weighted mean within the fixed-point error.
    const std::vector<double> plain = recorder_.PlainWeightedMean(st.round_id, rec.survivors);
    ASSERT_EQ(rec.mean_delta.size(), plain.size());
    for (size_t i = 0; i < plain.size(); ++i) EXPECT_NEAR(rec.mean_delta[i], plain[i], 1e-4) << i;
    for (size_t i = 0; i < plain.size(); ++i)
      EXPECT_NEAR(rec.next[i], static_cast<double>(rec.previous[i]) + static_cast<double>(rec.mean_delta[i]), 1e-6);
  }

  device::DeviceAgent& agent(uint32_t i) { return *agents_[i - 1]; }
  RoundDriver& driver() { return *driver_; }
  SqliteRoundJournal& journal() { return *journal_; }
  InMemoryTransport& coordinator_transport() { return *coord_transport_; }
  InMemoryBroker& broker() { return *broker_; }
  RoundRecorder& recorder() { return recorder_; }
  DirectoryAdapterRegistry& adapters() { return *adapters_; }
  InProcessBlobs& blobs() { return *blobs_; }
  flotilla::testing::FakeClock& clock() { return clock_; }
  FakeVerifier& verifier() { return *verifier_; }
  std::set<std::string>& revoked() { return revoked_; }
  void DestroyDriver() {
    driver_.reset();
    journal_.reset();
  }

 private:
  FleetOptions options_;
  std::optional<TempDir> dir_;
  flotilla::testing::FakeClock clock_;
  std::shared_ptr<InMemoryBroker> broker_;
  std::shared_ptr<FakeVerifier> verifier_;
  InMemoryUploadSource uploads_;
  std::unique_ptr<DirectoryAdapterRegistry> adapters_;
  std::shared_ptr<InProcessBlobs> blobs_;
  std::unique_ptr<device::WorkerPool> pool_;
  std::unique_ptr<InMemoryTransport> coord_transport_;
  std::unique_ptr<SqliteRoundJournal> journal_;
  std::unique_ptr<RoundDriver> driver_;
  RoundRecorder recorder_;
  std::set<std::string> revoked_;
  std::vector<std::unique_ptr<device::DeviceAgent>> agents_;  // after everything they use
};

TEST(RoundDriverTest, TenAgentsCompleteAHardenedRoundWithTheExactSum) {
  Fleet fleet({});
  const RoundStatus st = fleet.Run(fleet.Spec());
  ASSERT_EQ(st.state, RoundState::kPublished) << st.reason;
  EXPECT_EQ(st.cohort, 10u);
  EXPECT_EQ(st.survivors, 10u);
  fleet.ExpectExactSum(st);
  // Every device fetched, verified and persisted the new adapter.
  const RoundTestRecord rec = fleet.recorder().coordinator(st.round_id);
  for (uint32_t i = 1; i <= 10; ++i) {
    const device::AgentStatus a = fleet.agent(i).status();
    EXPECT_EQ(a.adapter_version, st.adapter_version) << i;
    EXPECT_EQ(a.last_round_state, "completed") << i << " " << a.last_round_detail;
    EXPECT_EQ(fleet.agent(i).adapter(), rec.next) << i;
  }
  auto current = fleet.adapters().Current();
  ASSERT_TRUE(current.ok());
  EXPECT_EQ(current->version, st.adapter_version);
  // The journal has the whole story.
  auto jr = fleet.journal().Get(st.round_id);
  ASSERT_TRUE(jr.ok());
  EXPECT_EQ(jr->state, RoundState::kPublished);
  EXPECT_EQ(jr->adapter_version, st.adapter_version);
  auto stages = fleet.journal().Stages(st.round_id, DeviceId(1));
  ASSERT_TRUE(stages.ok());
  std::vector<std::string> names;
  for (const auto& s : *stages) names.push_back(s.stage + ":" + s.status);
  EXPECT_EQ(names, (std::vector<std::string>{"selected:ok", "advertise_keys:ok", "share_keys:ok", "masked_input:ok",
                                             "consistency_check:ok", "unmask:ok", "aggregated:survivor"}));
  EXPECT_TRUE(fleet.journal().CheckInvariants().ok());
  EXPECT_EQ(fleet.driver().stats().messages_rejected, 0u);
}

TEST(RoundDriverTest, CuriousRoundsInARowOnAWorkerPoolChainAdapters) {
  FleetOptions o;
  o.worker_pool = true;
  Fleet fleet(o);
  std::string previous;
  for (int k = 0; k < 2; ++k) {
    const RoundStatus st = fleet.Run(fleet.Spec(v1::SEC_AGG_PROFILE_CURIOUS));
    ASSERT_EQ(st.state, RoundState::kPublished) << st.reason;
    fleet.ExpectExactSum(st);
    const RoundTestRecord rec = fleet.recorder().coordinator(st.round_id);
    if (!previous.empty()) {
      // The second round started from the first one's adapter (devices fetched it).
      auto prev = fleet.adapters().Get(previous);
      ASSERT_TRUE(prev.ok());
      EXPECT_EQ(rec.previous, prev->values);
    }
    previous = st.adapter_version;
    for (uint32_t i = 1; i <= 10; ++i) EXPECT_EQ(fleet.agent(i).status().adapter_version, st.adapter_version);
  }
}

TEST(RoundDriverTest, LargeMaskedInputsTravelByClaimCheck) {
  FleetOptions o;
  o.devices = 5;
  o.max_inline_envelope_bytes = 512;  // every masked input goes over "HTTP"
  Fleet fleet(o);
  RoundSpec spec = fleet.Spec(v1::SEC_AGG_PROFILE_CURIOUS);
  spec.min_survivors = 4;
  const RoundStatus st = fleet.Run(spec);
  ASSERT_EQ(st.state, RoundState::kPublished) << st.reason;
  fleet.ExpectExactSum(st);
  EXPECT_EQ(fleet.blobs().uploads(), 5u);
  EXPECT_EQ(fleet.driver().stats().uploads_fetched, 5u);
}

// One device drops out right before sending the message of each stage; the round still
// completes and the aggregate is exactly the survivors' sum.
class DropoutTest : public ::testing::TestWithParam<AgentStage> {};

TEST_P(DropoutTest, SurvivorsSumIsExact) {
  FleetOptions o;
  o.drops = {{3, GetParam()}, {7, GetParam()}};
  Fleet fleet(o);
  const RoundStatus st = fleet.Run(fleet.Spec());
  ASSERT_EQ(st.state, RoundState::kPublished) << st.reason;
  fleet.ExpectExactSum(st);
  const RoundTestRecord rec = fleet.recorder().coordinator(st.round_id);
  const bool after_masked_input = GetParam() == AgentStage::kConsistencyCheck || GetParam() == AgentStage::kUnmask;
  // Devices that sent their masked input are survivors even if they vanish afterwards.
  EXPECT_EQ(rec.survivors.size(), after_masked_input ? 10u : 8u);
  const bool contains = std::find(rec.survivors.begin(), rec.survivors.end(), DeviceId(3)) != rec.survivors.end();
  EXPECT_EQ(contains, after_masked_input);
  EXPECT_EQ(fleet.agent(3).status().last_round_state, "abandoned");
}

INSTANTIATE_TEST_SUITE_P(EachStage, DropoutTest,
                         ::testing::Values(AgentStage::kResponse, AgentStage::kAdvertiseKeys, AgentStage::kShareKeys,
                                           AgentStage::kMaskedInput, AgentStage::kConsistencyCheck,
                                           AgentStage::kUnmask),
                         [](const auto& param_info) { return std::string(device::ToString(param_info.param)); });

TEST(RoundDriverTest, TooManyDropoutsFailTheRoundWithARecordedReason) {
  FleetOptions o;
  o.drops = {{1, AgentStage::kMaskedInput}, {2, AgentStage::kMaskedInput}, {3, AgentStage::kMaskedInput},
             {4, AgentStage::kMaskedInput}, {5, AgentStage::kMaskedInput}};
  Fleet fleet(o);
  RoundSpec spec = fleet.Spec();
  spec.min_survivors = 7;
  const RoundStatus st = fleet.Run(spec);
  ASSERT_EQ(st.state, RoundState::kFailed);
  EXPECT_NE(st.reason.find("masked_input"), std::string::npos) << st.reason;
  auto jr = fleet.journal().Get(st.round_id);
  ASSERT_TRUE(jr.ok());
  EXPECT_EQ(jr->state, RoundState::kFailed);
  EXPECT_EQ(jr->reason, st.reason);
  EXPECT_FALSE(fleet.recorder().HasCoordinator(st.round_id));  // nothing was unmasked
  EXPECT_FALSE(fleet.adapters().Current()->version.size());     // nothing promoted
  // The surviving devices were told.
  EXPECT_EQ(fleet.agent(9).status().last_round_state, "aborted");
  EXPECT_TRUE(fleet.journal().CheckInvariants().ok());
}

TEST(RoundDriverTest, TooFewCheckInsFailTheRound) {
  FleetOptions o;
  o.devices = 4;
  o.not_charging = {1, 2};
  Fleet fleet(o);
  RoundSpec spec = fleet.Spec();
  spec.min_cohort = 3;
  spec.target_cohort = 4;
  spec.min_eligibility.set_charging(true);  // devices 1 and 2 are not: they stay out
  const RoundStatus st = fleet.Run(spec);
  ASSERT_EQ(st.state, RoundState::kFailed);
  EXPECT_EQ(st.check_ins, 2u);
  EXPECT_NE(st.reason.find("too few check-ins"), std::string::npos) << st.reason;
}

// A cohort for which no SecAgg+ parameters exist (hardened, complete graph of 6 with
// the default collusion and dropout bounds) fails the round with the planner's reason;
// the checked-in devices are told. (This used to crash: the cohort's per-device flags
// were sized only after planning.)
TEST(RoundDriverTest, ACohortWithoutSecAggParametersFailsTheRoundCleanly) {
  FleetOptions o;
  o.devices = 6;
  Fleet fleet(o);
  RoundSpec spec = fleet.Spec();  // hardened
  spec.max_colluding_fraction = 0.34;
  spec.max_dropout_rate = 0.34;
  spec.min_cohort = 6;
  spec.target_cohort = 6;
  const RoundStatus st = fleet.Run(spec);
  ASSERT_EQ(st.state, RoundState::kFailed);
  EXPECT_NE(st.reason.find("SecAgg parameters"), std::string::npos) << st.reason;
  auto jr = fleet.journal().Get(st.round_id);
  ASSERT_TRUE(jr.ok());
  EXPECT_EQ(jr->state, RoundState::kFailed);
  EXPECT_EQ(jr->reason, st.reason);
  EXPECT_FALSE(fleet.adapters().Current()->version.size());
  EXPECT_TRUE(fleet.journal().CheckInvariants().ok());
}

// A stage message over the MQTT payload cap cannot be delivered by any re-send: the
// round fails at once with the reason (hardened adverts with certificates at a large
// cohort), instead of waiting out the stage.
TEST(RoundDriverTest, AStageMessageOverThePayloadCapFailsTheRoundWithTheReason) {
  FleetOptions o;
  o.coordinator_max_publish = 900;  // NeighbourKeys of 9 adverts is ~1.2 KB, everything before it fits
  Fleet fleet(o);
  const RoundStatus st = fleet.Run(fleet.Spec());
  ASSERT_EQ(st.state, RoundState::kFailed);
  EXPECT_NE(st.reason.find("share_keys message"), std::string::npos) << st.reason;
  EXPECT_NE(st.reason.find("payload cap"), std::string::npos) << st.reason;
  EXPECT_TRUE(fleet.journal().CheckInvariants().ok());
}

// ---------------------------------------------------------------- bad input

// Publishes raw bytes on a device's uplink as if the device sent them.
void Inject(Fleet& fleet, const std::string& device, std::string_view kind, const Bytes& wire) {
  auto topic = protocol::FormatTopic(protocol::Topic::Event(device, std::string(kind)));
  ASSERT_TRUE(topic.ok());
  InMemoryTransportOptions options = Options("injector-" + device);
  options.max_payload_size = 1 << 20;  // a hostile client ignores our payload policy
  InMemoryTransport t(std::shared_ptr<InMemoryBroker>(&fleet.broker(), [](InMemoryBroker*) {}), options);
  ASSERT_TRUE(t.Connect().ok());
  ASSERT_TRUE(t.Publish(*topic, wire, protocol::PublishOptions{}).ok());
}

TEST(RoundDriverTest, BadInputIsDroppedWithoutEffect) {
  FleetOptions o;
  o.devices = 6;
  Fleet fleet(o);
  RoundSpec spec = fleet.Spec(v1::SEC_AGG_PROFILE_CURIOUS);
  spec.target_cohort = 6;
  spec.min_survivors = 5;
  fleet.revoked().insert(DeviceId(6));  // revoked: its check-in is refused
  auto id = fleet.driver().StartRound(spec);
  ASSERT_TRUE(id.ok());
  // Drive until the round is in the share-keys stage, then throw garbage at it.
  ASSERT_TRUE(fleet.RunUntil([&] { return fleet.driver().status(*id)->state == RoundState::kShareKeys; }));
  const uint64_t rejected0 = fleet.driver().stats().messages_rejected;
  FakeSigner dev2("dev-2", 1002);
  auto& clock = fleet.clock();
  Random& rng = OsRandom();
  // 1. Wrong round id (signed correctly).
  v1::ShareKeys wrong_round;
  wrong_round.set_round_id("another-round");
  wrong_round.set_from(2);
  auto w1 = protocol::SealMessage(dev2, wrong_round, "coordinator", clock, rng);
  ASSERT_TRUE(w1.ok());
  Inject(fleet, "dev-2", "secagg", *w1);
  // 2. Claims another device's index.
  v1::ShareKeys wrong_index;
  wrong_index.set_round_id(*id);
  wrong_index.set_from(999);  // nobody's index (cohort indexes are 1..6)
  auto w2 = protocol::SealMessage(dev2, wrong_index, "coordinator", clock, rng);
  ASSERT_TRUE(w2.ok());
  Inject(fleet, "dev-2", "secagg", *w2);
  // 3. Malformed payload under a valid signature.
  auto w3 = protocol::Seal(dev2, v1::PAYLOAD_TYPE_SHARE_KEYS, AsBytes(std::string_view("\xff\xff\xff\xff", 4)),
                           "coordinator", clock, rng);
  ASSERT_TRUE(w3.ok());
  Inject(fleet, "dev-2", "secagg", *w3);
  // 4. Forged: signed with the wrong key.
  FakeSigner forger("dev-2", 999);
  auto w4 = protocol::SealMessage(forger, wrong_index, "coordinator", clock, rng);
  ASSERT_TRUE(w4.ok());
  Inject(fleet, "dev-2", "secagg", *w4);
  // 5. Unsigned / garbage bytes.
  Inject(fleet, "dev-2", "secagg", Bytes{1, 2, 3, 4});
  // 6. Sent on another device's topic (the broker ACL would refuse it; the binding check does too).
  Inject(fleet, "dev-4", "secagg", *w2);
  // 7. Replay of a message the coordinator already accepted is a duplicate, not an effect.
  Inject(fleet, "dev-2", "secagg", *w1);
  // 8. Oversized.
  Inject(fleet, "dev-2", "secagg", Bytes(protocol::kMaxEnvelopeBytes + 10, 0x42));
  // 9. Unknown device.
  FakeSigner stranger("dev-99", 99);
  v1::RoundCheckIn checkin;
  checkin.set_round_id(*id);
  auto w9 = protocol::SealMessage(stranger, checkin, "coordinator", clock, rng);
  ASSERT_TRUE(w9.ok());
  Inject(fleet, "dev-99", "round", *w9);
  fleet.driver().Poll(std::chrono::milliseconds(0));
  const RoundDriverStats stats = fleet.driver().stats();
  EXPECT_EQ(stats.messages_rejected - rejected0, 7u);  // 1-6, 9
  EXPECT_EQ(stats.messages_duplicate, 1u);              // 7
  // 8 never reaches the driver: the coordinator's transport enforces the payload cap.
  EXPECT_EQ(fleet.coordinator_transport().stats().dropped_oversize, 1u);
  // The round is unaffected and completes with the five eligible devices.
  ASSERT_TRUE(fleet.RunUntil([&] { return fleet.driver().idle(); }));
  const RoundStatus st = *fleet.driver().status(*id);
  ASSERT_EQ(st.state, RoundState::kPublished) << st.reason;
  EXPECT_EQ(st.cohort, 5u);  // the revoked device never got in
  fleet.ExpectExactSum(st);
}

TEST(RoundDriverTest, ReplayedCoordinatorMessagesAndForeignEnvelopesAreRefusedByAgents) {
  FleetOptions o;
  o.devices = 3;
  Fleet fleet(o);
  // A RoundAnnouncement signed by someone who is not the coordinator (a device key).
  FakeSigner dev1("dev-1", 1001);
  v1::RoundAnnouncement a;
  a.set_round_id("fake-round");
  a.set_group(kGroup);
  auto wire = protocol::SealMessage(dev1, a, protocol::GroupRecipient(kGroup), fleet.clock(), OsRandom());
  ASSERT_TRUE(wire.ok());
  ASSERT_TRUE(fleet.coordinator_transport().Publish("fl/v1/g/fleet/dn/round", *wire, protocol::PublishOptions{}).ok());
  // A real coordinator announcement, delivered twice (QoS 1 redelivery / replay).
  FakeSigner coord("coordinator", 7);
  a.set_round_id("r-replayed");
  a.mutable_base_model()->set_sha256(std::string(32, '\x5a'));
  auto real = protocol::SealMessage(coord, a, protocol::GroupRecipient(kGroup), fleet.clock(), OsRandom());
  ASSERT_TRUE(real.ok());
  ASSERT_TRUE(fleet.coordinator_transport().Publish("fl/v1/g/fleet/dn/round", *real, protocol::PublishOptions{}).ok());
  ASSERT_TRUE(fleet.coordinator_transport().Publish("fl/v1/g/fleet/dn/round", *real, protocol::PublishOptions{}).ok());
  fleet.RunUntil([] { return false; }, std::chrono::milliseconds(0), 5);
  for (uint32_t i = 1; i <= 3; ++i) {
    const device::AgentStatus st = fleet.agent(i).status();
    EXPECT_EQ(st.messages_rejected, 1u) << i;   // the foreign signer
    EXPECT_EQ(st.messages_duplicate, 1u) << i;  // the replay
    EXPECT_EQ(st.last_round_id, "r-replayed");  // checked in once
  }
}

// ---------------------------------------------------------------- restart semantics

TEST(RoundDriverTest, RestartDuringASecAggStageFailsTheRoundAndTellsTheCohort) {
  Fleet fleet({});
  auto id = fleet.driver().StartRound(fleet.Spec());
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(fleet.RunUntil([&] { return fleet.driver().status(*id)->state == RoundState::kMaskedInput; }));
  fleet.DestroyDriver();  // "SIGKILL": the SecAgg secrets are gone
  fleet.OpenDriver();
  const RoundStatus st = *fleet.driver().status(*id);
  EXPECT_EQ(st.state, RoundState::kFailed);
  EXPECT_EQ(st.reason, "coordinator restarted during masked_input");
  auto jr = fleet.journal().Get(*id);
  ASSERT_TRUE(jr.ok());
  EXPECT_EQ(jr->state, RoundState::kFailed);
  EXPECT_EQ(jr->reason, "coordinator restarted during masked_input");
  ASSERT_TRUE(fleet.RunUntil([&] { return fleet.agent(1).status().last_round_state == "aborted"; }));
  EXPECT_TRUE(fleet.journal().CheckInvariants().ok());
  // The next round runs normally.
  const RoundStatus next = fleet.Run(fleet.Spec());
  EXPECT_EQ(next.state, RoundState::kPublished) << next.reason;
}

TEST(RoundDriverTest, RestartDuringCheckInResumesTheRound) {
  Fleet fleet({});
  RoundSpec spec = fleet.Spec();
  auto id = fleet.driver().StartRound(spec);
  ASSERT_TRUE(id.ok());
  // Only the announcement went out; the check-ins are still queued at the coordinator.
  fleet.DestroyDriver();
  fleet.coordinator_transport().Drain();  // lost with the process
  fleet.OpenDriver();
  EXPECT_EQ(fleet.driver().status(*id)->state, RoundState::kSelecting);
  ASSERT_TRUE(fleet.RunUntil([&] { return fleet.driver().idle(); }));
  const RoundStatus st = *fleet.driver().status(*id);
  ASSERT_EQ(st.state, RoundState::kPublished) << st.reason;
  fleet.ExpectExactSum(st);
}

// Crash between "aggregated" (adapter stored) and "published": the restart publishes.
class CrashBeforePublish final : public RoundJournal {
 public:
  explicit CrashBeforePublish(RoundJournal* inner) : inner_(inner) {}
  Status Create(const JournalRound& r) override { return inner_->Create(r); }
  Status Transition(std::string_view id, RoundState from, RoundState to, std::string_view reason,
                    std::span<const ParticipantStage> p, const std::string* v, const Bytes* sha) override {
    if (to == RoundState::kPublished) return UnavailableError("disk gone");
    return inner_->Transition(id, from, to, reason, p, v, sha);
  }
  Result<JournalRound> Get(std::string_view id) override { return inner_->Get(id); }
  Result<std::vector<JournalRound>> ListUnfinished() override { return inner_->ListUnfinished(); }
  Result<std::vector<JournalParticipant>> Participants(std::string_view id) override { return inner_->Participants(id); }
  Result<std::vector<ParticipantStage>> Stages(std::string_view id, std::string_view d) override {
    return inner_->Stages(id, d);
  }

 private:
  RoundJournal* inner_;
};

TEST(RoundDriverTest, RestartAfterAggregationPublishesTheStoredResult) {
  FleetOptions o;
  o.devices = 5;
  Fleet fleet(o);
  RoundSpec spec = fleet.Spec(v1::SEC_AGG_PROFILE_CURIOUS);
  spec.min_survivors = 4;
  std::unique_ptr<CrashBeforePublish> faulty;
  fleet.OpenDriver([&](RoundJournal* inner) {
    faulty = std::make_unique<CrashBeforePublish>(inner);
    return faulty.get();
  });
  auto id = fleet.driver().StartRound(spec);
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(fleet.RunUntil([&] { return fleet.driver().status(*id)->state == RoundState::kAggregated; }));
  fleet.DestroyDriver();  // dies before "published" is on disk
  fleet.OpenDriver();
  fleet.RunUntil([&] { return fleet.driver().idle(); });
  const RoundStatus st = *fleet.driver().status(*id);
  EXPECT_EQ(st.state, RoundState::kPublished);
  auto jr = fleet.journal().Get(*id);
  ASSERT_TRUE(jr.ok());
  EXPECT_EQ(jr->state, RoundState::kPublished);
  EXPECT_EQ(fleet.adapters().Current()->version, jr->adapter_version);
  fleet.Settle();
  for (uint32_t i = 1; i <= 5; ++i) EXPECT_EQ(fleet.agent(i).status().adapter_version, jr->adapter_version);
  EXPECT_TRUE(fleet.journal().CheckInvariants().ok());
}

TEST(RoundDriverTest, BrokerRestartMidRoundStillCompletes) {
  Fleet fleet({});
  auto id = fleet.driver().StartRound(fleet.Spec());
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(fleet.RunUntil([&] { return fleet.driver().status(*id)->state == RoundState::kShareKeys; }));
  fleet.broker().Restart();  // sessions and retained messages lost; everyone reconnects
  ASSERT_TRUE(fleet.RunUntil([&] { return fleet.driver().idle(); }));
  const RoundStatus st = *fleet.driver().status(*id);
  ASSERT_EQ(st.state, RoundState::kPublished) << st.reason;
  fleet.ExpectExactSum(st);
}

TEST(RoundStateTest, TransitionTableIsTheDocumentedOne) {
  RoundState to;
  EXPECT_TRUE(RoundTransition(RoundState::kCreated, RoundEvent::kAnnounce, true, &to));
  EXPECT_EQ(to, RoundState::kSelecting);
  EXPECT_TRUE(RoundTransition(RoundState::kMaskedInput, RoundEvent::kStageClosed, true, &to));
  EXPECT_EQ(to, RoundState::kConsistencyCheck);
  EXPECT_TRUE(RoundTransition(RoundState::kMaskedInput, RoundEvent::kStageClosed, false, &to));
  EXPECT_EQ(to, RoundState::kUnmask);
  EXPECT_FALSE(RoundTransition(RoundState::kConsistencyCheck, RoundEvent::kStageClosed, false, &to));
  EXPECT_FALSE(RoundTransition(RoundState::kPublished, RoundEvent::kFail, true, &to));
  EXPECT_FALSE(RoundTransition(RoundState::kSelecting, RoundEvent::kAggregated, true, &to));
  for (RoundState s : {RoundState::kCreated, RoundState::kSelecting, RoundState::kTraining, RoundState::kShareKeys,
                       RoundState::kMaskedInput, RoundState::kConsistencyCheck, RoundState::kUnmask,
                       RoundState::kAggregated, RoundState::kPublished, RoundState::kFailed, RoundState::kCancelled}) {
    auto parsed = ParseRoundState(ToString(s));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, s);
  }
  EXPECT_FALSE(ParseRoundState("bogus").ok());
}

TEST(RoundSpecTest, JsonRoundTripsAndRefusesGarbage) {
  RoundSpec s;
  s.round_id = "r1";
  s.group = "g";
  s.base_model.set_sha256(std::string(32, 'x'));
  s.training.set_local_steps(7);
  s.target_cohort = 33;
  s.profile = v1::SEC_AGG_PROFILE_CURIOUS;
  s.stage_timeout = std::chrono::milliseconds(1234);
  s.dp.set_mechanism(v1::NOISE_MECHANISM_SKELLAM);
  auto back = RoundSpecFromJson(RoundSpecToJson(s));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(RoundSpecToJson(*back), RoundSpecToJson(s));
  EXPECT_EQ(back->training.local_steps(), 7u);
  EXPECT_EQ(back->stage_timeout, std::chrono::milliseconds(1234));
  EXPECT_FALSE(RoundSpecFromJson("{").ok());
  EXPECT_FALSE(RoundSpecFromJson("[]").ok());
  EXPECT_FALSE(RoundSpecFromJson(R"({"round_id": 5})").ok());
}

}  // namespace
}  // namespace flotilla::rounds
