// `flotilla coordinator run|token|device`: the coordinator service and its operator
// commands. Thin: everything is in flotilla_coordinator (docs/coordinator.md).
//   run --config FILE                   store + HTTP API (+ MQTT endpoint) until SIGINT/SIGTERM
//   token create --name N --scopes S    prints an API token once (only its hash is stored)
//   token create-enrolment [--device ID] [--groups G] [--ttl-hours H]
//   token list | token revoke ID
//   device list | device revoke ID [--reason R]
// The operator commands open the store directly (--config FILE or --data-dir DIR); WAL
// lets them run next to a live coordinator.
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <string>
#include <vector>

#include "command_registry.h"
#include "flotilla/coordinator/config.h"
#include "flotilla/coordinator/coordinator.h"
#include "flotilla/coordinator/store.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace flotilla::cli {
namespace {

std::atomic<bool> g_stop{false};

void OnSignal(int) { g_stop.store(true); }

struct CoordOptions {
  std::string config;
  std::string data_dir;
  std::string name;
  std::vector<std::string> scopes;
  std::string device;
  std::vector<std::string> groups;
  double ttl_hours = 24;
  std::string id;
  std::string reason;
};

int Fail(const Status& s) {
  std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
  return 1;
}

Result<std::unique_ptr<coordinator::Store>> OpenStore(const CoordOptions& o) {
  std::filesystem::path dir = o.data_dir;
  if (dir.empty()) {
    if (o.config.empty()) return InvalidArgumentError("give --config FILE or --data-dir DIR");
    FLT_ASSIGN_OR_RETURN(auto cfg, coordinator::LoadCoordinatorConfig(o.config));
    dir = cfg.data_dir;
  }
  return coordinator::Store::Open(dir);
}

void AddStoreOptions(CLI::App* cmd, const std::shared_ptr<CoordOptions>& o) {
  cmd->add_option("--config", o->config, "Coordinator config file (for its data_dir)");
  cmd->add_option("--data-dir", o->data_dir, "Coordinator data directory");
}

std::string Time(int64_t ms) {
  if (ms == 0) return "-";
  const std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string Join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ",") + s;
  return out.empty() ? "-" : out;
}

// glibc tuning for a long-running server whose peak is what matters (design note 20):
// - Each thread that allocates gets its own arena (up to 8 x cores). Here messages are
//   allocated on the MQTT and HTTP threads and freed on the owner thread, which leaves
//   every arena holding freed memory it will not give to another: measured 66 vs 47 MiB
//   peak for a 3,000-device round. Capped at 2.
// - Blocks from 128 KiB up (a stage's journal rows, SQLite's buffers) are mmap'ed and
//   unmapped on free. glibc would otherwise raise that threshold after the first such
//   free and carve later big blocks out of the heap, where they fragment it: measured
//   34.1 vs 32.5 MiB peak for a 3,000-device round. Setting it fixes it at 128 KiB.
// The MALLOC_ARENA_MAX and MALLOC_MMAP_THRESHOLD_ environment variables still win.
void TuneMalloc() {
#if defined(__GLIBC__)
  if (std::getenv("MALLOC_ARENA_MAX") == nullptr) mallopt(M_ARENA_MAX, 2);
  if (std::getenv("MALLOC_MMAP_THRESHOLD_") == nullptr) mallopt(M_MMAP_THRESHOLD, 128 * 1024);
#endif
}

int Run(const CoordOptions& o) {
  TuneMalloc();
  auto cfg = coordinator::LoadCoordinatorConfig(o.config);
  if (!cfg.ok()) return Fail(cfg.status());
  auto c = coordinator::Coordinator::Start(*cfg);
  if (!c.ok()) return Fail(c.status());
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  std::printf("coordinator: data %s, HTTP %s%s\n", cfg->data_dir.c_str(), (*c)->http().base_url().c_str(),
              cfg->broker ? (", MQTT " + cfg->broker->uri).c_str() : " (no broker configured)");
  std::fflush(stdout);
  (*c)->Run(g_stop);
  Status s = (*c)->Shutdown();
  std::printf("coordinator: stopped\n");
  return s.ok() ? 0 : Fail(s);
}

CommandRegistration coordinator_registration("coordinator", [](CLI::App& root) {
  auto o = std::make_shared<CoordOptions>();
  CLI::App* coord = root.add_subcommand("coordinator", "The coordinator service and its operator commands");
  coord->require_subcommand(1);

  CLI::App* run = coord->add_subcommand("run", "Run the coordinator until SIGINT/SIGTERM");
  run->add_option("--config", o->config, "JSON config file (docs/coordinator.md)")->required();
  run->callback([o] { ExitCode() = Run(*o); });

  CLI::App* token = coord->add_subcommand("token", "API and enrolment tokens");
  token->require_subcommand(1);
  CLI::App* create = token->add_subcommand("create", "Create an API token (printed once)");
  AddStoreOptions(create, o);
  create->add_option("--name", o->name, "Who or what uses it")->required();
  create->add_option("--scopes", o->scopes, "read, rounds, admin")->delimiter(',')->required();
  create->callback([o] {
    auto store = OpenStore(*o);
    if (!store.ok()) return void(ExitCode() = Fail(store.status()));
    auto t = (*store)->CreateApiToken(o->name, o->scopes, "cli");
    if (!t.ok()) return void(ExitCode() = Fail(t.status()));
    std::printf("%s\n", t->token.c_str());
    std::fprintf(stderr, "token %s (%s) created; it is shown only now\n", t->record.id.c_str(), Join(o->scopes).c_str());
  });
  CLI::App* enrol = token->add_subcommand("create-enrolment", "Create a one-time enrolment token (printed once)");
  AddStoreOptions(enrol, o);
  enrol->add_option("--device", o->device, "Bind the token to this device id");
  enrol->add_option("--groups", o->groups, "Groups the enrolled device joins")->delimiter(',');
  enrol->add_option("--ttl-hours", o->ttl_hours, "Lifetime")->check(CLI::Range(0.01, 24.0 * 365))->capture_default_str();
  enrol->callback([o] {
    auto store = OpenStore(*o);
    if (!store.ok()) return void(ExitCode() = Fail(store.status()));
    auto t = (*store)->CreateEnrolmentToken(o->device, o->groups,
                                            std::chrono::seconds(static_cast<int64_t>(o->ttl_hours * 3600)), "cli");
    if (!t.ok()) return void(ExitCode() = Fail(t.status()));
    std::printf("%s\n", t->token.c_str());
    std::fprintf(stderr, "enrolment token %s expires %s\n", t->record.id.c_str(), Time(t->record.expires_ms).c_str());
  });
  CLI::App* tlist = token->add_subcommand("list", "List API tokens (never their secrets)");
  AddStoreOptions(tlist, o);
  tlist->callback([o] {
    auto store = OpenStore(*o);
    if (!store.ok()) return void(ExitCode() = Fail(store.status()));
    auto tokens = (*store)->ListApiTokens();
    if (!tokens.ok()) return void(ExitCode() = Fail(tokens.status()));
    std::printf("%-16s  %-20s  %-18s  %-20s  %s\n", "ID", "NAME", "SCOPES", "CREATED", "STATE");
    for (const auto& t : *tokens) {
      std::printf("%-16s  %-20s  %-18s  %-20s  %s\n", t.id.c_str(), t.name.c_str(), Join(t.scopes).c_str(),
                  Time(t.created_ms).c_str(), t.revoked ? "revoked" : "active");
    }
  });
  CLI::App* trevoke = token->add_subcommand("revoke", "Revoke an API token");
  AddStoreOptions(trevoke, o);
  trevoke->add_option("id", o->id, "Token id (the 16 hex characters after flt_)")->required();
  trevoke->callback([o] {
    auto store = OpenStore(*o);
    if (!store.ok()) return void(ExitCode() = Fail(store.status()));
    Status s = (*store)->RevokeApiToken(o->id, "cli");
    ExitCode() = s.ok() ? 0 : Fail(s);
  });

  CLI::App* device = coord->add_subcommand("device", "Enrolled devices");
  device->require_subcommand(1);
  CLI::App* list = device->add_subcommand("list", "List devices");
  AddStoreOptions(list, o);
  list->callback([o] {
    auto store = OpenStore(*o);
    if (!store.ok()) return void(ExitCode() = Fail(store.status()));
    coordinator::DeviceFilter f;
    f.limit = 10000;
    auto devices = (*store)->ListDevices(f);
    if (!devices.ok()) return void(ExitCode() = Fail(devices.status()));
    std::printf("%-24s  %-8s  %-8s  %-20s  %s\n", "ID", "STATUS", "PRESENCE", "LAST SEEN", "GROUPS");
    for (const auto& d : *devices) {
      std::printf("%-24s  %-8s  %-8s  %-20s  %s\n", d.id.c_str(), std::string(ToString(d.status)).c_str(),
                  std::string(ToString(d.presence)).c_str(), Time(d.last_seen_ms).c_str(), Join(d.groups).c_str());
    }
  });
  CLI::App* revoke = device->add_subcommand("revoke", "Revoke a device: refused everywhere from now on");
  AddStoreOptions(revoke, o);
  revoke->add_option("id", o->id, "Device id")->required();
  revoke->add_option("--reason", o->reason, "Recorded in the device and the audit log");
  revoke->callback([o] {
    auto store = OpenStore(*o);
    if (!store.ok()) return void(ExitCode() = Fail(store.status()));
    Status s = (*store)->RevokeDevice(o->id, o->reason, "cli");
    if (s.ok()) std::printf("device %s revoked\n", o->id.c_str());
    ExitCode() = s.ok() ? 0 : Fail(s);
  });
});

}  // namespace
}  // namespace flotilla::cli
