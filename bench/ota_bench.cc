// OTA benchmarks (issue 7, docs/ota.md "Benchmarks"). Prints figures; asserts nothing.
//
//   fleet    rollout of a 2 MB adapter and of a `15m` base (Q8_0) to N devices over
//            loopback: time to 100% installed and healthy, coordinator CPU and peak RSS.
//            The coordinator (Repository, ArtifactServer, RolloutManager, SQLite) runs in
//            this process; the fleet (N real OtaClients on a worker pool) in a forked child,
//            so the two processes' CPU and memory are measured apart. Hints and reports
//            cross a pipe (the MQTT broker's place).
//   delta    a new `15m` base whose q and v tensors changed: bytes a device downloads
//            (tensor-aligned chunks, reuse from the other slot) against the changed bytes.
//   memory   device-side peak RSS growth while downloading and verifying the `110m` model.
//
// Usage: ota_bench [--devices N] [--runs R] [--workers W] [--only fleet|delta|memory]
//        [--skip-base] [--dir DIR]
#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "flotilla/coordinator/rollout.h"
#include "flotilla/coordinator/rollout_publish.h"
#include "flotilla/core/check.h"
#include "flotilla/core/file.h"
#include "flotilla/core/log.h"
#include "flotilla/model/gguf.h"
#include "flotilla/model/model_file.h"
#include "flotilla/ota/artifact_server.h"
#include "flotilla/ota/client.h"
#include "flotilla/ota/fetcher.h"
#include "flotilla/ota/keys.h"
#include "flotilla/ota/metadata.h"
#include "flotilla/ota/repository.h"
#include "flotilla/protocol/payload.h"
#include "flotilla/protocol/publish_sink_transport.h"
#include "flotilla/security/hash.h"
#include "flotilla/security/identity.h"

namespace flotilla::bench {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

template <typename T>
T Must(Result<T> r) {
  FLT_CHECK_OK(r.status());
  return std::move(r).value();
}

struct Args {
  int devices = 1000;
  int runs = 3;
  int workers = 4;
  std::string only;
  bool skip_base = false;
  fs::path dir;
};

// ---- process figures ---------------------------------------------------------------------

double CpuSeconds(int who = RUSAGE_SELF) {
  rusage ru{};
  getrusage(who, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// VmRSS / VmHWM of this process in bytes.
uint64_t ProcStatus(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind(key, 0) == 0) return std::stoull(line.substr(std::strlen(key))) * 1024;
  }
  return 0;
}
// Resets VmHWM to the current RSS (Linux >= 4.0), so a later VmHWM is the peak since now.
void ResetPeakRss() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// ---- framed pipe messages (the broker's place between the two processes) ----------------

// Moves exactly n bytes (write or read), retrying short transfers and EINTR.
template <typename Io, typename Ptr>
bool TransferAll(Io io, int fd, Ptr p, size_t n) {
  auto* b =
      reinterpret_cast<std::conditional_t<std::is_const_v<std::remove_pointer_t<Ptr>>, const uint8_t*, uint8_t*>>(p);
  while (n > 0) {
    const ssize_t k = io(fd, b, n);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return false;
    b += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}
bool WriteAll(int fd, const void* p, size_t n) { return TransferAll(::write, fd, p, n); }
bool ReadAll(int fd, void* p, size_t n) { return TransferAll(::read, fd, p, n); }
bool SendFrame(int fd, ByteSpan data) {
  const auto n = static_cast<uint32_t>(data.size());
  return WriteAll(fd, &n, 4) && WriteAll(fd, data.data(), data.size());
}
std::optional<Bytes> RecvFrame(int fd) {
  uint32_t n = 0;
  if (!ReadAll(fd, &n, 4)) return std::nullopt;
  Bytes b(n);
  if (!ReadAll(fd, b.data(), n)) return std::nullopt;
  return b;
}

class PassingHealth final : public ota::HealthChecker {
 public:
  Result<v1::HealthFigures> Check(const ota::HealthCheckContext&) override {
    v1::HealthFigures f;
    f.set_golden_prompts_passed(1);
    f.set_golden_prompts_total(1);
    return f;
  }
};

class PipeReportSink final : public ota::ReportSink {
 public:
  PipeReportSink(int fd, std::mutex& mu) : fd_(fd), mu_(mu) {}
  Status Send(ByteSpan sealed, const v1::OtaReport&) override {
    std::lock_guard<std::mutex> lock(mu_);
    return SendFrame(fd_, sealed) ? Status::Ok() : UnavailableError("coordinator pipe closed");
  }

 private:
  int fd_;
  std::mutex& mu_;
};

struct FleetDeviceState {
  std::string id;
  std::shared_ptr<const security::EcdsaPrivateKey> key;
};

// One device cycle, as the device agent runs it after a hint. Returns the outcome.
v1::OtaOutcome RunDevice(const FleetDeviceState& d, const fs::path& dir, const std::string& url, const Bytes& root,
                         const std::string& target, const Bytes& base_sha, ota::ReportSink& sink, bool cleanup,
                         uint64_t* downloaded = nullptr) {
  ota::HttpFetcherOptions fo;
  fo.base_url = url;
  fo.min_bytes_per_second = 0;
  auto fetcher = Must(ota::HttpFetcher::Create(fo));
  security::EcdsaSigner signer(d.id, d.key);
  PassingHealth health;
  ota::OtaClientOptions o;
  o.data_dir = dir / "data";
  o.install_dir = dir / "models";
  o.target_name = target;
  o.device = ota::DeviceIdentity{d.id, {}, "bench-soc"};
  o.provisioned_root = root;
  o.installed_base_sha256 = [base_sha] { return base_sha; };
  ota::OtaClientDeps deps;
  deps.fetcher = fetcher.get();
  deps.health = &health;
  deps.reports = &sink;
  deps.signer = &signer;
  auto client = Must(ota::OtaClient::Open(std::move(o), std::move(deps)));
  auto r = Must(client->RunCycle());
  if (downloaded) *downloaded = r.bytes_downloaded;
  client.reset();
  if (cleanup) {
    std::error_code ec;
    fs::remove_all(dir, ec);  // the simulated device's flash is not the benchmark's RAM
  }
  return r.outcome;
}

// ---- keys and repository ------------------------------------------------------------------

ota::RepositoryKeys MakeKeys() {
  ota::RepositoryKeys keys;
  for (v1::RoleType r : ota::kAllRoles) {
    keys.keys[r].push_back(
        std::make_shared<const security::EcdsaPrivateKey>(Must(security::EcdsaPrivateKey::Generate())));
    keys.thresholds[r] = 1;
  }
  return keys;
}

// ---- files ---------------------------------------------------------------------------------

fs::path MakeBase(const fs::path& dir, const std::string& config, uint64_t seed) {
  const fs::path p = dir / (config + "-q8_0-" + std::to_string(seed) + ".gguf");
  if (fs::exists(p)) return p;
  model::RandomModelOptions o;
  o.seed = seed;
  o.weight_type = model::GgmlType::kQ8_0;
  FLT_CHECK_OK(model::WriteRandomModel(Must(model::NamedConfig(config)), o, p));
  return p;
}

// A LoRA-shaped adapter of about `bytes` (F32 A/B pairs on q and v of 6 layers).
fs::path MakeAdapter(const fs::path& dir, size_t bytes, const std::string& base_sha_hex) {
  const fs::path p = dir / "adapter-2mb.gguf";
  model::GgufWriter w;
  w.SetString("general.architecture", "llama");
  w.SetString("general.type", "adapter");
  w.SetString("adapter.type", "lora");
  w.SetString("flotilla.adapter.base_sha256", base_sha_hex);
  const int tensors = 24;
  const int64_t rank = 8;
  const int64_t cols = static_cast<int64_t>(bytes / 4 / tensors / rank);
  std::vector<float> v(static_cast<size_t>(cols * rank));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i % 97) * 1e-3f;
  for (int t = 0; t < tensors; ++t) {
    const int64_t ne[] = {cols, rank};
    const std::string name =
        "blk." + std::to_string(t / 4) + (t % 4 < 2 ? ".attn_q" : ".attn_v") + ".weight.lora_" + (t % 2 ? "b" : "a");
    FLT_CHECK_OK(w.AddTensorFromF32(name, model::GgmlType::kF32, ne, v));
  }
  FLT_CHECK_OK(w.WriteFile(p));
  return p;
}

// ---- fleet rollout ------------------------------------------------------------------------

struct FleetResult {
  double seconds = 0;          // rollout create → last success report processed
  double coordinator_cpu = 0;  // this process during that interval
  uint64_t coordinator_peak_rss = 0;
  double fleet_cpu = 0;  // the child
  uint64_t bytes_served = 0;
  uint64_t succeeded = 0;
};

FleetResult RunFleet(const Args& args, const fs::path& artifact, v1::TargetKind kind, const std::string& base_sha_hex) {
  TempDir tmp = Must(TempDir::Create("flotilla-ota-bench"));
  const std::string target = kind == v1::TARGET_KIND_ADAPTER ? "adapters/bench" : "models/bench/base";
  // Everything with keys happens before fork(): the child inherits the device keys.
  std::vector<FleetDeviceState> fleet(static_cast<size_t>(args.devices));
  security::KeyRing device_keys;
  for (int i = 0; i < args.devices; ++i) {
    char id[16];
    std::snprintf(id, sizeof id, "dev-%05d", i);
    fleet[static_cast<size_t>(i)] = {
        id, std::make_shared<const security::EcdsaPrivateKey>(Must(security::EcdsaPrivateKey::Generate()))};
    device_keys.Add(id, fleet[static_cast<size_t>(i)].key->public_key());
  }
  int down[2], up[2];  // coordinator → fleet (url, root, hints); fleet → coordinator (reports)
  FLT_CHECK(::pipe(down) == 0 && ::pipe(up) == 0);
  const Bytes base_sha = base_sha_hex.empty() ? Bytes{} : Must(FromHex(base_sha_hex));
  const pid_t child = ::fork();
  FLT_CHECK(child >= 0);
  if (child == 0) {
    ::close(down[1]);
    ::close(up[0]);
    const std::string url(AsStringView(*RecvFrame(down[0])));
    const Bytes root = *RecvFrame(down[0]);
    std::mutex mu, send_mu;
    std::condition_variable cv;
    std::deque<int> queue;  // GUARDED_BY(mu)
    bool closed = false;    // GUARDED_BY(mu)
    std::map<std::string, int> index;
    for (size_t i = 0; i < fleet.size(); ++i) index[fleet[i].id] = static_cast<int>(i);
    PipeReportSink sink(up[1], send_mu);
    std::vector<std::thread> pool;
    for (int w = 0; w < args.workers; ++w) {
      pool.emplace_back([&] {
        for (;;) {
          int i;
          {
            std::unique_lock<std::mutex> lock(mu);
            cv.wait(lock, [&] { return closed || !queue.empty(); });
            if (queue.empty()) return;
            i = queue.front();
            queue.pop_front();
          }
          const auto& d = fleet[static_cast<size_t>(i)];
          RunDevice(d, tmp.path() / d.id, url, root, target, base_sha, sink, /*cleanup=*/true);
        }
      });
    }
    while (auto hint = RecvFrame(down[0])) {
      auto it = index.find(std::string(AsStringView(*hint)));
      if (it == index.end()) continue;
      std::lock_guard<std::mutex> lock(mu);
      queue.push_back(it->second);
      cv.notify_one();
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      closed = true;
    }
    cv.notify_all();
    for (auto& t : pool) t.join();
    const double cpu = CpuSeconds();
    WriteAll(up[1], &cpu, sizeof cpu);
    ::_exit(0);
  }
  ::close(down[0]);
  ::close(up[1]);

  // The coordinator.
  const double cpu0 = CpuSeconds();
  ResetPeakRss();
  auto repo = Must(ota::Repository::Open(tmp.path() / "repo", MakeKeys(), RealClock()));
  FLT_CHECK_OK(repo->InitRoot());
  coordinator::PublishRequest req;
  req.file = artifact;
  req.name = target;
  req.kind = kind;
  req.release_counter = 1;
  req.hardware_compat = {"bench-soc"};
  req.base_sha256_hex = base_sha_hex;
  Must(coordinator::PublishArtifact(*repo, req));
  auto server = Must(ota::ArtifactServer::Start(repo->dir()));
  FLT_CHECK(SendFrame(down[1], AsBytes(server->base_url())));
  FLT_CHECK(SendFrame(down[1], Must(repo->CurrentRoot())));

  struct AllDevices final : coordinator::FleetView {
    std::vector<coordinator::FleetDevice> d;
    Result<std::vector<coordinator::FleetDevice>> ListDevices() override { return d; }
  } view;
  for (const auto& d : fleet) view.d.push_back({d.id, "bench-soc"});
  // Hints from the rollout manager become frames "device id" on the pipe.
  protocol::PublishSinkTransport hints([&](std::string_view topic, ByteSpan) -> Status {
    FLT_ASSIGN_OR_RETURN(protocol::Topic t, protocol::ParseTopic(topic));
    if (!SendFrame(down[1], AsBytes(t.device_id))) return UnavailableError("fleet pipe closed");
    return Status::Ok();
  });
  security::EcdsaSigner coordinator_signer(
      "coordinator", std::make_shared<const security::EcdsaPrivateKey>(Must(security::EcdsaPrivateKey::Generate())));
  coordinator::RolloutOptions ro;
  ro.db_path = tmp.path() / "rollouts.db";
  coordinator::RolloutDeps deps;
  deps.repository = repo.get();
  deps.fleet = &view;
  deps.transport = &hints;
  deps.signer = &coordinator_signer;
  deps.device_keys = &device_keys;
  auto manager = Must(coordinator::RolloutManager::Open(ro, deps));
  coordinator::PhaseSpec t;
  t.success_percent = 95;
  t.max_failure_percent = 5;
  t.min_finished = 20;
  auto spec = coordinator::MakeRolloutSpec("bench", {target}, {}, {1, 10, 50, 100}, t);

  const auto start = Clock::now();
  const auto created = Must(manager->Create(spec));
  FLT_CHECK_OK(manager->Tick());
  FleetResult out;
  auto last_tick = Clock::now();
  while (out.succeeded < static_cast<uint64_t>(args.devices)) {
    pollfd p{up[0], POLLIN, 0};
    if (::poll(&p, 1, 20) > 0) {
      auto frame = RecvFrame(up[0]);
      FLT_CHECK(frame.has_value());
      Status s = manager->HandleReport(*frame);
      if (!s.ok()) std::fprintf(stderr, "report rejected: %s\n", s.ToString().c_str());
    }
    if (Clock::now() - last_tick > std::chrono::milliseconds(50)) {
      FLT_CHECK_OK(manager->Tick());
      last_tick = Clock::now();
      auto s = Must(manager->Get(created.id));
      out.succeeded = s.counts.succeeded;
      FLT_CHECK(s.state == coordinator::RolloutState::kActive || s.state == coordinator::RolloutState::kCompleted);
    }
  }
  out.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  out.coordinator_cpu = CpuSeconds() - cpu0;
  out.coordinator_peak_rss = ProcStatus("VmHWM:");
  out.bytes_served = server->stats().body_bytes;
  ::close(down[1]);  // the fleet drains and exits
  double child_cpu = 0;
  ReadAll(up[0], &child_cpu, sizeof child_cpu);
  ::close(up[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  out.fleet_cpu = child_cpu;
  server->Stop();
  return out;
}

void ReportFleet(const char* what, const Args& args, const fs::path& artifact, v1::TargetKind kind,
                 const std::string& base_sha) {
  std::vector<double> secs, cpu, rss, fleet_cpu;
  uint64_t served = 0;
  for (int r = 0; r < args.runs; ++r) {
    FleetResult f = RunFleet(args, artifact, kind, base_sha);
    secs.push_back(f.seconds);
    cpu.push_back(f.coordinator_cpu);
    rss.push_back(static_cast<double>(f.coordinator_peak_rss) / (1 << 20));
    fleet_cpu.push_back(f.fleet_cpu);
    served = f.bytes_served;
    std::printf("  run %d: %.2f s, coordinator CPU %.2f s, peak RSS %.1f MiB, fleet CPU %.1f s\n", r + 1, f.seconds,
                f.coordinator_cpu, static_cast<double>(f.coordinator_peak_rss) / (1 << 20), f.fleet_cpu);
  }
  std::printf(
      "%s: %d devices, %.1f MB artifact, phases 1/10/50/100%%: time to 100%% installed+healthy %.2f s "
      "(median of %d), coordinator CPU %.2f s, coordinator peak RSS %.1f MiB, fleet CPU %.1f s, "
      "%.2f GB served\n",
      what, args.devices, static_cast<double>(fs::file_size(artifact)) / 1e6, Median(secs), args.runs, Median(cpu),
      Median(rss), Median(fleet_cpu), static_cast<double>(served) / 1e9);
}

// ---- delta: only q and v changed -------------------------------------------------------------

void RunDelta(const Args& args) {
  TempDir tmp = Must(TempDir::Create("flotilla-ota-delta"));
  const fs::path v1_path = MakeBase(args.dir, "15m", 1);
  // v2: the same file with every attn_q / attn_v tensor's bytes changed (what merging a
  // q/v LoRA and re-quantizing does); header and all other tensors byte-identical.
  Bytes bytes = Must(ReadFileBytes(v1_path));
  uint64_t changed = 0;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  {
    auto g = Must(model::GgufFile::Open(v1_path));
    for (const auto& t : g->tensors()) {
      if (t.name.find("attn_q") == std::string::npos && t.name.find("attn_v") == std::string::npos) continue;
      const uint64_t off = g->data_offset() + t.offset;
      for (uint64_t i = 0; i < t.n_bytes; ++i) bytes[off + i] = static_cast<uint8_t>(bytes[off + i] ^ 0x5A);
      changed += t.n_bytes;
      ranges.emplace_back(off, t.n_bytes);
    }
  }
  const fs::path v2_path = tmp.path() / "15m-v2.gguf";
  FLT_CHECK_OK(WriteFileAtomic(v2_path, bytes));

  auto repo = Must(ota::Repository::Open(tmp.path() / "repo", MakeKeys(), RealClock()));
  FLT_CHECK_OK(repo->InitRoot());
  coordinator::PublishRequest req;
  req.file = v1_path;
  req.name = "models/15m/base";
  req.release_counter = 1;
  const v1::TargetInfo t1 = Must(coordinator::PublishArtifact(*repo, req));
  auto server = Must(ota::ArtifactServer::Start(repo->dir()));
  auto assign = [&](const v1::TargetInfo& t, const char* dep) {
    v1::DirectorAssignment a;
    a.set_device_id("dev-delta");
    a.set_deployment_id(dep);
    a.set_nonce(dep);
    auto* at = a.add_targets();
    at->set_name(t.name());
    at->set_sha256(t.sha256());
    at->set_length(t.length());
    at->set_release_counter(t.release_counter());
    Must(repo->Assign(a));
  };
  assign(t1, "d1");
  FleetDeviceState dev{"dev-delta",
                       std::make_shared<const security::EcdsaPrivateKey>(Must(security::EcdsaPrivateKey::Generate()))};
  std::mutex mu;
  struct NullSink final : ota::ReportSink {
    Status Send(ByteSpan, const v1::OtaReport&) override { return Status::Ok(); }
  } sink;
  const Bytes root = Must(repo->CurrentRoot());
  uint64_t first = 0, second = 0;
  FLT_CHECK(RunDevice(dev, tmp.path() / "dev", server->base_url(), root, req.name, {}, sink, false, &first) ==
            v1::OTA_OUTCOME_SUCCESS);
  req.file = v2_path;
  req.release_counter = 2;
  const v1::TargetInfo t2 = Must(coordinator::PublishArtifact(*repo, req));
  assign(t2, "d2");
  FLT_CHECK(RunDevice(dev, tmp.path() / "dev", server->base_url(), root, req.name, {}, sink, false, &second) ==
            v1::OTA_OUTCOME_SUCCESS);
  // What fixed 4 MiB chunks (no tensor alignment) would have had to fetch.
  uint64_t fixed = 0;
  const uint64_t size = t2.length();
  for (uint64_t off = 0; off < size; off += ota::kMaxChunkBytes) {
    const uint64_t end = std::min(size, off + ota::kMaxChunkBytes);
    bool dirty = false;
    for (const auto& [o, n] : ranges) dirty = dirty || (o < end && o + n > off);
    if (dirty) fixed += end - off;
  }
  std::printf(
      "delta: 15m Q8_0 base %.1f MB, q+v tensors changed = %.2f MB (%.1f%%); first install downloaded "
      "%.2f MB; update downloaded %.2f MB = changed + %.2f%% (goal <= +2%%); fixed 4 MiB chunks would "
      "fetch %.2f MB; %d tensor-aligned chunks\n",
      static_cast<double>(size) / 1e6, static_cast<double>(changed) / 1e6,
      100.0 * static_cast<double>(changed) / static_cast<double>(size), static_cast<double>(first) / 1e6,
      static_cast<double>(second) / 1e6,
      100.0 * (static_cast<double>(second) - static_cast<double>(changed)) / static_cast<double>(changed),
      static_cast<double>(fixed) / 1e6, t2.chunks_size());
  server->Stop();
}

// ---- memory: device peak RSS while downloading + verifying 110m --------------------------------

void RunMemory(const Args& args) {
  TempDir tmp = Must(TempDir::Create("flotilla-ota-mem"));
  const fs::path model = MakeBase(args.dir, "110m", 1);
  int down[2], up[2];
  FLT_CHECK(::pipe(down) == 0 && ::pipe(up) == 0);
  FleetDeviceState dev{"dev-mem",
                       std::make_shared<const security::EcdsaPrivateKey>(Must(security::EcdsaPrivateKey::Generate()))};
  const pid_t child = ::fork();  // before any thread: the device is its own process
  FLT_CHECK(child >= 0);
  if (child == 0) {
    const std::string url(AsStringView(*RecvFrame(down[0])));
    const Bytes root = *RecvFrame(down[0]);
    struct NullSink final : ota::ReportSink {
      Status Send(ByteSpan, const v1::OtaReport&) override { return Status::Ok(); }
    } sink;
    ResetPeakRss();
    const uint64_t before = ProcStatus("VmRSS:");
    uint64_t downloaded = 0;
    const auto start = Clock::now();
    const auto outcome =
        RunDevice(dev, tmp.path() / "dev", url, root, "models/110m/base", {}, sink, false, &downloaded);
    const double secs = std::chrono::duration<double>(Clock::now() - start).count();
    const uint64_t peak = ProcStatus("VmHWM:");
    uint64_t figures[4] = {before, peak, downloaded, outcome == v1::OTA_OUTCOME_SUCCESS ? 1u : 0u};
    WriteAll(up[1], figures, sizeof figures);
    WriteAll(up[1], &secs, sizeof secs);
    ::_exit(0);
  }
  auto repo = Must(ota::Repository::Open(tmp.path() / "repo", MakeKeys(), RealClock()));
  FLT_CHECK_OK(repo->InitRoot());
  coordinator::PublishRequest req;
  req.file = model;
  req.name = "models/110m/base";
  req.release_counter = 1;
  const v1::TargetInfo t = Must(coordinator::PublishArtifact(*repo, req));
  v1::DirectorAssignment a;
  a.set_device_id("dev-mem");
  a.set_deployment_id("mem");
  auto* at = a.add_targets();
  at->set_name(t.name());
  at->set_sha256(t.sha256());
  at->set_length(t.length());
  at->set_release_counter(t.release_counter());
  Must(repo->Assign(a));
  auto server = Must(ota::ArtifactServer::Start(repo->dir()));
  FLT_CHECK(SendFrame(down[1], AsBytes(server->base_url())));
  FLT_CHECK(SendFrame(down[1], Must(repo->CurrentRoot())));
  uint64_t f[4] = {};
  double secs = 0;
  FLT_CHECK(ReadAll(up[0], f, sizeof f) && ReadAll(up[0], &secs, sizeof secs));
  ::waitpid(child, nullptr, 0);
  std::printf(
      "memory: 110m Q8_0 artifact %.1f MB (%d chunks): device RSS before %.1f MiB, peak during "
      "download+verify+stage+health %.1f MiB, growth %.1f MiB (%.1f%% of the artifact), %.1f MB downloaded "
      "in %.2f s, %s\n",
      static_cast<double>(t.length()) / 1e6, t.chunks_size(), static_cast<double>(f[0]) / (1 << 20),
      static_cast<double>(f[1]) / (1 << 20), static_cast<double>(f[1] - f[0]) / (1 << 20),
      100.0 * static_cast<double>(f[1] - f[0]) / static_cast<double>(t.length()), static_cast<double>(f[2]) / 1e6, secs,
      f[3] ? "installed" : "FAILED");
  server->Stop();
}

}  // namespace
}  // namespace flotilla::bench

int main(int argc, char** argv) {
  using namespace flotilla::bench;
  Args args;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--devices")
      args.devices = std::stoi(next());
    else if (a == "--runs")
      args.runs = std::stoi(next());
    else if (a == "--workers")
      args.workers = std::stoi(next());
    else if (a == "--only")
      args.only = next();
    else if (a == "--skip-base")
      args.skip_base = true;
    else if (a == "--dir")
      args.dir = next();
    else {
      std::fprintf(stderr,
                   "usage: %s [--devices N] [--runs R] [--workers W] [--only fleet|delta|memory] "
                   "[--skip-base] [--dir DIR]\n",
                   argv[0]);
      return 2;
    }
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress lines also when piped to a file
  flotilla::SetLogLevel(flotilla::LogLevel::kWarn);
  if (args.dir.empty()) args.dir = fs::temp_directory_path() / "flotilla-ota-bench-models";
  fs::create_directories(args.dir);
  if (args.only.empty() || args.only == "fleet") {
    const fs::path base = MakeBase(args.dir, "15m", 1);
    const auto digest = flotilla::ToHex(flotilla::security::Sha256(Must(flotilla::ReadFileBytes(base))));
    const fs::path adapter = MakeAdapter(args.dir, 2'000'000, digest);
    ReportFleet("fleet/adapter", args, adapter, flotilla::v1::TARGET_KIND_ADAPTER, digest);
    if (!args.skip_base) ReportFleet("fleet/15m-base", args, base, flotilla::v1::TARGET_KIND_BASE_MODEL, "");
  }
  if (args.only.empty() || args.only == "delta") RunDelta(args);
  if (args.only.empty() || args.only == "memory") RunMemory(args);
  return 0;
}
