#include "flotilla/simulator/fleet.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <thread>

#include <nlohmann/json.hpp>

#include "fleet_parts.h"
#include "flotilla/coordinator/device_endpoint.h"
#include "flotilla/coordinator/lora_targets.h"
#include "flotilla/coordinator/round_ports.h"
#include "flotilla/coordinator/store.h"
#include "flotilla/coordinator/store_adapter_registry.h"
#include "flotilla/coordinator/store_round_journal.h"
#include "flotilla/core/file.h"
#include "flotilla/core/log.h"
#include "flotilla/device/engine_trainer.h"
#include "flotilla/device/sample_store.h"
#include "flotilla/device/worker_pool.h"
#include "flotilla/model/adapter_file.h"
#include "flotilla/model/lora.h"
#include "flotilla/protocol/adapter_vector.h"
#include "flotilla/protocol/mosquitto_broker.h"
#include "flotilla/protocol/mqtt_transport.h"
#include "flotilla/security/hash.h"
#include "flotilla/security/identity.h"
#include "flotilla/simulator/synthetic_text.h"

namespace flotilla::simulator {

namespace fs = std::filesystem;
using internal::FleetPki;
using internal::Progress;
using SteadyClock = std::chrono::steady_clock;

namespace {

constexpr std::string_view kGroup = "sim";
constexpr int64_t kNever = std::numeric_limits<int64_t>::max();

int64_t MillisSince(SteadyClock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - t).count();
}

std::string DeviceId(size_t i) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "sim-%05zu", i);
  return buf;
}

Status ValidateOptions(const FleetOptions& o) {
  if (o.out_dir.empty()) return InvalidArgumentError("simulate: an output directory is required");
  if (o.devices < 2) return InvalidArgumentError("simulate: at least 2 devices");
  if (o.cohort < 2) return InvalidArgumentError("simulate: the cohort must be at least 2");
  if (o.cohort > o.devices) return InvalidArgumentError("simulate: the cohort is larger than the fleet");
  if (o.min_cohort > o.cohort) return InvalidArgumentError("simulate: min cohort above the cohort");
  if (o.local_steps == 0) return InvalidArgumentError("simulate: local steps must be at least 1");
  if (o.trainer == TrainerKind::kEngine && o.model.empty()) {
    return InvalidArgumentError("simulate: the engine trainer needs a base model");
  }
  if (o.held_out_fraction <= 0 || o.held_out_fraction >= 1) {
    return InvalidArgumentError("simulate: held-out fraction must be in (0, 1)");
  }
  if (o.samples_per_device < 4) return InvalidArgumentError("simulate: at least 4 samples per device");
  if (o.poll_threads == 0) return InvalidArgumentError("simulate: at least one poll thread");
  for (double p : o.faults.dropout) {
    if (p < 0 || p > 1) return InvalidArgumentError("simulate: dropout rates must be in [0, 1]");
  }
  if (o.faults.disconnect_rate < 0 || o.faults.disconnect_rate > 1) {
    return InvalidArgumentError("simulate: disconnect rate must be in [0, 1]");
  }
  return Status::Ok();
}

// Earlier simulator output in `dir` (only what the simulator writes) is removed so a run
// never mixes with the last one.
Status ClearOutput(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return UnavailableError("cannot create " + dir.string() + ": " + ec.message());
  for (const char* name : {"coordinator.db", "coordinator.db-wal", "coordinator.db-shm", "round_journal.db",
                           "round_journal.db-wal", "round_journal.db-shm", "report.json"}) {
    fs::remove(dir / name, ec);
  }
  for (const char* sub : {"adapters", "artifacts", "devices", "pki", "broker"}) fs::remove_all(dir / sub, ec);
  return Status::Ok();
}

}  // namespace

std::string_view ToString(TrainerKind kind) { return kind == TrainerKind::kEngine ? "engine" : "seeded"; }

Result<TrainerKind> ParseTrainerKind(std::string_view name) {
  if (name == "engine") return TrainerKind::kEngine;
  if (name == "seeded") return TrainerKind::kSeeded;
  return InvalidArgumentError("unknown trainer \"" + std::string(name) + "\" (engine|seeded)");
}

// ---------------------------------------------------------------- state

struct SimDevice {
  size_t index = 0;
  std::string id;
  std::unique_ptr<device::DeviceAgent> agent;
  std::shared_ptr<device::EngineLocalTrainer> engine_trainer;  // null for the seeded trainer
  // Owner-thread actions scheduled by the fleet, in ms since the fleet's epoch.
  std::atomic<int64_t> connect_at{kNever};
  std::atomic<int64_t> disconnect_at{kNever};
  std::atomic<int64_t> reconnect_at{kNever};
  std::atomic<bool> started{false};
};

struct Fleet::Impl {
  FleetOptions options;
  SimulationReport report;
  SteadyClock::time_point epoch = SteadyClock::now();
  Progress progress{true};

  std::shared_ptr<const model::LlamaModel> base;
  v1::ModelVersion base_model;
  v1::TrainingConfig training;  // the round template
  int64_t trainable_length = 0;

  std::unique_ptr<FleetPki> pki;
  std::unique_ptr<protocol::MosquittoBroker> broker;

  // Coordinator side.
  std::unique_ptr<coordinator::Store> store;
  std::shared_ptr<coordinator::StoreKeyVerifier> store_verifier;  // reads `store`
  // The round engine's connection to the same coordinator.db (synchronous=FULL: its
  // journal commits are what crash consistency rests on), its journal and registry.
  std::unique_ptr<coordinator::Store> engine_store;
  std::unique_ptr<coordinator::StoreRoundJournal> journal;
  std::unique_ptr<coordinator::StoreAdapterRegistry> registry;
  std::unique_ptr<rounds::InMemoryUploadSource> uploads;
  std::unique_ptr<protocol::MqttTransport> coordinator_transport;
  std::unique_ptr<rounds::RoundDriver> driver;

  // Device side.
  std::unique_ptr<device::WorkerPool> pool;
  std::shared_ptr<internal::TrainingLog> training_log = std::make_shared<internal::TrainingLog>();
  std::unique_ptr<FaultPlan> faults;
  std::vector<std::unique_ptr<SimDevice>> devices;
  std::vector<std::thread> poll_threads;
  std::atomic<bool> stop{false};

  // Evaluation.
  std::vector<size_t> eval_devices;
  model::TokenDataset pooled{std::vector<int32_t>{}};

  int64_t Now() const { return MillisSince(epoch); }

  Status SetUpModel();
  Status SetUpPki();
  Status SetUpCoordinator();
  Status SetUpDevices();
  void PollLoop(size_t first, size_t end);
  void StopAgents();
  void RecordAdapterMetrics(const RoundReport& rr);
  size_t ConnectedCount() const;
};

size_t Fleet::Impl::ConnectedCount() const {
  size_t n = 0;
  for (const auto& d : devices) n += d->agent->status().connection == protocol::ConnectionState::kConnected;
  return n;
}

Status Fleet::Impl::SetUpModel() {
  Result<std::vector<model::Projection>> targets = model::ParseProjections(options.lora_targets);
  if (!targets.ok()) return targets.status();
  for (model::Projection p : *targets) {
    FLT_ASSIGN_OR_RETURN(v1::LoraTarget t, coordinator::LoraTargetOf(p));
    training.add_lora_targets(t);
  }
  training.set_rank(options.lora_rank);
  training.set_alpha(options.lora_alpha);
  // The frozen-A seed is public (it is in the signed metadata); derived from the run seed.
  training.set_frozen_a_seed(FrozenASeedForRun(options.seed));
  if (options.lora_mode != v1::LORA_MODE_FROZEN_A && options.lora_mode != v1::LORA_MODE_FEDIT)
    return InvalidArgumentError("simulate: LoRA mode must be frozen-A or FedIT");
  training.set_mode(options.lora_mode);
  training.set_local_steps(options.local_steps);
  training.set_learning_rate(options.learning_rate);
  training.set_gradient_clip_norm(options.gradient_clip);
  training.set_batch_size(options.batch_size);
  training.set_max_examples(static_cast<uint32_t>(options.samples_per_device));
  FLT_RETURN_IF_ERROR(device::LoraConfigFromTraining(training).status());

  Bytes sha;
  if (options.trainer == TrainerKind::kEngine) {
    FLT_ASSIGN_OR_RETURN(std::unique_ptr<model::LlamaModel> m, model::LlamaModel::Open(options.model));
    base = std::shared_ptr<const model::LlamaModel>(std::move(m));
    if (options.seq_len < 2 || options.seq_len > base->config().context_length) {
      return InvalidArgumentError("simulate: seq len " + std::to_string(options.seq_len) + " outside [2, " +
                                  std::to_string(base->config().context_length) + "]");
    }
    FLT_ASSIGN_OR_RETURN(std::string hex, model::ModelFileSha256(options.model));
    FLT_ASSIGN_OR_RETURN(sha, FromHex(hex));
    FLT_ASSIGN_OR_RETURN(trainable_length, device::TrainableLength(base->config(), training));
    report.model = options.model.string();
    report.model_sha256 = hex;
  } else {
    const std::string tag = "flotilla-simulator-seeded-base";
    const security::Sha256Digest d = security::Sha256(AsBytes(tag));
    sha.assign(d.begin(), d.end());
    trainable_length = options.seeded_trainable_length;
    report.model_sha256 = ToHex(sha);
  }
  base_model.set_version("base");
  base_model.set_sha256(sha.data(), sha.size());
  report.trainable_length = trainable_length;
  report.lora = "rank " + std::to_string(options.lora_rank) + ", alpha " + std::to_string(options.lora_alpha) +
                ", targets " + options.lora_targets +
                (options.lora_mode == v1::LORA_MODE_FEDIT ? ", FedIT, A seed " : ", frozen-A seed ") +
                std::to_string(training.frozen_a_seed());
  return Status::Ok();
}

Status Fleet::Impl::SetUpPki() {
  const auto t0 = SteadyClock::now();
  FLT_ASSIGN_OR_RETURN(FleetPki p, FleetPki::Create(options.out_dir / "pki"));
  pki = std::make_unique<FleetPki>(std::move(p));
  report.pki_ms = MillisSince(t0);  // the device certificates are issued with the devices
  return Status::Ok();
}

Status Fleet::Impl::SetUpCoordinator() {
  const auto t0 = SteadyClock::now();
  protocol::MosquittoBrokerOptions bo;
  bo.work_dir = options.out_dir / "broker";
  std::error_code ec;
  fs::create_directories(bo.work_dir, ec);
  bo.tls = protocol::MosquittoTlsListenerOptions{pki->ca_cert, pki->broker_cert, pki->broker_key, "coordinator"};
  bo.max_queued_messages = std::max<size_t>(10000, options.devices * 8);
  FLT_ASSIGN_OR_RETURN(broker, protocol::MosquittoBroker::Start(bo));
  report.broker_ms = MillisSince(t0);

  coordinator::StoreOptions so;
  // Enrolling a simulated fleet commits once per device: no fsync per commit on this
  // connection (the engine's connection below keeps synchronous=FULL).
  so.synchronous_full = false;
  FLT_ASSIGN_OR_RETURN(store, coordinator::Store::Open(options.out_dir, so));
  FLT_ASSIGN_OR_RETURN(engine_store, coordinator::Store::Open(options.out_dir));
  journal = std::make_unique<coordinator::StoreRoundJournal>(*engine_store);
  coordinator::StoreAdapterRegistryOptions ao;
  ao.base_url = "sim://coordinator";  // resolved in process by the devices' RegistryFetcher
  ao.initial_length = static_cast<size_t>(trainable_length);
  FLT_ASSIGN_OR_RETURN(registry, coordinator::StoreAdapterRegistry::Open(*engine_store, ao));
  uploads = std::make_unique<rounds::InMemoryUploadSource>("sim://uploads");
  return Status::Ok();
}

Status Fleet::Impl::SetUpDevices() {
  const unsigned threads = pool->threads() > 0 ? static_cast<unsigned>(pool->threads()) : 1u;
  devices.resize(options.devices);
  std::vector<FleetPki::Identity> ids(options.devices);

  // Identities (ECDSA key generation dominates) and data, in parallel.
  auto t0 = SteadyClock::now();
  Status issued = internal::ParallelFor(options.devices, threads, [&](size_t i) -> Status {
    FLT_ASSIGN_OR_RETURN(ids[i], pki->Issue(DeviceId(i)));
    return Status::Ok();
  });
  FLT_RETURN_IF_ERROR(issued);
  report.pki_ms += MillisSince(t0);

  t0 = SteadyClock::now();
  const uint64_t data_seed = options.seed;
  Status made = internal::ParallelFor(options.devices, threads, [&](size_t i) -> Status {
    auto d = std::make_unique<SimDevice>();
    d->index = i;
    d->id = DeviceId(i);
    const fs::path dir = options.out_dir / "devices" / d->id;
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) return UnavailableError("cannot create " + dir.string() + ": " + ec.message());
    if (options.trainer == TrainerKind::kEngine) {
      device::SampleStoreOptions so;
      so.held_out_fraction = options.held_out_fraction;
      FLT_ASSIGN_OR_RETURN(std::unique_ptr<device::SampleStore> samples,
                           device::SampleStore::Open(dir / "samples.sqlite", so));
      const std::vector<TextSample> texts = GenerateDeviceSamples(data_seed, i, options.samples_per_device);
      std::vector<device::NewSample> batch;
      batch.reserve(texts.size());
      for (const TextSample& t : texts) {
        device::NewSample s;
        s.text = t.text;
        s.timestamp_ms = t.timestamp_ms;
        if (t.label) s.label = *t.label;
        batch.push_back(s);
      }
      FLT_RETURN_IF_ERROR(samples->AppendBatch(batch).status());
      device::EngineTrainerOptions eo;
      eo.seq_len = options.seq_len;
      eo.n_threads = 1;
      eo.loss_windows = 2;  // loss before/after on the same 2 local windows (4 short forward passes)
      eo.data_seed = data_seed ^ i;
      FLT_ASSIGN_OR_RETURN(d->engine_trainer, device::EngineLocalTrainer::FromSampleStore(base, *samples, eo));
    }
    devices[i] = std::move(d);
    return Status::Ok();
  });
  FLT_RETURN_IF_ERROR(made);
  report.data_ms = MillisSince(t0);

  // Enrol every device with the coordinator (an operator's bulk enrolment) and build the
  // agents.
  t0 = SteadyClock::now();
  FLT_ASSIGN_OR_RETURN(FleetPki::Identity coord, pki->Coordinator());
  auto coordinator_keys = std::make_shared<security::KeyRing>();
  coordinator_keys->Add("coordinator", coord.key->public_key());
  auto peer_keys = std::make_shared<security::KeyRing>();
  const std::vector<std::string> groups = {std::string(kGroup)};
  for (size_t i = 0; i < options.devices; ++i) {
    coordinator::EnrolDeviceRequest req;
    req.device_id = ids[i].id;
    req.identity_public_key = ids[i].key->public_key().der();
    req.certificate_pem = ids[i].cert_pem;
    req.firmware_version = "sim-1";
    FLT_RETURN_IF_ERROR(store->EnrolDevice(req, "simulator").status());
    FLT_RETURN_IF_ERROR(store->SetDeviceGroups(ids[i].id, groups, "simulator"));
    peer_keys->Add(ids[i].id, ids[i].key->public_key());
  }

  auto uploader = std::make_shared<internal::InProcessUploader>(*uploads);
  auto fetcher = std::make_shared<internal::RegistryFetcher>(*registry);
  const std::string uri = broker->tls_uri();
  for (size_t i = 0; i < options.devices; ++i) {
    SimDevice& d = *devices[i];
    device::DeviceAgentConfig ac;
    ac.device_id = d.id;
    ac.data_dir = options.out_dir / "devices" / d.id;
    ac.groups = groups;
    ac.base_model = base_model;
    ac.firmware_version = "sim-1";
    ac.capabilities.set_cpu_cores(1);
    device::DeviceAgentDeps deps;
    const FleetPki::Identity& ident = ids[i];
    const std::string ca = pki->ca_cert.string();
    deps.transport_factory = [uri, ca, ident](const protocol::Message& will)
        -> Result<std::unique_ptr<protocol::Transport>> {
      protocol::MqttTransportOptions mo;
      mo.server_uri = uri;
      mo.client_id = ident.id;
      mo.keepalive = std::chrono::seconds(300);  // idle keepalives of a thousand clients cost CPU
      mo.connect_timeout = std::chrono::seconds(60);
      mo.queue_capacity = 256;
      mo.tls = protocol::MqttTlsOptions{ca, ident.cert_file.string(), ident.key_file.string(), true};
      mo.will = protocol::MqttWill{will.topic, will.payload, will.retained, will.qos == 0 ? 1 : will.qos, 0};
      FLT_ASSIGN_OR_RETURN(std::unique_ptr<protocol::MqttTransport> t, protocol::MqttTransport::Create(mo));
      return std::unique_ptr<protocol::Transport>(std::move(t));
    };
    deps.signer = std::make_shared<security::EcdsaSigner>(ident.id, ident.key);
    deps.verifier = coordinator_keys;
    deps.peer_verifier = peer_keys;
    std::shared_ptr<device::LocalTrainer> trainer;
    if (d.engine_trainer) {
      trainer = d.engine_trainer;
    } else {
      trainer = std::make_shared<device::SeededLocalTrainer>(options.seed * 1000003 + i, options.samples_per_device,
                                                             0.05f);
    }
    deps.trainer = std::make_shared<internal::RecordingTrainer>(std::move(trainer), training_log);
    deps.uploader = uploader;
    deps.fetcher = fetcher;
    deps.runner = pool.get();
    deps.test_plaintext_hook = options.test_plaintext_hook;
    FaultPlan* plan = faults.get();
    deps.test_drop_before = [plan, i](std::string_view round_id, device::AgentStage stage) {
      return plan->DropBefore(i, round_id, stage);
    };
    FLT_ASSIGN_OR_RETURN(d.agent, device::DeviceAgent::Open(std::move(ac), std::move(deps)));
  }
  report.agents_ms = MillisSince(t0);

  // Evaluation set: devices spread over the fleet, and their pooled held-out text.
  if (options.trainer == TrainerKind::kEngine && options.evaluate) {
    const size_t n = options.eval_devices == 0 ? options.devices : std::min(options.eval_devices, options.devices);
    std::vector<int32_t> pooled_tokens;
    for (size_t k = 0; k < n; ++k) {
      const size_t i = k * options.devices / n;
      eval_devices.push_back(i);
      const auto& held = devices[i]->engine_trainer->held_out_data().tokens();
      pooled_tokens.insert(pooled_tokens.end(), held.begin(), held.end());
    }
    pooled = model::TokenDataset(std::move(pooled_tokens));
  }
  return Status::Ok();
}

void Fleet::Impl::PollLoop(size_t first, size_t end) {
  while (!stop.load(std::memory_order_relaxed)) {
    size_t events = 0;
    const int64_t now = Now();
    for (size_t i = first; i < end; ++i) {
      SimDevice& d = *devices[i];
      if (!d.started.load(std::memory_order_relaxed)) {
        if (now < d.connect_at.load(std::memory_order_relaxed)) continue;
        Status s = d.agent->StartConnect();
        if (!s.ok()) {
          FLT_LOG(kWarn, "simulator") << d.id << ": connect failed: " << s.ToString();
        }
        d.started = true;
      }
      if (now >= d.disconnect_at.load(std::memory_order_relaxed)) {
        d.disconnect_at = kNever;
        Status s = d.agent->Disconnect();
        if (!s.ok()) {
          FLT_LOG(kDebug, "simulator") << d.id << ": disconnect: " << s.ToString();
        }
      }
      if (now >= d.reconnect_at.load(std::memory_order_relaxed)) {
        d.reconnect_at = kNever;
        Status s = d.agent->StartConnect();
        if (!s.ok()) {
          FLT_LOG(kWarn, "simulator") << d.id << ": reconnect failed: " << s.ToString();
        }
      }
      events += d.agent->Poll(std::chrono::milliseconds(0));
    }
    if (events == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

void Fleet::Impl::StopAgents() {
  stop = true;
  for (std::thread& t : poll_threads) t.join();
  poll_threads.clear();
  for (auto& d : devices) {
    if (d && d->agent && d->started) (void)d->agent->Disconnect();
  }
}

// The round engine journals rounds, participants and adapter versions into
// coordinator.db itself; the simulator adds what only it measured (held-out perplexity)
// to the adapter version's metrics. Failures are logged.
void Fleet::Impl::RecordAdapterMetrics(const RoundReport& rr) {
  if (rr.state != "published" || rr.adapter_version.empty()) return;
  Result<coordinator::VersionRecord> v = store->GetVersion(coordinator::VersionKind::kAdapter, rr.adapter_version);
  if (!v.ok()) {
    FLT_LOG(kWarn, "simulator") << "coordinator.db: adapter " << rr.adapter_version << ": " << v.status().ToString();
    return;
  }
  nlohmann::json metrics = nlohmann::json::parse(v->metrics_json, nullptr, false);
  if (metrics.is_discarded() || !metrics.is_object()) metrics = nlohmann::json::object();
  metrics["survivors"] = rr.survivors;
  metrics["cohort"] = rr.cohort;
  if (rr.eval) {
    metrics["perplexity_mean"] = rr.eval->mean;
    metrics["perplexity_pooled"] = rr.eval->pooled;
  }
  Status s = store->SetVersionMetrics(coordinator::VersionKind::kAdapter, rr.adapter_version, metrics.dump());
  if (!s.ok()) {
    FLT_LOG(kWarn, "simulator") << "coordinator.db: adapter metrics: " << s.ToString();
  }
}

// ---------------------------------------------------------------- Fleet

Fleet::Fleet(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Fleet::~Fleet() {
  Impl& s = *impl_;
  s.StopAgents();
  s.devices.clear();  // agents before the pool their tasks run on
  s.pool.reset();
  s.driver.reset();
  s.coordinator_transport.reset();
  s.store_verifier.reset();
  if (s.broker) (void)s.broker->Stop();
}

Result<std::unique_ptr<Fleet>> Fleet::Open(FleetOptions options) {
  FLT_RETURN_IF_ERROR(ValidateOptions(options));
  auto impl = std::make_unique<Impl>();
  Impl& s = *impl;
  s.options = std::move(options);
  const FleetOptions& o = s.options;
  s.progress = Progress(o.progress);
  FLT_RETURN_IF_ERROR(ClearOutput(o.out_dir));
  FLT_RETURN_IF_ERROR(protocol::RaiseFileDescriptorLimit().status());

  s.report.devices = o.devices;
  s.report.rounds_requested = o.rounds;
  s.report.cohort = o.cohort;
  s.report.local_steps = o.local_steps;
  s.report.seed = o.seed;
  s.report.trainer = std::string(ToString(o.trainer));
  s.report.secagg_profile = o.profile == v1::SEC_AGG_PROFILE_CURIOUS ? "curious" : "hardened";
  s.report.dropouts = FormatDropouts(o.faults.dropout);
  s.report.disconnect_rate = o.faults.disconnect_rate;
  s.report.out_dir = o.out_dir.string();
  s.report.coordinator_db = (o.out_dir / "coordinator.db").string();
  s.report.journal_db = s.report.coordinator_db;  // the round engine journals into coordinator.db

  FaultOptions fo = o.faults;
  fo.seed = o.seed ^ 0xFA0175ull;
  s.faults = std::make_unique<FaultPlan>(fo);
  s.pool = std::make_unique<device::WorkerPool>(o.worker_threads);
  s.report.worker_threads = static_cast<unsigned>(s.pool->threads());

  s.progress.Update("setup", "model and PKI");
  FLT_RETURN_IF_ERROR(s.SetUpModel());
  FLT_RETURN_IF_ERROR(s.SetUpPki());
  s.progress.Update("setup", "broker and coordinator");
  FLT_RETURN_IF_ERROR(s.SetUpCoordinator());
  s.progress.Update("setup", "devices");
  FLT_RETURN_IF_ERROR(s.SetUpDevices());
  s.progress.Done("setup: " + std::to_string(o.devices) + " devices (certificates " + std::to_string(s.report.pki_ms) +
                  " ms, data " + std::to_string(s.report.data_ms) + " ms, agents " +
                  std::to_string(s.report.agents_ms) + " ms), broker " + s.broker->tls_uri());
  return std::unique_ptr<Fleet>(new Fleet(std::move(impl)));
}

Status Fleet::Connect() {
  Impl& s = *impl_;
  const auto t0 = SteadyClock::now();
  if (!s.driver) {
    FLT_ASSIGN_OR_RETURN(FleetPki::Identity coord, s.pki->Coordinator());
    protocol::MqttTransportOptions mo;
    mo.server_uri = s.broker->tls_uri();
    mo.client_id = "coordinator";
    mo.queue_capacity = std::max<size_t>(8192, s.options.devices * 16);
    mo.tls = protocol::MqttTlsOptions{s.pki->ca_cert.string(), coord.cert_file.string(), coord.key_file.string(), true};
    FLT_ASSIGN_OR_RETURN(s.coordinator_transport, protocol::MqttTransport::Create(mo));
    FLT_RETURN_IF_ERROR(s.coordinator_transport->Connect());
    s.store_verifier = std::make_shared<coordinator::StoreKeyVerifier>(*s.store);
    rounds::RoundDriverOptions ro;
    ro.transport = s.coordinator_transport.get();
    ro.signer = std::make_shared<security::EcdsaSigner>("coordinator", coord.key);
    // Device signatures are checked against the keys of ACTIVE devices in the Store (a
    // revoked device is refused like an unknown one).
    ro.verifier = s.store_verifier;
    ro.journal = s.journal.get();
    ro.adapters = s.registry.get();
    ro.uploads = s.uploads.get();
    ro.unmask_threads = static_cast<unsigned>(s.pool->threads());
    ro.test_hook = s.options.test_round_hook;
    FLT_ASSIGN_OR_RETURN(s.driver, rounds::RoundDriver::Open(std::move(ro)));
    FLT_RETURN_IF_ERROR(s.driver->Attach());
  }

  // Staggered connects, executed by the poll threads (they own the agents).
  const int64_t start = s.Now();
  const int64_t stagger_us = s.options.connect_stagger.count();
  for (auto& d : s.devices) d->connect_at = start + static_cast<int64_t>(d->index) * stagger_us / 1000;
  if (s.poll_threads.empty()) {
    const size_t n = s.devices.size();
    const size_t k = std::min<size_t>(s.options.poll_threads, n);
    for (size_t t = 0; t < k; ++t) {
      s.poll_threads.emplace_back([&s, t, k, n] { s.PollLoop(t * n / k, (t + 1) * n / k); });
    }
  }
  const auto deadline = SteadyClock::now() + s.options.connect_timeout;
  size_t connected = 0;
  while (true) {
    connected = s.ConnectedCount();
    s.progress.Update("connect", internal::Bar(static_cast<double>(connected) / static_cast<double>(s.devices.size())) +
                                     " " + std::to_string(connected) + "/" + std::to_string(s.devices.size()));
    if (connected == s.devices.size() || SteadyClock::now() > deadline) break;
    s.driver->Poll(std::chrono::milliseconds(50));  // keeps the coordinator's queue drained meanwhile
  }
  s.report.connect_ms = MillisSince(t0);
  s.report.connected = connected;
  s.progress.Done("connect: " + std::to_string(connected) + "/" + std::to_string(s.devices.size()) +
                  " devices over mTLS in " + std::to_string(s.report.connect_ms) + " ms");
  if (connected != s.devices.size()) {
    return DeadlineExceededError("only " + std::to_string(connected) + " of " + std::to_string(s.devices.size()) +
                                 " devices connected within the connect timeout");
  }
  return Status::Ok();
}

Result<RoundReport> Fleet::RunRound(uint32_t number) {
  Impl& s = *impl_;
  if (!s.driver) return FailedPreconditionError("simulate: Connect() first");
  const FleetOptions& o = s.options;
  RoundReport rr;
  rr.number = number;

  rounds::RoundSpec spec;
  spec.group = std::string(kGroup);
  spec.base_model = s.base_model;
  spec.training = s.training;
  spec.target_cohort = o.cohort;
  spec.min_cohort = o.min_cohort != 0 ? o.min_cohort : std::max<uint32_t>(2, o.cohort / 2);
  spec.check_in_timeout = o.check_in_timeout;
  spec.training_timeout = o.training_timeout;
  spec.stage_timeout = o.stage_timeout;
  spec.profile = o.profile;
  double expected_drop = o.faults.disconnect_rate;
  for (double p : o.faults.dropout) expected_drop += p;
  spec.max_dropout_rate = std::clamp(expected_drop + 0.1, 0.2, 0.6);

  const auto drops_before = s.faults->drops();
  const rounds::RoundDriverStats stats_before = s.driver->stats();
  const int64_t round_start = s.Now();
  for (auto& d : s.devices) {
    std::chrono::milliseconds offset{0};
    if (s.faults->Disconnects(d->index, number, &offset)) {
      d->reconnect_at = round_start + offset.count() + o.faults.disconnect_duration.count();
      d->disconnect_at = round_start + offset.count();
      ++rr.disconnects;
    }
  }

  const auto t0 = SteadyClock::now();
  FLT_ASSIGN_OR_RETURN(rr.round_id, s.driver->StartRound(spec));
  const auto limit = t0 + o.check_in_timeout + o.training_timeout + 6 * o.stage_timeout + std::chrono::seconds(30);
  const std::string phase_prefix = "round " + std::to_string(number) + "/" + std::to_string(o.rounds);
  std::optional<rounds::RoundStatus> st;
  bool cancelled = false;
  while (true) {
    s.driver->Poll(std::chrono::milliseconds(20));
    st = s.driver->status(rr.round_id);
    if (st && rounds::IsTerminal(st->state)) break;
    if (SteadyClock::now() > limit && !cancelled) {
      Status c = s.driver->Cancel(rr.round_id, "simulator time-out");
      if (!c.ok()) {
        FLT_LOG(kWarn, "simulator") << "cancel: " << c.ToString();
      }
      cancelled = true;
    } else if (cancelled && SteadyClock::now() > limit + std::chrono::seconds(10)) {
      break;
    }
    if (st) {
      const std::string state(rounds::ToString(st->state));
      std::string detail;
      const double secs = static_cast<double>(MillisSince(t0)) / 1000.0;
      if (st->state == rounds::RoundState::kSelecting) {
        detail = internal::Bar(static_cast<double>(st->check_ins) / o.cohort) + " check-ins " +
                 std::to_string(st->check_ins) + "/" + std::to_string(o.cohort);
      } else if (st->state == rounds::RoundState::kTraining) {
        const auto t = s.training_log->Totals(rr.round_id);
        const uint32_t done = t.trained + t.failures;
        detail = internal::Bar(st->cohort ? static_cast<double>(done) / st->cohort : 0) + " trained " +
                 std::to_string(done) + "/" + std::to_string(st->cohort);
      } else {
        detail = "cohort " + std::to_string(st->cohort);
      }
      char tbuf[32];
      std::snprintf(tbuf, sizeof(tbuf), " %.1f s", secs);
      s.progress.Update(phase_prefix + " " + state, detail + tbuf);
    }
  }
  rr.wall_ms = MillisSince(t0);
  if (st) {
    rr.state = std::string(rounds::ToString(st->state));
    rr.reason = st->reason;
    rr.check_ins = st->check_ins;
    rr.cohort = st->cohort;
    rr.declined = st->declined;
    rr.survivors = st->survivors;
    rr.duration_ms = st->duration_ms;
    rr.unmask_ms = st->unmask_ms;
    rr.adapter_version = st->adapter_version;
    for (const rounds::StageTiming& t : st->stages) rr.stages.push_back({t.stage, t.duration_ms, t.answered, t.expected});
  }
  const rounds::RoundDriverStats stats = s.driver->stats();
  rr.messages_in = stats.messages_accepted - stats_before.messages_accepted;
  rr.messages_out = stats.messages_sent - stats_before.messages_sent;
  rr.bytes_in = stats.bytes_in - stats_before.bytes_in;
  rr.bytes_out = stats.bytes_out - stats_before.bytes_out;
  rr.uploads = stats.uploads_fetched - stats_before.uploads_fetched;
  rr.messages_rejected = stats.messages_rejected - stats_before.messages_rejected;
  const internal::TrainingLog::RoundTotals t = s.training_log->Totals(rr.round_id);
  rr.trained = t.trained;
  rr.training_failures = t.failures;
  rr.train_seconds_total = t.seconds_total;
  rr.train_seconds_max = t.seconds_max;
  if (t.trained > 0) {
    rr.loss_before_mean = t.loss_before_sum / t.trained;
    rr.loss_after_mean = t.loss_after_sum / t.trained;
  }
  for (const auto& [stage, n] : s.faults->drops()) {
    auto it = drops_before.find(stage);
    const uint64_t delta = n - (it == drops_before.end() ? 0 : it->second);
    if (delta > 0) rr.drops[stage] = delta;
  }
  if (st && st->state == rounds::RoundState::kPublished) {
    ++s.report.rounds_published;
    if (o.evaluate && s.base) {
      s.progress.Update(phase_prefix + " evaluating", "held-out perplexity of " + rr.adapter_version);
      Result<PerplexityStats> ev = Evaluate();
      if (ev.ok()) {
        rr.eval = *ev;
      } else {
        FLT_LOG(kWarn, "simulator") << "evaluation failed: " << ev.status().ToString();
      }
    }
  }
  s.report.rounds.push_back(rr);
  s.progress.Done(FormatRoundLine(rr, o.rounds));
  s.RecordAdapterMetrics(rr);
  return rr;
}

Result<PerplexityStats> Fleet::Evaluate() {
  Impl& s = *impl_;
  if (!s.base || s.eval_devices.empty()) return NotFoundError("simulate: no evaluation (seeded trainer or disabled)");
  const auto t0 = SteadyClock::now();
  FLT_ASSIGN_OR_RETURN(rounds::GlobalAdapter current, s.registry->Current());
  const size_t n = s.eval_devices.size();
  std::vector<double> ppl(n, 0.0);
  model::EvalResult pooled;
  // Item n is the pooled set; each thread owns one evaluator (engine buffers, adapter).
  std::atomic<size_t> next{0};
  std::mutex mu;
  Status first = Status::Ok();
  auto work = [&] {
    auto ev = device::AdapterEvaluator::Create(s.base, s.training, s.options.seq_len, 1);
    Status st = ev.ok() ? (*ev)->SetTrainable(current.values) : ev.status();
    for (size_t i = next.fetch_add(1); st.ok() && i <= n; i = next.fetch_add(1)) {
      if (i == n) {
        auto r = (*ev)->Evaluate(s.pooled, s.options.pooled_windows);
        if (r.ok()) pooled = *r;
        st = r.status();
      } else {
        auto r = (*ev)->Evaluate(s.devices[s.eval_devices[i]]->engine_trainer->held_out_data(), s.options.eval_windows);
        if (r.ok()) ppl[i] = r->perplexity;
        st = r.status();
      }
    }
    if (!st.ok()) {
      std::lock_guard<std::mutex> lock(mu);
      if (first.ok()) first = st;
    }
  };
  const size_t threads = std::max<size_t>(1, std::min(s.pool->threads(), n + 1));
  std::vector<std::thread> pool;
  for (size_t t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
  FLT_RETURN_IF_ERROR(first);
  PerplexityStats out;
  out.devices = n;
  out.min = *std::min_element(ppl.begin(), ppl.end());
  out.max = *std::max_element(ppl.begin(), ppl.end());
  double sum = 0;
  for (double p : ppl) sum += p;
  out.mean = sum / static_cast<double>(n);
  out.pooled = pooled.perplexity;
  out.pooled_loss = pooled.mean_loss;
  out.pooled_tokens = pooled.n_tokens;
  out.eval_ms = MillisSince(t0);
  return out;
}

Result<SimulationReport> Fleet::Run() {
  Impl& s = *impl_;
  const auto t0 = SteadyClock::now();
  FLT_RETURN_IF_ERROR(Connect());
  if (s.options.evaluate && s.base) {
    s.progress.Update("evaluating", "held-out perplexity of the base model");
    Result<PerplexityStats> ev = Evaluate();
    if (!ev.ok()) return ev.status();
    s.report.initial_eval = *ev;
    s.progress.Done("base model: " + FormatPerplexity(*ev));
  }
  for (uint32_t r = 1; r <= s.options.rounds; ++r) FLT_RETURN_IF_ERROR(RunRound(r).status());
  s.report.wall_ms = MillisSince(t0);
  return s.report;
}

const SimulationReport& Fleet::report() const { return impl_->report; }

Result<std::vector<float>> Fleet::CurrentAdapter() {
  FLT_ASSIGN_OR_RETURN(rounds::GlobalAdapter current, impl_->registry->Current());
  if (current.version.empty()) return std::vector<float>{};
  return current.values;
}

device::AgentStatus Fleet::AgentStatusOf(size_t index) const { return impl_->devices.at(index)->agent->status(); }

uint64_t FrozenASeedForRun(uint64_t seed) { return seed * 0x9E3779B97F4A7C15ull + 17; }

Result<SimulationReport> RunSimulation(FleetOptions options) {
  const fs::path out = options.out_dir;
  FLT_ASSIGN_OR_RETURN(std::unique_ptr<Fleet> fleet, Fleet::Open(std::move(options)));
  Result<SimulationReport> report = fleet->Run();
  const SimulationReport& partial = report.ok() ? *report : fleet->report();
  Status written = WriteReport(partial, out / "report.json");
  if (!report.ok()) return report.status();
  FLT_RETURN_IF_ERROR(written);
  return report;
}

}  // namespace flotilla::simulator
