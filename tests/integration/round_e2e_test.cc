// Federated rounds end to end over a real Mosquitto with mTLS and ACLs (the harness),
// real ECDSA identities from a throw-away fleet PKI, real SQLite files:
//   - ThousandDevices: 1,000 DeviceAgents in this process (staggered connects, raised
//     RLIMIT_NOFILE, a bounded worker pool for training and SecAgg crypto) and the
//     coordinator's RoundDriver in a forked child process (so its RSS and CPU are its
//     own). The aggregate must equal the plaintext sum of the survivors' inputs.
//   - BrokerRestartMidRound (hardened profile, 30 devices): the broker is restarted
//     during a SecAgg stage; the round
//     completes or fails cleanly, and the journal is consistent afterwards.
// Figures (stage times, protocol overhead, coordinator RSS/CPU) are printed, not asserted.
// FLOTILLA_ROUND_E2E_DEVICES overrides the fleet size.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "flotilla/aggregation/crypto_suite.h"
#include "flotilla/coordinator/round_driver.h"
#include "flotilla/coordinator/round_fast_identity.h"
#include "flotilla/core/file.h"
#include "flotilla/core/log.h"
#include "flotilla/device/agent.h"
#include "flotilla/protocol/mosquitto_broker.h"
#include "flotilla/protocol/mqtt_transport.h"
#include "flotilla/protocol/topics.h"
#include "flotilla/security/identity.h"
#include "round_test_support.h"
#include "test_pki.h"

namespace flotilla::rounds {
namespace {

using SteadyClock = std::chrono::steady_clock;
using testing::InProcessBlobs;
using testing::RoundRecorder;

constexpr char kGroup[] = "sim";
const std::string kModelSha(32, '\x42');

double Seconds(SteadyClock::time_point t) { return std::chrono::duration<double>(SteadyClock::now() - t).count(); }

std::string DeviceId(uint32_t i) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "sim-%04u", i);
  return buf;
}

uint32_t FleetSize(uint32_t fallback) {
  const char* env = std::getenv("FLOTILLA_ROUND_E2E_DEVICES");
  if (env != nullptr && std::atoi(env) > 1) return static_cast<uint32_t>(std::atoi(env));
#if defined(FLOTILLA_SANITIZED)
  return std::min<uint32_t>(fallback, 150);
#else
  return fallback;
#endif
}

double CpuSeconds() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

// VmHWM of this process, KiB.
long PeakRssKiB() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::atol(line.c_str() + 6);
  }
  return -1;
}

// Everything both sides need: PKI files, broker, shared directories.
struct World {
  std::optional<TempDir> dir;
  std::optional<testsupport::TestPki> pki;
  std::unique_ptr<protocol::MosquittoBroker> broker;
  std::vector<std::pair<std::filesystem::path, std::filesystem::path>> device_files;  // [i-1] cert, key
  std::pair<std::filesystem::path, std::filesystem::path> coordinator_files;

  Status Create(uint32_t devices) {
    FLT_ASSIGN_OR_RETURN(TempDir d, TempDir::Create("round-e2e"));
    dir.emplace(std::move(d));
    FLT_ASSIGN_OR_RETURN(testsupport::TestPki p, testsupport::TestPki::Create(dir->path()));
    pki.emplace(std::move(p));
    FLT_ASSIGN_OR_RETURN(coordinator_files, pki->IssueClient("coordinator"));
    // Two issuing threads (key generation + signing dominate); joined before any fork.
    device_files.resize(devices);
    std::vector<Status> failed(2);
    std::vector<std::thread> issuers;
    for (uint32_t t = 0; t < 2; ++t) {
      issuers.emplace_back([&, t] {
        for (uint32_t i = 1 + t; i <= devices && failed[t].ok(); i += 2) {
          auto files = pki->IssueClient(DeviceId(i));
          if (!files.ok()) failed[t] = files.status();
          else device_files[i - 1] = std::move(*files);
        }
      });
    }
    for (auto& th : issuers) th.join();
    for (const Status& f : failed) FLT_RETURN_IF_ERROR(f);
    protocol::MosquittoBrokerOptions bo;
    bo.tls = protocol::MosquittoTlsListenerOptions{pki->ca_cert, pki->broker_cert, pki->broker_key, "coordinator"};
    bo.max_queued_messages = 100000;
    FLT_ASSIGN_OR_RETURN(broker, protocol::MosquittoBroker::Start(bo));
    return Status::Ok();
  }

  std::filesystem::path adapters_dir() const { return dir->path() / "adapters"; }

  protocol::MqttTransportOptions TransportOptions(const std::string& id,
                                                  const std::pair<std::filesystem::path, std::filesystem::path>& files) {
    protocol::MqttTransportOptions o;
    o.server_uri = broker->tls_uri();
    o.client_id = id;
    o.keepalive = std::chrono::seconds(300);
    o.connect_timeout = std::chrono::seconds(60);
    o.tls = protocol::MqttTlsOptions{pki->ca_cert.string(), files.first.string(), files.second.string(), true};
    return o;
  }
};

RoundSpec MakeSpec(uint32_t devices) {
  RoundSpec s;
  s.group = kGroup;
  s.base_model.set_version("base-1");
  s.base_model.set_sha256(kModelSha);
  s.training.set_mode(v1::LORA_MODE_FROZEN_A);
  s.training.set_local_steps(2);
  s.training.set_max_examples(32);
  s.min_cohort = devices - devices / 10;
  s.target_cohort = devices;
  s.check_in_timeout = std::chrono::seconds(40);
  s.training_timeout = std::chrono::seconds(40);
  s.stage_timeout = std::chrono::seconds(30);
  // Curious profile: the hardened one costs every device ~320 ECDSA verifications at
  // n = 1,000 (docs/secure-aggregation.md), which the unit tests cover at n = 10.
  s.profile = v1::SEC_AGG_PROFILE_CURIOUS;
  s.max_colluding_fraction = 0.1;
  s.max_dropout_rate = 0.2;
  return s;
}

// ---------------------------------------------------------------- coordinator side

struct CoordinatorResult {
  RoundStatus status;
  RoundTestRecord record;
  RoundDriverStats stats;
  long peak_rss_kib = 0;
  double cpu_seconds = 0;
};

// Runs one round as the coordinator until it ends (or `timeout`).
struct Coordinator {
  std::unique_ptr<protocol::MqttTransport> transport;
  std::unique_ptr<SqliteRoundJournal> journal;
  std::unique_ptr<DirectoryAdapterRegistry> adapters;
  InMemoryUploadSource uploads;
  std::unique_ptr<RoundDriver> driver;
  RoundTestRecord record;

  Status Open(World& w, uint32_t devices, size_t trainable) {
    FLT_ASSIGN_OR_RETURN(transport, protocol::MqttTransport::Create(
                                        w.TransportOptions("coordinator", w.coordinator_files)));
    FLT_RETURN_IF_ERROR(transport->Connect());
    FLT_ASSIGN_OR_RETURN(journal, SqliteRoundJournal::Open(w.dir->path() / "coordinator-rounds.db"));
    FLT_ASSIGN_OR_RETURN(adapters, DirectoryAdapterRegistry::Open(w.adapters_dir(), "http://coordinator.invalid/adapters",
                                                                  trainable));
    // The coordinator's OpenSSL fast path for envelope signatures.
    auto ring = std::make_shared<OpenSslKeyRing>();
    for (uint32_t i = 1; i <= devices; ++i) {
      FLT_ASSIGN_OR_RETURN(std::string pem, ReadFileString(w.device_files[i - 1].first));
      FLT_RETURN_IF_ERROR(ring->AddCertificatePem(DeviceId(i), pem));
    }
    FLT_ASSIGN_OR_RETURN(std::string key_pem, ReadFileString(w.coordinator_files.second));
    FLT_ASSIGN_OR_RETURN(auto signer, OpenSslEcdsaSigner::FromPem("coordinator", key_pem));
    RoundDriverOptions o;
    o.transport = transport.get();
    o.signer = std::move(signer);
    o.verifier = ring;
    o.journal = journal.get();
    o.adapters = adapters.get();
    o.uploads = &uploads;
    o.unmask_threads = 2;
    o.test_hook = [this](const RoundTestRecord& r) { record = r; };
    FLT_ASSIGN_OR_RETURN(driver, RoundDriver::Open(std::move(o)));
    return driver->Attach();
  }

  Result<std::string> RunRound(const RoundSpec& spec, std::chrono::seconds timeout,
                               const std::function<void(RoundState)>& on_state = nullptr) {
    FLT_ASSIGN_OR_RETURN(std::string id, driver->StartRound(spec));
    const auto t0 = SteadyClock::now();
    RoundState last = RoundState::kCreated;
    while (!driver->idle() && SteadyClock::now() - t0 < timeout) {
      driver->Poll(std::chrono::milliseconds(5));
      const RoundState now = driver->status(id)->state;
      if (now != last && on_state) on_state(now);
      last = now;
    }
    return id;
  }
};

// Child process: serialize what the parent checks into a small text file.
void WriteResult(const std::filesystem::path& path, const CoordinatorResult& r) {
  std::ofstream out(path);
  out << "round_id " << r.status.round_id << "\n";
  out << "state " << ToString(r.status.state) << "\n";
  out << "reason " << r.status.reason << "\n";
  out << "cohort " << r.status.cohort << "\n";
  out << "survivors " << r.status.survivors << "\n";
  out << "duration_ms " << r.status.duration_ms << "\n";
  out << "unmask_ms " << r.status.unmask_ms << "\n";
  out << "peak_rss_kib " << r.peak_rss_kib << "\n";
  out << "cpu_seconds " << r.cpu_seconds << "\n";
  out << "rejected " << r.stats.messages_rejected << "\n";
  out << "sent " << r.stats.messages_sent << " " << r.stats.bytes_out << "\n";
  out << "received " << r.stats.messages_accepted << " " << r.stats.bytes_in << "\n";
  for (const auto& st : r.status.stages)
    out << "stage " << st.stage << " " << st.duration_ms << " " << st.answered << " " << st.expected << "\n";
  out << "survivor_ids";
  for (const auto& id : r.record.survivors) out << " " << id;
  out << "\nsum";
  for (uint32_t v : r.record.sum) out << " " << v;
  out << "\n";
}

CoordinatorResult ReadResult(const std::filesystem::path& path) {
  CoordinatorResult r;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string key;
    ls >> key;
    if (key == "round_id") {
      ls >> r.status.round_id;
    } else if (key == "state") {
      std::string s;
      ls >> s;
      r.status.state = ParseRoundState(s).value_or(RoundState::kCreated);
    } else if (key == "reason") {
      std::getline(ls, r.status.reason);
    } else if (key == "cohort") {
      ls >> r.status.cohort;
    } else if (key == "survivors") {
      ls >> r.status.survivors;
    } else if (key == "duration_ms") {
      ls >> r.status.duration_ms;
    } else if (key == "unmask_ms") {
      ls >> r.status.unmask_ms;
    } else if (key == "peak_rss_kib") {
      ls >> r.peak_rss_kib;
    } else if (key == "cpu_seconds") {
      ls >> r.cpu_seconds;
    } else if (key == "rejected") {
      ls >> r.stats.messages_rejected;
    } else if (key == "sent") {
      ls >> r.stats.messages_sent >> r.stats.bytes_out;
    } else if (key == "received") {
      ls >> r.stats.messages_accepted >> r.stats.bytes_in;
    } else if (key == "stage") {
      StageTiming t;
      ls >> t.stage >> t.duration_ms >> t.answered >> t.expected;
      r.status.stages.push_back(t);
    } else if (key == "survivor_ids") {
      std::string id;
      while (ls >> id) r.record.survivors.push_back(id);
    } else if (key == "sum") {
      uint32_t v;
      while (ls >> v) r.record.sum.push_back(v);
    }
  }
  return r;
}

// ---------------------------------------------------------------- device side

struct DeviceFleet {
  std::unique_ptr<device::WorkerPool> pool;
  std::unique_ptr<DirectoryAdapterRegistry> adapters;  // reads the coordinator's files
  InMemoryUploadSource uploads;                        // unused: inputs fit inline
  std::shared_ptr<InProcessBlobs> blobs;
  RoundRecorder recorder;
  std::shared_ptr<OpenSslKeyRing> coordinator_ring;
  std::shared_ptr<OpenSslKeyRing> peer_ring;  // hardened profile only
  bool hardened_ = false;
  std::string fleet_ca_pem_;
  std::vector<std::unique_ptr<device::DeviceAgent>> agents;

  Status Create(World& w, uint32_t devices, size_t trainable, bool hardened = false) {
    pool = std::make_unique<device::WorkerPool>(2);
    FLT_ASSIGN_OR_RETURN(adapters, DirectoryAdapterRegistry::Open(w.adapters_dir(), "http://coordinator.invalid/adapters",
                                                                  trainable));
    blobs = std::make_shared<InProcessBlobs>(&uploads, adapters.get());
    // Simulated devices sign and verify with OpenSSL too (a thousand of them share two
    // cores); the agent takes any Signer/SignatureVerifier, real devices use mbedTLS.
    coordinator_ring = std::make_shared<OpenSslKeyRing>();
    FLT_ASSIGN_OR_RETURN(std::string pem, ReadFileString(w.coordinator_files.first));
    FLT_RETURN_IF_ERROR(coordinator_ring->AddCertificatePem("coordinator", pem));
    hardened_ = hardened;
    if (hardened) {
      // The hardened profile. Even devices get their neighbours' keys provisioned (the
      // simulator's shared ring); odd ones learn them from the certificates in the key
      // adverts, checked against the fleet CA — what a real device does.
      FLT_ASSIGN_OR_RETURN(fleet_ca_pem_, ReadFileString(w.pki->ca_cert));
      peer_ring = std::make_shared<OpenSslKeyRing>();
      for (uint32_t i = 1; i <= devices; ++i) {
        FLT_ASSIGN_OR_RETURN(std::string cert, ReadFileString(w.device_files[i - 1].first));
        FLT_RETURN_IF_ERROR(peer_ring->AddCertificatePem(DeviceId(i), cert));
      }
    }
    agents.resize(devices);
    std::vector<Status> failed(2);
    std::vector<std::thread> openers;
    for (uint32_t t = 0; t < 2; ++t) {
      openers.emplace_back([&, t] {
        for (uint32_t i = 1 + t; i <= devices && failed[t].ok(); i += 2) {
          auto agent = OpenAgent(w, i);
          if (!agent.ok()) failed[t] = agent.status();
          else agents[i - 1] = std::move(*agent);
        }
      });
    }
    for (auto& th : openers) th.join();
    for (const Status& f : failed) FLT_RETURN_IF_ERROR(f);
    return Status::Ok();
  }

  Result<std::unique_ptr<device::DeviceAgent>> OpenAgent(World& w, uint32_t i) {
    {
      const std::string id = DeviceId(i);
      device::DeviceAgentConfig c;
      c.device_id = id;
      c.data_dir = w.dir->path() / "devices" / id;
      c.groups = {kGroup};
      c.base_model.set_version("base-1");
      c.base_model.set_sha256(kModelSha);
      c.capabilities.set_ram_bytes(uint64_t{2} << 30);
      device::DeviceAgentDeps d;
      protocol::MqttTransportOptions to = w.TransportOptions(id, w.device_files[i - 1]);
      to.queue_capacity = 256;
      d.transport_factory = [to](const protocol::Message& will) -> Result<std::unique_ptr<protocol::Transport>> {
        protocol::MqttTransportOptions o = to;
        o.will = protocol::MqttWill{will.topic, will.payload, true, 1, 0};
        FLT_ASSIGN_OR_RETURN(auto t, protocol::MqttTransport::Create(std::move(o)));
        return std::unique_ptr<protocol::Transport>(std::move(t));
      };
      FLT_ASSIGN_OR_RETURN(std::string key_pem, ReadFileString(w.device_files[i - 1].second));
      FLT_ASSIGN_OR_RETURN(auto signer, OpenSslEcdsaSigner::FromPem(id, key_pem));
      d.signer = std::move(signer);
      d.verifier = coordinator_ring;
      if (hardened_) {
        FLT_ASSIGN_OR_RETURN(c.certificate_pem, ReadFileString(w.device_files[i - 1].first));
      }
      if (hardened_ && i % 2 == 1) {
        c.fleet_ca_pem = fleet_ca_pem_;
      } else {
        d.peer_verifier = peer_ring;
      }
      d.trainer = std::make_shared<device::SeededLocalTrainer>(i, 8 + i % 32, 0.05f);
      d.uploader = blobs;
      d.fetcher = blobs;
      d.runner = pool.get();
      // The simulator runs the coordinator's (OpenSSL) suite on its devices to keep a
      // thousand of them on two cores; fast_crypto_test proves it bit-identical.
      d.crypto = &aggregation::CoordinatorCryptoSuite();
      d.test_plaintext_hook = [this](const device::PlaintextUpdateRecord& r) { recorder.Device(r); };
      return device::DeviceAgent::Open(std::move(c), std::move(d));
    }
  }

  // Staggered connect: batches of 50 started 50 ms apart (the TLS handshakes spread
  // out instead of one herd), then everyone is awaited.
  Status ConnectAll() {
    for (size_t start = 0; start < agents.size(); start += 50) {
      const size_t end = std::min(agents.size(), start + 50);
      for (size_t i = start; i < end; ++i) FLT_RETURN_IF_ERROR(agents[i]->StartConnect());
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    for (auto& a : agents) FLT_RETURN_IF_ERROR(a->transport()->WaitConnected(std::chrono::seconds(90)));
    for (auto& a : agents) a->Poll(std::chrono::milliseconds(0));  // presence + reported state
    return Status::Ok();
  }

  // Polls the agents on `threads` owner threads (each owns a slice) until `stop`.
  void PollUntil(const std::function<bool()>& stop, unsigned threads, std::chrono::seconds timeout) {
    std::atomic<bool> done{false};
    std::vector<std::thread> pollers;
    for (unsigned t = 0; t < threads; ++t) {
      pollers.emplace_back([&, t] {
        while (!done.load()) {
          size_t n = 0;
          for (size_t i = t; i < agents.size(); i += threads) n += agents[i]->Poll(std::chrono::milliseconds(0));
          if (n == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
      });
    }
    const auto t0 = SteadyClock::now();
    while (!stop() && SteadyClock::now() - t0 < timeout) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    done.store(true);
    for (auto& p : pollers) p.join();
  }
};

// ---------------------------------------------------------------- tests

TEST(RoundE2eTest, ThousandDevicesOverMosquittoWithMtlsGiveTheExactSum) {
  const uint32_t n = FleetSize(1000);
  constexpr size_t kTrainable = 1024;
  SetLogLevel(LogLevel::kWarn);
  auto limit = protocol::RaiseFileDescriptorLimit();
  ASSERT_TRUE(limit.ok()) << limit.status().ToString();
  ASSERT_GE(*limit, n + 200u) << "raise the hard RLIMIT_NOFILE (ulimit -Hn)";
  auto t0 = SteadyClock::now();
  World w;
  ASSERT_TRUE(w.Create(n).ok());
  std::printf("[round-e2e] PKI (%u device certificates) + broker: %.2f s\n", n, Seconds(t0));

  // Fork the coordinator before this process starts any thread.
  int go[2];
  ASSERT_EQ(::pipe(go), 0);
  const std::filesystem::path result_path = w.dir->path() / "coordinator-result.txt";
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(go[1]);
    char c;
    int code = 1;
    if (::read(go[0], &c, 1) == 1) {
      Coordinator coord;
      Status s = coord.Open(w, n, kTrainable);
      if (s.ok()) {
        auto id = coord.RunRound(MakeSpec(n), std::chrono::seconds(150));
        if (id.ok()) {
          CoordinatorResult r;
          r.status = *coord.driver->status(*id);
          r.record = coord.record;
          r.stats = coord.driver->stats();
          r.peak_rss_kib = PeakRssKiB();
          r.cpu_seconds = CpuSeconds();
          WriteResult(result_path, r);
          code = 0;
        }
      } else {
        std::fprintf(stderr, "coordinator: %s\n", s.ToString().c_str());
      }
      // Give the last QoS 1 publishes (the AggregateResults) time to leave before the
      // DISCONNECT: Paho drops what is still queued.
      const auto drain_until = SteadyClock::now() + std::chrono::seconds(5);
      while (SteadyClock::now() < drain_until) coord.driver->Poll(std::chrono::milliseconds(50));
      coord.driver.reset();
      coord.transport->Disconnect().IgnoreError();
    }
    ::_exit(code);
  }
  ::close(go[0]);

  t0 = SteadyClock::now();
  DeviceFleet fleet;
  Status created = fleet.Create(w, n, kTrainable);
  ASSERT_TRUE(created.ok()) << created.ToString();
  std::printf("[round-e2e] %u agents opened (SQLite state, keys): %.2f s\n", n, Seconds(t0));
  t0 = SteadyClock::now();
  Status connected = fleet.ConnectAll();
  ASSERT_TRUE(connected.ok()) << connected.ToString();
  std::printf("[round-e2e] %u mTLS connects (staggered, 50 per 50 ms): %.2f s\n", n, Seconds(t0));

  const long rss_before = PeakRssKiB();
  const double cpu_before = CpuSeconds();
  ASSERT_EQ(::write(go[1], "g", 1), 1);
  ::close(go[1]);
  t0 = SteadyClock::now();
  int child_status = -1;
  fleet.PollUntil([&] { return ::waitpid(child, &child_status, WNOHANG) == child; }, 2, std::chrono::seconds(170));
  const double round_s = Seconds(t0);
  const double device_cpu = CpuSeconds() - cpu_before;
  if (child_status == -1) {
    ::kill(child, SIGKILL);
    ::waitpid(child, &child_status, 0);
    FAIL() << "the coordinator did not finish in time";
  }
  ASSERT_TRUE(WIFEXITED(child_status) && WEXITSTATUS(child_status) == 0) << "coordinator process failed";
  // Let the agents apply the result (adapter fetch from the coordinator's files).
  fleet.PollUntil([&] {
    for (auto& a : fleet.agents) {
      if (a->status().last_round_state != "completed") return false;
    }
    return true;
  }, 2, std::chrono::seconds(60));

  const CoordinatorResult r = ReadResult(result_path);
  ASSERT_EQ(r.status.state, RoundState::kPublished) << r.status.reason;
  EXPECT_EQ(r.status.cohort, n);
  EXPECT_GE(r.status.survivors, n - n / 10);
  ASSERT_EQ(r.record.survivors.size(), r.status.survivors);
  // Exact: the unmasked sum is the plaintext sum of what the survivors encoded.
  const std::string& round_id = r.status.round_id;
  ASSERT_FALSE(round_id.empty());
  const std::vector<uint32_t> plain = fleet.recorder.ExpectedSum(round_id, r.record.survivors);
  ASSERT_EQ(plain.size(), kTrainable + 1);
  EXPECT_EQ(r.record.sum, plain);
  size_t updated = 0;
  for (auto& a : fleet.agents) updated += a->status().adapter_version == "adapter-" + round_id;
  EXPECT_EQ(updated, n);
  EXPECT_EQ(r.stats.messages_rejected, 0u);

  // Figures.
  std::printf("[round-e2e] round: %.2f s until the coordinator process exited (incl. its 5 s drain); %.2f s announce-to-publish; %u/%u survivors\n",
              round_s, static_cast<double>(r.status.duration_ms) / 1000.0, r.status.survivors, r.status.cohort);
  for (const auto& st : r.status.stages) {
    std::printf("[round-e2e]   stage %-18s %7.3f s  %u/%u answered\n", st.stage.c_str(),
                static_cast<double>(st.duration_ms) / 1000.0, st.answered, st.expected);
  }
  std::printf("[round-e2e] CPU during the round: devices (this process) %.2f s, coordinator (child) %.2f s; "
              "load average now %s\n", device_cpu, r.cpu_seconds, LoadAverage().c_str());
  std::printf("[round-e2e] unmask+decode %.3f s; coordinator CPU %.2f s, peak RSS %.1f MiB; "
              "msgs out %lu (%.1f MiB), in %lu (%.1f MiB); device process peak RSS %.1f MiB (before the round %.1f)\n",
              static_cast<double>(r.status.unmask_ms) / 1000.0, r.cpu_seconds,
              static_cast<double>(r.peak_rss_kib) / 1024.0, static_cast<unsigned long>(r.stats.messages_sent),
              static_cast<double>(r.stats.bytes_out) / 1048576.0, static_cast<unsigned long>(r.stats.messages_accepted),
              static_cast<double>(r.stats.bytes_in) / 1048576.0, static_cast<double>(PeakRssKiB()) / 1024.0,
              static_cast<double>(rss_before) / 1024.0);
}

TEST(RoundE2eTest, BrokerRestartMidRoundCompletesOrFailsCleanly) {
  const uint32_t n = 30;
  constexpr size_t kTrainable = 256;
  SetLogLevel(std::getenv("FLOTILLA_ROUND_E2E_VERBOSE") != nullptr ? LogLevel::kDebug : LogLevel::kWarn);
  World w;
  ASSERT_TRUE(w.Create(n).ok());
  Coordinator coord;
  Status opened = coord.Open(w, n, kTrainable);
  ASSERT_TRUE(opened.ok()) << opened.ToString();
  DeviceFleet fleet;
  ASSERT_TRUE(fleet.Create(w, n, kTrainable, /*hardened=*/true).ok());
  ASSERT_TRUE(fleet.ConnectAll().ok());
  RoundSpec spec = MakeSpec(n);
  // Hardened: signed adverts and the consistency stage over the real broker too.
  spec.profile = v1::SEC_AGG_PROFILE_HARDENED;
  spec.stage_timeout = std::chrono::seconds(20);  // > the reconnect back-off (1-3 s, doubling)
  std::atomic<bool> stop{false};
  std::thread devices([&] { fleet.PollUntil([&] { return stop.load(); }, 1, std::chrono::seconds(170)); });
  bool restarted = false;
  auto id = coord.RunRound(spec, std::chrono::seconds(150), [&](RoundState s) {
    if (s == RoundState::kShareKeys && !restarted) {
      restarted = true;
      const auto t_restart = SteadyClock::now();
      Status r = w.broker->Restart();
      std::printf("[round-e2e] broker restarted in %.2f s\n", Seconds(t_restart));
      if (!r.ok()) std::fprintf(stderr, "broker restart: %s\n", r.ToString().c_str());
    }
  });
  stop.store(true);
  devices.join();
  ASSERT_TRUE(id.ok());
  EXPECT_TRUE(restarted);
  const RoundStatus st = *coord.driver->status(*id);
  std::printf("[round-e2e] broker restart during share_keys: round %s %s (%u/%u survivors, %.2f s)\n",
              std::string(ToString(st.state)).c_str(), st.reason.c_str(), st.survivors, st.cohort,
              static_cast<double>(st.duration_ms) / 1000.0);
  for (const auto& stage : st.stages) {
    std::printf("[round-e2e]   stage %-18s %7.3f s  %u/%u answered\n", stage.stage.c_str(),
                static_cast<double>(stage.duration_ms) / 1000.0, stage.answered, stage.expected);
  }
  ASSERT_TRUE(st.state == RoundState::kPublished || st.state == RoundState::kFailed);
  if (st.state == RoundState::kPublished) {
    const std::vector<uint32_t> plain = fleet.recorder.ExpectedSum(*id, coord.record.survivors);
    EXPECT_EQ(coord.record.sum, plain);
  } else {
    EXPECT_FALSE(st.reason.empty());
  }
  EXPECT_TRUE(coord.journal->CheckInvariants().ok());
  auto jr = coord.journal->Get(*id);
  ASSERT_TRUE(jr.ok());
  EXPECT_EQ(jr->state, st.state);
}

}  // namespace
}  // namespace flotilla::rounds
