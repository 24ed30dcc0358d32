// One database: the coordinator's Store (user_version migrations) and the RolloutManager
// (component "rollouts") in the same <data_dir>/coordinator.db over separate connections.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "flotilla/coordinator/store.h"
#include "flotilla/core/sqlite.h"
#include "rollout_test_support.h"

namespace flotilla::coordinator::testing {
namespace {

constexpr auto kOk = v1::OTA_OUTCOME_SUCCESS;

class RolloutDbTest : public RolloutFixture {
 protected:
  void SetUp() override {
    Release(1);
    Release(2);
    options_.db_path = state_.path() / "coordinator.db";
  }
  std::unique_ptr<Store> OpenStore() {
    StoreOptions so;
    so.clock = &repo_.clock();
    so.synchronous_full = false;
    return TestRepository::Must(Store::Open(state_.path(), so));
  }
};

TEST_F(RolloutDbTest, StoreAndRolloutsShareCoordinatorDbAndBothWriteConcurrently) {
  auto store = OpenStore();
  const int store_version = TestRepository::Must(store->SchemaVersion());
  Open();  // migrates component "rollouts" in the Store's file
  AddDevices(40);
  const auto r = Create({100}, Thresholds());

  // Both write at once through their own connections: the busy timeout serializes them.
  std::atomic<bool> store_ok{true};
  std::thread writer([&] {
    const std::vector<std::string> scopes = {"read"};
    for (int i = 0; i < 40; ++i) {
      if (!store->CreateApiToken("token-" + std::to_string(i), scopes, "test").ok()) store_ok = false;
    }
  });
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(manager_->Tick().ok());
    for (const auto& id : WithStatus(r.id, DeviceRolloutStatus::kAssigned)) ASSERT_TRUE(Report(id, kOk).ok()) << id;
  }
  writer.join();
  EXPECT_TRUE(store_ok);
  EXPECT_EQ(Get(r.id).counts.succeeded, 40u);

  // Close both; reopen in the other order: nothing re-migrated, everything there.
  manager_.reset();
  store.reset();
  Open();
  store = OpenStore();
  EXPECT_EQ(TestRepository::Must(store->SchemaVersion()), store_version);
  EXPECT_EQ(TestRepository::Must(store->ListApiTokens()).size(), 40u);
  const auto s = Get(r.id);
  EXPECT_EQ(s.state, RolloutState::kCompleted);
  EXPECT_EQ(s.counts.succeeded, 40u);
  EXPECT_TRUE(store->IntegrityCheck().ok());

  auto db = TestRepository::Must(sqlite::Database::Open(options_.db_path));
  EXPECT_EQ(TestRepository::Must(db->UserVersion()), store_version) << "user_version is the Store's alone";
  EXPECT_EQ(TestRepository::Must(db->ComponentVersion("rollouts")), 2);
}

// A standalone rollouts.db from before component migrations (schema v1 recorded in
// user_version, no schema_migrations) opens, keeps its rollouts and is brought to v2.
TEST_F(RolloutDbTest, ALegacyStandaloneFileIsAdopted) {
  options_.db_path = state_.path() / "rollouts.db";
  Open();
  AddDevices(5);
  const auto r = Create({100}, Thresholds());
  Tick();
  manager_.reset();
  {
    auto db = TestRepository::Must(sqlite::Database::Open(options_.db_path));
    ASSERT_TRUE(db->Exec("DROP INDEX rollout_devices_by_expiry;"
                         "ALTER TABLE rollout_devices DROP COLUMN director_expires_ms;"
                         "ALTER TABLE rollout_devices DROP COLUMN prev_nonce;"
                         "DROP TABLE schema_migrations;"
                         "PRAGMA user_version = 1;")
                    .ok());
    ASSERT_EQ(TestRepository::Must(db->ComponentVersion("rollouts")), 0);
  }
  Open();
  const auto s = Get(r.id);
  EXPECT_EQ(s.counts.assigned, 5u);
  // Legacy rows have no recorded expiry: the first Tick re-signs them.
  Tick();
  EXPECT_EQ(manager_->stats().assignments_refreshed, 5u);
  ASSERT_TRUE(Report(DeviceName(0), kOk).ok());
  auto db = TestRepository::Must(sqlite::Database::Open(options_.db_path));
  EXPECT_EQ(TestRepository::Must(db->ComponentVersion("rollouts")), 2);
}

TEST_F(RolloutDbTest, AFileFromANewerProgramIsRefused) {
  Open();
  manager_.reset();
  {
    auto db = TestRepository::Must(sqlite::Database::Open(options_.db_path));
    ASSERT_TRUE(db->Exec("UPDATE schema_migrations SET version = 99 WHERE component = 'rollouts'").ok());
  }
  RolloutOptions o = options_;
  RolloutDeps d;
  d.repository = &repo_.repo();
  d.clock = &repo_.clock();
  auto m = RolloutManager::Open(o, d);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace flotilla::coordinator::testing
