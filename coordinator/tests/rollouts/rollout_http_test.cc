#include "flotilla/coordinator/rollout_http.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "rollout_test_support.h"

namespace flotilla::coordinator::testing {
namespace {

using nlohmann::json;

class RolloutHttpTest : public RolloutFixture {
 protected:
  void SetUp() override {
    Release(1);
    Release(2);
    Open();
    AddDevices(20);
    RegisterRolloutRoutes(server_, *manager_, [](const httplib::Request& req) -> Status {
      if (!req.has_header("Authorization")) return UnauthenticatedError("no token");
      if (req.get_header_value("Authorization") != "Bearer admin") return PermissionDeniedError("wrong token");
      return Status::Ok();
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    ASSERT_GT(port_, 0);
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    client_ = std::make_unique<httplib::Client>("127.0.0.1", port_);
    client_->set_default_headers({{"Authorization", "Bearer admin"}});
  }
  void TearDown() override {
    server_.stop();
    thread_.join();
  }
  json Body(const httplib::Result& r) { return json::parse(r->body); }

  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(RolloutHttpTest, CreateShowListDevicesAndCommands) {
  json spec = {{"name", "rest"},
               {"targets", {kTarget}},
               {"phases", {{{"percent", 50}, {"success_percent", 100}}, {{"percent", 100}}}}};
  auto r = client_->Post("/api/v1/rollouts", spec.dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 201) << r->body;
  const int64_t id = Body(r)["id"];
  EXPECT_EQ(Body(r)["counts"]["assigned"], 10) << "create also ticks";

  r = client_->Get("/api/v1/rollouts/" + std::to_string(id));
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(Body(r)["state"], "active");
  EXPECT_EQ(Body(r)["phase_name"], "50%");
  r = client_->Get("/api/v1/rollouts");
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(Body(r).size(), 1u);
  r = client_->Get("/api/v1/rollouts/" + std::to_string(id) + "/devices?status=assigned&limit=3");
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(Body(r).size(), 3u);

  r = client_->Post("/api/v1/rollouts/" + std::to_string(id) + "/pause", R"({"reason":"lunch"})", "application/json");
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(Body(r)["state"], "paused");
  EXPECT_EQ(Body(r)["reason"], "lunch");
  r = client_->Post("/api/v1/rollouts/" + std::to_string(id) + "/pause", "", "application/json");
  EXPECT_EQ(r->status, 409);
  r = client_->Post("/api/v1/rollouts/" + std::to_string(id) + "/resume", "", "application/json");
  EXPECT_EQ(Body(r)["state"], "active");
  r = client_->Post("/api/v1/rollouts/" + std::to_string(id) + "/rollback", "", "application/json");
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(Body(r)["state"], "rolled_back");
  EXPECT_EQ(Body(r)["counts"]["reverting"], 10);
}

TEST_F(RolloutHttpTest, ErrorsAndAuth) {
  auto r = client_->Get("/api/v1/rollouts/99");
  EXPECT_EQ(r->status, 404);
  r = client_->Post("/api/v1/rollouts", "{nope", "application/json");
  EXPECT_EQ(r->status, 400);
  EXPECT_TRUE(Body(r).contains("error"));
  r = client_->Post("/api/v1/rollouts", R"({"name":"x","targets":["models/none"],"phases":[{"percent":100}]})",
                    "application/json");
  EXPECT_EQ(r->status, 404);
  r = client_->Get("/api/v1/rollouts/1/devices?status=weird");
  EXPECT_EQ(r->status, 400);

  httplib::Client anon("127.0.0.1", port_);
  r = anon.Get("/api/v1/rollouts");
  EXPECT_EQ(r->status, 401);
  anon.set_default_headers({{"Authorization", "Bearer guest"}});
  r = anon.Post("/api/v1/rollouts/1/abort", "", "application/json");
  EXPECT_EQ(r->status, 403);
  EXPECT_TRUE(manager_->List()->empty());
}

}  // namespace
}  // namespace flotilla::coordinator::testing
