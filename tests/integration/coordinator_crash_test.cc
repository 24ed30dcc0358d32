// The coordinator killed with SIGKILL at each round stage, as a real process
// (`flotilla coordinator run`), then restarted (issue 6, ARCHITECTURE.md section 8).
//
// Per stage: a real Mosquitto (mTLS + ACLs), the coordinator as a child process, ten real
// DeviceAgents that enrol over MQTT and upload over HTTP. FLOTILLA_TEST_CRASH_AFTER=<state>
// makes the coordinator SIGKILL itself right after the journal transaction entering that
// state commits — the worst moment: the state is durable, none of its side effects
// happened. Then, on coordinator.db:
//   - the kill left it consistent (Store::CheckRoundInvariants: integrity_check, foreign
//     keys, participants belong to rounds, failed rounds have a reason, aggregated rounds
//     have an existing adapter version, one running round per group) with the round in
//     exactly the crash state;
//   - a restarted coordinator finishes it: a round killed before the cohort's secrets
//     existed (created, selecting) or after the sum was stored (aggregated) is published
//     and the devices apply the new adapter; one killed while SecAgg secrets were only in
//     memory (training .. unmask) fails with "coordinator restarted during <stage>";
//   - the fleet is not stuck: the next round is published; invariants hold after a clean
//     SIGTERM shutdown.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "flotilla/coordinator/store.h"
#include "flotilla/core/file.h"
#include "flotilla/protocol/mosquitto_broker.h"
#include "test_agents.h"
#include "test_pki.h"
#include "test_util.h"

#ifndef FLOTILLA_CLI
#error "FLOTILLA_CLI must name the flotilla executable"
#endif

namespace flotilla::coordinator {
namespace {

using json = nlohmann::json;
using SteadyClock = std::chrono::steady_clock;

constexpr int kDevices = 10;
constexpr int kTrainable = 64;

using testsupport::FreeLoopbackPort;
using testsupport::Must;
using testsupport::WaitFor;

// `flotilla coordinator run --config FILE` as a child (stdout+stderr to `log`), with
// FLOTILLA_TEST_CRASH_AFTER=`crash_after` when not empty.
pid_t SpawnCoordinator(const std::filesystem::path& config, const std::filesystem::path& log,
                       const std::string& crash_after) {
  // Everything the child needs is built before fork (only async-signal-safe calls after).
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::strncmp(*e, "FLOTILLA_TEST_CRASH_AFTER=", 26) != 0) env_strings.emplace_back(*e);
  }
  if (!crash_after.empty()) env_strings.push_back("FLOTILLA_TEST_CRASH_AFTER=" + crash_after);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string exe = FLOTILLA_CLI, a1 = "coordinator", a2 = "run", a3 = "--config", a4 = config.string();
  char* argv[] = {exe.data(), a1.data(), a2.data(), a3.data(), a4.data(), nullptr};
  const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return -1;
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execve(exe.c_str(), argv, envp.data());
    ::_exit(127);
  }
  ::close(fd);
  return pid;
}

// waitpid with a timeout; the raw status, or nullopt if it is still running.
std::optional<int> WaitExit(pid_t pid, std::chrono::seconds timeout) {
  const auto deadline = SteadyClock::now() + timeout;
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (SteadyClock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

class CoordinatorCrashTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    dir_.emplace(Must(TempDir::Create("coord-crash")));
    pki_.emplace(Must(testsupport::TestPki::Create(dir_->path() / "pki")));
    coordinator_files_ = Must(pki_->IssueClient("coordinator"));
    protocol::MosquittoBrokerOptions bo;
    bo.tls = protocol::MosquittoTlsListenerOptions{pki_->ca_cert, pki_->broker_cert, pki_->broker_key, "coordinator"};
    broker_ = Must(protocol::MosquittoBroker::Start(bo));
    port_ = FreeLoopbackPort();  // fixed across restarts: adapter and upload URLs name it
    const json config = {
        {"data_dir", "data"},
        {"http", {{"listen", "127.0.0.1"}, {"port", port_}}},
        {"broker",
         {{"uri", broker_->tls_uri()},
          {"ca_file", pki_->ca_cert.string()},
          {"cert_file", coordinator_files_.first.string()},
          {"key_file", coordinator_files_.second.string()}}},
        {"round_defaults",
         {{"group", "fleet"},
          {"min_cohort", 5},
          {"target_cohort", kDevices},
          {"check_in_timeout_seconds", 10},
          {"training_timeout_seconds", 20},
          {"stage_timeout_seconds", 10},
          // consistency_check exists in the hardened profile only; there the devices take
          // their neighbours' keys from the certificates in the adverts (fleet CA).
          {"profile", Hardened() ? "hardened" : "curious"},
          {"local_steps", 1},
          {"base_model", {{"version", "base-test"}, {"sha256", std::string(64, 'b')}}},
          {"initial_adapter_length", kTrainable}}},
        {"metrics_flush_seconds", 1},
    };
    config_ = dir_->path() / "coordinator.json";
    ASSERT_TRUE(WriteFileAtomic(config_, AsBytes(config.dump(2))).ok());
    // The admin token, made in the Store before the coordinator runs (as `flotilla
    // coordinator token create` does).
    auto store = Must(Store::Open(dir_->path() / "data"));
    token_ = Must(store->CreateApiToken("crash-test", std::vector<std::string>{"admin"}, "test")).token;
    http_.emplace("127.0.0.1", port_);
    http_->set_read_timeout(10, 0);
  }

  bool Hardened() const { return std::string(GetParam()) == "consistency_check"; }

  void TearDown() override {
    agents_.reset();
    if (child_ > 0) {
      ::kill(child_, SIGKILL);
      WaitExit(child_, std::chrono::seconds(10));
    }
  }

  void StartCoordinator(const std::string& crash_after) {
    child_ = SpawnCoordinator(config_, dir_->path() / "coordinator.log", crash_after);
    ASSERT_GT(child_, 0);
    ASSERT_TRUE(WaitFor([&] {
      auto res = http_->Get("/healthz");
      return res && res->status == 200;
    }, std::chrono::seconds(30))) << Log();
  }

  std::string Log() { return ReadFileString(dir_->path() / "coordinator.log").value_or("(no log)"); }

  json GetRound(const std::string& id) {
    auto res = http_->Get(("/api/v1/rounds/" + id).c_str(), {{"Authorization", "Bearer " + token_}});
    if (!res || res->status != 200) return json();
    return json::parse(res->body, nullptr, false);
  }

  std::string PostRound() {
    auto res = http_->Post("/api/v1/rounds", {{"Authorization", "Bearer " + token_}}, R"({"config": {}})",
                           "application/json");
    EXPECT_TRUE(res);
    if (!res) return "";
    EXPECT_EQ(res->status, 201) << res->body;
    return json::parse(res->body)["id"].get<std::string>();
  }

  // Waits for a terminal state over REST; returns the round's JSON.
  json WaitTerminal(const std::string& id, std::chrono::seconds timeout) {
    json r;
    WaitFor([&] {
      r = GetRound(id);
      const std::string s = r.is_object() ? r.value("state", "") : "";
      return s == "published" || s == "failed" || s == "cancelled";
    }, timeout);
    return r;
  }

  // Opens coordinator.db as an operator would after the crash.
  void ExpectConsistent(const std::string& round_id, const std::string& state) {
    auto store = Must(Store::Open(dir_->path() / "data"));
    Status inv = store->CheckRoundInvariants();
    EXPECT_TRUE(inv.ok()) << inv.ToString();
    Result<RoundRecord> r = store->GetRound(round_id);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    if (!state.empty()) {
      EXPECT_EQ(ToString(r->state), state);
    }
  }

  std::optional<TempDir> dir_;
  std::optional<testsupport::TestPki> pki_;
  std::pair<std::filesystem::path, std::filesystem::path> coordinator_files_;
  std::unique_ptr<protocol::MosquittoBroker> broker_;
  int port_ = 0;
  std::filesystem::path config_;
  std::string token_;
  std::optional<httplib::Client> http_;
  std::unique_ptr<testsupport::TestAgents> agents_;
  pid_t child_ = -1;
};

TEST_P(CoordinatorCrashTest, KilledAfterCommittingTheStageRestartsAndFinishesOrFailsCleanly) {
  const std::string stage = GetParam();
  StartCoordinator(stage);
  testsupport::TestAgentOptions ao;
  ao.devices = kDevices;
  ao.data_root = dir_->path() / "devices";
  ao.broker_tls_uri = broker_->tls_uri();
  ao.coordinator_cert = coordinator_files_.first;
  ao.base_sha256 = Bytes(32, 0xbb);
  ao.max_inline_envelope_bytes = 256;  // masked inputs over HTTP: the upload path survives the restart too
  ao.certified_peer_keys = Hardened();
  agents_ = Must(testsupport::TestAgents::Start(*pki_, ao));
  ASSERT_TRUE(agents_->WaitEnrolled(std::chrono::seconds(30))) << "devices did not enrol\n" << Log();

  const std::string id = PostRound();
  ASSERT_FALSE(id.empty());
  const std::optional<int> status = WaitExit(child_, std::chrono::seconds(90));
  ASSERT_TRUE(status.has_value()) << "the coordinator never reached " << stage << "\n" << Log();
  child_ = -1;
  ASSERT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL) << "exit status " << *status << "\n" << Log();
  ExpectConsistent(id, stage);

  StartCoordinator("");
  const json done = WaitTerminal(id, std::chrono::seconds(90));
  ASSERT_TRUE(done.is_object()) << Log();
  const bool secrets_lost = stage == "training" || stage == "share_keys" || stage == "masked_input" ||
                            stage == "consistency_check" || stage == "unmask";
  if (secrets_lost) {
    EXPECT_EQ(done.value("state", ""), "failed") << done.dump();
    EXPECT_NE(done.value("reason", "").find("restarted"), std::string::npos) << done.dump();
  } else {
    ASSERT_EQ(done.value("state", ""), "published") << done.dump() << "\n" << Log();
    const std::string version = done.value("result_version", "");
    ASSERT_FALSE(version.empty()) << done.dump();
    EXPECT_TRUE(WaitFor([&] {
      for (const auto& a : agents_->agents()) {
        if (a->status().adapter_version != version) return false;
      }
      return true;
    }, std::chrono::seconds(30))) << "devices did not apply " << version;
  }

  // The fleet is not stuck behind the crashed round.
  const std::string next = PostRound();
  const json after = WaitTerminal(next, std::chrono::seconds(90));
  EXPECT_EQ(after.value("state", ""), "published") << after.dump() << "\n" << Log();

  ASSERT_EQ(::kill(child_, SIGTERM), 0);
  const std::optional<int> stopped = WaitExit(child_, std::chrono::seconds(30));
  ASSERT_TRUE(stopped.has_value());
  child_ = -1;
  EXPECT_TRUE(WIFEXITED(*stopped) && WEXITSTATUS(*stopped) == 0) << Log();
  ExpectConsistent(id, "");
  ExpectConsistent(next, "published");
}

INSTANTIATE_TEST_SUITE_P(EveryStage, CoordinatorCrashTest,
                         ::testing::Values("created", "selecting", "training", "share_keys", "masked_input",
                                           "consistency_check", "unmask", "aggregated"),
                         [](const ::testing::TestParamInfo<const char*>& p) { return std::string(p.param); });

}  // namespace
}  // namespace flotilla::coordinator
