// The coordinator service runs federated rounds end to end (issue 6): Coordinator::Start
// in process (the code behind `flotilla coordinator run`) with a real Mosquitto (mTLS +
// ACLs), the default (hardened) SecAgg+ profile, ten real DeviceAgents that enrol over MQTT with their fleet certificates, upload
// their masked inputs over HTTP (claim checks) and fetch the new adapter from the public
// content-addressed route with HttpBlobClient. Checked through the REST API and the Store:
//   - a round started over REST reaches "published" with per-stage counts, the agents
//     apply the adapter whose sha256 the Store's version has, /metrics shows it, uploads
//     are purged, the adapter has lineage;
//   - the scheduler ("rounds.schedule_seconds") runs a round on its own;
//   - a round whose cohort cannot be reached fails with a recorded reason;
//   - a REST cancel ends a running round as cancelled;
//   - StoreRoundJournal::CheckInvariants holds after all of it.
#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <thread>

#include "flotilla/coordinator/config.h"
#include "flotilla/coordinator/coordinator.h"
#include "flotilla/core/file.h"
#include "flotilla/protocol/mosquitto_broker.h"
#include "flotilla/security/hash.h"
#include "test_agents.h"
#include "test_util.h"
#include "test_pki.h"

namespace flotilla::coordinator {
namespace {

using json = nlohmann::json;
using SteadyClock = std::chrono::steady_clock;

constexpr int kDevices = 10;
constexpr int kTrainable = 96;
constexpr char kGroup[] = "fleet";
const std::string kBaseSha(64, 'b');

using testsupport::Must;

std::string DeviceId(int i) { return testsupport::TestAgents::DeviceId("dev-", i); }

using testsupport::WaitFor;

class CoordinatorRoundsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_.emplace(Must(TempDir::Create("coord-rounds")));
    pki_.emplace(Must(testsupport::TestPki::Create(dir_->path())));
    coordinator_files_ = Must(pki_->IssueClient("coordinator"));
    protocol::MosquittoBrokerOptions bo;
    bo.tls = protocol::MosquittoTlsListenerOptions{pki_->ca_cert, pki_->broker_cert, pki_->broker_key, "coordinator"};
    broker_ = Must(protocol::MosquittoBroker::Start(bo));

    const json config = {
        {"data_dir", "data"},
        {"http", {{"listen", "127.0.0.1"}, {"port", 0}, {"max_upload_bytes", 1 << 20}}},
        {"broker",
         {{"uri", broker_->tls_uri()},
          {"ca_file", pki_->ca_cert.string()},
          {"cert_file", coordinator_files_.first.string()},
          {"key_file", coordinator_files_.second.string()}}},
        {"round_defaults",
         {{"group", kGroup},
          {"min_cohort", 5},
          {"target_cohort", kDevices},
          {"check_in_timeout_seconds", 10},
          {"training_timeout_seconds", 20},
          {"stage_timeout_seconds", 10},
          {"lora_rank", 2},
          {"lora_targets", "q,v"},
          {"local_steps", 1},
          {"max_examples", 16},
          {"base_model", {{"version", "base-test"}, {"sha256", kBaseSha}}},
          {"initial_adapter_length", kTrainable}}},
        {"rounds", {{"schedule_seconds", 3}}},
        {"metrics_flush_seconds", 1},
    };
    CoordinatorConfig cfg = Must(ParseCoordinatorConfig(config.dump(), dir_->path()));
    coordinator_ = Must(Coordinator::Start(cfg));
    runner_ = std::thread([this] { coordinator_->Run(stop_); });
    admin_ = Must(coordinator_->store().CreateApiToken("test", std::vector<std::string>{"admin"}, "test")).token;
    http_.emplace("127.0.0.1", coordinator_->http().port());
    http_->set_read_timeout(10, 0);
  }

  void TearDown() override {
    fleet_.reset();
    stop_ = true;
    if (runner_.joinable()) runner_.join();
    if (coordinator_) {
      EXPECT_TRUE(coordinator_->Shutdown().ok());
    }
  }

  // Ten agents with certificates and identity keys from the fleet CA (tests/support):
  // they connect, enrol over MQTT and run on their own threads; every masked input goes
  // over HTTP (claim check); the hardened profile's neighbour keys come from certificates.
  void StartAgents() {
    testsupport::TestAgentOptions o;
    o.devices = kDevices;
    o.data_root = dir_->path() / "devices";
    o.broker_tls_uri = broker_->tls_uri();
    o.coordinator_cert = coordinator_files_.first;
    o.group = kGroup;
    o.base_version = "base-test";
    o.base_sha256 = Must(FromHex(kBaseSha));
    o.max_inline_envelope_bytes = 256;
    o.certified_peer_keys = true;
    fleet_ = Must(testsupport::TestAgents::Start(*pki_, o));
  }

  std::vector<std::unique_ptr<device::DeviceAgent>>& agents() { return fleet_->agents(); }

  json Get(const std::string& path) {
    auto res = http_->Get(path.c_str(), {{"Authorization", "Bearer " + admin_}});
    EXPECT_TRUE(res) << path;
    if (!res) return json();
    EXPECT_EQ(res->status, 200) << path << ": " << res->body;
    return json::parse(res->body, nullptr, false);
  }

  // POST /api/v1/rounds; returns the new round's id.
  std::string PostRound(const json& config) {
    auto res = http_->Post("/api/v1/rounds", {{"Authorization", "Bearer " + admin_}}, json{{"config", config}}.dump(),
                           "application/json");
    EXPECT_TRUE(res);
    if (!res) return "";
    EXPECT_EQ(res->status, 201) << res->body;
    const std::string id = json::parse(res->body)["id"].get<std::string>();
    ours_.insert(id);
    return id;
  }

  RoundRecord Round(const std::string& id) { return Must(coordinator_->store().GetRound(id)); }

  bool WaitTerminal(const std::string& id, std::chrono::seconds timeout) {
    return WaitFor([&] { return rounds::IsTerminal(Round(id).state); }, timeout);
  }

  std::optional<TempDir> dir_;
  std::optional<testsupport::TestPki> pki_;
  std::pair<std::filesystem::path, std::filesystem::path> coordinator_files_;
  std::unique_ptr<protocol::MosquittoBroker> broker_;
  std::unique_ptr<Coordinator> coordinator_;
  std::atomic<bool> stop_{false};
  std::thread runner_;
  std::string admin_;
  std::optional<httplib::Client> http_;
  std::unique_ptr<testsupport::TestAgents> fleet_;
  std::set<std::string> ours_;  // rounds this test created (the others are the scheduler's)
};

TEST_F(CoordinatorRoundsTest, RestScheduledTooSmallAndCancelledRoundsOverRealMqttAndHttp) {
  ASSERT_NE(coordinator_->round_driver(), nullptr);
  StartAgents();
  ASSERT_TRUE(fleet_->WaitEnrolled(std::chrono::seconds(30))) << "devices did not enrol over MQTT";
  EXPECT_EQ(Must(coordinator_->store().CountDevices(std::nullopt, DeviceStatus::kActive)), kDevices);

  // ---- a round started over REST runs to "published"
  const std::string a = PostRound(json::object());
  ASSERT_TRUE(WaitTerminal(a, std::chrono::seconds(60)));
  RoundRecord ra = Round(a);
  ASSERT_EQ(ra.state, rounds::RoundState::kPublished) << ra.reason;
  EXPECT_EQ(ra.result_version, "adapter-" + a);
  const json shown = Get("/api/v1/rounds/" + a);
  EXPECT_EQ(shown["state"], "published");
  EXPECT_EQ(shown["participants"]["count"], kDevices);
  EXPECT_EQ(shown["participants"]["stages"]["selected"]["ok"], kDevices);
  EXPECT_EQ(shown["participants"]["stages"]["masked_input"]["ok"], kDevices);
  EXPECT_EQ(shown["participants"]["stages"]["consistency_check"]["ok"], kDevices);  // hardened
  EXPECT_EQ(shown["participants"]["stages"]["aggregated"]["survivor"], kDevices);
  EXPECT_EQ(shown["aggregate_sha256"].get<std::string>().size(), 64u);

  // The masked inputs came over HTTP and are gone now that the round ended.
  EXPECT_GE(coordinator_->round_driver()->stats().uploads_fetched, static_cast<uint64_t>(kDevices));
  for (int i = 0; i < kDevices; ++i) {
    EXPECT_EQ(coordinator_->store().GetUpload(a, DeviceId(i)).status().code(), StatusCode::kNotFound);
  }

  // The agents fetched and applied exactly the Store's version.
  const VersionRecord va = Must(coordinator_->store().GetVersion(VersionKind::kAdapter, ra.result_version));
  EXPECT_EQ(va.round_id, a);
  EXPECT_EQ(va.size, static_cast<uint64_t>(kTrainable) * 4);
  // Stored with the round's aggregate metrics.
  const json vm = json::parse(va.metrics_json);
  EXPECT_EQ(vm["cohort"], kDevices);
  EXPECT_EQ(vm["survivors"], kDevices);
  EXPECT_GT(vm["examples"].get<double>(), 0.0);
  EXPECT_GT(vm["l2_norm_delta"].get<double>(), 0.0);
  EXPECT_GT(vm["duration_ms"].get<int64_t>(), 0);
  ASSERT_TRUE(WaitFor([&] {
    for (const auto& ag : agents()) {
      const device::AgentStatus st = ag->status();
      if (st.adapter_version != va.id || ToHex(st.adapter_sha256) != va.sha256) return false;
    }
    return true;
  }, std::chrono::seconds(20))) << "agents did not apply " << va.id;
  EXPECT_EQ(Must(coordinator_->store().CurrentVersion(VersionKind::kAdapter)), va.id);
  // The content-addressed route serves it without a token; unknown hashes are 404.
  auto blob = http_->Get(("/api/v1/artifacts/sha256/" + va.sha256).c_str());
  ASSERT_TRUE(blob);
  EXPECT_EQ(blob->status, 200);
  EXPECT_EQ(ToHex(security::Sha256(AsBytes(blob->body))), va.sha256);
  EXPECT_EQ(http_->Get(("/api/v1/artifacts/sha256/" + std::string(64, '0')).c_str())->status, 404);

  auto metrics = http_->Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("flotilla_rounds{state=\"published\"} "), std::string::npos);
  EXPECT_EQ(metrics->body.find("flotilla_rounds{state=\"published\"} 0"), std::string::npos) << metrics->body;
  EXPECT_NE(metrics->body.find("flotilla_stage_duration_seconds_count{stage=\"masked_input\"}"), std::string::npos);

  // ---- the scheduler starts rounds on its own (schedule_seconds = 3)
  std::string scheduled;
  ASSERT_TRUE(WaitFor([&] {
    for (const RoundRecord& r : Must(coordinator_->store().ListRounds())) {
      if (!ours_.count(r.id) && r.state == rounds::RoundState::kPublished) scheduled = r.id;
    }
    return !scheduled.empty();
  }, std::chrono::seconds(60))) << "no scheduled round was published";
  const auto lineage = Must(coordinator_->store().Lineage(VersionKind::kAdapter, "adapter-" + scheduled));
  ASSERT_GE(lineage.size(), 2u);  // built on the REST round's adapter (or a later one)
  EXPECT_EQ(lineage.back().id, va.id);

  // ---- a cohort that cannot be reached fails with a recorded reason
  const std::string small = PostRound({{"min_cohort", kDevices + 5}, {"target_cohort", kDevices + 5},
                                       {"check_in_timeout_seconds", 1.5}});
  ASSERT_TRUE(WaitTerminal(small, std::chrono::seconds(60)));
  const RoundRecord rs = Round(small);
  EXPECT_EQ(rs.state, rounds::RoundState::kFailed);
  EXPECT_FALSE(rs.reason.empty());
  EXPECT_NE(Get("/api/v1/rounds/" + small)["reason"].get<std::string>(), "");

  // ---- a running round is cancelled over REST
  const std::string c = PostRound({{"min_cohort", kDevices + 5}, {"target_cohort", kDevices + 5},
                                   {"check_in_timeout_seconds", 60}});
  ASSERT_TRUE(WaitFor([&] { return Round(c).state == rounds::RoundState::kSelecting; }, std::chrono::seconds(60)));
  auto cancel_round = [&](const std::string& id, const char* body) {
    auto res = http_->Post(("/api/v1/rounds/" + id + "/cancel").c_str(), {{"Authorization", "Bearer " + admin_}}, body,
                           "application/json");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 202) << res->body;
  };
  // A round queued behind the running one is cancelled without waiting for it.
  const std::string queued = PostRound(json::object());
  cancel_round(queued, "{}");
  ASSERT_TRUE(WaitTerminal(queued, std::chrono::seconds(5)));
  EXPECT_EQ(Round(queued).state, rounds::RoundState::kCancelled);
  EXPECT_EQ(Round(queued).reason, "cancelled by operator");
  EXPECT_EQ(Round(c).state, rounds::RoundState::kSelecting);
  cancel_round(c, R"({"reason": "test cancel"})");
  ASSERT_TRUE(WaitTerminal(c, std::chrono::seconds(10)));
  EXPECT_EQ(Round(c).state, rounds::RoundState::kCancelled);
  EXPECT_EQ(Round(c).reason, "test cancel");

  // ---- bad config is refused with a reason instead of blocking the queue
  const std::string bad = PostRound({{"profile", "paranoid"}});
  ASSERT_TRUE(WaitTerminal(bad, std::chrono::seconds(30)));
  EXPECT_EQ(Round(bad).state, rounds::RoundState::kFailed);
  EXPECT_NE(Round(bad).reason.find("profile"), std::string::npos);

  Status inv = coordinator_->journal().CheckInvariants();
  EXPECT_TRUE(inv.ok()) << inv.ToString();
}

}  // namespace
}  // namespace flotilla::coordinator
