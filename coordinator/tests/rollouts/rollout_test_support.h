// Shared fixture for the rollout unit tests: a real signed repository (FakeClock), a
// fleet of device identities with real ECDSA keys, an in-memory broker, and a
// RolloutManager over a SQLite file in a temp dir. Devices are simulated at the protocol
// level: they read their director assignment from the repository (as OtaClient would)
// and send signed OtaReport envelopes.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "flotilla/coordinator/rollout.h"
#include "flotilla/core/file.h"
#include "flotilla/core/testing/seeded_random.h"
#include "flotilla/ota/metadata.h"
#include "flotilla/ota/repository_layout.h"
#include "flotilla/ota/testing/test_repository.h"
#include "flotilla/protocol/payload.h"
#include "flotilla/protocol/testing/in_memory_transport.h"
#include "flotilla/security/identity.h"

namespace flotilla::coordinator::testing {

using ota::testing::TestRepository;

inline constexpr char kTarget[] = "models/tiny/base";

// The repository fsyncs every director file; that proves nothing here and dominates the
// run time on disk, so temp dirs go to tmpfs unless the caller chose TMPDIR.
inline const bool kFastTempDir = [] {
  if (::access("/dev/shm", W_OK) == 0) ::setenv("TMPDIR", "/dev/shm", 0);
  return true;
}();

class VectorFleet final : public FleetView {
 public:
  Result<std::vector<FleetDevice>> ListDevices() override {
    std::lock_guard<std::mutex> lock(mu_);
    return devices_;
  }
  void Add(FleetDevice d) {
    std::lock_guard<std::mutex> lock(mu_);
    devices_.push_back(std::move(d));
  }

 private:
  std::mutex mu_;
  std::vector<FleetDevice> devices_;  // GUARDED_BY(mu_)
};

inline std::string DeviceName(int i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "dev-%04d", i);
  return buf;
}

class RolloutFixture : public ::testing::Test {
 protected:
  RolloutFixture() : state_(TestRepository::Must(TempDir::Create("flotilla-rollout"))) {
    coordinator_key_ = ota::testing::NewKey();
    coordinator_signer_ = std::make_unique<security::EcdsaSigner>("coordinator", coordinator_key_);
    coordinator_keys_.Add("coordinator", coordinator_key_->public_key());
    broker_ = std::make_shared<protocol::testing::InMemoryBroker>();
    coord_tx_ = std::make_unique<protocol::testing::InMemoryTransport>(broker_, Opts("coordinator"));
    fleet_tx_ = std::make_unique<protocol::testing::InMemoryTransport>(broker_, Opts("fleet"));
    EXPECT_TRUE(coord_tx_->Connect().ok());
    EXPECT_TRUE(fleet_tx_->Connect().ok());
    EXPECT_TRUE(fleet_tx_->Subscribe("fl/v1/d/+/dn/cmd/ota", 1).ok());
    fleet_tx_->SetMessageHandler([this](const protocol::Message& m) { hints_.push_back(m); });
  }

  static protocol::testing::InMemoryTransportOptions Opts(std::string id) {
    protocol::testing::InMemoryTransportOptions o;
    o.client_id = std::move(id);
    o.queue_capacity = 100000;
    return o;
  }

  // Publishes a release of kTarget with distinct content.
  v1::TargetInfo Release(uint64_t counter) {
    Bytes content(20000);
    for (size_t i = 0; i < content.size(); ++i) content[i] = static_cast<uint8_t>(i * 7 + counter * 13);
    v1::TargetInfo t = repo_.AddTarget(kTarget, content, counter);
    EXPECT_TRUE(repo_.repo().Publish().ok());
    return t;
  }

  void AddDevices(int n, std::string hardware = "test-soc") {
    for (int k = 0; k < n; ++k) {
      const std::string id = DeviceName(next_device_++);
      auto key = ota::testing::NewKey();
      device_keys_.Add(id, key->public_key());
      signers_[id] = std::make_unique<security::EcdsaSigner>(id, key);
      fleet_.Add({id, hardware});
    }
  }

  void Open(uint64_t seed = 1, std::function<Status(std::string_view)> hook = nullptr) {
    manager_.reset();
    random_ = std::make_unique<flotilla::testing::SeededRandom>(seed);
    RolloutOptions o = options_;
    if (o.db_path.empty()) o.db_path = state_.path() / "rollouts.db";
    o.synchronous_full = false;
    RolloutDeps d;
    d.repository = &repo_.repo();
    d.fleet = &fleet_;
    d.transport = coord_tx_.get();
    d.signer = coordinator_signer_.get();
    d.device_keys = &device_keys_;
    d.clock = &repo_.clock();
    d.random = random_.get();
    d.fault_hook = std::move(hook);
    manager_ = TestRepository::Must(RolloutManager::Open(o, d));
  }

  static PhaseSpec Thresholds(double success = 100, uint32_t max_failures = 0, double max_pct = 0, uint32_t min = 0) {
    PhaseSpec p;
    p.success_percent = success;
    p.max_failures = max_failures;
    p.max_failure_percent = max_pct;
    p.min_finished = min;
    return p;
  }

  RolloutSummary Create(std::vector<double> percents, PhaseSpec thresholds, std::vector<std::string> canary = {},
                        uint32_t rate = 0) {
    RolloutSpec spec = MakeRolloutSpec("test", {kTarget}, std::move(canary), percents, thresholds);
    spec.max_assignments_per_minute = rate;
    spec.repository_url = "http://repo.invalid";
    return TestRepository::Must(manager_->Create(spec));
  }

  RolloutSummary Get(int64_t id) { return TestRepository::Must(manager_->Get(id)); }
  void Tick() { ASSERT_TRUE(manager_->Tick().ok()); }

  std::vector<std::string> WithStatus(int64_t id, DeviceRolloutStatus s) {
    std::vector<std::string> out;
    for (const auto& r : TestRepository::Must(manager_->Devices(id, s))) out.push_back(r.device_id);
    return out;
  }
  std::vector<std::string> Assigned(int64_t id) {
    std::vector<std::string> out;
    for (const auto& r : TestRepository::Must(manager_->Devices(id))) {
      if (r.status != DeviceRolloutStatus::kPending) out.push_back(r.device_id);
    }
    return out;
  }

  // The device's signed director assignment as the repository serves it, if any.
  std::optional<v1::DirectorAssignment> Director(const std::string& id) {
    const auto path = repo_.dir() / ota::DeviceDirectorPath(id);
    if (!std::filesystem::exists(path)) return std::nullopt;
    Bytes wire = TestRepository::Must(ReadFileBytes(path));
    v1::Metadata m = TestRepository::Must(ota::VerifyMetadata(wire, RootBody(), v1::ROLE_TYPE_DIRECTOR));
    return m.director();
  }
  v1::RootMetadata RootBody() {
    Bytes root = TestRepository::Must(repo_.repo().CurrentRoot());
    return TestRepository::Must(ota::ParseTrustedMetadata(root, v1::ROLE_TYPE_ROOT)).root();
  }

  // A device's report on its current assignment (deployment and nonce from the director).
  Bytes SealedReport(const std::string& id, v1::OtaOutcome outcome, const protocol::Signer* signer = nullptr) {
    auto a = Director(id);
    EXPECT_TRUE(a.has_value()) << id;
    v1::OtaReport r;
    r.set_deployment_id(a->deployment_id());
    r.set_nonce(a->nonce());
    r.set_outcome(outcome);
    if (a->targets_size() > 0) {
      r.set_target_name(a->targets(0).name());
      r.set_target_sha256(a->targets(0).sha256());
    }
    if (outcome != v1::OTA_OUTCOME_SUCCESS) r.set_error("golden prompt 2 regressed");
    return TestRepository::Must(
        protocol::SealMessage(signer ? *signer : *signers_.at(id), r, "coordinator", repo_.clock(), *random_));
  }
  Status Report(const std::string& id, v1::OtaOutcome outcome) {
    return manager_->HandleReport(SealedReport(id, outcome));
  }
  void ReportAll(const std::vector<std::string>& ids, v1::OtaOutcome outcome) {
    for (const auto& id : ids) ASSERT_TRUE(Report(id, outcome).ok()) << id;
  }

  std::set<std::string> HintedDevices() {
    fleet_tx_->Drain(1 << 20);
    std::set<std::string> out;
    for (const auto& m : hints_) out.insert(TestRepository::Must(protocol::ParseTopic(m.topic)).device_id);
    return out;
  }

  TestRepository repo_;
  TempDir state_;
  VectorFleet fleet_;
  security::KeyRing device_keys_;
  std::map<std::string, std::unique_ptr<security::EcdsaSigner>> signers_;
  std::shared_ptr<const security::EcdsaPrivateKey> coordinator_key_;
  std::unique_ptr<security::EcdsaSigner> coordinator_signer_;
  security::KeyRing coordinator_keys_;
  std::shared_ptr<protocol::testing::InMemoryBroker> broker_;
  std::unique_ptr<protocol::testing::InMemoryTransport> coord_tx_, fleet_tx_;
  std::vector<protocol::Message> hints_;
  std::unique_ptr<flotilla::testing::SeededRandom> random_;
  std::unique_ptr<RolloutManager> manager_;
  RolloutOptions options_;  // what Open() uses (db_path defaults to <state>/rollouts.db)
  int next_device_ = 0;
};

}  // namespace flotilla::coordinator::testing
