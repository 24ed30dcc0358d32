// `flotilla ota ...` (docs/ota.md "Publishing", "Rollouts"):
//   publish             register a GGUF model/adapter as a target (tensor-aligned chunks),
//                       sign targets, snapshot, timestamp
//   timestamp refresh   re-sign the timestamp when it expires within --margin-hours
//   rollout create|list|show|pause|resume|abort|rollback|tick
// Rollout state lives in <--state>/rollouts.db; commands that sign need --repo and --keys.
// Passphrases come from an environment variable or a file, never from argv.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "command_registry.h"
#include "flotilla/coordinator/rollout.h"
#include "flotilla/coordinator/rollout_publish.h"
#include "flotilla/core/clock.h"
#include "flotilla/core/file.h"
#include "flotilla/ota/keys.h"
#include "flotilla/ota/repository.h"

namespace flotilla::cli {
namespace {

using coordinator::RolloutManager;
using coordinator::RolloutSummary;

struct OtaOptions {
  // repository
  std::string repo, keys, passphrase_env, passphrase_file;
  // publish
  std::string file, kind = "base", name, base_sha256, golden_prompts;
  uint64_t release_counter = 0;
  std::vector<std::string> hardware;
  uint64_t max_chunk_bytes = uint64_t{4} << 20;
  // timestamp
  double margin_hours = 6;
  bool force = false;
  // rollouts
  std::string state, spec_file, repository_url, reason, devices_file, status_filter;
  std::vector<std::string> targets, canary;
  std::vector<double> phases = {1, 10, 50, 100};
  double success_percent = 95, max_failure_percent = 5;
  uint32_t max_failures = 0, min_finished = 20, rate = 0;
  bool pause_after = false, json = false, devices = false;
  int64_t id = 0;
};

Result<std::string> Passphrase(const OtaOptions& o) {
  if (!o.passphrase_env.empty()) {
    const char* v = std::getenv(o.passphrase_env.c_str());
    if (v == nullptr || *v == '\0')
      return InvalidArgumentError("environment variable " + o.passphrase_env + " is empty");
    return std::string(v);
  }
  if (!o.passphrase_file.empty()) {
    FLT_ASSIGN_OR_RETURN(std::string p, ReadFileString(o.passphrase_file, 4096));
    while (!p.empty() && (p.back() == '\n' || p.back() == '\r')) p.pop_back();
    return p;
  }
  return std::string();
}

Result<std::unique_ptr<ota::Repository>> OpenRepository(const OtaOptions& o) {
  if (o.repo.empty() || o.keys.empty()) return InvalidArgumentError("--repo and --keys are required");
  FLT_ASSIGN_OR_RETURN(std::string pass, Passphrase(o));
  FLT_ASSIGN_OR_RETURN(ota::RepositoryKeys keys, ota::LoadKeyDirectory(o.keys, pass));
  FLT_ASSIGN_OR_RETURN(auto repo, ota::Repository::Open(o.repo, std::move(keys), RealClock()));
  if (repo->root_version() == 0) FLT_RETURN_IF_ERROR(repo->InitRoot());
  return repo;
}

Status Publish(const OtaOptions& o) {
  FLT_ASSIGN_OR_RETURN(auto repo, OpenRepository(o));
  coordinator::PublishRequest req;
  req.file = o.file;
  req.name = o.name;
  if (o.kind == "base") {
    req.kind = v1::TARGET_KIND_BASE_MODEL;
  } else if (o.kind == "adapter") {
    req.kind = v1::TARGET_KIND_ADAPTER;
  } else {
    return InvalidArgumentError("--kind must be base or adapter");
  }
  req.release_counter = o.release_counter;
  req.hardware_compat = o.hardware;
  req.base_sha256_hex = o.base_sha256;
  req.golden_prompts = o.golden_prompts;
  req.max_chunk_bytes = o.max_chunk_bytes;
  FLT_ASSIGN_OR_RETURN(v1::TargetInfo t, coordinator::PublishArtifact(*repo, req));
  std::printf("published %s release %llu: %llu bytes, sha256 %s, %d chunks\n", t.name().c_str(),
              static_cast<unsigned long long>(t.release_counter()), static_cast<unsigned long long>(t.length()),
              ToHex(AsBytes(t.sha256())).c_str(), t.chunks_size());
  std::printf("targets v%llu, snapshot v%llu, timestamp v%llu\n",
              static_cast<unsigned long long>(repo->targets_version()),
              static_cast<unsigned long long>(repo->snapshot_version()),
              static_cast<unsigned long long>(repo->timestamp_version()));
  return Status::Ok();
}

Status TimestampRefresh(const OtaOptions& o) {
  FLT_ASSIGN_OR_RETURN(auto repo, OpenRepository(o));
  const auto margin = std::chrono::milliseconds(static_cast<int64_t>(o.margin_hours * 3600'000.0));
  FLT_ASSIGN_OR_RETURN(bool signed_now, coordinator::RefreshTimestamp(*repo, margin, o.force));
  std::printf(signed_now ? "signed timestamp v%llu\n" : "timestamp v%llu is fresh; nothing signed\n",
              static_cast<unsigned long long>(repo->timestamp_version()));
  return Status::Ok();
}

// Reads "device_id hardware_class" lines ('#' comments) for `rollout tick`.
class FileFleet final : public coordinator::FleetView {
 public:
  explicit FileFleet(std::string path) : path_(std::move(path)) {}
  Result<std::vector<coordinator::FleetDevice>> ListDevices() override {
    FLT_ASSIGN_OR_RETURN(std::string text, ReadFileString(path_, size_t{64} << 20));
    std::istringstream in(text);
    std::vector<coordinator::FleetDevice> out;
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty() || line[0] == '#') continue;
      std::istringstream ls(line);
      coordinator::FleetDevice d;
      ls >> d.device_id >> d.hardware_class;
      if (!d.device_id.empty()) out.push_back(std::move(d));
    }
    return out;
  }

 private:
  std::string path_;
};

struct Session {
  std::unique_ptr<ota::Repository> repo;
  std::unique_ptr<FileFleet> fleet;
  std::unique_ptr<RolloutManager> manager;
};

Result<Session> OpenSession(const OtaOptions& o, bool need_repo) {
  if (o.state.empty()) return InvalidArgumentError("--state is required");
  std::error_code ec;
  std::filesystem::create_directories(o.state, ec);
  Session s;
  coordinator::RolloutDeps deps;
  if (need_repo) {
    FLT_ASSIGN_OR_RETURN(s.repo, OpenRepository(o));
    deps.repository = s.repo.get();
  }
  if (!o.devices_file.empty()) {
    s.fleet = std::make_unique<FileFleet>(o.devices_file);
    deps.fleet = s.fleet.get();
  }
  coordinator::RolloutOptions ro;
  ro.db_path = std::filesystem::path(o.state) / "rollouts.db";
  FLT_ASSIGN_OR_RETURN(s.manager, RolloutManager::Open(ro, deps));
  return s;
}

void PrintSummary(const RolloutSummary& s) {
  const auto& c = s.counts;
  std::printf("%-4lld %-20s %-12s phase %u/%zu (%s)  eligible %llu  assigned %llu/%llu  ok %llu  failed %llu",
              static_cast<long long>(s.id), s.name.c_str(), std::string(ToString(s.state)).c_str(), s.phase + 1,
              s.spec.phases.size(), s.spec.phases[s.phase].name.c_str(), static_cast<unsigned long long>(c.eligible),
              static_cast<unsigned long long>(c.assigned), static_cast<unsigned long long>(s.phase_quota),
              static_cast<unsigned long long>(c.succeeded), static_cast<unsigned long long>(c.failed));
  if (c.reverting + c.reverted > 0) {
    std::printf("  reverting %llu  reverted %llu", static_cast<unsigned long long>(c.reverting),
                static_cast<unsigned long long>(c.reverted));
  }
  std::printf("%s%s\n", s.reason.empty() ? "" : "  -- ", s.reason.c_str());
}

Status Create(const OtaOptions& o) {
  FLT_ASSIGN_OR_RETURN(Session s, OpenSession(o, true));
  coordinator::RolloutSpec spec;
  if (!o.spec_file.empty()) {
    // The same JSON as POST /api/v1/rollouts; --name/--target are ignored then.
    FLT_ASSIGN_OR_RETURN(std::string text, ReadFileString(o.spec_file, 1 << 20));
    FLT_ASSIGN_OR_RETURN(spec, coordinator::RolloutSpecFromJson(text));
    FLT_ASSIGN_OR_RETURN(RolloutSummary r, s.manager->Create(spec));
    std::printf("created rollout %lld, deployment %s\n", static_cast<long long>(r.id), r.deployment_id.c_str());
    PrintSummary(r);
    return Status::Ok();
  }
  if (o.name.empty() || o.targets.empty()) return InvalidArgumentError("--name and --target are required (or --spec)");
  coordinator::PhaseSpec t;
  t.success_percent = o.success_percent;
  t.max_failures = o.max_failures;
  t.max_failure_percent = o.max_failure_percent;
  t.min_finished = o.min_finished;
  t.pause_after = o.pause_after;
  spec = coordinator::MakeRolloutSpec(o.name, o.targets, o.canary, o.phases, t);
  spec.max_assignments_per_minute = o.rate;
  spec.repository_url = o.repository_url;
  FLT_ASSIGN_OR_RETURN(RolloutSummary r, s.manager->Create(spec));
  std::printf("created rollout %lld, deployment %s\n", static_cast<long long>(r.id), r.deployment_id.c_str());
  PrintSummary(r);
  return Status::Ok();
}

Status List(const OtaOptions& o) {
  FLT_ASSIGN_OR_RETURN(Session s, OpenSession(o, false));
  FLT_ASSIGN_OR_RETURN(auto list, s.manager->List());
  if (o.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& r : list) out.push_back(nlohmann::json::parse(coordinator::RolloutSummaryToJson(r)));
    std::printf("%s\n", out.dump(2).c_str());
    return Status::Ok();
  }
  if (list.empty()) std::printf("no rollouts\n");
  for (const auto& r : list) PrintSummary(r);
  return Status::Ok();
}

Status Show(const OtaOptions& o) {
  FLT_ASSIGN_OR_RETURN(Session s, OpenSession(o, false));
  FLT_ASSIGN_OR_RETURN(RolloutSummary r, s.manager->Get(o.id));
  std::optional<coordinator::DeviceRolloutStatus> filter;
  if (!o.status_filter.empty()) {
    FLT_ASSIGN_OR_RETURN(filter, coordinator::ParseDeviceRolloutStatus(o.status_filter));
  }
  std::vector<coordinator::DeviceStatusRow> rows;
  if (o.devices || filter) {
    FLT_ASSIGN_OR_RETURN(rows, s.manager->Devices(o.id, filter));
  }
  if (o.json) {
    nlohmann::json j = nlohmann::json::parse(coordinator::RolloutSummaryToJson(r));
    for (const auto& d : rows) {
      j["devices"].push_back({{"device_id", d.device_id},
                              {"status", std::string(ToString(d.status))},
                              {"phase", d.phase},
                              {"error", d.error}});
    }
    std::printf("%s\n", j.dump(2).c_str());
    return Status::Ok();
  }
  PrintSummary(r);
  std::printf("deployment %s, targets:", r.deployment_id.c_str());
  for (const auto& t : r.spec.targets) std::printf(" %s", t.c_str());
  std::printf("\nphases:");
  for (size_t i = 0; i < r.spec.phases.size(); ++i) {
    const auto& p = r.spec.phases[i];
    std::printf("%s %s%s", i ? "," : "", p.name.c_str(), i == r.phase ? "*" : "");
  }
  std::printf("\n");
  for (const auto& d : rows) {
    std::printf("  %-24s %-10s phase %2d %s\n", d.device_id.c_str(), std::string(ToString(d.status)).c_str(), d.phase,
                d.error.c_str());
  }
  return Status::Ok();
}

Status CommandVerb(const OtaOptions& o, const std::string& verb) {
  FLT_ASSIGN_OR_RETURN(Session s, OpenSession(o, false));
  const std::string reason = o.reason.empty() ? verb + " by operator" : o.reason;
  if (verb == "pause") FLT_RETURN_IF_ERROR(s.manager->Pause(o.id, reason));
  if (verb == "resume") FLT_RETURN_IF_ERROR(s.manager->Resume(o.id));
  if (verb == "abort") FLT_RETURN_IF_ERROR(s.manager->Abort(o.id, reason));
  if (verb == "rollback") FLT_RETURN_IF_ERROR(s.manager->Rollback(o.id, reason));
  FLT_ASSIGN_OR_RETURN(RolloutSummary r, s.manager->Get(o.id));
  PrintSummary(r);
  std::printf("committed; the coordinator (or `flotilla ota rollout tick`) performs the follow-up\n");
  return Status::Ok();
}

Status Tick(const OtaOptions& o) {
  FLT_ASSIGN_OR_RETURN(Session s, OpenSession(o, true));
  FLT_RETURN_IF_ERROR(s.manager->Tick());
  FLT_ASSIGN_OR_RETURN(auto list, s.manager->List());
  for (const auto& r : list) PrintSummary(r);
  const auto st = s.manager->stats();
  std::printf("signed %llu director assignments\n", static_cast<unsigned long long>(st.assignments_signed));
  return Status::Ok();
}

void Run(Status s) {
  if (!s.ok()) {
    std::fprintf(stderr, "flotilla ota: %s\n", s.ToString().c_str());
    ExitCode() = 1;
  }
}

void AddRepoOptions(CLI::App* c, OtaOptions& o) {
  c->add_option("--repo", o.repo, "OTA repository directory")->required();
  c->add_option("--keys", o.keys, "Key directory (flotilla keys init)")->required();
  c->add_option("--passphrase-env", o.passphrase_env, "Read the key passphrase from this environment variable");
  c->add_option("--passphrase-file", o.passphrase_file, "Read the key passphrase from this file");
}

CommandRegistration ota_registration("ota", [](CLI::App& root) {
  auto o = std::make_shared<OtaOptions>();
  CLI::App* ota = root.add_subcommand("ota", "OTA publishing and staged rollouts");
  ota->require_subcommand(1);

  CLI::App* publish = ota->add_subcommand("publish", "Publish a GGUF model or adapter as a signed target");
  AddRepoOptions(publish, *o);
  publish->add_option("--file", o->file, "GGUF model or adapter file")->required()->check(CLI::ExistingFile);
  publish->add_option("--kind", o->kind, "base|adapter")->capture_default_str();
  publish->add_option("--name", o->name, "Target name, stable across versions (e.g. models/15m/base)")->required();
  publish->add_option("--release-counter", o->release_counter, "Anti-rollback counter (never lower than published)")
      ->required();
  publish->add_option("--hardware", o->hardware, "Compatible hardware classes (repeatable; none = any)");
  publish->add_option("--base-sha256", o->base_sha256,
                      "Adapters: hex SHA-256 of the base (default: the file's flotilla.adapter.base_sha256)");
  publish->add_option("--golden-prompts", o->golden_prompts, "File shipped as the target's custom data (health check)");
  publish->add_option("--max-chunk-bytes", o->max_chunk_bytes, "Largest chunk (<= 4 MiB)")->capture_default_str();
  publish->callback([o] { Run(Publish(*o)); });

  CLI::App* ts = ota->add_subcommand("timestamp", "Timestamp role");
  ts->require_subcommand(1);
  CLI::App* refresh = ts->add_subcommand("refresh", "Re-sign the timestamp if it expires within the margin");
  AddRepoOptions(refresh, *o);
  refresh->add_option("--margin-hours", o->margin_hours, "Re-sign when it expires within this")->capture_default_str();
  refresh->add_flag("--force", o->force, "Re-sign now");
  refresh->callback([o] { Run(TimestampRefresh(*o)); });

  CLI::App* ro = ota->add_subcommand("rollout", "Staged rollouts: canary, percentage phases, thresholds");
  ro->require_subcommand(1);
  auto add_state = [o](CLI::App* c) {
    c->add_option("--state", o->state, "Rollout state directory (holds rollouts.db)")->required();
  };
  CLI::App* create = ro->add_subcommand("create", "Create a rollout of published targets");
  add_state(create);
  AddRepoOptions(create, *o);
  create->add_option("--name", o->name, "Rollout name");
  create->add_option("--target", o->targets, "Published target name (repeatable)");
  create->add_option("--canary", o->canary, "Canary device ids (comma separated or repeated)")->delimiter(',');
  create->add_option("--phases", o->phases, "Cumulative percentages, the last 100")
      ->delimiter(',')
      ->capture_default_str();
  create->add_option("--success-percent", o->success_percent, "Share of a phase that must succeed to advance")
      ->capture_default_str();
  create->add_option("--max-failures", o->max_failures, "Halt at this many failed devices (0: off)")
      ->capture_default_str();
  create->add_option("--max-failure-percent", o->max_failure_percent, "Halt at this failure share (0: off)...")
      ->capture_default_str();
  create->add_option("--min-finished", o->min_finished, "...once this many devices reported")->capture_default_str();
  create->add_flag("--pause-after", o->pause_after, "Wait for `resume` after every phase");
  create->add_option("--rate", o->rate, "Max director assignments per minute (0: no cap)")->capture_default_str();
  create->add_option("--repository-url", o->repository_url, "URL put in MQTT hints");
  create->add_option("--spec", o->spec_file, "JSON spec file (the REST API's format) instead of the flags");
  create->callback([o] { Run(Create(*o)); });

  CLI::App* list = ro->add_subcommand("list", "List rollouts");
  add_state(list);
  list->add_flag("--json", o->json, "JSON output");
  list->callback([o] { Run(List(*o)); });

  CLI::App* show = ro->add_subcommand("show", "Show one rollout");
  add_state(show);
  show->add_option("id", o->id, "Rollout id")->required();
  show->add_flag("--devices", o->devices, "List every device");
  show->add_option("--status", o->status_filter, "Only devices with this status (pending, assigned, failed, ...)");
  show->add_flag("--json", o->json, "JSON output");
  show->callback([o] { Run(Show(*o)); });

  for (const char* verb : {"pause", "resume", "abort", "rollback"}) {
    CLI::App* c = ro->add_subcommand(verb, std::string(verb) == "rollback"
                                               ? "Re-release the previous build to every device the rollout assigned"
                                               : std::string(verb) + " a rollout");
    add_state(c);
    c->add_option("id", o->id, "Rollout id")->required();
    c->add_option("--reason", o->reason, "Recorded in the audit log");
    const std::string v = verb;
    c->callback([o, v] { Run(CommandVerb(*o, v)); });
  }

  CLI::App* tick = ro->add_subcommand("tick", "Run one rollout step without the coordinator service");
  add_state(tick);
  AddRepoOptions(tick, *o);
  tick->add_option("--devices", o->devices_file, "Fleet file: 'device_id hardware_class' per line")->required();
  tick->callback([o] { Run(Tick(*o)); });
});

}  // namespace
}  // namespace flotilla::cli
