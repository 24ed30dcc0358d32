// round_bench: one federated round of N devices through the real coordinator process
// (`flotilla coordinator run`, SQLite, HTTP) over a real Mosquitto with mTLS, the devices
// being real DeviceAgents in this process (SeededLocalTrainer: no model compute, so the
// round's wall time is all protocol overhead — enrolment is done before the clock starts).
//
//   round_bench [--devices=100,1000,3000] [--flotilla=PATH] [--profile=curious|hardened]
//
// Prints per N: round wall time (REST POST to "published"), per-stage durations from the
// coordinator's /metrics, coordinator CPU during the round and its peak RSS (VmHWM of the
// child process, so device memory is not counted).
#include <fcntl.h>
#include <httplib.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "flotilla/coordinator/store.h"
#include "flotilla/core/file.h"
#include "flotilla/core/log.h"
#include "flotilla/protocol/mosquitto_broker.h"
#include "test_agents.h"
#include "test_pki.h"
#include "test_util.h"

namespace {

using namespace flotilla;
using json = nlohmann::json;
using SteadyClock = std::chrono::steady_clock;

[[noreturn]] void Die(const std::string& what, const Status& s) {
  std::fprintf(stderr, "round_bench: %s: %s\n", what.c_str(), s.ToString().c_str());
  std::exit(1);
}
template <typename T>
T Must(Result<T> r, const char* what) {
  if (!r.ok()) Die(what, r.status());
  return std::move(r).value();
}

pid_t Spawn(const std::string& exe, const std::filesystem::path& config, const std::filesystem::path& log) {
  std::string a0 = exe, a1 = "coordinator", a2 = "run", a3 = "--config", a4 = config.string();
  char* argv[] = {a0.data(), a1.data(), a2.data(), a3.data(), a4.data(), nullptr};
  const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execv(a0.c_str(), argv);
    ::_exit(127);
  }
  ::close(fd);
  return pid;
}

// utime + stime of a process, seconds.
double CpuSeconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(in, line);
  const size_t close = line.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(line.substr(close + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// A /proc/<pid>/status field in kB ("VmHWM", "VmRSS"), as MiB.
double StatusMiB(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stod(line.substr(field.size() + 1)) / 1024.0;
  }
  return 0;
}

// flotilla_stage_duration_seconds_sum{stage="..."} from /metrics.
std::map<std::string, double> StageSums(httplib::Client& http) {
  std::map<std::string, double> out;
  auto res = http.Get("/metrics");
  if (!res || res->status != 200) {
    std::fprintf(stderr, "GET /metrics failed: %s\n",
                 res ? ("HTTP " + std::to_string(res->status)).c_str() : httplib::to_string(res.error()).c_str());
    return out;
  }
  std::istringstream in(res->body);
  std::string line;
  const std::string prefix = "flotilla_stage_duration_seconds_sum{stage=\"";
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) != 0) continue;
    const size_t end = line.find('"', prefix.size());
    out[line.substr(prefix.size(), end - prefix.size())] = std::stod(line.substr(line.find(' ', end) + 1));
  }
  return out;
}

struct Figures {
  size_t devices = 0;
  double enrol_s = 0, wall_s = 0, cpu_s = 0, rss_mib = 0;
  std::string state, reason;
  std::map<std::string, double> stages;
  std::vector<std::pair<std::string, double>> rss_by_state;  // highest VmRSS seen in each state, in order
  double rss_before_round = 0;
};

Figures RunOne(size_t devices, const std::string& flotilla, const std::string& profile) {
  Figures f;
  f.devices = devices;
  TempDir dir = Must(TempDir::Create("round-bench"), "temp dir");
  testsupport::TestPki pki = Must(testsupport::TestPki::Create(dir.path() / "pki"), "pki");
  auto coordinator_files = Must(pki.IssueClient("coordinator"), "coordinator certificate");
  protocol::MosquittoBrokerOptions bo;
  bo.tls = protocol::MosquittoTlsListenerOptions{pki.ca_cert, pki.broker_cert, pki.broker_key, "coordinator"};
  bo.max_queued_messages = 100000;
  auto broker = Must(protocol::MosquittoBroker::Start(bo), "broker");
  const int port = testsupport::FreeLoopbackPort();
  const uint32_t min_cohort = static_cast<uint32_t>(devices * 9 / 10);
  const json config = {
      {"data_dir", "data"},
      {"http", {{"listen", "127.0.0.1"}, {"port", port}}},
      {"broker",
       {{"uri", broker->tls_uri()},
        {"ca_file", pki.ca_cert.string()},
        {"cert_file", coordinator_files.first.string()},
        {"key_file", coordinator_files.second.string()}}},
      {"round_defaults",
       {{"group", "fleet"},
        {"min_cohort", min_cohort},
        {"target_cohort", devices},
        {"check_in_timeout_seconds", 120},
        {"training_timeout_seconds", 180},
        {"stage_timeout_seconds", 120},
        {"profile", profile},
        {"local_steps", 1},
        {"base_model", {{"version", "base-bench"}, {"sha256", std::string(64, 'b')}}},
        {"initial_adapter_length", 4096}}},
      {"metrics_flush_seconds", 1},
  };
  const std::filesystem::path config_file = dir.path() / "coordinator.json";
  if (Status s = WriteFileAtomic(config_file, AsBytes(config.dump(2))); !s.ok()) Die("config", s);
  std::string token;
  {
    auto store = Must(coordinator::Store::Open(dir.path() / "data"), "store");
    token = Must(store->CreateApiToken("bench", std::vector<std::string>{"admin"}, "bench"), "token").token;
  }
  const pid_t child = Spawn(flotilla, config_file, dir.path() / "coordinator.log");
  httplib::Client http("127.0.0.1", port);
  http.set_read_timeout(30, 0);
  const auto up_deadline = SteadyClock::now() + std::chrono::seconds(30);
  while (true) {
    auto res = http.Get("/healthz");
    if (res && res->status == 200) break;
    if (SteadyClock::now() > up_deadline) {
      std::fprintf(stderr, "coordinator did not start:\n%s\n",
                   ReadFileString(dir.path() / "coordinator.log").value_or("").c_str());
      std::exit(1);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }

  testsupport::TestAgentOptions ao;
  ao.devices = static_cast<int>(devices);
  ao.id_prefix = "b";
  ao.data_root = dir.path() / "devices";
  ao.broker_tls_uri = broker->tls_uri();
  ao.coordinator_cert = coordinator_files.first;
  ao.base_version = "base-bench";
  ao.base_sha256 = Bytes(32, 0xbb);
  // Hardened: neighbours' identity keys provisioned (one OpenSSL ring shared by the
  // simulated devices). The certificate path costs each real device ~k X.509 checks on
  // its own CPU; a thousand of them on two cores would measure the simulator, not the
  // protocol.
  ao.provisioned_peer_keys = profile == "hardened";
  ao.poll_threads = 2;
  ao.fast_crypto = true;
  ao.connect_batch = 50;
  ao.connect_batch_pause = std::chrono::milliseconds(50);
  const auto t_enrol = SteadyClock::now();
  auto agents = Must(testsupport::TestAgents::Start(pki, ao), "agents");
  if (!agents->WaitEnrolled(std::chrono::minutes(5))) {
    std::fprintf(stderr, "devices did not enrol in 5 minutes\n");
    std::exit(1);
  }
  f.enrol_s = std::chrono::duration<double>(SteadyClock::now() - t_enrol).count();
  std::this_thread::sleep_for(std::chrono::seconds(2));  // presence settles

  const std::map<std::string, double> before = StageSums(http);
  const double cpu_before = CpuSeconds(child);
  f.rss_before_round = StatusMiB(child, "VmHWM");
  const auto t0 = SteadyClock::now();
  auto post = http.Post("/api/v1/rounds", {{"Authorization", "Bearer " + token}}, R"({"config": {}})",
                        "application/json");
  if (!post || post->status != 201) {
    std::fprintf(stderr, "POST /rounds failed: %s\n", post ? post->body.c_str() : "no response");
    std::exit(1);
  }
  const std::string id = json::parse(post->body)["id"].get<std::string>();
  json round;
  const auto deadline = SteadyClock::now() + std::chrono::minutes(10);
  while (SteadyClock::now() < deadline) {
    auto res = http.Get(("/api/v1/rounds/" + id).c_str(), {{"Authorization", "Bearer " + token}});
    if (res && res->status == 200) {
      round = json::parse(res->body, nullptr, false);
      const std::string st = round.value("state", "");
      const double rss = StatusMiB(child, "VmRSS");
      if (f.rss_by_state.empty() || f.rss_by_state.back().first != st) f.rss_by_state.emplace_back(st, rss);
      f.rss_by_state.back().second = std::max(f.rss_by_state.back().second, rss);
      if (st == "published" || st == "failed" || st == "cancelled") break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  f.wall_s = std::chrono::duration<double>(SteadyClock::now() - t0).count();
  f.cpu_s = CpuSeconds(child) - cpu_before;
  f.state = round.value("state", "?");
  f.reason = round.value("reason", "");
  // The coordinator records stage timings when its main loop next sees the round ended
  // (it may still be working through late messages): wait until they appear.
  std::map<std::string, double> after;
  for (int i = 0; i < 120; ++i) {
    after = StageSums(http);
    if (after.count("check_in") != 0 && after["check_in"] != (before.count("check_in") ? before.at("check_in") : -1.0))
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  for (const auto& [stage, sum] : after) {
    const auto b = before.find(stage);
    f.stages[stage] = sum - (b == before.end() ? 0.0 : b->second);
  }
  f.rss_mib = StatusMiB(child, "VmHWM");
  agents.reset();
  ::kill(child, SIGTERM);
  int status = 0;
  ::waitpid(child, &status, 0);
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<size_t> sizes = {100, 1000, 3000};
  std::string flotilla = FLOTILLA_CLI;
  std::string profile = "curious";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--devices=", 0) == 0) {
      sizes.clear();
      std::stringstream ss(a.substr(10));
      std::string item;
      while (std::getline(ss, item, ',')) sizes.push_back(std::stoul(item));
    } else if (a.rfind("--flotilla=", 0) == 0) {
      flotilla = a.substr(11);
    } else if (a.rfind("--profile=", 0) == 0) {
      profile = a.substr(10);
    } else {
      std::fprintf(stderr, "usage: round_bench [--devices=100,1000,3000] [--flotilla=PATH] [--profile=curious|hardened]\n");
      return 2;
    }
  }
  SetLogLevel(LogLevel::kWarn);
  rlimit nofile{};
  if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0) {
    nofile.rlim_cur = nofile.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &nofile);
  }
  std::printf("SecAgg profile %s, SeededLocalTrainer (no model compute): the round is protocol overhead\n\n",
              profile.c_str());
  std::printf("| devices | enrol s | round wall s | check_in | advertise_keys (incl. training) | share_keys | masked_input | unmask | "
              "coordinator CPU s | coordinator peak RSS MiB | state |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (size_t n : sizes) {
    const Figures f = RunOne(n, flotilla, profile);
    auto stage = [&](const char* s) {
      const auto it = f.stages.find(s);
      return it == f.stages.end() ? 0.0 : it->second;
    };
    std::printf("| %zu | %.1f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.1f | %s%s%s |\n", f.devices, f.enrol_s,
                f.wall_s, stage("check_in"), stage("advertise_keys"), stage("share_keys"), stage("masked_input"),
                stage("unmask"), f.cpu_s, f.rss_mib, f.state.c_str(), f.reason.empty() ? "" : ": ",
                f.reason.c_str());
    std::printf("|   | coordinator RSS MiB: enrolled %.1f", f.rss_before_round);
    for (const auto& [state, rss] : f.rss_by_state) std::printf(", %s %.1f", state.c_str(), rss);
    std::printf(" |\n");
    std::fflush(stdout);
  }
  return 0;
}
