// C API: the federated-learning device agent (device::DeviceAgent) wired for production:
// MQTT with mTLS (Paho adapter), the device key signing envelopes (mbedTLS ECDSA), the
// coordinator's certified key verifying what it sends, HTTP(S) for large uploads and
// adapter downloads, and the engine trainer on the agent's own sample store.
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "c_api_device.h"
#include "c_api_internal.h"
#include "flotilla/core/bytes.h"
#include "flotilla/core/file.h"
#include "flotilla/device/agent.h"
#include "flotilla/device/blob_client.h"
#include "flotilla/device/engine_trainer.h"
#include "flotilla/device/worker_pool.h"
#include "flotilla/flotilla.h"
#include "flotilla/model/adapter_file.h"
#include "flotilla/protocol/mqtt_transport.h"
#include "flotilla/security/identity.h"

namespace {

using flotilla::Result;
using flotilla::Status;
using flotilla::capi::Fail;
using flotilla::capi::Guard;
namespace device = flotilla::device;
namespace fs = std::filesystem;

// The agent's LocalTrainer: an EngineLocalTrainer over the agent's sample store, rebuilt
// when the store changed since the last build (samples arrive while the agent runs;
// EngineLocalTrainer tokenizes its data once). The store's counts and time range plus a
// local add counter tell whether it changed; rebuilding costs one tokenization of the
// store, at most once per change and round.
class StoreTrainer final : public device::LocalTrainer {
 public:
  StoreTrainer(std::shared_ptr<const flotilla::model::LlamaModel> base, device::SampleStore* store,
               device::EngineTrainerOptions options)
      : base_(std::move(base)), store_(store), options_(options) {}

  void NoteAdded() { added_.fetch_add(1, std::memory_order_relaxed); }

  bool HasData() const override {
    Result<std::shared_ptr<device::EngineLocalTrainer>> t = Current();
    return t.ok() && (*t)->HasData();
  }

  Result<device::LocalTrainingResult> Train(std::string_view round_id, const flotilla::v1::TrainingConfig& config,
                                            std::span<const float> global) override {
    FLT_ASSIGN_OR_RETURN(std::shared_ptr<device::EngineLocalTrainer> t, Current());
    return t->Train(round_id, config, global);
  }

 private:
  struct Fingerprint {
    int64_t count = -1, bytes = 0, train_count = 0, oldest_ms = 0, newest_ms = 0;
    uint64_t added = 0;
    bool operator==(const Fingerprint&) const = default;
  };

  Result<std::shared_ptr<device::EngineLocalTrainer>> Current() const {
    std::lock_guard<std::mutex> lock(mu_);
    const uint64_t added = added_.load(std::memory_order_relaxed);
    FLT_ASSIGN_OR_RETURN(device::SampleStoreStats st, store_->Stats());
    const Fingerprint now{st.count, st.bytes, st.train_count, st.oldest_ms, st.newest_ms, added};
    if (!trainer_ || now != built_) {
      FLT_ASSIGN_OR_RETURN(std::unique_ptr<device::EngineLocalTrainer> t,
                           device::EngineLocalTrainer::FromSampleStore(base_, *store_, options_));
      trainer_ = std::move(t);
      built_ = now;
    }
    return trainer_;
  }

  std::shared_ptr<const flotilla::model::LlamaModel> base_;
  device::SampleStore* store_;  // not owned; outlives the trainer
  device::EngineTrainerOptions options_;
  std::atomic<uint64_t> added_{0};
  mutable std::mutex mu_;
  mutable std::shared_ptr<device::EngineLocalTrainer> trainer_;  // GUARDED_BY(mu_)
  mutable Fingerprint built_;                                    // GUARDED_BY(mu_)
};

std::vector<std::string> SplitGroups(const char* groups) {
  std::vector<std::string> out;
  if (groups == nullptr) return out;
  std::string_view rest(groups);
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    std::string_view g = rest.substr(0, comma);
    while (!g.empty() && g.front() == ' ') g.remove_prefix(1);
    while (!g.empty() && g.back() == ' ') g.remove_suffix(1);
    if (!g.empty()) out.emplace_back(g);
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  return out;
}

std::string OrEmpty(const char* s) { return s == nullptr ? std::string() : std::string(s); }

}  // namespace

struct flt_agent {
  // Destruction order matters: the agent (last declared, first destroyed) waits for its
  // in-flight task on the pool and uses the trainer, which reads the store and model.
  std::shared_ptr<const flotilla::model::LlamaModel> model;
  std::unique_ptr<flt_samples> samples;
  std::shared_ptr<StoreTrainer> trainer;
  std::unique_ptr<device::WorkerPool> pool;
  std::unique_ptr<device::DeviceAgent> agent;
  std::atomic<bool> running{false};
  bool connect_started = false;  // owner thread only
};

namespace {

Result<std::string> ReadPem(const char* what, const char* path) {
  Result<std::string> pem = flotilla::ReadFileString(path, 1 << 20);
  if (!pem.ok()) return pem.status().WithContext(std::string("reading ") + what + " " + path);
  return pem;
}

flt_status CreateAgent(const flt_agent_params& p, flt_agent** out) {
  auto required = [](const char* v) { return v != nullptr && v[0] != '\0'; };
  struct {
    const char* name;
    const char* value;
  } const must[] = {{"device_id", p.device_id},   {"data_dir", p.data_dir},
                    {"broker_uri", p.broker_uri}, {"coordinator_cert_file", p.coordinator_cert_file},
                    {"key_file", p.key_file},     {"model_path", p.model_path}};
  for (const auto& m : must) {
    if (!required(m.value)) {
      return Fail(FLT_ERR_INVALID_ARGUMENT,
                  std::string("flt_agent_params.") + m.name + " is required" +
                      (std::strcmp(m.name, "model_path") == 0 ? " (agents train on a real base model)" : ""));
    }
  }
  const bool tls = std::string_view(p.broker_uri).starts_with("ssl://");
  if (tls && (!required(p.ca_file) || !required(p.cert_file))) {
    return Fail(FLT_ERR_INVALID_ARGUMENT, "an ssl:// broker_uri needs ca_file, cert_file and key_file (mTLS)");
  }
  if (p.train_seq_len < 2 || p.train_threads < 1 || p.worker_threads < 0 || p.keepalive_seconds < 1 ||
      p.connect_timeout_ms < 1) {
    return Fail(FLT_ERR_INVALID_ARGUMENT,
                "train_seq_len must be >= 2, train_threads and keepalive_seconds and connect_timeout_ms >= 1, "
                "worker_threads >= 0");
  }
  const std::string device_id = p.device_id;
  const std::string coordinator_id = p.coordinator_id != nullptr ? p.coordinator_id : "coordinator";

  auto a = std::make_unique<flt_agent>();
  // Model: shared read-only by the trainer; identified by the sha256 of its file.
  auto model = flotilla::model::LlamaModel::Open(p.model_path);
  if (!model.ok()) return Fail(model.status().WithContext(std::string("loading model ") + p.model_path));
  a->model = std::shared_ptr<const flotilla::model::LlamaModel>(std::move(*model));
  if (p.train_seq_len > a->model->config().context_length) {
    return Fail(FLT_ERR_INVALID_ARGUMENT, "train_seq_len " + std::to_string(p.train_seq_len) +
                                              " exceeds the model's context of " +
                                              std::to_string(a->model->config().context_length));
  }
  auto sha_hex = flotilla::model::ModelFileSha256(p.model_path);
  if (!sha_hex.ok()) return Fail(sha_hex.status());
  auto sha = flotilla::FromHex(*sha_hex);
  if (!sha.ok()) return Fail(sha.status());

  // Identity: the device key signs envelopes; the coordinator's certified key verifies.
  auto key_pem = ReadPem("key_file", p.key_file);
  if (!key_pem.ok()) return Fail(key_pem.status());
  auto key = flotilla::security::EcdsaPrivateKey::FromPem(*key_pem);
  if (!key.ok()) return Fail(key.status().WithContext(std::string("key_file ") + p.key_file));
  auto device_key = std::make_shared<const flotilla::security::EcdsaPrivateKey>(std::move(*key));
  auto coord_pem = ReadPem("coordinator_cert_file", p.coordinator_cert_file);
  if (!coord_pem.ok()) return Fail(coord_pem.status());
  auto coord_key = flotilla::security::EcdsaPublicKey::FromCertificatePem(*coord_pem);
  if (!coord_key.ok()) return Fail(coord_key.status().WithContext(std::string("coordinator_cert_file ") +
                                                                   p.coordinator_cert_file));
  auto coordinator_keys = std::make_shared<flotilla::security::KeyRing>();
  coordinator_keys->Add(coordinator_id, *coord_key);
  std::string cert_pem;
  if (required(p.cert_file)) {
    auto c = ReadPem("cert_file", p.cert_file);
    if (!c.ok()) return Fail(c.status());
    cert_pem = std::move(*c);
  }
  // The mTLS CA is the fleet CA: it also vouches for the neighbours' certificates in the
  // hardened SecAgg profile's key adverts.
  std::string fleet_ca_pem;
  if (required(p.ca_file) && !cert_pem.empty()) {
    auto ca = ReadPem("ca_file", p.ca_file);
    if (!ca.ok()) return Fail(ca.status());
    fleet_ca_pem = std::move(*ca);
  }

  // Samples and the trainer on them.
  std::error_code ec;
  fs::create_directories(p.data_dir, ec);
  if (ec) return Fail(FLT_ERR_IO, std::string("cannot create data_dir ") + p.data_dir + ": " + ec.message());
  auto store = device::SampleStore::Open(fs::path(p.data_dir) / "samples.sqlite",
                                         flotilla::capi::ToSampleStoreOptions(&p.samples));
  if (!store.ok()) return Fail(store.status().WithContext("opening the agent's sample store"));
  a->samples = std::make_unique<flt_samples>();
  a->samples->store = std::move(*store);
  device::EngineTrainerOptions eo;
  eo.seq_len = p.train_seq_len;
  eo.n_threads = p.train_threads;
  eo.memory_budget_bytes = p.train_memory_budget_bytes;
  a->trainer = std::make_shared<StoreTrainer>(a->model, a->samples->store.get(), eo);
  if (p.worker_threads > 0) a->pool = std::make_unique<device::WorkerPool>(static_cast<unsigned>(p.worker_threads));

  device::DeviceAgentConfig c;
  c.device_id = device_id;
  c.data_dir = p.data_dir;
  c.groups = SplitGroups(p.groups);
  c.coordinator_id = coordinator_id;
  c.base_model.set_version(p.base_model_version != nullptr ? p.base_model_version : "base");
  c.base_model.set_sha256(sha->data(), sha->size());
  c.firmware_version = OrEmpty(p.firmware_version);
  c.certificate_pem = cert_pem;
  c.fleet_ca_pem = fleet_ca_pem;
  c.identity_public_key_der = device_key->public_key().der();
  c.enrolment_token = OrEmpty(p.enrolment_token);

  device::DeviceAgentDeps d;
  flotilla::protocol::MqttTransportOptions mo;
  mo.server_uri = p.broker_uri;
  mo.client_id = device_id;
  mo.keepalive = std::chrono::seconds(p.keepalive_seconds);
  mo.connect_timeout = std::chrono::milliseconds(p.connect_timeout_ms);
  if (tls) {
    mo.tls = flotilla::protocol::MqttTlsOptions{p.ca_file, p.cert_file, p.key_file, true};
  }
  d.transport_factory = [mo](const flotilla::protocol::Message& will)
      -> Result<std::unique_ptr<flotilla::protocol::Transport>> {
    flotilla::protocol::MqttTransportOptions o = mo;
    o.will = flotilla::protocol::MqttWill{will.topic, will.payload, will.retained, will.qos == 0 ? 1 : will.qos, 0};
    FLT_ASSIGN_OR_RETURN(std::unique_ptr<flotilla::protocol::MqttTransport> t,
                         flotilla::protocol::MqttTransport::Create(std::move(o)));
    return std::unique_ptr<flotilla::protocol::Transport>(std::move(t));
  };
  d.signer = std::make_shared<flotilla::security::EcdsaSigner>(device_id, device_key);
  d.verifier = coordinator_keys;
  device::HttpBlobClientOptions ho;
  ho.ca_file = OrEmpty(p.ca_file);
  auto http = std::make_shared<device::HttpBlobClient>(ho);
  d.uploader = http;
  d.fetcher = http;
  d.trainer = a->trainer;
  d.runner = a->pool.get();
  auto agent = device::DeviceAgent::Open(std::move(c), std::move(d));
  if (!agent.ok()) return Fail(agent.status());
  a->agent = std::move(*agent);
  *out = a.release();
  return FLT_OK;
}

flt_connection_state ToC(flotilla::protocol::ConnectionState s) {
  switch (s) {
    case flotilla::protocol::ConnectionState::kDisconnected: return FLT_CONNECTION_DISCONNECTED;
    case flotilla::protocol::ConnectionState::kConnecting: return FLT_CONNECTION_CONNECTING;
    case flotilla::protocol::ConnectionState::kConnected: return FLT_CONNECTION_CONNECTED;
    case flotilla::protocol::ConnectionState::kReconnecting: return FLT_CONNECTION_RECONNECTING;
  }
  return FLT_CONNECTION_DISCONNECTED;
}

}  // namespace

extern "C" {

flt_agent_params flt_agent_default_params(void) {
  flt_agent_params p;
  std::memset(&p, 0, sizeof p);
  p.train_seq_len = static_cast<int32_t>(device::EngineTrainerOptions().seq_len);
  p.train_threads = 1;
  p.train_memory_budget_bytes = 0;
  p.worker_threads = 1;
  p.samples = flt_samples_default_params();
  p.keepalive_seconds = 60;
  p.connect_timeout_ms = 10000;
  return p;
}

flt_status flt_agent_create(const flt_agent_params* params, flt_agent** out_agent) {
  return Guard([&]() -> flt_status {
    if (out_agent != nullptr) *out_agent = nullptr;
    if (params == nullptr || out_agent == nullptr) return Fail(FLT_ERR_INVALID_ARGUMENT, "params and out_agent must be set");
    return CreateAgent(*params, out_agent);
  });
}

void flt_agent_free(flt_agent* agent) {
  if (agent == nullptr) return;
  try {
    agent->agent->Stop();
    agent->agent->Disconnect().IgnoreError();
  } catch (...) {
    // Nothing may escape; the destructor below still releases everything.
  }
  delete agent;
}

flt_status flt_agent_add_sample(flt_agent* agent, const char* text, size_t text_len, const char* label,
                                int64_t timestamp_ms) {
  return Guard([&]() -> flt_status {
    if (agent == nullptr) return Fail(FLT_ERR_INVALID_ARGUMENT, "agent must be set");
    const flt_status s = flotilla::capi::AddSample(*agent->samples->store, text, text_len, label, timestamp_ms, nullptr);
    if (s == FLT_OK) agent->trainer->NoteAdded();
    return s;
  });
}

flt_status flt_agent_start(flt_agent* agent) {
  return Guard([&]() -> flt_status {
    if (agent == nullptr) return Fail(FLT_ERR_INVALID_ARGUMENT, "agent must be set");
    if (agent->running.load()) return Fail(FLT_ERR_BAD_STATE, "the agent is already started");
    Status s = agent->agent->Start();
    if (!s.ok()) return Fail(s);
    agent->connect_started = true;
    agent->running.store(true);
    return FLT_OK;
  });
}

flt_status flt_agent_stop(flt_agent* agent) {
  return Guard([&]() -> flt_status {
    if (agent == nullptr) return Fail(FLT_ERR_INVALID_ARGUMENT, "agent must be set");
    agent->agent->Stop();
    agent->running.store(false);
    agent->connect_started = false;
    Status s = agent->agent->Disconnect();
    if (!s.ok()) return Fail(s);
    return FLT_OK;
  });
}

flt_status flt_agent_poll(flt_agent* agent, int32_t timeout_ms, int32_t* out_events) {
  return Guard([&]() -> flt_status {
    if (out_events != nullptr) *out_events = 0;
    if (agent == nullptr) return Fail(FLT_ERR_INVALID_ARGUMENT, "agent must be set");
    if (timeout_ms < 0) return Fail(FLT_ERR_INVALID_ARGUMENT, "timeout_ms must be >= 0");
    if (agent->running.load()) return Fail(FLT_ERR_BAD_STATE, "the agent runs on its own thread (flt_agent_start)");
    if (!agent->connect_started) {
      Status s = agent->agent->StartConnect();
      if (!s.ok()) return Fail(s);
      agent->connect_started = true;
    }
    const size_t n = agent->agent->Poll(std::chrono::milliseconds(timeout_ms));
    if (out_events != nullptr) *out_events = static_cast<int32_t>(n);
    return FLT_OK;
  });
}

flt_status flt_agent_status_get(const flt_agent* agent, flt_agent_status* status) {
  return Guard([&]() -> flt_status {
    if (agent == nullptr || status == nullptr) return Fail(FLT_ERR_INVALID_ARGUMENT, "agent and status must be set");
    std::memset(status, 0, sizeof *status);
    const device::AgentStatus s = agent->agent->status();
    status->connection = ToC(s.connection);
    status->connected = s.connection == flotilla::protocol::ConnectionState::kConnected ? 1 : 0;
    status->enrolled = s.enrolled ? 1 : 0;
    status->running = agent->running.load() ? 1 : 0;
    flotilla::capi::CopyString(status->adapter_version, s.adapter_version);
    status->rounds_completed = s.rounds_completed;
    status->rounds_aborted = s.rounds_aborted;
    status->messages_accepted = s.messages_accepted;
    status->messages_rejected = s.messages_rejected;
    status->messages_duplicate = s.messages_duplicate;
    auto st = agent->samples->store->Stats();
    if (!st.ok()) return Fail(st.status());
    status->train_samples = st->train_count;
    status->held_out_samples = st->held_out_count;
    return FLT_OK;
  });
}

flt_status flt_agent_last_round(const flt_agent* agent, flt_round_info* info) {
  return Guard([&]() -> flt_status {
    if (agent == nullptr || info == nullptr) return Fail(FLT_ERR_INVALID_ARGUMENT, "agent and info must be set");
    std::memset(info, 0, sizeof *info);
    const device::AgentStatus s = agent->agent->status();
    info->has_round = s.last_round_id.empty() ? 0 : 1;
    flotilla::capi::CopyString(info->round_id, s.last_round_id);
    flotilla::capi::CopyString(info->state, s.last_round_state);
    flotilla::capi::CopyString(info->detail, s.last_round_detail);
    return FLT_OK;
  });
}

}  // extern "C"
