// Reference/ota.md 6.5 #9 (issue 7): a simulated 1,000-device rollout with a 5% injected
// health-check failure rate halts at its error threshold, and no device outside the
// active phase is ever assigned.
//
// Everything is real except the broker (InMemoryBroker): a signed repository, the
// ArtifactServer over loopback HTTP, 1,000 OtaClient instances (each with its own data
// dir, SQLite journal and A/B slots), device ECDSA keys, signed reports, and the
// RolloutManager with its SQLite state. Devices run on a bounded worker pool when an
// MQTT hint reaches them, as the device agent would.
#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>

#include "flotilla/coordinator/rollout.h"
#include "flotilla/core/testing/seeded_random.h"
#include "flotilla/ota/artifact_server.h"
#include "flotilla/ota/client.h"
#include "flotilla/ota/fetcher.h"
#include "flotilla/ota/repository_layout.h"
#include "flotilla/protocol/testing/in_memory_transport.h"
#include "flotilla/protocol/topics.h"
#include "ota_test_support.h"

namespace flotilla::coordinator {
namespace {

using ota::testing::TestRepository;
using protocol::testing::InMemoryBroker;
using protocol::testing::InMemoryTransport;

constexpr int kDevices = 1000;
constexpr int kFailing = 50;  // 5%
constexpr int kWorkers = 4;
constexpr char kTarget[] = "models/fleet/base";

std::string Id(int i) {
  char b[16];
  std::snprintf(b, sizeof b, "dev-%04d", i);
  return b;
}

class VectorFleet final : public FleetView {
 public:
  std::vector<FleetDevice> devices;
  Result<std::vector<FleetDevice>> ListDevices() override { return devices; }
};

// OtaReport envelopes go up over MQTT, as the device agent sends them.
class MqttReportSink final : public ota::ReportSink {
 public:
  MqttReportSink(protocol::Transport& uplink, std::string id) : uplink_(uplink), id_(std::move(id)) {}
  Status Send(ByteSpan sealed, const v1::OtaReport&) override {
    FLT_ASSIGN_OR_RETURN(std::string topic, protocol::FormatTopic(protocol::Topic::Event(
                                                id_, std::string(protocol::topic_names::kOtaReportEvent))));
    return uplink_.Publish(topic, sealed, protocol::PublishOptions{});
  }

 private:
  protocol::Transport& uplink_;
  std::string id_;
};

struct Device {
  std::string id;
  std::filesystem::path dir;
  std::unique_ptr<security::EcdsaSigner> signer;
  ota::testing::FakeHealthChecker health;
  std::unique_ptr<MqttReportSink> sink;
  v1::OtaOutcome last = v1::OTA_OUTCOME_UNSPECIFIED;
  int cycles = 0;
};

class OtaRolloutTest : public ::testing::Test {
 protected:
  OtaRolloutTest() : devices_dir_(TestRepository::Must(TempDir::Create("flotilla-fleet"))) {}

  protocol::testing::InMemoryTransportOptions Opts(std::string id) {
    protocol::testing::InMemoryTransportOptions o;
    o.client_id = std::move(id);
    o.queue_capacity = 1 << 16;
    return o;
  }

  // One OtaClient cycle for `d`, with a fresh fetcher and journal handle (what a device
  // process holds between hints).
  ota::CycleResult RunDevice(Device& d) {
    ota::HttpFetcherOptions fo;
    fo.base_url = server_->base_url();
    fo.read_timeout = std::chrono::seconds(10);
    fo.min_bytes_per_second = 0;
    auto fetcher = TestRepository::Must(ota::HttpFetcher::Create(fo));
    ota::OtaClientOptions o;
    o.data_dir = d.dir / "data";
    o.install_dir = d.dir / "models";
    o.target_name = kTarget;
    o.device = ota::DeviceIdentity{d.id, {}, "test-soc"};
    o.provisioned_root = root_;
    o.max_download_attempts = 3;
    o.backoff_initial = std::chrono::milliseconds(1);
    ota::OtaClientDeps deps;
    deps.fetcher = fetcher.get();
    deps.health = &d.health;
    deps.reports = d.sink.get();
    deps.signer = d.signer.get();
    deps.clock = &repo_.clock();
    deps.sleep = [](std::chrono::milliseconds) {};
    auto client = TestRepository::Must(ota::OtaClient::Open(std::move(o), std::move(deps)));
    ++d.cycles;
    return TestRepository::Must(client->RunCycle());
  }

  void RunPool(const std::vector<Device*>& batch) {
    std::atomic<size_t> next{0};
    std::vector<std::thread> pool;
    for (int w = 0; w < kWorkers; ++w) {
      pool.emplace_back([&] {
        for (size_t i = next++; i < batch.size(); i = next++) batch[i]->last = RunDevice(*batch[i]).outcome;
      });
    }
    for (auto& t : pool) t.join();
  }

  TestRepository repo_;
  TempDir devices_dir_;
  std::unique_ptr<ota::ArtifactServer> server_;
  Bytes root_;
};

TEST_F(OtaRolloutTest, FivePercentFailureRateHaltsAtTheThresholdWithinThePhase) {
  // A 64 KiB model in 4 KiB chunks.
  Bytes model = ota::testing::ModelBytes(64 * 1024);
  repo_.AddTarget(kTarget, model, 1, {}, 4096);
  ASSERT_TRUE(repo_.repo().Publish().ok());
  root_ = ToBytes(repo_.ProvisionedState().root());
  server_ = TestRepository::Must(ota::ArtifactServer::Start(repo_.dir()));

  auto broker = std::make_shared<InMemoryBroker>();
  InMemoryTransport coordinator_tx(broker, Opts("coordinator"));
  InMemoryTransport fleet_tx(broker, Opts("fleet"));  // all devices' downlink, for the test
  InMemoryTransport uplink_tx(broker, Opts("uplink"));
  ASSERT_TRUE(coordinator_tx.Connect().ok());
  ASSERT_TRUE(fleet_tx.Connect().ok());
  ASSERT_TRUE(uplink_tx.Connect().ok());
  ASSERT_TRUE(coordinator_tx.Subscribe("fl/v1/d/+/up/#", 1).ok());
  ASSERT_TRUE(fleet_tx.Subscribe("fl/v1/d/+/dn/cmd/ota", 1).ok());

  // The fleet: keys, dirs, 5% with a health check that always fails (test data from a
  // seeded shuffle, canaries excluded so the canary phase passes).
  security::KeyRing device_keys;
  VectorFleet fleet;
  std::vector<Device> devices(kDevices);
  std::vector<int> order(kDevices);
  for (int i = 0; i < kDevices; ++i) order[static_cast<size_t>(i)] = i;
  flotilla::testing::SeededRandom shuffle(7);
  for (size_t i = order.size() - 1; i > 5; --i) {
    std::swap(order[i], order[5 + static_cast<size_t>(shuffle.Uniform(i - 4))]);
  }
  const std::set<int> failing(order.end() - kFailing, order.end());
  for (int i = 0; i < kDevices; ++i) {
    Device& d = devices[static_cast<size_t>(i)];
    d.id = Id(i);
    d.dir = devices_dir_.path() / d.id;
    auto key = ota::testing::NewKey();
    device_keys.Add(d.id, key->public_key());
    d.signer = std::make_unique<security::EcdsaSigner>(d.id, key);
    d.sink = std::make_unique<MqttReportSink>(uplink_tx, d.id);
    d.health.fail_first = failing.count(i) ? -1 : 0;
    fleet.devices.push_back({d.id, "test-soc"});
  }

  security::EcdsaSigner coordinator_signer("coordinator", ota::testing::NewKey());
  flotilla::testing::SeededRandom draws(2024);
  RolloutOptions ro;
  ro.db_path = devices_dir_.path() / "rollouts.db";
  RolloutDeps rd;
  rd.repository = &repo_.repo();
  rd.fleet = &fleet;
  rd.transport = &coordinator_tx;
  rd.signer = &coordinator_signer;
  rd.device_keys = &device_keys;
  rd.clock = &repo_.clock();
  rd.random = &draws;
  auto manager = TestRepository::Must(RolloutManager::Open(ro, rd));
  coordinator_tx.SetMessageHandler([&](const protocol::Message& m) { manager->HandleMessage(m); });
  std::set<std::string> hinted;
  fleet_tx.SetMessageHandler([&](const protocol::Message& m) {
    hinted.insert(TestRepository::Must(protocol::ParseTopic(m.topic)).device_id);
  });

  // v2: the release under test.
  Bytes v2 = ota::testing::ModelBytes(64 * 1024, 1, {3, 9});
  const v1::TargetInfo target = repo_.AddTarget(kTarget, v2, 2, {}, 4096);
  ASSERT_TRUE(repo_.repo().Publish().ok());

  PhaseSpec thresholds;
  thresholds.success_percent = 80;
  thresholds.max_failure_percent = 3;
  thresholds.min_finished = 40;
  RolloutSpec spec =
      MakeRolloutSpec("fleet-v2", {kTarget}, {Id(0), Id(1), Id(2), Id(3), Id(4)}, {1, 10, 50, 100}, thresholds);
  spec.max_assignments_per_minute = 300;
  const auto created = TestRepository::Must(manager->Create(spec));

  std::set<std::string> ran;
  RolloutSummary s;
  uint32_t max_phase_seen = 0;
  for (int round = 0; round < 100; ++round) {
    ASSERT_TRUE(manager->Tick().ok());
    s = TestRepository::Must(manager->Get(created.id));
    // The invariant, at every step: nothing beyond the active phase's quota.
    ASSERT_LE(s.counts.assigned, s.phase_quota) << "round " << round;
    max_phase_seen = std::max(max_phase_seen, s.phase);
    hinted.clear();
    fleet_tx.Drain(1 << 20);
    std::vector<Device*> batch;
    for (auto& d : devices) {
      if (hinted.count(d.id)) batch.push_back(&d);
    }
    RunPool(batch);
    for (auto* d : batch) ran.insert(d->id);
    while (coordinator_tx.Drain(1 << 16) > 0) {
    }
    s = TestRepository::Must(manager->Get(created.id));
    if (s.state != RolloutState::kActive) break;
    repo_.clock().Advance(std::chrono::seconds(61));
  }

  // Halted by the percentage threshold, after the minimum.
  ASSERT_EQ(s.state, RolloutState::kHalted) << s.reason;
  const uint64_t finished = s.counts.succeeded + s.counts.failed;
  EXPECT_GE(finished, thresholds.min_finished);
  EXPECT_GE(s.counts.failed * 100, 3 * finished) << s.reason;
  EXPECT_LT(s.phase, s.spec.phases.size() - 1) << "halted before the last phase";
  EXPECT_NE(s.reason.find("failed"), std::string::npos);
  EXPECT_EQ(manager->stats().reports_rejected, 0u);
  EXPECT_EQ(s.counts.in_progress, 0u) << "every assigned device ran and reported";

  // No device outside the active phase has a director assignment.
  size_t director_files = 0;
  for (const auto& e : std::filesystem::directory_iterator(repo_.dir() / "metadata/director/device")) {
    (void)e;
    ++director_files;
  }
  EXPECT_EQ(director_files, s.counts.assigned);
  EXPECT_LE(s.counts.assigned, s.phase_quota);
  EXPECT_LT(s.counts.assigned, static_cast<uint64_t>(kDevices));

  // What the devices did agrees with the coordinator's view.
  uint64_t installed = 0, rolled_back = 0;
  for (const auto& row : TestRepository::Must(manager->Devices(created.id))) {
    const Device& d = devices[static_cast<size_t>(std::stoi(row.device_id.substr(4)))];
    const bool is_failing = d.health.fail_first < 0;
    const std::string current = ota::testing::OtaHarness::CurrentSha(d.dir);
    if (row.status == DeviceRolloutStatus::kPending) {
      EXPECT_EQ(d.cycles, 0) << d.id << " was hinted without an assignment";
      continue;
    }
    EXPECT_TRUE(std::filesystem::exists(repo_.dir() / ota::DeviceDirectorPath(d.id)));
    if (is_failing) {
      EXPECT_EQ(row.status, DeviceRolloutStatus::kFailed) << d.id;
      EXPECT_EQ(d.last, v1::OTA_OUTCOME_ROLLED_BACK) << d.id;
      EXPECT_EQ(current, "") << d.id << " must be back on its previous (empty) slot";
      ++rolled_back;
    } else {
      EXPECT_EQ(row.status, DeviceRolloutStatus::kSucceeded) << d.id;
      EXPECT_EQ(current, ToHex(AsBytes(target.sha256()))) << d.id;
      ++installed;
    }
  }
  EXPECT_EQ(installed, s.counts.succeeded);
  EXPECT_EQ(rolled_back, s.counts.failed);

  // Devices outside the phase that check anyway (polling, a forged hint) install nothing.
  std::vector<Device*> outsiders;
  for (auto& d : devices) {
    if (!ran.count(d.id) && outsiders.size() < 100) outsiders.push_back(&d);
  }
  RunPool(outsiders);
  for (auto* d : outsiders) {
    EXPECT_EQ(d->last, v1::OTA_OUTCOME_UNSPECIFIED) << d->id;
    EXPECT_EQ(ota::testing::OtaHarness::CurrentSha(d->dir), "") << d->id;
  }
  std::printf("halted in phase %s (max phase %u): %llu assigned of quota %llu, %llu ok, %llu failed: %s\n",
              s.spec.phases[s.phase].name.c_str(), max_phase_seen, static_cast<unsigned long long>(s.counts.assigned),
              static_cast<unsigned long long>(s.phase_quota), static_cast<unsigned long long>(s.counts.succeeded),
              static_cast<unsigned long long>(s.counts.failed), s.reason.c_str());
}

}  // namespace
}  // namespace flotilla::coordinator
