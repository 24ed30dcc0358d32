#include "flotilla/coordinator/coordinator.h"

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "flotilla/coordinator/pki.h"
#include "flotilla/coordinator/rollout.h"
#include "flotilla/coordinator/rollout_http.h"
#include "flotilla/coordinator/rollout_publish.h"
#include "flotilla/coordinator/round_fast_identity.h"
#include "flotilla/coordinator/store_adapter_registry.h"
#include "flotilla/core/file.h"
#include "flotilla/core/log.h"
#include "flotilla/ota/keys.h"
#include "flotilla/ota/repository.h"
#include "flotilla/protocol/mqtt_transport.h"
#include "flotilla/protocol/topics.h"
#include "flotilla/protocol/version.h"
#include "flotilla/security/csprng.h"
#include "flotilla/security/identity.h"
#include "round_config.h"
#include "service_ports.h"

namespace flotilla::coordinator {
namespace {

using SteadyClock = std::chrono::steady_clock;
constexpr std::string_view kLog = "coordinator";
constexpr char kCrashEnv[] = "FLOTILLA_TEST_CRASH_AFTER";
// How often the owner loop looks at the store for queued rounds and cancel requests,
// ticks rollouts, and checks the OTA timestamp.
constexpr auto kRoundQueuePoll = std::chrono::milliseconds(200);
constexpr auto kRolloutTick = std::chrono::seconds(1);
constexpr auto kTimestampCheck = std::chrono::seconds(60);

// TEST ONLY: the state after whose journal commit the process kills itself.
Result<std::optional<rounds::RoundState>> CrashPointFromEnv() {
  const char* v = std::getenv(kCrashEnv);
  if (v == nullptr || *v == '\0') return std::optional<rounds::RoundState>();
  auto state = rounds::ParseRoundState(v);
  if (!state.ok()) return InvalidArgumentError(std::string(kCrashEnv) + ": " + state.status().message());
  return std::optional<rounds::RoundState>(*state);
}

}  // namespace

std::filesystem::path RolloutDatabasePath(const CoordinatorConfig& config) { return config.data_dir / "coordinator.db"; }

struct Coordinator::Mqtt {
  std::shared_ptr<const security::EcdsaPrivateKey> key;
  std::unique_ptr<security::EcdsaSigner> signer;  // enrolment answers, rollout hints
  std::unique_ptr<protocol::MqttTransport> transport;
  std::shared_ptr<internal::EnrolledDeviceKeys> device_keys;
  std::string key_pem;
};

struct Coordinator::Rounds {
  internal::RoundDefaults defaults;
  std::unique_ptr<StoreAdapterRegistry> adapters;
  std::unique_ptr<rounds::RoundDriver> driver;
  std::string running;      // the round the driver runs; "" when idle
  std::string cancel_sent;  // the running round a cancel was passed on for
  SteadyClock::time_point next_poll{};
  SteadyClock::time_point last_start = SteadyClock::now();
};

struct Coordinator::Ota {
  explicit Ota(Store& store) : fleet(store) {}
  std::unique_ptr<ota::Repository> repo;
  internal::StoreFleetView fleet;
  std::unique_ptr<RolloutManager> manager;
  std::chrono::milliseconds timestamp_margin{0};
  SteadyClock::time_point next_tick{}, next_timestamp_check{};
};

Coordinator::Coordinator() = default;
Coordinator::~Coordinator() { (void)Shutdown(); }

rounds::RoundDriver* Coordinator::round_driver() { return rounds_ ? rounds_->driver.get() : nullptr; }
RolloutManager* Coordinator::rollouts() { return ota_ ? ota_->manager.get() : nullptr; }

Result<std::unique_ptr<Coordinator>> Coordinator::Start(const CoordinatorConfig& config) {
  std::unique_ptr<Coordinator> c(new Coordinator());
  c->config_ = config;
  StoreOptions so;
  so.cache_kib = config.store_cache_kib;
  FLT_ASSIGN_OR_RETURN(c->store_, Store::Open(config.data_dir, so));
  FLT_RETURN_IF_ERROR(c->metrics_.LoadFrom(*c->store_));
  c->journal_ = std::make_unique<StoreRoundJournal>(*c->store_);
  FLT_ASSIGN_OR_RETURN(std::optional<rounds::RoundState> crash_after, CrashPointFromEnv());
  if (crash_after) {
    const rounds::RoundState at = *crash_after;
    FLT_LOG(kWarn, kLog) << kCrashEnv << "=" << rounds::ToString(at) << ": TEST ONLY crash point armed";
    c->journal_->SetCommitHook([at](rounds::RoundState entered) {
      if (entered != at) return;
      std::fprintf(stderr, "coordinator: %s reached (%s), raising SIGKILL\n", kCrashEnv,
                   std::string(rounds::ToString(at)).c_str());
      std::fflush(stderr);
      std::raise(SIGKILL);
    });
  }
  FLT_ASSIGN_OR_RETURN(internal::RoundDefaults defaults, internal::ResolveRoundDefaults(config.round_defaults_json));

  std::string ca_pem;
  if (!config.pki_dir.empty()) {
    FLT_ASSIGN_OR_RETURN(ca_pem, ReadFileString(PkiLayout{config.pki_dir}.ca_cert(), 1 << 20));
  } else if (config.broker && !config.broker->ca_file.empty()) {
    FLT_ASSIGN_OR_RETURN(ca_pem, ReadFileString(config.broker->ca_file, 1 << 20));
  }
  c->enrolment_ = std::make_unique<Enrolment>(*c->store_, ca_pem, config.enrolment, RealClock());

  if (config.broker) {
    if (ca_pem.empty()) return FailedPreconditionError("coordinator: enrolment needs the fleet CA (pki_dir or broker.ca_file)");
    auto m = std::make_unique<Mqtt>();
    FLT_ASSIGN_OR_RETURN(m->key_pem, ReadFileString(config.broker->key_file, 1 << 20));
    FLT_ASSIGN_OR_RETURN(auto key, security::EcdsaPrivateKey::FromPem(m->key_pem));
    m->key = std::make_shared<const security::EcdsaPrivateKey>(std::move(key));
    m->signer = std::make_unique<security::EcdsaSigner>(std::string(protocol::kCoordinatorId), m->key);
    protocol::MqttTransportOptions topts;
    topts.server_uri = config.broker->uri;
    topts.client_id = std::string(protocol::kCoordinatorId);
    topts.queue_capacity = 16384;  // a 1,000-device round's burst of uplink messages
    topts.max_publishes_in_flight = 64;  // a stage's burst of downlink messages
    // A stage's burst of uplink messages (thousands of k-share responses) waits in a file
    // beyond 1 MiB, so coordinator memory does not grow with the cohort (design note 21).
    topts.queue_memory_budget = size_t{1} << 20;
    topts.queue_spill_dir = config.data_dir;
    if (config.broker->uri.rfind("ssl://", 0) == 0) {
      topts.tls = protocol::MqttTlsOptions{config.broker->ca_file.string(), config.broker->cert_file.string(),
                                           config.broker->key_file.string(), true};
    }
    FLT_ASSIGN_OR_RETURN(m->transport, protocol::MqttTransport::Create(std::move(topts)));
    m->device_keys = std::make_shared<internal::EnrolledDeviceKeys>(*c->store_);
    c->mqtt_ = std::move(m);
  }
  if (config.ota) FLT_RETURN_IF_ERROR(c->StartOta());

  ApiServerOptions http;
  http.host = config.http_listen;
  http.port = config.http_port;
  http.max_upload_bytes = config.max_upload_bytes;
  http.public_url = config.public_url;
  http.round_defaults_json = defaults.json;
  if (c->ota_) {
    RolloutManager* manager = c->ota_->manager.get();
    http.extra_routes = [manager](httplib::Server& server, const ApiRouteAuth& auth) {
      RegisterRolloutRoutes(server, *manager, auth);
    };
  }
  FLT_ASSIGN_OR_RETURN(c->http_, ApiServer::Start(*c->store_, c->metrics_, http));

  if (c->mqtt_) {
    c->rounds_ = std::make_unique<Rounds>();
    c->rounds_->defaults = std::move(defaults);
    FLT_RETURN_IF_ERROR(c->StartRounds());
    Mqtt& m = *c->mqtt_;
    FLT_RETURN_IF_ERROR(m.transport->StartConnect());
    FLT_RETURN_IF_ERROR(
        m.transport->WaitConnected(std::chrono::seconds(15)).WithContext("connecting to " + config.broker->uri));
    FLT_LOG(kInfo, kLog) << "MQTT connected to " << config.broker->uri;
  }
  Result<int64_t> purged = c->store_->PurgeFinishedRoundUploads();  // left by a crash
  if (!purged.ok()) {
    FLT_LOG(kWarn, kLog) << "purging uploads: " << purged.status().ToString();
  }
  c->next_flush_ = SteadyClock::now() + std::chrono::seconds(config.metrics_flush_seconds);
  return c;
}

Status Coordinator::StartOta() {
  const OtaServiceConfig& o = *config_.ota;
  auto ota = std::make_unique<Ota>(*store_);
  std::string passphrase;
  if (!o.passphrase_env.empty()) {
    const char* v = std::getenv(o.passphrase_env.c_str());
    if (v == nullptr || *v == '\0') return InvalidArgumentError("ota: environment variable " + o.passphrase_env + " is empty");
    passphrase = v;
  }
  FLT_ASSIGN_OR_RETURN(ota::RepositoryKeys keys, ota::LoadKeyDirectory(o.keys_dir, passphrase));
  FLT_ASSIGN_OR_RETURN(ota->repo, ota::Repository::Open(o.repository_dir, std::move(keys), RealClock()));
  if (ota->repo->root_version() == 0) FLT_RETURN_IF_ERROR(ota->repo->InitRoot());
  RolloutDeps deps;
  deps.repository = ota->repo.get();
  deps.fleet = &ota->fleet;
  if (mqtt_) {
    deps.transport = mqtt_->transport.get();
    deps.signer = mqtt_->signer.get();
    deps.device_keys = mqtt_->device_keys.get();
  }
  RolloutOptions ro;
  ro.db_path = RolloutDatabasePath(config_);
  FLT_ASSIGN_OR_RETURN(ota->manager, RolloutManager::Open(ro, deps));
  ota->timestamp_margin = std::chrono::milliseconds(static_cast<int64_t>(o.timestamp_margin_hours * 3600'000.0));
  ota_ = std::move(ota);
  FLT_LOG(kInfo, kLog) << "rollouts: repository " << o.repository_dir.string() << ", state "
                       << RolloutDatabasePath(config_).string();
  return Status::Ok();
}

Status Coordinator::StartRounds() {
  Mqtt& m = *mqtt_;
  Rounds& r = *rounds_;
  StoreAdapterRegistryOptions ao;
  ao.base_url = http_->base_url();
  ao.initial_length = r.defaults.initial_adapter_length;
  FLT_ASSIGN_OR_RETURN(r.adapters, StoreAdapterRegistry::Open(*store_, ao));
  FLT_ASSIGN_OR_RETURN(std::vector<RoundRecord> unfinished, store_->ListUnfinishedEngineRounds());

  rounds::RoundDriverOptions o;
  o.coordinator_id = std::string(protocol::kCoordinatorId);
  o.transport = m.transport.get();
  FLT_ASSIGN_OR_RETURN(std::unique_ptr<rounds::OpenSslEcdsaSigner> signer,
                       rounds::OpenSslEcdsaSigner::FromPem(o.coordinator_id, m.key_pem));
  o.signer = std::move(signer);
  o.verifier = m.device_keys;
  std::shared_ptr<internal::EnrolledDeviceKeys> keys = m.device_keys;
  o.device_allowed = [keys](std::string_view device_id) { return keys->Allowed(device_id); };
  o.journal = journal_.get();
  o.adapters = r.adapters.get();
  o.uploads = http_.get();
  o.unmask_threads = 0;  // all cores for Finish
  o.spool_dir = config_.data_dir;  // not /tmp: that may be a tmpfs, i.e. memory again
  FLT_ASSIGN_OR_RETURN(r.driver, rounds::RoundDriver::Open(std::move(o)));
  for (const RoundRecord& u : unfinished) {  // the one recovery resumes, if any
    auto st = r.driver->status(u.id);
    if (st && !rounds::IsTerminal(st->state)) r.running = u.id;
  }

  // Disjoint subscriptions (no message is delivered twice): the driver's round and SecAgg
  // events (Attach also re-sends a stage after a reconnect), then the endpoint's topics
  // and the rollouts' device reports. RouteMessage dispatches by topic.
  FLT_RETURN_IF_ERROR(r.driver->Attach());
  const std::string up = std::string(protocol::kTopicPrefix) + "/d/+/up/";
  for (const std::string& filter :
       {up + "presence", up + "reported", up + "event/" + std::string(protocol::topic_names::kEnrolEvent),
        up + "event/" + std::string(protocol::topic_names::kOtaReportEvent)}) {
    FLT_RETURN_IF_ERROR(m.transport->Subscribe(filter, 1));
  }
  endpoint_ = std::make_unique<DeviceEndpoint>(*m.transport, *store_, *enrolment_, *m.signer, RealClock(),
                                               security::SystemCsprng());
  m.transport->SetMessageHandler([this](const protocol::Message& msg) { RouteMessage(msg); });
  return Status::Ok();
}

void Coordinator::RouteMessage(const protocol::Message& message) {
  Result<protocol::Topic> topic = protocol::ParseTopic(message.topic);
  if (topic.ok() && topic->kind == protocol::TopicKind::kEvent) {
    if (topic->name == protocol::topic_names::kRoundEvent || topic->name == protocol::topic_names::kSecAggEvent) {
      rounds_->driver->HandleMessage(message);
      return;
    }
    if (topic->name == protocol::topic_names::kOtaReportEvent) {
      if (ota_) ota_->manager->HandleMessage(message);
      return;
    }
  }
  endpoint_->HandleMessage(message);
}

void Coordinator::Run(const std::atomic<bool>& stop) {
  while (!stop.load()) Step(std::chrono::milliseconds(50));
}

void Coordinator::Step(std::chrono::milliseconds timeout) {
  if (mqtt_) {
    mqtt_->transport->Poll(timeout);
  } else {
    std::this_thread::sleep_for(timeout);
  }
  if (rounds_) {
    rounds_->driver->Tick();
    PumpRounds();
  }
  if (ota_) TickOta();
  if (SteadyClock::now() >= next_flush_) {
    Status s = metrics_.FlushTo(*store_);
    if (!s.ok()) {
      FLT_LOG(kWarn, kLog) << "metrics flush: " << s.ToString();
    }
    next_flush_ = SteadyClock::now() + std::chrono::seconds(config_.metrics_flush_seconds);
  }
}

void Coordinator::PumpRounds() {
  Rounds& r = *rounds_;
  if (!r.running.empty()) {
    std::optional<rounds::RoundStatus> st = r.driver->status(r.running);
    if (!st || rounds::IsTerminal(st->state)) {
      if (st) FinishRound(*st);
      r.running.clear();
    }
  }
  const auto now = SteadyClock::now();
  if (now < r.next_poll) return;
  r.next_poll = now + kRoundQueuePoll;
  if (!r.running.empty() && r.cancel_sent != r.running) {
    // REST cancel requests of the running round are passed on once.
    Result<RoundRecord> rec = store_->GetRound(r.running);
    if (rec.ok() && rec->cancel_requested) {
      r.cancel_sent = r.running;
      Status s = r.driver->Cancel(r.running, rec->cancel_reason.empty() ? "cancelled by operator" : rec->cancel_reason);
      if (!s.ok()) {
        FLT_LOG(kWarn, kLog) << "cancelling round " << r.running << ": " << s.ToString();
      }
    }
  }
  ServeQueue(r.running.empty() && r.driver->idle());
}

void Coordinator::ServeQueue(bool may_start) {
  Rounds& r = *rounds_;
  const auto now = SteadyClock::now();
  Result<std::vector<RoundRecord>> queued = store_->ListQueuedRounds(50);
  if (!queued.ok()) {
    FLT_LOG(kWarn, kLog) << "round queue: " << queued.status().ToString();
    return;
  }
  // A queued round that cannot run is finished with its reason so it never blocks the queue.
  auto finish = [this](const RoundRecord& rec, rounds::RoundState to, const std::string& reason) {
    Status s = store_->TransitionRound(rec.id, rounds::RoundState::kCreated, to, reason, "engine");
    if (!s.ok()) {
      FLT_LOG(kWarn, kLog) << "round " << rec.id << ": " << s.ToString();
    }
    FLT_LOG(kInfo, kLog) << "round " << rec.id << " " << rounds::ToString(to) << ": " << reason;
  };
  bool waiting = false;
  for (const RoundRecord& rec : *queued) {
    if (rec.cancel_requested) {  // honoured even while another round runs
      finish(rec, rounds::RoundState::kCancelled, rec.cancel_reason.empty() ? "cancelled by operator" : rec.cancel_reason);
      continue;
    }
    waiting = true;
    if (!may_start) continue;
    Result<rounds::RoundSpec> spec = internal::RoundSpecFromConfig(rec.config_json, r.defaults.json, rec.id);
    if (!spec.ok()) {
      finish(rec, rounds::RoundState::kFailed, "invalid round config: " + spec.status().message());
      continue;
    }
    if (!rec.group.empty()) spec->group = rec.group;
    Result<std::string> id = r.driver->StartRound(std::move(*spec));
    if (!id.ok()) {
      finish(rec, rounds::RoundState::kFailed, "cannot start: " + id.status().message());
      continue;
    }
    r.running = *id;
    r.last_start = now;
    FLT_LOG(kInfo, kLog) << "round " << *id << " started";
    return;
  }
  const int every = config_.round_schedule_seconds;
  if (may_start && !waiting && every > 0 && now - r.last_start >= std::chrono::seconds(every)) {
    r.last_start = now;  // one attempt per period, even if it cannot start
    NewRound nr;
    Result<rounds::RoundSpec> probe = internal::RoundSpecFromConfig("{}", r.defaults.json, "");
    if (probe.ok()) nr.group = probe->group;
    Result<RoundRecord> made = store_->CreateRound(nr, "scheduler");
    if (!made.ok()) {
      FLT_LOG(kWarn, kLog) << "scheduler: " << made.status().ToString();
    } else {
      FLT_LOG(kInfo, kLog) << "scheduler queued round " << made->id;
      r.next_poll = now;  // start it on the next step
    }
  }
}

void Coordinator::FinishRound(const rounds::RoundStatus& st) {
  for (const rounds::StageTiming& t : st.stages) {
    metrics_.ObserveStageDuration(t.stage, static_cast<double>(t.duration_ms) / 1000.0);
  }
  if (st.state == rounds::RoundState::kPublished) {
    metrics_.ObserveAggregation(static_cast<double>(st.unmask_ms) / 1000.0);
    Result<VersionRecord> v = store_->GetVersion(VersionKind::kAdapter, st.adapter_version);
    if (v.ok()) {
      nlohmann::json m = nlohmann::json::parse(v->metrics_json, nullptr, false);
      if (m.is_discarded() || !m.is_object()) m = nlohmann::json::object();
      m["cohort"] = st.cohort;
      m["survivors"] = st.survivors;
      m["check_ins"] = st.check_ins;
      m["duration_ms"] = st.duration_ms;
      m["unmask_ms"] = st.unmask_ms;
      Status s = store_->SetVersionMetrics(VersionKind::kAdapter, st.adapter_version, m.dump());
      if (!s.ok()) {
        FLT_LOG(kWarn, kLog) << "adapter metrics: " << s.ToString();
      }
    }
    FLT_LOG(kInfo, kLog) << "round " << st.round_id << " published " << st.adapter_version << " (" << st.survivors
                         << " of " << st.cohort << " devices, " << st.duration_ms << " ms)";
  } else {
    FLT_LOG(kInfo, kLog) << "round " << st.round_id << " " << rounds::ToString(st.state) << ": " << st.reason;
  }
  Result<int64_t> purged = store_->PurgeFinishedRoundUploads();
  if (!purged.ok()) {
    FLT_LOG(kWarn, kLog) << "purging uploads: " << purged.status().ToString();
  }
}

void Coordinator::TickOta() {
  Ota& o = *ota_;
  const auto now = SteadyClock::now();
  if (now >= o.next_tick) {
    o.next_tick = now + kRolloutTick;
    Status s = o.manager->Tick();
    if (!s.ok()) {
      FLT_LOG(kWarn, kLog) << "rollouts: " << s.ToString();
    }
  }
  if (now >= o.next_timestamp_check) {
    o.next_timestamp_check = now + kTimestampCheck;
    Result<bool> signed_now = RefreshTimestamp(*o.repo, o.timestamp_margin);
    if (!signed_now.ok() && signed_now.status().code() == StatusCode::kFailedPrecondition) {
      FLT_LOG(kDebug, kLog) << "OTA timestamp refresh: " << signed_now.status().ToString();  // nothing published yet
    } else if (!signed_now.ok()) {
      FLT_LOG(kWarn, kLog) << "OTA timestamp refresh: " << signed_now.status().ToString();
    } else if (*signed_now) {
      FLT_LOG(kInfo, kLog) << "OTA timestamp re-signed (v" << o.repo->timestamp_version() << ")";
    }
  }
}

Status Coordinator::Shutdown() {
  if (shut_down_) return Status::Ok();
  shut_down_ = true;
  if (http_) http_->Stop();
  Status s;
  if (mqtt_) s = mqtt_->transport->Disconnect();
  if (rounds_) rounds_->driver.reset();  // before the transport it borrows
  endpoint_.reset();
  ota_.reset();
  rounds_.reset();
  mqtt_.reset();
  if (store_) {
    Status f = metrics_.FlushTo(*store_);
    if (s.ok()) s = f;
  }
  return s;
}

}  // namespace flotilla::coordinator
