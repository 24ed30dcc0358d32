// `flotilla simulate ota`: a staged OTA rollout to a simulated fleet of real OtaClients
// with injected health failures, download faults and crashes
// (simulator/include/flotilla/simulator/ota_fleet.h, docs/simulator.md "OTA rollouts").
// Leaves report.json, coordinator.db, repo/ and devices/ in --out-dir and prints a
// per-phase table. Exit 0 when the run finished (halted rollouts included), 1 if a
// safety check failed (a device on neither version, an assignment outside the active
// phase, coordinator and device disagreeing), 2 for bad flags or a setup failure.
#if defined(FLOTILLA_HAVE_SIMULATOR) && defined(FLOTILLA_HAVE_OTA_SIMULATOR)
#include <cstdio>
#include <memory>
#include <string>

#include "command_registry.h"
#include "flotilla/core/log.h"
#include "flotilla/simulator/ota_fleet.h"

namespace flotilla::cli {
namespace {

struct SimulateOtaFlags {
  simulator::OtaFleetOptions fleet;
  std::string out_dir = "simulate-ota-out";
  std::string artifact;
  double generate_mb = 2;
  uint64_t chunk_kb = 256;
  std::string phases = "canary:5,1,10,50,100";
  std::string faults = "5xx,truncate,stall";
  int64_t read_timeout_ms = 1000;
  int64_t tick_seconds = 61;
  bool no_verify = false;
  bool quiet = false;
};

void PrintReport(const simulator::OtaFleetReport& r, const std::string& out_dir) {
  std::printf("\nphase     outcome       assigned  installed  healthy  failed  rolled back  dl failed  crashes"
              "     MiB  ticks  wall s\n");
  for (const auto& p : r.phases) {
    std::printf("%-8s  %-12s  %8llu  %9llu  %7llu  %6llu  %11llu  %9llu  %7llu  %6.1f  %5u  %6.1f\n",
                p.name.c_str(), p.outcome.c_str(), static_cast<unsigned long long>(p.assigned),
                static_cast<unsigned long long>(p.installed), static_cast<unsigned long long>(p.healthy),
                static_cast<unsigned long long>(p.failed), static_cast<unsigned long long>(p.rolled_back),
                static_cast<unsigned long long>(p.download_failures), static_cast<unsigned long long>(p.crashes),
                static_cast<double>(p.bytes_downloaded) / (1 << 20), p.ticks, static_cast<double>(p.wall_ms) / 1000);
  }
  std::printf("\nrollout %s%s%s\n", r.final_state.c_str(), r.reason.empty() ? "" : ": ", r.reason.c_str());
  std::printf("devices: %llu on the new artifact, %llu on the old, %llu on neither; %llu crashes, "
              "%llu download faults injected\n",
              static_cast<unsigned long long>(r.on_new), static_cast<unsigned long long>(r.on_old),
              static_cast<unsigned long long>(r.on_neither), static_cast<unsigned long long>(r.crashes),
              static_cast<unsigned long long>(r.download_faults_injected));
  std::printf("%.1f s wall (setup %.1f s), %.1f simulated minutes, %u ticks\n", static_cast<double>(r.wall_ms) / 1000,
              static_cast<double>(r.setup_ms) / 1000, static_cast<double>(r.simulated_ms) / 60000, r.ticks);
  std::printf("report: %s/report.json\n", out_dir.c_str());
}

int RunSimulateOta(SimulateOtaFlags& f) {
  simulator::OtaFleetOptions& o = f.fleet;
  o.out_dir = f.out_dir;
  o.artifact = f.artifact;
  if (!(f.generate_mb > 0 && f.generate_mb <= 4096)) {
    std::fprintf(stderr, "error: --generate-mb must be in (0, 4096]\n");
    return 2;
  }
  o.generate_bytes = static_cast<uint64_t>(f.generate_mb * (1 << 20));
  o.chunk_bytes = f.chunk_kb * 1024;
  o.device_read_timeout = std::chrono::milliseconds(f.read_timeout_ms);
  o.tick_interval = std::chrono::seconds(f.tick_seconds);
  o.verify_installed_bytes = !f.no_verify;
  o.progress = !f.quiet;
  auto phases = simulator::ParseOtaPhases(f.phases);
  auto faults = simulator::ParseDownloadFaults(f.faults);
  if (!phases.ok() || !faults.ok()) {
    std::fprintf(stderr, "error: %s\n", (!phases.ok() ? phases.status() : faults.status()).message().c_str());
    return 2;
  }
  o.phases = *phases;
  o.download_faults = *faults;
  if (!o.crash_at.empty() && o.crash_rate == 0) o.crash_rate = 0.1;
  auto fleet = simulator::OtaFleet::Create(o);
  if (!fleet.ok()) {
    std::fprintf(stderr, "error: %s\n", fleet.status().ToString().c_str());
    return 2;
  }
  auto report = (*fleet)->Run();
  if (!report.ok()) {
    std::fprintf(stderr, "error: %s\n", report.status().ToString().c_str());
    return 2;
  }
  PrintReport(*report, f.out_dir);
  if (report->on_neither > 0 || report->quota_violations > 0 || report->mismatches > 0) {
    std::fprintf(stderr, "SAFETY CHECK FAILED: %llu devices on neither version, %llu ticks over the phase quota, "
                 "%llu status mismatches\n",
                 static_cast<unsigned long long>(report->on_neither),
                 static_cast<unsigned long long>(report->quota_violations),
                 static_cast<unsigned long long>(report->mismatches));
    return 1;
  }
  return 0;
}

CommandRegistration reg("simulate.ota", [](CLI::App& simulate) {
  auto f = std::make_shared<SimulateOtaFlags>();
  simulator::OtaFleetOptions& o = f->fleet;
  o.thresholds.success_percent = 95;
  o.thresholds.max_failure_percent = 5;
  o.thresholds.min_finished = 20;
  CLI::App* cmd = simulate.add_subcommand(
      "ota", "Roll an artifact out to a simulated fleet of real OTA clients, with injected faults");
  cmd->add_option("--devices", o.devices, "Simulated devices (each its own journal and A/B slots)")
      ->capture_default_str();
  cmd->add_option("--artifact", f->artifact, "File to roll out (GGUF: tensor-aligned chunks)");
  cmd->add_option("--generate-mb", f->generate_mb, "Without --artifact: a synthetic artifact of this size")
      ->capture_default_str();
  cmd->add_option("--chunk-kb", f->chunk_kb, "Chunk size (sub-split of GGUF tensors), <= 4096")
      ->capture_default_str();
  cmd->add_option("--phases", f->phases, "Optional canary:N, then cumulative percentages ending at 100")
      ->capture_default_str();
  cmd->add_option("--success-percent", o.thresholds.success_percent, "Share of a phase that must succeed to advance")
      ->capture_default_str();
  cmd->add_option("--max-failure-percent", o.thresholds.max_failure_percent,
                  "Halt when failed/finished reaches this (0 = off)...")
      ->capture_default_str();
  cmd->add_option("--min-finished", o.thresholds.min_finished, "...once this many devices reported")
      ->capture_default_str();
  cmd->add_option("--max-failures", o.thresholds.max_failures, "Halt at this many failures (0 = off)")
      ->capture_default_str();
  cmd->add_option("--rate", o.max_assignments_per_minute, "New assignments per minute (0 = no cap)")
      ->capture_default_str();
  cmd->add_option("--health-failure-rate", o.health_failure_rate, "Share of non-canary devices failing health checks")
      ->capture_default_str();
  cmd->add_option("--download-fault-rate", o.download_fault_rate, "Share of artifact requests answered with a fault")
      ->capture_default_str();
  cmd->add_option("--download-faults", f->faults, "Fault kinds: 5xx,truncate,stall")->capture_default_str();
  cmd->add_option("--read-timeout-ms", f->read_timeout_ms, "Device read timeout (a stall lasts 1.5x)")
      ->capture_default_str();
  cmd->add_option("--max-download-attempts", o.max_download_attempts, "Device download attempts before failing")
      ->capture_default_str();
  cmd->add_option("--crash-at", o.crash_at,
                  "Crash-point prefix, e.g. journal:DOWNLOAD:chunk:after, rename:current, journal:HEALTH");
  cmd->add_option("--crash-rate", o.crash_rate, "Share of devices that crash there once (default 0.1 with --crash-at)");
  cmd->add_option("--workers", o.workers, "Devices running at once")->capture_default_str();
  cmd->add_option("--max-ticks", o.max_ticks, "Give up after this many rollout ticks")->capture_default_str();
  cmd->add_option("--tick-seconds", f->tick_seconds, "Simulated seconds per tick")->capture_default_str();
  cmd->add_option("--seed", o.seed, "Seed of the faults and the synthetic artifact")->capture_default_str();
  cmd->add_flag("--no-verify-installed", f->no_verify, "Skip hashing every installed artifact at the end");
  cmd->add_option("--out-dir", f->out_dir, "Output directory (must not hold an earlier run)")->capture_default_str();
  cmd->add_flag("-q,--quiet", f->quiet, "No per-tick progress");
  CLI::App* root = simulate.get_parent();
  cmd->callback([f, root] {
    const CLI::Option* level = root != nullptr ? root->get_option_no_throw("--log-level") : nullptr;
    if (level == nullptr || level->count() == 0) SetLogLevel(LogLevel::kError);
    const int code = RunSimulateOta(*f);
    // `simulate` runs the federated simulation in its own callback, which CLI11 calls
    // after this one; ending the parse here keeps `simulate ota` to itself.
    if (code == 0) throw CLI::Success();
    throw CLI::RuntimeError(code);
  });
});

}  // namespace
}  // namespace flotilla::cli
#endif  // FLOTILLA_HAVE_SIMULATOR && FLOTILLA_HAVE_OTA_SIMULATOR
