// Reference/ota.md 6.5 #9 (issue 7) through the OTA fleet simulator (OtaFleet): real
// OtaClients (own data dir, SQLite journal, A/B slots, ECDSA key), the ArtifactServer over
// loopback HTTP, signed reports and the RolloutManager with its SQLite state.
//   1. 1,000 devices, 5% failing their health check: the rollout halts at its threshold
//      inside a phase, and no device outside the active phase is ever assigned.
//   2. Download faults (503, truncated and stalled responses through the faulting proxy)
//      plus process crashes at chosen steps and restarts: every device ends on the old or
//      the new version, and the report's counts match the coordinator and the devices.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "flotilla/core/file.h"
#include "flotilla/core/testing/seeded_random.h"
#include "flotilla/ota/repository_layout.h"
#include "flotilla/simulator/ota_fleet.h"
#include "ota_test_support.h"

namespace flotilla::simulator {
namespace {

using coordinator::DeviceRolloutStatus;
using ota::testing::TestRepository;

uint64_t Sum(const OtaFleetReport& r, uint64_t OtaPhaseReport::*field) {
  uint64_t n = 0;
  for (const auto& p : r.phases) n += p.*field;
  return n;
}

// What every run must satisfy, whatever was injected.
void ExpectConsistent(const OtaFleetReport& r, const std::vector<OtaDeviceResult>& devices) {
  EXPECT_EQ(r.on_neither, 0u) << "a device is on neither the old nor the new version";
  EXPECT_EQ(r.on_new + r.on_old, r.devices);
  EXPECT_EQ(r.quota_violations, 0u) << "a device outside the active phase was assigned";
  EXPECT_EQ(r.mismatches, 0u) << "coordinator status and device disk disagree";
  EXPECT_EQ(r.reports_rejected, 0u);
  EXPECT_EQ(Sum(r, &OtaPhaseReport::assigned), r.counts.assigned);
  EXPECT_EQ(Sum(r, &OtaPhaseReport::healthy), r.counts.succeeded);
  EXPECT_EQ(Sum(r, &OtaPhaseReport::failed), r.counts.failed);
  EXPECT_EQ(Sum(r, &OtaPhaseReport::installed), r.on_new);
  for (const auto& p : r.phases) EXPECT_EQ(p.failed, p.rolled_back + p.download_failures) << p.name;
  uint64_t succeeded = 0, failed = 0, crashes = 0, bytes = 0;
  for (const auto& d : devices) {
    succeeded += d.status == DeviceRolloutStatus::kSucceeded;
    failed += d.status == DeviceRolloutStatus::kFailed;
    crashes += d.crashes;
    bytes += d.bytes_downloaded;
    if (d.status == DeviceRolloutStatus::kSucceeded) {
      EXPECT_EQ(d.installed_sha256, r.artifact_sha256) << d.id;
    }
    if (d.status == DeviceRolloutStatus::kFailed) {
      EXPECT_EQ(d.installed_sha256, "") << d.id;
    }
    if (d.health_fails && d.status != DeviceRolloutStatus::kPending) {
      EXPECT_EQ(d.installed_sha256, "") << d.id << " failed its health check, yet kept the new version";
    }
  }
  EXPECT_EQ(succeeded, r.counts.succeeded);
  EXPECT_EQ(failed, r.counts.failed);
  EXPECT_EQ(crashes, r.crashes);
  EXPECT_EQ(bytes, r.bytes_downloaded);
}

class OtaRolloutTest : public ::testing::Test {
 protected:
  OtaRolloutTest() : out_(TestRepository::Must(TempDir::Create("flotilla-ota-fleet"))) {}
  TempDir out_;
};

TEST_F(OtaRolloutTest, FivePercentFailureRateHaltsAtTheThresholdWithinThePhase) {
  flotilla::testing::SeededRandom draws(2024);
  OtaFleetOptions o;
  o.devices = 1000;
  o.out_dir = out_.path() / "run";
  o.generate_bytes = 64 * 1024;  // 16 chunks of 4 KiB
  o.chunk_bytes = 4096;
  o.phases = TestRepository::Must(ParseOtaPhases("canary:5,1,10,50,100"));
  o.thresholds.success_percent = 80;
  o.thresholds.max_failure_percent = 3;
  o.thresholds.min_finished = 40;
  o.max_assignments_per_minute = 300;
  o.health_failure_rate = 0.05;
  o.membership_random = &draws;
  uint64_t ticks_over_quota = 0;
  o.on_tick = [&](const coordinator::RolloutSummary& s) { ticks_over_quota += s.counts.assigned > s.phase_quota; };
  auto fleet = TestRepository::Must(OtaFleet::Create(o));
  const OtaFleetReport r = TestRepository::Must(fleet->Run());
  const auto summary = TestRepository::Must(fleet->manager().Get(fleet->rollout_id()));

  // Halted by the percentage threshold, after the minimum, before the last phase.
  ASSERT_EQ(summary.state, coordinator::RolloutState::kHalted) << summary.reason;
  const uint64_t finished = r.counts.succeeded + r.counts.failed;
  EXPECT_GE(finished, o.thresholds.min_finished);
  EXPECT_GE(r.counts.failed * 100, 3 * finished) << summary.reason;
  EXPECT_LT(summary.phase, summary.spec.phases.size() - 1);
  EXPECT_NE(summary.reason.find("failed"), std::string::npos);
  EXPECT_EQ(r.counts.in_progress, 0u) << "every assigned device ran and reported";
  EXPECT_EQ(ticks_over_quota, 0u);
  EXPECT_EQ(r.phases[summary.phase].outcome, "halted");
  EXPECT_LT(r.counts.assigned, 1000u);
  EXPECT_LE(r.counts.assigned, summary.phase_quota);

  // No device outside the active phase has a director assignment.
  size_t director_files = 0;
  for (const auto& e : std::filesystem::directory_iterator(fleet->repository_dir() / "metadata/director/device")) {
    (void)e;
    ++director_files;
  }
  EXPECT_EQ(director_files, r.counts.assigned);

  const auto devices = fleet->Devices();
  ExpectConsistent(r, devices);
  uint64_t rolled_back = 0;
  std::vector<std::string> outsiders;
  for (const auto& d : devices) {
    if (d.status == DeviceRolloutStatus::kPending) {
      EXPECT_EQ(d.cycles, 0u) << d.id << " was woken without an assignment";
      if (outsiders.size() < 100) outsiders.push_back(d.id);
      continue;
    }
    EXPECT_TRUE(std::filesystem::exists(fleet->repository_dir() / ota::DeviceDirectorPath(d.id)));
    if (d.health_fails) {
      EXPECT_EQ(d.status, DeviceRolloutStatus::kFailed) << d.id;
      EXPECT_EQ(d.last_outcome, v1::OTA_OUTCOME_ROLLED_BACK) << d.id;
      ++rolled_back;
    } else {
      EXPECT_EQ(d.status, DeviceRolloutStatus::kSucceeded) << d.id;
    }
  }
  EXPECT_EQ(rolled_back, r.counts.failed);

  // Devices outside the phase that check anyway (polling, a forged hint) install nothing.
  ASSERT_TRUE(fleet->RunDevices(outsiders).ok());
  for (const auto& d : fleet->Devices()) {
    if (std::find(outsiders.begin(), outsiders.end(), d.id) == outsiders.end()) continue;
    EXPECT_EQ(d.last_outcome, v1::OTA_OUTCOME_UNSPECIFIED) << d.id;
    EXPECT_EQ(d.installed_sha256, "") << d.id;
  }
  std::printf("halted in phase %s: %llu assigned of quota %llu, %llu ok, %llu failed: %s\n",
              summary.spec.phases[summary.phase].name.c_str(), static_cast<unsigned long long>(r.counts.assigned),
              static_cast<unsigned long long>(summary.phase_quota), static_cast<unsigned long long>(r.counts.succeeded),
              static_cast<unsigned long long>(r.counts.failed), summary.reason.c_str());
}

// Crash points from three stages of the device state machine: mid-download (after a
// chunk is journaled), the atomic switch, and the health trial.
class OtaRolloutFaultTest : public OtaRolloutTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(OtaRolloutFaultTest, DownloadFaultsAndCrashesLeaveEveryDeviceOnTheOldOrNewVersion) {
  OtaFleetOptions o;
  o.devices = 60;
  o.out_dir = out_.path() / "run";
  o.generate_bytes = 96 * 1024 + 123;  // 7 chunks, the last one short
  o.chunk_bytes = 16 * 1024;
  o.phases = TestRepository::Must(ParseOtaPhases("canary:3,30,100"));
  o.thresholds.success_percent = 50;  // faults must not stop the rollout: no halting thresholds
  o.health_failure_rate = 0.05;
  o.download_fault_rate = 0.3;
  o.device_read_timeout = std::chrono::milliseconds(300);
  o.max_download_attempts = 6;
  o.crash_at = GetParam();
  o.crash_rate = 0.25;
  o.seed = 11;
  auto fleet = TestRepository::Must(OtaFleet::Create(o));
  const OtaFleetReport r = TestRepository::Must(fleet->Run());
  const auto devices = fleet->Devices();

  EXPECT_EQ(r.final_state, "completed") << r.reason;
  EXPECT_EQ(r.counts.assigned, 60u);
  EXPECT_EQ(r.counts.in_progress, 0u);
  EXPECT_GT(r.download_faults_injected, 0u);
  EXPECT_GT(r.crashes, 0u) << "no device reached " << o.crash_at;
  EXPECT_LE(r.crashes, 15u) << "each chosen device crashes once";
  EXPECT_GE(r.counts.succeeded, 45u);
  ExpectConsistent(r, devices);

  // report.json says the same.
  const Bytes text = TestRepository::Must(ReadFileBytes(o.out_dir / "report.json"));
  const auto j = nlohmann::json::parse(AsStringView(text));
  EXPECT_EQ(j["rollout"]["succeeded"].get<uint64_t>(), r.counts.succeeded);
  EXPECT_EQ(j["rollout"]["failed"].get<uint64_t>(), r.counts.failed);
  EXPECT_EQ(j["devices_end_state"]["on_neither"].get<uint64_t>(), 0u);
  EXPECT_EQ(j["faults"]["crashes"].get<uint64_t>(), r.crashes);
  ASSERT_EQ(j["phases"].size(), 3u);
  EXPECT_EQ(j["phases"][2]["outcome"], "completed");
}

INSTANTIATE_TEST_SUITE_P(CrashPoints, OtaRolloutFaultTest,
                         ::testing::Values("journal:DOWNLOAD:chunk:after", "rename:current", "journal:HEALTH"));

}  // namespace
}  // namespace flotilla::simulator
