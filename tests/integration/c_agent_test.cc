// Device agents created ONLY through the C API (flotilla.h) join a real federated round:
// a real Mosquitto with mTLS and ACLs (the harness), a throw-away fleet PKI, a tiny real
// model the agents train on (EngineLocalTrainer on their C-API-added samples), an
// in-process RoundDriver coordinator, and the new adapter served over real HTTP. Some
// agents run on their own thread (flt_agent_start), the others are driven by
// flt_agent_poll from a host loop. The round must publish, and every agent must report it
// completed (flt_agent_last_round) and hold the new adapter version (flt_agent_status_get).
#include <httplib.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "flotilla/coordinator/round_driver.h"
#include "flotilla/coordinator/round_fast_identity.h"
#include "flotilla/coordinator/round_ports.h"
#include "flotilla/core/bytes.h"
#include "flotilla/core/file.h"
#include "flotilla/core/log.h"
#include "flotilla/device/engine_trainer.h"
#include "flotilla/flotilla.h"
#include "flotilla/flotilla.hpp"
#include "flotilla/model/adapter_file.h"
#include "flotilla/model/model_config.h"
#include "flotilla/model/model_file.h"
#include "flotilla/protocol/mosquitto_broker.h"
#include "flotilla/protocol/mqtt_transport.h"
#include "test_pki.h"

namespace flotilla {
namespace {

using SteadyClock = std::chrono::steady_clock;
constexpr char kGroup[] = "capi";
constexpr int kDevices = 5;
constexpr int kThreaded = 3;  // agents [0, kThreaded) use flt_agent_start; the rest are polled

std::string DeviceId(int i) { return "capi-dev-" + std::to_string(i); }

using flt::AgentPtr;

flt_agent_status AgentStatus(flt_agent* a) {
  flt_agent_status s;
  EXPECT_EQ(flt_agent_status_get(a, &s), FLT_OK) << flt_last_error();
  return s;
}

flt_round_info LastRound(flt_agent* a) {
  flt_round_info r;
  EXPECT_EQ(flt_agent_last_round(a, &r), FLT_OK) << flt_last_error();
  return r;
}

// Serves <dir> at http://127.0.0.1:<port>/adapters (the coordinator's artifact route).
class AdapterServer {
 public:
  explicit AdapterServer(const std::filesystem::path& dir) {
    server_.set_mount_point("/adapters", dir.string());
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~AdapterServer() {
    server_.stop();
    thread_.join();
  }
  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/adapters"; }
  bool ok() const { return port_ > 0; }

 private:
  httplib::Server server_;
  int port_ = -1;
  std::thread thread_;
};

v1::TrainingConfig Training() {
  v1::TrainingConfig t;
  t.add_lora_targets(v1::LORA_TARGET_Q);
  t.add_lora_targets(v1::LORA_TARGET_V);
  t.set_rank(4);
  t.set_alpha(8.0f);
  t.set_frozen_a_seed(4242);
  t.set_mode(v1::LORA_MODE_FROZEN_A);
  t.set_local_steps(2);
  t.set_learning_rate(5e-3f);
  t.set_gradient_clip_norm(1.0f);
  t.set_batch_size(1);
  t.set_max_examples(32);
  return t;
}

TEST(CAgentTest, AgentsMadeThroughTheCApiCompleteARoundOverMosquittoWithMtls) {
  SetLogLevel(LogLevel::kWarn);
  auto dir = TempDir::Create("c-agent");
  ASSERT_TRUE(dir.ok());
  const std::filesystem::path root = dir->path();
  auto pki = testsupport::TestPki::Create(root);
  ASSERT_TRUE(pki.ok()) << pki.status().ToString();
  auto coord_files = pki->IssueClient("coordinator");
  ASSERT_TRUE(coord_files.ok());
  std::vector<std::pair<std::filesystem::path, std::filesystem::path>> device_files;
  for (int i = 0; i < kDevices; ++i) {
    auto f = pki->IssueClient(DeviceId(i));
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    device_files.push_back(*f);
  }
  protocol::MosquittoBrokerOptions bo;
  bo.tls = protocol::MosquittoTlsListenerOptions{pki->ca_cert, pki->broker_cert, pki->broker_key, "coordinator"};
  auto broker = protocol::MosquittoBroker::Start(bo);
  ASSERT_TRUE(broker.ok()) << broker.status().ToString();

  // The base model every device runs (tiny, Q8_0) and its identity.
  const std::string model_path = (root / "base.gguf").string();
  auto config = model::NamedConfig("tiny");
  ASSERT_TRUE(config.ok());
  model::RandomModelOptions mo;
  mo.seed = 11;
  mo.weight_type = model::GgmlType::kQ8_0;
  ASSERT_TRUE(model::WriteRandomModel(*config, mo, model_path).ok());
  auto sha_hex = model::ModelFileSha256(model_path);
  ASSERT_TRUE(sha_hex.ok());
  const Bytes sha = *FromHex(*sha_hex);
  auto trainable = device::TrainableLength(*config, Training());
  ASSERT_TRUE(trainable.ok()) << trainable.status().ToString();

  // Coordinator: RoundDriver on its own mTLS session; adapters as files served over HTTP.
  const std::filesystem::path adapters_dir = root / "adapters";
  std::filesystem::create_directories(adapters_dir);
  AdapterServer http(adapters_dir);
  ASSERT_TRUE(http.ok());
  auto registry = rounds::DirectoryAdapterRegistry::Open(adapters_dir, http.base_url(), static_cast<size_t>(*trainable));
  ASSERT_TRUE(registry.ok());
  rounds::InMemoryUploadSource uploads;
  auto journal = rounds::SqliteRoundJournal::Open(root / "rounds.db");
  ASSERT_TRUE(journal.ok());
  protocol::MqttTransportOptions co;
  co.server_uri = (*broker)->tls_uri();
  co.client_id = "coordinator";
  co.tls = protocol::MqttTlsOptions{pki->ca_cert.string(), coord_files->first.string(), coord_files->second.string(),
                                    true};
  auto coord_transport = protocol::MqttTransport::Create(co);
  ASSERT_TRUE(coord_transport.ok());
  ASSERT_TRUE((*coord_transport)->Connect().ok());
  auto ring = std::make_shared<rounds::OpenSslKeyRing>();
  for (int i = 0; i < kDevices; ++i) {
    auto pem = ReadFileString(device_files[static_cast<size_t>(i)].first);
    ASSERT_TRUE(pem.ok());
    ASSERT_TRUE(ring->AddCertificatePem(DeviceId(i), *pem).ok());
  }
  auto coord_key = ReadFileString(coord_files->second);
  ASSERT_TRUE(coord_key.ok());
  auto signer = rounds::OpenSslEcdsaSigner::FromPem("coordinator", *coord_key);
  ASSERT_TRUE(signer.ok());
  rounds::RoundDriverOptions ro;
  ro.transport = coord_transport->get();
  ro.signer = std::move(*signer);
  ro.verifier = ring;
  ro.journal = journal->get();
  ro.adapters = registry->get();
  ro.uploads = &uploads;
  auto driver = rounds::RoundDriver::Open(std::move(ro));
  ASSERT_TRUE(driver.ok()) << driver.status().ToString();
  ASSERT_TRUE((*driver)->Attach().ok());

  // Devices: ONLY the C API.
  const std::string uri = (*broker)->tls_uri();
  const std::string ca = pki->ca_cert.string();
  const std::string coord_cert = coord_files->first.string();
  std::vector<AgentPtr> agents;
  std::vector<std::string> data_dirs, certs, keys;
  for (int i = 0; i < kDevices; ++i) {
    data_dirs.push_back((root / "devices" / DeviceId(i)).string());
    certs.push_back(device_files[static_cast<size_t>(i)].first.string());
    keys.push_back(device_files[static_cast<size_t>(i)].second.string());
  }
  for (int i = 0; i < kDevices; ++i) {
    const std::string id = DeviceId(i);
    flt_agent_params p = flt_agent_default_params();
    p.device_id = id.c_str();
    p.data_dir = data_dirs[static_cast<size_t>(i)].c_str();
    p.broker_uri = uri.c_str();
    p.ca_file = ca.c_str();
    p.cert_file = certs[static_cast<size_t>(i)].c_str();
    p.key_file = keys[static_cast<size_t>(i)].c_str();
    p.coordinator_cert_file = coord_cert.c_str();
    p.groups = "other, capi";
    p.model_path = model_path.c_str();
    p.train_seq_len = 16;
    p.samples.held_out_fraction = 0.2;
    flt_status created;
    agents.push_back(flt::CreateAgent(p, &created));
    ASSERT_EQ(created, FLT_OK) << flt_last_error();
    flt_agent* a = agents.back().get();
    // Each device's own habits, through the C API.
    for (int k = 0; k < 24; ++k) {
      char text[96];
      const int n = std::snprintf(text, sizeof text, "device %d turns the heating to %d degrees at %d", i, 18 + k % 4,
                                  6 + (k + i) % 12);
      ASSERT_EQ(flt_agent_add_sample(a, text, static_cast<size_t>(n), nullptr, 0), FLT_OK) << flt_last_error();
    }
    ASSERT_EQ(flt_agent_add_sample(a, "\xff bad", 5, nullptr, 0), FLT_ERR_INVALID_ARGUMENT);
    const flt_agent_status st = AgentStatus(a);
    EXPECT_EQ(st.train_samples + st.held_out_samples, 24);
    EXPECT_EQ(st.running, 0);
    EXPECT_FALSE(LastRound(a).has_round);
  }
  for (int i = 0; i < kThreaded; ++i) {
    ASSERT_EQ(flt_agent_start(agents[static_cast<size_t>(i)].get()), FLT_OK) << flt_last_error();
    EXPECT_EQ(flt_agent_start(agents[static_cast<size_t>(i)].get()), FLT_ERR_BAD_STATE);
    EXPECT_EQ(flt_agent_poll(agents[static_cast<size_t>(i)].get(), 0, nullptr), FLT_ERR_BAD_STATE);
  }
  // The host loop of the polled agents.
  std::atomic<bool> stop_polling{false};
  std::atomic<int> poll_errors{0};
  std::thread host([&] {
    while (!stop_polling.load()) {
      for (int i = kThreaded; i < kDevices; ++i) {
        int32_t events = 0;
        if (flt_agent_poll(agents[static_cast<size_t>(i)].get(), 5, &events) != FLT_OK) poll_errors.fetch_add(1);
      }
    }
  });
  auto wait_for = [&](const std::function<bool()>& done, std::chrono::seconds timeout) {
    const auto t0 = SteadyClock::now();
    while (!done() && SteadyClock::now() - t0 < timeout) (*driver)->Poll(std::chrono::milliseconds(10));
    return done();
  };
  const bool connected = wait_for([&] {
    for (auto& a : agents) {
      if (!AgentStatus(a.get()).connected) return false;
    }
    return true;
  }, std::chrono::seconds(60));
  ASSERT_TRUE(connected);
  // Presence and reported state reach the coordinator before the announcement.
  wait_for([] { return false; }, std::chrono::seconds(1));

  rounds::RoundSpec spec;
  spec.group = kGroup;
  spec.base_model.set_version("base");
  spec.base_model.set_sha256(sha.data(), sha.size());
  spec.training = Training();
  spec.min_cohort = kDevices;
  spec.target_cohort = kDevices;
  spec.check_in_timeout = std::chrono::seconds(5);
  spec.training_timeout = std::chrono::seconds(60);
  spec.stage_timeout = std::chrono::seconds(30);
  // Hardened: the agents check each other's advert certificates against the fleet CA.
  // Five devices leave the hardened threshold no room for dropouts (t = n).
  spec.profile = v1::SEC_AGG_PROFILE_HARDENED;
  spec.max_dropout_rate = 0.0;
  const auto t0 = SteadyClock::now();
  auto round_id = (*driver)->StartRound(spec);
  ASSERT_TRUE(round_id.ok()) << round_id.status().ToString();
  wait_for([&] { return (*driver)->idle(); }, std::chrono::seconds(120));
  const auto status = (*driver)->status(*round_id);
  ASSERT_TRUE(status.has_value());
  ASSERT_EQ(status->state, rounds::RoundState::kPublished) << status->reason;
  EXPECT_EQ(status->cohort, static_cast<uint32_t>(kDevices));
  EXPECT_EQ(status->survivors, static_cast<uint32_t>(kDevices));
  const std::string version = status->adapter_version;
  EXPECT_FALSE(version.empty());

  // Every agent applies the result (fetching the adapter over HTTP) and says so.
  const bool applied = wait_for([&] {
    for (auto& a : agents) {
      const flt_round_info r = LastRound(a.get());
      if (!r.has_round || std::strcmp(r.state, "completed") != 0) return false;
    }
    return true;
  }, std::chrono::seconds(60));
  std::printf("[c-agent] round %s: %s, %u/%u survivors, %.2f s to completion on every device\n", round_id->c_str(),
              std::string(rounds::ToString(status->state)).c_str(), status->survivors, status->cohort,
              std::chrono::duration<double>(SteadyClock::now() - t0).count());
  EXPECT_TRUE(applied);
  for (int i = 0; i < kDevices; ++i) {
    flt_agent* a = agents[static_cast<size_t>(i)].get();
    const flt_round_info r = LastRound(a);
    EXPECT_STREQ(r.round_id, round_id->c_str()) << DeviceId(i);
    EXPECT_STREQ(r.state, "completed") << DeviceId(i) << ": " << r.detail;
    const flt_agent_status st = AgentStatus(a);
    EXPECT_STREQ(st.adapter_version, version.c_str()) << DeviceId(i);
    EXPECT_EQ(st.rounds_completed, 1u) << DeviceId(i);
    EXPECT_EQ(st.rounds_aborted, 0u) << DeviceId(i);
    EXPECT_GT(st.messages_accepted, 0u) << DeviceId(i);
    EXPECT_EQ(st.messages_rejected, 0u) << DeviceId(i);
    EXPECT_EQ(st.running, i < kThreaded ? 1 : 0);
  }
  // The aggregate is a real training result: a non-zero adapter.
  auto published = (*registry)->Get(version);
  ASSERT_TRUE(published.ok());
  double norm = 0;
  for (float v : published->values) norm += static_cast<double>(v) * static_cast<double>(v);
  EXPECT_GT(norm, 0.0);
  EXPECT_EQ((*driver)->stats().messages_rejected, 0u);

  stop_polling.store(true);
  host.join();
  EXPECT_EQ(poll_errors.load(), 0);
  // Stop goes offline cleanly; a stopped agent can be polled again (it reconnects).
  flt_agent* first = agents[0].get();
  ASSERT_EQ(flt_agent_stop(first), FLT_OK) << flt_last_error();
  EXPECT_EQ(AgentStatus(first).running, 0);
  const auto r0 = SteadyClock::now();
  while (!AgentStatus(first).connected && SteadyClock::now() - r0 < std::chrono::seconds(30)) {
    ASSERT_EQ(flt_agent_poll(first, 20, nullptr), FLT_OK) << flt_last_error();
  }
  EXPECT_TRUE(AgentStatus(first).connected);
  agents.clear();  // flt_agent_free: stop threads, disconnect
  (*coord_transport)->Disconnect().IgnoreError();
}

}  // namespace
}  // namespace flotilla
