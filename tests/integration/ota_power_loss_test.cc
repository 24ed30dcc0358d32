// Power loss mid-install (reference/ota.md 6.5 test 6). For every crash point the client
// passes (each journal write and each fsync/rename, before and after), a fork()ed child
// runs the update and _exit()s at that point. The parent then simulates what power loss
// can leave behind, harsher than a real disk would:
//   - the staging .part file truncated to half its size (unsynced data lost);
//   - the SQLite WAL with its last frame cut off (the newest committed journal
//     transaction lost) and a torn half frame of garbage appended;
// checks the device is on the old or the new model (never neither), restarts the client
// and checks that it finishes (healthy) or rolls back (unhealthy), then stays put.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "ota_test_support.h"

namespace flotilla::ota::testing {
namespace {

namespace fs = std::filesystem;
constexpr size_t kSize = 3 * kChunk + 100;  // 4 chunks

std::string Hex(const std::string& raw) { return ToHex(AsBytes(raw)); }

void SimulatePowerLossDamage(const fs::path& device_dir) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(device_dir / "data" / "staging", ec)) {
    if (e.path().extension() == ".part") fs::resize_file(e.path(), fs::file_size(e.path()) / 2);
  }
  const fs::path wal = device_dir / "data" / "ota_journal.db-wal";
  if (!fs::exists(wal, ec)) return;
  uint64_t size = fs::file_size(wal);
  if (size < 32) return;
  uint8_t hdr[32];
  {
    std::ifstream in(wal, std::ios::binary);
    in.read(reinterpret_cast<char*>(hdr), 32);
  }
  const uint64_t page = (uint64_t{hdr[8]} << 24) | (uint64_t{hdr[9]} << 16) | (uint64_t{hdr[10]} << 8) | hdr[11];
  const uint64_t frame = 24 + page;
  if (page >= 512 && size >= 32 + frame) {
    size -= frame;
    fs::resize_file(wal, size);
  }
  std::ofstream out(wal, std::ios::binary | std::ios::app);
  const std::string torn(frame / 2, '\xa5');
  out.write(torn.data(), static_cast<std::streamsize>(torn.size()));
}

// Runs `client_fn` in a child that exits with 0 at crash point `index` (1-based count).
// Returns the child's exit code (0: crashed at the point; 3: finished without reaching it).
int RunChildUntilCrash(OtaHarness& h, const fs::path& dir, int index) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    int seen = 0;
    auto client = h.NewClient(dir, [&](std::string_view) {
      if (++seen == index) ::_exit(0);
    });
    auto r = client->RunCycle();
    ::_exit(r.ok() ? 3 : 4);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  int status = 0;
  for (;;) {
    const pid_t done = ::waitpid(pid, &status, WNOHANG);
    if (done == pid) break;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -2;
}

class PowerLossTest : public ::testing::TestWithParam<bool> {};

TEST_P(PowerLossTest, DeviceIsAlwaysOnOldOrNewAndRecovers) {
  const bool healthy = GetParam();
  OtaHarness h;
  const v1::TargetInfo v1 = h.Release(ModelBytes(kSize), 1, "dep-1");
  {
    auto client = h.NewClient();
    auto r = client->RunCycle();
    ASSERT_TRUE(r.ok() && r->outcome == v1::OTA_OUTCOME_SUCCESS);
  }
  const v1::TargetInfo v2 = h.Release(ModelBytes(kSize, 5, {1, 3}), 2, "dep-2");
  h.health().fail_first = healthy ? 0 : -1;
  const std::string old_sha = Hex(v1.sha256()), new_sha = Hex(v2.sha256());
  const std::string want = healthy ? new_sha : old_sha;

  // The crash points of an undisturbed run.
  std::vector<std::string> points;
  {
    auto dir = TestRepository::Must(TempDir::Create("flotilla-ota-dry"));
    fs::copy(h.device_dir(), dir.path(), fs::copy_options::recursive | fs::copy_options::copy_symlinks);
    auto client = h.NewClient(dir.path(), [&](std::string_view p) { points.emplace_back(p); });
    auto r = client->RunCycle();
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r->outcome, healthy ? v1::OTA_OUTCOME_SUCCESS : v1::OTA_OUTCOME_ROLLED_BACK) << r->error;
    ASSERT_EQ(OtaHarness::CurrentSha(dir.path()), want);
  }
  ASSERT_GE(points.size(), 30u);
  RecordProperty("crash_points", static_cast<int>(points.size()));
  for (const char* must : {"fsync:part:before", "rename:current:after", "fsync:slot:after",
                           "journal:HEALTH:switched:before", "journal:trusted:after"}) {
    EXPECT_NE(std::find(points.begin(), points.end(), must), points.end()) << must;
  }

  for (size_t k = 1; k <= points.size(); ++k) {
    SCOPED_TRACE("crash at #" + std::to_string(k) + " " + points[k - 1]);
    auto dir = TestRepository::Must(TempDir::Create("flotilla-ota-crash"));
    fs::copy(h.device_dir(), dir.path(), fs::copy_options::recursive | fs::copy_options::copy_symlinks);
    ASSERT_EQ(RunChildUntilCrash(h, dir.path(), static_cast<int>(k)), 0);
    SimulatePowerLossDamage(dir.path());
    const std::string after_crash = OtaHarness::CurrentSha(dir.path());
    EXPECT_TRUE(after_crash == old_sha || after_crash == new_sha) << "device on neither: '" << after_crash << "'";

    auto client = h.NewClient(dir.path());
    auto r = client->RunCycle();
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(client->state(), OtaState::kIdle);
    if (OtaHarness::CurrentSha(dir.path()) != want) {
      // The crash may have hit before the cycle was journaled at all: one more cycle.
      auto r2 = client->RunCycle();
      ASSERT_TRUE(r2.ok());
    }
    EXPECT_EQ(OtaHarness::CurrentSha(dir.path()), want);
    // And it stays there.
    auto r3 = client->RunCycle();
    ASSERT_TRUE(r3.ok());
    EXPECT_EQ(r3->outcome, v1::OTA_OUTCOME_UNSPECIFIED) << r3->error;
    EXPECT_EQ(OtaHarness::CurrentSha(dir.path()), want);
  }
}

INSTANTIATE_TEST_SUITE_P(HealthyAndUnhealthy, PowerLossTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& p) { return p.param ? "Healthy" : "Unhealthy"; });

}  // namespace
}  // namespace flotilla::ota::testing
