#include "flotilla/simulator/ota_fleet.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "fault_proxy.h"
#include "flotilla/coordinator/rollout_publish.h"
#include "flotilla/core/check.h"
#include "flotilla/core/file.h"
#include "flotilla/core/log.h"
#include "flotilla/ota/artifact_server.h"
#include "flotilla/ota/client.h"
#include "flotilla/ota/fetcher.h"
#include "flotilla/ota/keys.h"
#include "flotilla/ota/metadata.h"
#include "flotilla/ota/repository.h"
#include "flotilla/ota/repository_layout.h"
#include "flotilla/protocol/publish_sink_transport.h"
#include "flotilla/protocol/topics.h"
#include "flotilla/security/hash.h"
#include "flotilla/security/identity.h"

namespace flotilla::simulator {
namespace {

namespace fs = std::filesystem;
using coordinator::DeviceRolloutStatus;
using internal::Mix;

constexpr char kTargetName[] = "models/sim/artifact";
constexpr char kHardware[] = "sim-soc";
// Child exit codes of a crash run (RunCrashingCycle).
constexpr int kChildCrashed = 0;
constexpr int kChildNoCrash = 3;
constexpr int kChildError = 4;

int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Simulated wall time shared by the repository (signing, expiry), the rollouts (rate cap,
// report age) and the devices (metadata expiry); steady time stays real (timeouts).
class SimClock final : public Clock {
 public:
  SimClock() : ms_(RealClock().NowUnixMillis()) {}
  std::chrono::system_clock::time_point Now() const override {
    return std::chrono::system_clock::time_point(std::chrono::milliseconds(ms_.load()));
  }
  std::chrono::steady_clock::time_point SteadyNow() const override { return std::chrono::steady_clock::now(); }
  void Advance(std::chrono::milliseconds d) { ms_ += d.count(); }

 private:
  std::atomic<int64_t> ms_;
};

// The coordinator's hint channel: records who was hinted (devices never trust hints;
// they re-run the signed check), so the simulator knows whom to wake up.
class HintInbox {
 public:
  HintInbox()
      : transport_([this](std::string_view topic, ByteSpan) -> Status {
          FLT_ASSIGN_OR_RETURN(protocol::Topic t, protocol::ParseTopic(topic));
          std::lock_guard<std::mutex> lock(mu_);
          hinted_.insert(t.device_id);
          return Status::Ok();
        }) {}
  std::set<std::string> Take() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::exchange(hinted_, {});
  }
  protocol::Transport* transport() { return &transport_; }

 private:
  std::mutex mu_;
  std::set<std::string> hinted_;  // GUARDED_BY(mu_)
  protocol::PublishSinkTransport transport_;
};

// The engine's health check, simulated: a device chosen to fail fails every try.
class SimHealth final : public ota::HealthChecker {
 public:
  explicit SimHealth(bool fails) : fails_(fails) {}
  Result<v1::HealthFigures> Check(const ota::HealthCheckContext& context) override {
    if (fails_) {
      return FailedPreconditionError("simulated health failure: golden prompt 1 regressed (try " +
                                     std::to_string(context.attempt) + ")");
    }
    v1::HealthFigures f;
    f.set_golden_prompts_passed(4);
    f.set_golden_prompts_total(4);
    f.set_latency_p95_ms(20);
    return f;
  }

 private:
  bool fails_;
};

// Reports go up as the device agent sends them: a signed envelope on the device's
// uplink topic, straight into the coordinator's MQTT handler.
class UplinkSink final : public ota::ReportSink {
 public:
  UplinkSink(coordinator::RolloutManager* manager, std::string topic) : manager_(manager), topic_(std::move(topic)) {}
  Status Send(ByteSpan sealed, const v1::OtaReport&) override {
    // A crashing child process must not touch the coordinator's SQLite connection.
    if (manager_ == nullptr) return UnavailableError("link down");
    protocol::Message m;
    m.topic = topic_;
    m.payload.assign(sealed.begin(), sealed.end());
    m.qos = 1;
    manager_->HandleMessage(m);
    return Status::Ok();
  }

 private:
  coordinator::RolloutManager* manager_;
  std::string topic_;
};

class VectorFleet final : public coordinator::FleetView {
 public:
  std::vector<coordinator::FleetDevice> devices;
  Result<std::vector<coordinator::FleetDevice>> ListDevices() override { return devices; }
};

struct DeviceSim {
  std::string id;
  fs::path dir;
  std::string base_url;
  std::unique_ptr<security::EcdsaSigner> signer;
  std::unique_ptr<SimHealth> health;
  std::string report_topic;
  bool canary = false;
  bool health_fails = false;
  bool crash_pending = false;  // crashes at options.crash_at in its first cycle
  uint32_t retries_left = 5;   // re-runs after a cycle that ended without an outcome
  // Results (written by the one worker running the device).
  v1::OtaOutcome last_outcome = v1::OTA_OUTCOME_UNSPECIFIED;
  uint32_t cycles = 0;
  uint32_t crashes = 0;
  uint64_t bytes = 0;
  bool needs_rerun = false;
  std::string installed_sha;  // filled at the end of Run()
};

Status CheckOptions(const OtaFleetOptions& o) {
  if (o.devices == 0 || o.devices > 100000) return InvalidArgumentError("ota simulate: devices must be 1..100000");
  if (o.out_dir.empty()) return InvalidArgumentError("ota simulate: out_dir is required");
  for (double r : {o.health_failure_rate, o.download_fault_rate, o.crash_rate}) {
    if (!(r >= 0 && r <= 1)) return InvalidArgumentError("ota simulate: rates must be in [0, 1]");
  }
  if (o.phases.canary_devices > o.devices) return InvalidArgumentError("ota simulate: more canaries than devices");
  if (o.crash_rate > 0 && o.crash_at.empty()) return InvalidArgumentError("ota simulate: crash_rate needs crash_at");
  if (o.workers == 0 || o.workers > 64) return InvalidArgumentError("ota simulate: workers must be 1..64");
  if (o.artifact.empty() && (o.generate_bytes == 0 || o.generate_bytes > (uint64_t{4} << 30))) {
    return InvalidArgumentError("ota simulate: generated artifact must be 1 byte..4 GiB");
  }
  if (o.chunk_bytes == 0 || o.chunk_bytes > ota::kMaxChunkBytes) {
    return InvalidArgumentError("ota simulate: chunk size must be 1 byte..4 MiB");
  }
  return Status::Ok();
}

// `count` distinct indexes of `pool`, chosen by a seeded shuffle.
std::set<size_t> Choose(std::vector<size_t> pool, size_t count, uint64_t seed, uint64_t salt) {
  for (size_t i = pool.size(); i > 1; --i) std::swap(pool[i - 1], pool[Mix(seed, salt, i) % i]);
  pool.resize(std::min(count, pool.size()));
  return {pool.begin(), pool.end()};
}

// Fresh in-memory keys for every role (root 2 of 3, as `flotilla keys init`).
Result<ota::RepositoryKeys> NewRepositoryKeys() {
  ota::RepositoryKeys keys;
  for (v1::RoleType role : ota::kAllRoles) {
    const int n = role == v1::ROLE_TYPE_ROOT ? 3 : 1;
    for (int i = 0; i < n; ++i) {
      FLT_ASSIGN_OR_RETURN(auto k, security::EcdsaPrivateKey::Generate());
      keys.keys[role].push_back(std::make_shared<const security::EcdsaPrivateKey>(std::move(k)));
    }
    keys.thresholds[role] = role == v1::ROLE_TYPE_ROOT ? 2 : 1;
  }
  return keys;
}

Status WriteSyntheticArtifact(const fs::path& path, uint64_t size, uint64_t seed) {
  Bytes b(size);
  for (uint64_t i = 0; i < size; i += 8) {
    const uint64_t v = Mix(seed, 0xa27, i);
    for (uint64_t k = 0; k < 8 && i + k < size; ++k) b[i + k] = static_cast<uint8_t>(v >> (8 * k));
  }
  return WriteFileAtomic(path, b);
}

// hex SHA-256 of what `current` points at: from the slot's target.pb, checked against
// the bytes when `verify`. "" when nothing is installed, "corrupt" on a mismatch.
std::string InstalledSha(const fs::path& install_dir, bool verify) {
  std::error_code ec;
  const fs::path current = install_dir / "current";
  if (!fs::exists(current / "artifact", ec)) return "";
  auto pb = ReadFileBytes(current / "target.pb", 1 << 20);
  v1::TargetInfo t;
  if (!pb.ok() || !t.ParseFromArray(pb->data(), static_cast<int>(pb->size()))) return "corrupt";
  const std::string sha = ToHex(AsBytes(t.sha256()));
  if (!verify) return sha;
  auto bytes = ReadFileBytes(current / "artifact");
  if (!bytes.ok() || ToHex(security::Sha256(*bytes)) != sha) return "corrupt";
  return sha;
}

}  // namespace

// --- parsing ---------------------------------------------------------------------------------

Result<OtaPhasePlan> ParseOtaPhases(std::string_view spec) {
  OtaPhasePlan plan;
  plan.percents.clear();
  size_t start = 0;
  while (start <= spec.size()) {
    const size_t end = std::min(spec.find(',', start), spec.size());
    const std::string item(spec.substr(start, end - start));
    start = end + 1;
    if (item.rfind("canary:", 0) == 0) {
      if (!plan.percents.empty() || plan.canary_devices != 0) {
        return InvalidArgumentError("phases: 'canary:N' must come first, once");
      }
      char* rest = nullptr;
      const unsigned long n = std::strtoul(item.c_str() + 7, &rest, 10);
      if (item.size() == 7 || *rest != '\0' || n == 0 || n > 100000) {
        return InvalidArgumentError("phases: bad canary count in '" + item + "'");
      }
      plan.canary_devices = static_cast<uint32_t>(n);
      continue;
    }
    char* rest = nullptr;
    const double p = std::strtod(item.c_str(), &rest);
    if (item.empty() || *rest != '\0' || !std::isfinite(p) || p <= 0 || p > 100) {
      return InvalidArgumentError("phases: '" + item + "' is not a percentage in (0, 100]");
    }
    if (!plan.percents.empty() && p < plan.percents.back()) {
      return InvalidArgumentError("phases: percentages must not decrease");
    }
    plan.percents.push_back(p);
  }
  if (plan.percents.empty() || plan.percents.back() != 100) {
    return InvalidArgumentError("phases: the last phase must be 100");
  }
  return plan;
}

std::string_view ToString(DownloadFault fault) {
  switch (fault) {
    case DownloadFault::kServerError:
      return "5xx";
    case DownloadFault::kTruncated:
      return "truncate";
    case DownloadFault::kStalled:
      return "stall";
  }
  return "?";
}

Result<std::vector<DownloadFault>> ParseDownloadFaults(std::string_view spec) {
  std::vector<DownloadFault> out;
  size_t start = 0;
  while (start <= spec.size()) {
    const size_t end = std::min(spec.find(',', start), spec.size());
    const std::string_view item = spec.substr(start, end - start);
    start = end + 1;
    bool known = false;
    for (DownloadFault f : {DownloadFault::kServerError, DownloadFault::kTruncated, DownloadFault::kStalled}) {
      if (item == ToString(f)) {
        if (std::find(out.begin(), out.end(), f) == out.end()) out.push_back(f);
        known = true;
      }
    }
    if (!known) return InvalidArgumentError("download faults: unknown kind '" + std::string(item) + "' (5xx, truncate, stall)");
  }
  return out;
}

std::string OtaFleetReportToJson(const OtaFleetReport& r, int indent) {
  using nlohmann::json;
  json phases = json::array();
  for (const auto& p : r.phases) {
    phases.push_back({{"name", p.name},
                      {"outcome", p.outcome},
                      {"assigned", p.assigned},
                      {"installed", p.installed},
                      {"healthy", p.healthy},
                      {"failed", p.failed},
                      {"rolled_back", p.rolled_back},
                      {"download_failures", p.download_failures},
                      {"crashes", p.crashes},
                      {"bytes_downloaded", p.bytes_downloaded},
                      {"ticks", p.ticks},
                      {"wall_ms", p.wall_ms},
                      {"simulated_ms", p.simulated_ms}});
  }
  const auto& c = r.counts;
  json j = {{"devices", r.devices},
            {"artifact", {{"sha256", r.artifact_sha256}, {"bytes", r.artifact_bytes}, {"chunks", r.artifact_chunks}}},
            {"rollout",
             {{"state", r.final_state},
              {"reason", r.reason},
              {"eligible", c.eligible},
              {"assigned", c.assigned},
              {"succeeded", c.succeeded},
              {"failed", c.failed},
              {"in_progress", c.in_progress},
              {"retracted", c.retracted}}},
            {"phases", phases},
            {"devices_end_state", {{"on_new", r.on_new}, {"on_old", r.on_old}, {"on_neither", r.on_neither}}},
            {"faults", {{"crashes", r.crashes}, {"download_faults_injected", r.download_faults_injected}}},
            {"bytes_downloaded", r.bytes_downloaded},
            {"reports", {{"accepted", r.reports_accepted}, {"rejected", r.reports_rejected}}},
            {"checks", {{"quota_violations", r.quota_violations}, {"status_mismatches", r.mismatches}}},
            {"ticks", r.ticks},
            {"setup_ms", r.setup_ms},
            {"wall_ms", r.wall_ms},
            {"simulated_ms", r.simulated_ms}};
  return j.dump(indent);
}

// --- the fleet -------------------------------------------------------------------------------

struct OtaFleet::Impl {
  OtaFleetOptions options;
  SimClock clock;
  std::unique_ptr<ota::Repository> repository;
  std::unique_ptr<ota::ArtifactServer> server;
  std::unique_ptr<internal::FaultProxy> proxy;
  HintInbox hints;
  VectorFleet fleet;
  security::KeyRing device_keys;
  std::unique_ptr<security::EcdsaSigner> coordinator_signer;
  std::unique_ptr<coordinator::RolloutManager> manager;
  std::vector<DeviceSim> devices;
  std::map<std::string, size_t> by_id;
  v1::TargetInfo target;
  Bytes root;
  int64_t rollout_id = 0;
  int64_t setup_ms = 0;

  Result<ota::CycleResult> RunCycle(DeviceSim& d, ota::CrashHook hook, coordinator::RolloutManager* uplink) const;
  void RunBatch(const std::vector<DeviceSim*>& batch);
  void RunCrashingCycle(DeviceSim& d);
  Result<OtaFleetReport> Report(const coordinator::RolloutSummary& s, std::vector<OtaPhaseReport> phases);
};

Result<ota::CycleResult> OtaFleet::Impl::RunCycle(DeviceSim& d, ota::CrashHook hook,
                                                  coordinator::RolloutManager* uplink) const {
  ota::HttpFetcherOptions fo;
  fo.base_url = d.base_url;
  fo.read_timeout = options.device_read_timeout;
  fo.connect_timeout = std::chrono::seconds(5);
  fo.min_bytes_per_second = 0;
  FLT_ASSIGN_OR_RETURN(auto fetcher, ota::HttpFetcher::Create(fo));
  ota::OtaClientOptions o;
  o.data_dir = d.dir / "data";
  o.install_dir = d.dir / "models";
  o.target_name = kTargetName;
  o.device = ota::DeviceIdentity{d.id, {}, kHardware};
  o.provisioned_root = root;
  o.max_download_attempts = options.max_download_attempts;
  o.backoff_initial = std::chrono::milliseconds(1);
  o.backoff_max = std::chrono::milliseconds(4);
  UplinkSink sink(uplink, d.report_topic);
  ota::OtaClientDeps deps;
  deps.fetcher = fetcher.get();
  deps.health = d.health.get();
  deps.reports = &sink;
  deps.signer = d.signer.get();
  deps.clock = &clock;
  deps.crash_hook = std::move(hook);
  deps.sleep = [](std::chrono::milliseconds) {};  // back-off waits pass in simulated time
  FLT_ASSIGN_OR_RETURN(auto client, ota::OtaClient::Open(std::move(o), std::move(deps)));
  return client->RunCycle();
}

// The process dies at the first matching crash point, as a kill -9 would: page cache
// (written files) survives, nothing after the point runs, no destructor, no report.
// Runs on the calling thread while no worker runs (fork() copies only this thread).
void OtaFleet::Impl::RunCrashingCycle(DeviceSim& d) {
  d.crash_pending = false;
  ++d.cycles;
  const pid_t pid = ::fork();
  if (pid < 0) {
    FLT_LOG(kWarn, "simulate-ota") << d.id << ": fork failed; running without the crash";
    return;
  }
  if (pid == 0) {
    ::alarm(60);  // a child stuck on a lock inherited mid-operation dies (still a crash)
    const std::string prefix = options.crash_at;
    auto r = RunCycle(
        d, [&prefix](std::string_view point) {
          if (point.substr(0, prefix.size()) == prefix) ::_exit(kChildCrashed);
        },
        nullptr);
    ::_exit(r.ok() ? kChildNoCrash : kChildError);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  const bool crashed = !WIFEXITED(status) || WEXITSTATUS(status) == kChildCrashed;
  if (crashed) ++d.crashes;
  d.needs_rerun = true;  // the restart: same journal, in this process
}

void OtaFleet::Impl::RunBatch(const std::vector<DeviceSim*>& batch) {
  for (DeviceSim* d : batch) {
    if (d->crash_pending) RunCrashingCycle(*d);
  }
  std::atomic<size_t> next{0};
  std::vector<std::thread> pool;
  const size_t workers = std::min<size_t>(options.workers, batch.size());
  for (size_t w = 0; w < workers; ++w) {
    pool.emplace_back([&] {
      for (size_t i = next++; i < batch.size(); i = next++) {
        DeviceSim& d = *batch[i];
        ++d.cycles;
        auto r = RunCycle(d, nullptr, manager.get());
        if (!r.ok()) {
          FLT_LOG(kWarn, "simulate-ota") << d.id << ": cycle failed: " << r.status().ToString();
          d.needs_rerun = true;
          continue;
        }
        d.bytes += r->bytes_downloaded;
        if (r->outcome != v1::OTA_OUTCOME_UNSPECIFIED) d.last_outcome = r->outcome;
        d.needs_rerun = r->outcome == v1::OTA_OUTCOME_UNSPECIFIED || !r->report_delivered;
      }
    });
  }
  for (auto& t : pool) t.join();
}

OtaFleet::OtaFleet(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

OtaFleet::~OtaFleet() {
  if (impl_->proxy) impl_->proxy->Stop();
  if (impl_->server) impl_->server->Stop();
}

Result<std::unique_ptr<OtaFleet>> OtaFleet::Create(OtaFleetOptions options) {
  FLT_RETURN_IF_ERROR(CheckOptions(options));
  const int64_t t0 = WallMs();
  auto impl = std::make_unique<Impl>();
  Impl& m = *impl;
  m.options = std::move(options);
  const OtaFleetOptions& o = m.options;
  std::error_code ec;
  if (fs::exists(o.out_dir / "coordinator.db", ec) || fs::exists(o.out_dir / "repo", ec)) {
    return FailedPreconditionError("ota simulate: " + o.out_dir.string() + " holds an earlier run");
  }
  fs::create_directories(o.out_dir / "devices", ec);
  if (ec) return UnavailableError("ota simulate: cannot create " + o.out_dir.string() + ": " + ec.message());

  // Repository: keys in memory, the artifact published as release 1.
  FLT_ASSIGN_OR_RETURN(ota::RepositoryKeys keys, NewRepositoryKeys());
  FLT_ASSIGN_OR_RETURN(m.repository, ota::Repository::Open(o.out_dir / "repo", std::move(keys), m.clock));
  FLT_RETURN_IF_ERROR(m.repository->InitRoot());
  fs::path file = o.artifact;
  if (file.empty()) {
    file = o.out_dir / "artifact.bin";
    FLT_RETURN_IF_ERROR(WriteSyntheticArtifact(file, o.generate_bytes, o.seed));
  }
  ota::TargetSpec spec;
  spec.file = file;
  spec.name = kTargetName;
  spec.kind = v1::TARGET_KIND_BASE_MODEL;
  spec.release_counter = 1;
  spec.hardware_compat = {kHardware};
  spec.max_chunk_bytes = o.chunk_bytes;
  // A GGUF file is cut at its tensors (as `flotilla ota publish` does); anything else in
  // fixed-size chunks.
  if (auto b = coordinator::GgufTensorBoundaries(file); b.ok()) spec.chunk_boundaries = std::move(b).value();
  FLT_ASSIGN_OR_RETURN(m.target, m.repository->AddTarget(spec));
  FLT_RETURN_IF_ERROR(m.repository->Publish());
  FLT_ASSIGN_OR_RETURN(m.root, m.repository->CurrentRoot());

  // Serving: the ArtifactServer, behind the faulting proxy when faults are wanted.
  FLT_ASSIGN_OR_RETURN(m.server, ota::ArtifactServer::Start(m.repository->dir()));
  if (o.download_fault_rate > 0) {
    internal::FaultProxyOptions po;
    po.upstream = m.server->base_url();
    po.rate = o.download_fault_rate;
    po.kinds = o.download_faults;
    po.stall = o.device_read_timeout * 3 / 2;
    po.seed = o.seed;
    FLT_ASSIGN_OR_RETURN(m.proxy, internal::FaultProxy::Start(po));
  }

  // Devices: identities, dirs, injected faults.
  m.devices.resize(o.devices);
  std::vector<size_t> non_canary;
  for (size_t i = 0; i < m.devices.size(); ++i) {
    DeviceSim& d = m.devices[i];
    char name[32];
    std::snprintf(name, sizeof name, "dev-%05zu", i);
    d.id = name;
    d.dir = o.out_dir / "devices" / d.id;
    d.canary = i < o.phases.canary_devices;
    if (!d.canary) non_canary.push_back(i);
    d.base_url = m.proxy ? m.proxy->DeviceBaseUrl(d.id) : m.server->base_url();
    FLT_ASSIGN_OR_RETURN(auto key, security::EcdsaPrivateKey::Generate());
    auto shared = std::make_shared<const security::EcdsaPrivateKey>(std::move(key));
    m.device_keys.Add(d.id, shared->public_key());
    d.signer = std::make_unique<security::EcdsaSigner>(d.id, shared);
    FLT_ASSIGN_OR_RETURN(d.report_topic, protocol::FormatTopic(protocol::Topic::Event(
                                             d.id, std::string(protocol::topic_names::kOtaReportEvent))));
    m.fleet.devices.push_back({d.id, kHardware});
    m.by_id[d.id] = i;
  }
  // Canaries stand for lab units: health failures are spread over the rest of the fleet.
  const auto failing = Choose(non_canary, static_cast<size_t>(std::llround(o.health_failure_rate *
                                                                           static_cast<double>(non_canary.size()))),
                              o.seed, 0x4ea1);
  std::vector<size_t> everyone(m.devices.size());
  for (size_t i = 0; i < everyone.size(); ++i) everyone[i] = i;
  const auto crashing = Choose(everyone, static_cast<size_t>(std::llround(o.crash_rate * o.devices)), o.seed, 0xc4a5);
  for (size_t i = 0; i < m.devices.size(); ++i) {
    m.devices[i].health_fails = failing.count(i) > 0;
    m.devices[i].health = std::make_unique<SimHealth>(m.devices[i].health_fails);
    m.devices[i].crash_pending = crashing.count(i) > 0;
  }

  // The coordinator side: rollouts in coordinator.db, hints signed by its identity.
  FLT_ASSIGN_OR_RETURN(auto coordinator_key, security::EcdsaPrivateKey::Generate());
  m.coordinator_signer = std::make_unique<security::EcdsaSigner>(
      "coordinator", std::make_shared<const security::EcdsaPrivateKey>(std::move(coordinator_key)));
  coordinator::RolloutOptions ro;
  ro.db_path = o.out_dir / "coordinator.db";
  coordinator::RolloutDeps rd;
  rd.repository = m.repository.get();
  rd.fleet = &m.fleet;
  rd.transport = m.hints.transport();
  rd.signer = m.coordinator_signer.get();
  rd.device_keys = &m.device_keys;
  rd.clock = &m.clock;
  rd.random = o.membership_random;
  FLT_ASSIGN_OR_RETURN(m.manager, coordinator::RolloutManager::Open(ro, rd));
  m.setup_ms = WallMs() - t0;
  return std::unique_ptr<OtaFleet>(new OtaFleet(std::move(impl)));
}

Result<OtaFleetReport> OtaFleet::Run() {
  Impl& m = *impl_;
  const OtaFleetOptions& o = m.options;
  if (m.rollout_id != 0) return FailedPreconditionError("ota simulate: Run() already ran");
  std::vector<std::string> canaries;
  for (const auto& d : m.devices) {
    if (d.canary) canaries.push_back(d.id);
  }
  coordinator::RolloutSpec spec =
      coordinator::MakeRolloutSpec("simulated", {kTargetName}, canaries, o.phases.percents, o.thresholds);
  spec.max_assignments_per_minute = o.max_assignments_per_minute;
  spec.repository_url = m.server->base_url();
  FLT_ASSIGN_OR_RETURN(coordinator::RolloutSummary s, m.manager->Create(spec));
  m.rollout_id = s.id;

  std::vector<OtaPhaseReport> phases(s.spec.phases.size());
  for (size_t i = 0; i < phases.size(); ++i) {
    phases[i].name = s.spec.phases[i].name;
    phases[i].outcome = "not reached";
  }
  const int64_t wall0 = WallMs(), sim0 = m.clock.NowUnixMillis();
  uint32_t phase = 0;
  int64_t phase_wall = wall0, phase_sim = sim0;
  uint64_t quota_violations = 0;
  uint32_t ticks = 0;
  for (; ticks < o.max_ticks; ++ticks) {
    FLT_RETURN_IF_ERROR(m.manager->Tick());
    FLT_ASSIGN_OR_RETURN(s, m.manager->Get(m.rollout_id));
    if (s.counts.assigned > s.phase_quota) ++quota_violations;
    // Who runs now: devices hinted by this tick, and devices whose last cycle ended
    // without an outcome (they poll again).
    std::set<std::string> wake = m.hints.Take();
    for (auto& d : m.devices) {
      if (d.needs_rerun && d.retries_left > 0) {
        --d.retries_left;
        wake.insert(d.id);
      }
    }
    std::vector<DeviceSim*> batch;
    for (const auto& id : wake) batch.push_back(&m.devices[m.by_id.at(id)]);
    m.RunBatch(batch);
    FLT_ASSIGN_OR_RETURN(s, m.manager->Get(m.rollout_id));
    if (s.counts.assigned > s.phase_quota) ++quota_violations;
    if (o.on_tick) o.on_tick(s);
    ++phases[phase].ticks;
    if (s.phase != phase) {
      phases[phase].outcome = "advanced";
      phases[phase].wall_ms = WallMs() - phase_wall;
      phases[phase].simulated_ms = m.clock.NowUnixMillis() - phase_sim;
      phase = s.phase;
      phase_wall = WallMs();
      phase_sim = m.clock.NowUnixMillis();
    }
    if (o.progress) {
      std::fprintf(stderr, "tick %u: %s phase %s, %llu assigned, %llu ok, %llu failed, %llu in progress\n", ticks,
                   std::string(ToString(s.state)).c_str(), s.spec.phases[s.phase].name.c_str(),
                   static_cast<unsigned long long>(s.counts.assigned),
                   static_cast<unsigned long long>(s.counts.succeeded), static_cast<unsigned long long>(s.counts.failed),
                   static_cast<unsigned long long>(s.counts.in_progress));
    }
    const bool busy = std::any_of(m.devices.begin(), m.devices.end(),
                                  [](const DeviceSim& d) { return d.needs_rerun && d.retries_left > 0; });
    m.clock.Advance(o.tick_interval);
    if (s.state != coordinator::RolloutState::kActive && !busy) {
      ++ticks;
      break;
    }
  }
  switch (s.state) {
    case coordinator::RolloutState::kCompleted:
      phases[phase].outcome = "completed";
      break;
    case coordinator::RolloutState::kHalted:
      phases[phase].outcome = "halted";
      break;
    case coordinator::RolloutState::kPaused:
      phases[phase].outcome = "paused";
      break;
    default:
      phases[phase].outcome = std::string(ToString(s.state));
  }
  phases[phase].wall_ms = WallMs() - phase_wall;
  phases[phase].simulated_ms = m.clock.NowUnixMillis() - phase_sim;
  FLT_ASSIGN_OR_RETURN(OtaFleetReport report, m.Report(s, std::move(phases)));
  report.quota_violations = quota_violations;
  report.ticks = ticks;
  report.wall_ms = WallMs() - wall0;
  report.simulated_ms = m.clock.NowUnixMillis() - sim0;
  FLT_RETURN_IF_ERROR(WriteFileAtomic(o.out_dir / "report.json", ToBytes(OtaFleetReportToJson(report) + "\n")));
  return report;
}

Result<OtaFleetReport> OtaFleet::Impl::Report(const coordinator::RolloutSummary& s,
                                              std::vector<OtaPhaseReport> phases) {
  OtaFleetReport r;
  r.devices = options.devices;
  r.artifact_sha256 = ToHex(AsBytes(target.sha256()));
  r.artifact_bytes = target.length();
  r.artifact_chunks = static_cast<uint32_t>(target.chunks_size());
  r.final_state = std::string(ToString(s.state));
  r.reason = s.reason;
  r.counts = s.counts;
  FLT_ASSIGN_OR_RETURN(auto rows, manager->Devices(rollout_id));
  std::map<std::string, coordinator::DeviceStatusRow> row_of;
  for (auto& row : rows) row_of[row.device_id] = std::move(row);
  for (auto& d : devices) {
    d.installed_sha = InstalledSha(d.dir / "models", options.verify_installed_bytes);
    const bool on_new = d.installed_sha == r.artifact_sha256;
    const bool on_old = d.installed_sha.empty();  // the devices start empty (factory state)
    r.on_new += on_new;
    r.on_old += on_old;
    r.on_neither += !on_new && !on_old;
    r.crashes += d.crashes;
    r.bytes_downloaded += d.bytes;
    const auto it = row_of.find(d.id);
    const DeviceRolloutStatus status = it == row_of.end() ? DeviceRolloutStatus::kPending : it->second.status;
    // The coordinator's view must match the device's disk.
    const bool consistent = status == DeviceRolloutStatus::kSucceeded  ? on_new
                            : status == DeviceRolloutStatus::kFailed   ? on_old
                            : status == DeviceRolloutStatus::kPending  ? on_old
                                                                       : on_new || on_old;
    r.mismatches += !consistent;
    if (it == row_of.end() || it->second.phase < 0) continue;
    OtaPhaseReport& p = phases.at(static_cast<size_t>(it->second.phase));
    ++p.assigned;
    p.installed += on_new;
    p.healthy += status == DeviceRolloutStatus::kSucceeded;
    p.failed += status == DeviceRolloutStatus::kFailed;
    p.rolled_back += d.last_outcome == v1::OTA_OUTCOME_ROLLED_BACK;
    p.download_failures += d.last_outcome == v1::OTA_OUTCOME_FAILURE;
    p.crashes += d.crashes;
    p.bytes_downloaded += d.bytes;
  }
  r.phases = std::move(phases);
  r.download_faults_injected = proxy ? proxy->faults_injected() : 0;
  const auto stats = manager->stats();
  r.reports_accepted = stats.reports_accepted;
  r.reports_rejected = stats.reports_rejected;
  r.setup_ms = setup_ms;
  return r;
}

Status OtaFleet::RunDevices(const std::vector<std::string>& ids) {
  std::vector<DeviceSim*> batch;
  for (const auto& id : ids) {
    auto it = impl_->by_id.find(id);
    if (it == impl_->by_id.end()) return NotFoundError("ota simulate: no device " + id);
    batch.push_back(&impl_->devices[it->second]);
  }
  impl_->RunBatch(batch);
  for (DeviceSim* d : batch) d->installed_sha = InstalledSha(d->dir / "models", impl_->options.verify_installed_bytes);
  return Status::Ok();
}

std::vector<OtaDeviceResult> OtaFleet::Devices() const {
  std::map<std::string, coordinator::DeviceStatusRow> row_of;
  if (impl_->rollout_id != 0) {
    auto rows = impl_->manager->Devices(impl_->rollout_id);
    if (rows.ok()) {
      for (auto& row : *rows) row_of[row.device_id] = std::move(row);
    }
  }
  std::vector<OtaDeviceResult> out;
  for (const auto& d : impl_->devices) {
    OtaDeviceResult r;
    r.id = d.id;
    r.canary = d.canary;
    r.health_fails = d.health_fails;
    if (auto it = row_of.find(d.id); it != row_of.end()) {
      r.status = it->second.status;
      r.phase = it->second.phase;
    }
    r.last_outcome = d.last_outcome;
    r.installed_sha256 = d.installed_sha;
    r.cycles = d.cycles;
    r.crashes = d.crashes;
    r.bytes_downloaded = d.bytes;
    out.push_back(std::move(r));
  }
  return out;
}

coordinator::RolloutManager& OtaFleet::manager() { return *impl_->manager; }
int64_t OtaFleet::rollout_id() const { return impl_->rollout_id; }
const std::filesystem::path& OtaFleet::repository_dir() const { return impl_->repository->dir(); }

}  // namespace flotilla::simulator
