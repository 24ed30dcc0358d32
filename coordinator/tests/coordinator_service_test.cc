// Coordinator (the `coordinator run` wiring) without a broker: the rollouts of an "ota"
// section are opened and their REST routes mounted behind the API's bearer tokens; REST
// rounds stay queued without a round engine; the test-only crash point is validated.
#include "flotilla/coordinator/coordinator.h"

#include <gtest/gtest.h>
#include <httplib.h>
#include <stdlib.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "flotilla/ota/keys.h"
#include "store_test_util.h"

namespace flotilla::coordinator {
namespace {

using testutil::Must;

class CoordinatorServiceTest : public ::testing::Test {
 protected:
  CoordinatorServiceTest() : dir_(Must(TempDir::Create("coord-service"))) {}

  CoordinatorConfig Config(bool ota) {
    nlohmann::json j = {{"data_dir", "data"}, {"http", {{"port", 0}}}};
    if (ota) {
      ota::KeyInitOptions ko;
      ko.pbkdf2_iterations = 1000;
      Must(ota::InitKeyDirectory(dir_.path() / "keys", ko));
      j["ota"] = {{"repository_dir", "repo"}, {"keys_dir", "keys"}, {"repository_url", "http://coord/ota"}};
    }
    return Must(ParseCoordinatorConfig(j.dump(), dir_.path()));
  }

  TempDir dir_;
};

TEST_F(CoordinatorServiceTest, RolloutRoutesAreMountedBehindTheApiTokens) {
  const CoordinatorConfig cfg = Config(true);
  auto c = Must(Coordinator::Start(cfg));
  ASSERT_NE(c->rollouts(), nullptr);
  EXPECT_EQ(c->round_driver(), nullptr);  // no broker, no round engine
  EXPECT_TRUE(std::filesystem::exists(RolloutDatabasePath(cfg)));
  EXPECT_TRUE(std::filesystem::exists(dir_.path() / "repo"));
  const std::string reader = Must(c->store().CreateApiToken("r", std::vector<std::string>{"read"}, "test")).token;
  const std::string admin = Must(c->store().CreateApiToken("a", std::vector<std::string>{"admin"}, "test")).token;
  httplib::Client http("127.0.0.1", c->http().port());
  auto anonymous = http.Get("/api/v1/rollouts");
  ASSERT_TRUE(anonymous);
  EXPECT_EQ(anonymous->status, 401);
  auto list = http.Get("/api/v1/rollouts", {{"Authorization", "Bearer " + reader}});
  ASSERT_TRUE(list);
  EXPECT_EQ(list->status, 200);
  EXPECT_EQ(nlohmann::json::parse(list->body), nlohmann::json::array());
  const std::string spec = R"({"name": "r1", "targets": ["models/x"], "phases": [{"name": "all", "percent": 100}]})";
  auto denied = http.Post("/api/v1/rollouts", {{"Authorization", "Bearer " + reader}}, spec, "application/json");
  ASSERT_TRUE(denied);
  EXPECT_EQ(denied->status, 403);
  // An admin reaches the manager, which refuses a target the repository never published.
  auto unknown = http.Post("/api/v1/rollouts", {{"Authorization", "Bearer " + admin}}, spec, "application/json");
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->status, 404) << unknown->body;
  c->Step(std::chrono::milliseconds(1));  // rollout Tick + timestamp refresh on the owner loop
  EXPECT_TRUE(c->Shutdown().ok());
}

TEST_F(CoordinatorServiceTest, RestRoundsWaitQueuedWithoutABroker) {
  auto c = Must(Coordinator::Start(Config(false)));
  EXPECT_EQ(c->rollouts(), nullptr);
  NewRound nr;
  nr.group = "g";
  const RoundRecord r = Must(c->store().CreateRound(nr, "test"));
  c->Step(std::chrono::milliseconds(1));
  EXPECT_EQ(Must(c->store().GetRound(r.id)).state, RoundState::kCreated);
  EXPECT_EQ(Must(c->store().ListQueuedRounds()).size(), 1u);
}

TEST_F(CoordinatorServiceTest, AnUnknownCrashPointRefusesToStart) {
  ::setenv("FLOTILLA_TEST_CRASH_AFTER", "halfway", 1);
  auto c = Coordinator::Start(Config(false));
  ::unsetenv("FLOTILLA_TEST_CRASH_AFTER");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("FLOTILLA_TEST_CRASH_AFTER"), std::string::npos);
}

TEST_F(CoordinatorServiceTest, BadRoundDefaultsRefuseToStart) {
  CoordinatorConfig cfg = Config(false);
  cfg.round_defaults_json = R"({"lora_rnak": 4})";
  auto c = Coordinator::Start(cfg);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("lora_rnak"), std::string::npos);
}

}  // namespace
}  // namespace flotilla::coordinator
