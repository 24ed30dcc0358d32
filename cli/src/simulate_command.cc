// `flotilla simulate`: a simulated fleet of real device agents against a real broker and
// coordinator (simulator/include/flotilla/simulator/fleet.h, docs/simulator.md). Leaves
// report.json and coordinator.db in --out-dir and prints a per-round
// summary (perplexity, timings).
#ifdef FLOTILLA_HAVE_SIMULATOR
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "command_registry.h"
#include "flotilla/core/log.h"
#include "flotilla/simulator/fleet.h"

namespace flotilla::cli {
namespace {

namespace fs = std::filesystem;

struct SimulateFlags {
  simulator::FleetOptions fleet;
  std::string out_dir = "simulate-out";
  std::string model;
  int64_t pretrain_steps = 0;
  std::string trainer = "engine";
  std::string dropouts;
  std::string profile = "hardened";
  std::string lora_mode = "frozen_a";
  int check_in_s = 20;
  int training_s = 180;
  int stage_s = 60;
  bool quiet = false;
};

void PrintSummary(const simulator::SimulationReport& r) {
  std::printf("\nround  state      cohort  survivors  wall s  train s (sum)  in KiB  out KiB  perplexity mean [min, max]  pooled\n");
  if (r.initial_eval) {
    std::printf("%-5s  %-9s  %6s  %9s  %6s  %13s  %6s  %7s  %8.2f [%6.2f, %7.2f]  %6.2f\n", "base", "-", "-", "-", "-", "-",
                "-", "-", r.initial_eval->mean, r.initial_eval->min, r.initial_eval->max, r.initial_eval->pooled);
  }
  for (const simulator::RoundReport& x : r.rounds) {
    std::printf("%-5u  %-9s  %6u  %9u  %6.1f  %13.1f  %6.1f  %7.1f", x.number, x.state.c_str(), x.cohort, x.survivors,
                static_cast<double>(x.wall_ms) / 1000.0, x.train_seconds_total, static_cast<double>(x.bytes_in) / 1024.0,
                static_cast<double>(x.bytes_out) / 1024.0);
    if (x.eval) {
      std::printf("  %8.2f [%6.2f, %7.2f]  %6.2f\n", x.eval->mean, x.eval->min, x.eval->max, x.eval->pooled);
    } else {
      std::printf("  %s\n", x.reason.empty() ? "-" : x.reason.c_str());
    }
    if (!x.stages.empty()) {
      std::printf("       stages:");
      for (const simulator::StageReport& s : x.stages) {
        std::printf(" %s %.2f s (%u/%u)", s.stage.c_str(), static_cast<double>(s.duration_ms) / 1000.0, s.answered,
                    s.expected);
      }
      std::printf("\n");
    }
  }
  std::printf("\n%u of %u rounds published in %.1f s (setup: certificates %.1f s, data %.1f s, connect %.1f s)\n",
              r.rounds_published, r.rounds_requested, static_cast<double>(r.wall_ms) / 1000.0,
              static_cast<double>(r.pki_ms) / 1000.0, static_cast<double>(r.data_ms) / 1000.0,
              static_cast<double>(r.connect_ms) / 1000.0);
  std::printf("report:          %s/report.json\n", r.out_dir.c_str());
  std::printf("coordinator db:  %s\n", r.coordinator_db.c_str());
  std::printf("round journal:   %s\n", r.journal_db.c_str());
}

int RunSimulate(SimulateFlags& f) {
  simulator::FleetOptions& o = f.fleet;
  o.out_dir = f.out_dir;
  o.progress = !f.quiet;
  auto kind = simulator::ParseTrainerKind(f.trainer);
  if (!kind.ok()) {
    std::fprintf(stderr, "error: %s\n", kind.status().message().c_str());
    return 2;
  }
  o.trainer = *kind;
  if (f.profile == "curious") {
    o.profile = v1::SEC_AGG_PROFILE_CURIOUS;
  } else if (f.profile != "hardened") {
    std::fprintf(stderr, "error: --secagg-profile must be hardened or curious\n");
    return 2;
  }
  o.lora_mode = f.lora_mode == "fedit" ? v1::LORA_MODE_FEDIT : v1::LORA_MODE_FROZEN_A;
  auto drops = simulator::ParseDropouts(f.dropouts);
  if (!drops.ok()) {
    std::fprintf(stderr, "error: %s\n", drops.status().message().c_str());
    return 2;
  }
  o.faults.dropout = *drops;
  o.check_in_timeout = std::chrono::seconds(f.check_in_s);
  o.training_timeout = std::chrono::seconds(f.training_s);
  o.stage_timeout = std::chrono::seconds(f.stage_s);

  if (o.trainer == simulator::TrainerKind::kEngine) {
    if (f.model.empty() && f.pretrain_steps <= 0) {
      std::fprintf(stderr, "error: the engine trainer needs --model FILE or --pretrain-steps N\n");
      return 2;
    }
    if (f.pretrain_steps > 0) {
      std::error_code ec;
      fs::create_directories(f.out_dir, ec);
      simulator::BaseModelOptions bo;
      bo.out = f.model.empty() ? fs::path(f.out_dir) / "base-q8_0.gguf" : fs::path(f.model);
      bo.steps = f.pretrain_steps;
      if (!f.quiet) {
        bo.progress = [](int64_t step, int64_t total, double loss) {
          if (step % 10 == 0 || step == total) {
            std::fprintf(stderr, "\rpretraining base model: step %lld/%lld, loss %.3f", static_cast<long long>(step),
                         static_cast<long long>(total), loss);
          }
        };
      }
      auto base = simulator::PretrainBaseModel(bo);
      if (!f.quiet) std::fprintf(stderr, "\n");
      if (!base.ok()) {
        std::fprintf(stderr, "error: pretraining the base model: %s\n", base.status().ToString().c_str());
        return 1;
      }
      std::printf("base model: %s (%lld parameters, held-out perplexity %.2f, %.1f s)\n", base->path.c_str(),
                  static_cast<long long>(base->parameters), base->held_out_perplexity, base->seconds);
      std::fflush(stdout);
      f.model = base->path.string();
    }
    o.model = f.model;
  }

  auto report = simulator::RunSimulation(o);
  if (!report.ok()) {
    std::fprintf(stderr, "error: %s\n", report.status().ToString().c_str());
    return 1;
  }
  PrintSummary(*report);
  return report->rounds_published == report->rounds_requested ? 0 : 3;
}

CommandRegistration reg("simulate", [](CLI::App& root) {
  auto f = std::make_shared<SimulateFlags>();
  CLI::App* cmd = root.add_subcommand(
      "simulate", "Run a simulated fleet of real device agents against a real broker and coordinator");
  simulator::FleetOptions& o = f->fleet;
  cmd->add_option("--devices", o.devices, "Simulated devices (one MQTT client each)")->capture_default_str();
  cmd->add_option("--rounds", o.rounds, "Federated rounds to run")->capture_default_str();
  cmd->add_option("--cohort", o.cohort, "Target cohort size per round")->capture_default_str();
  cmd->add_option("--min-cohort", o.min_cohort, "Fewest check-ins for a round to go ahead (0 = cohort/2)")
      ->capture_default_str();
  cmd->add_option("--local-steps", o.local_steps, "Local optimizer steps per device and round")->capture_default_str();
  cmd->add_option("--model", f->model, "Base model .gguf (with --pretrain-steps: where to write it)");
  cmd->add_option("--pretrain-steps", f->pretrain_steps, "Pretrain a small base model first, this many steps");
  cmd->add_option("--out-dir", f->out_dir, "Output directory (report.json, coordinator.db, ...)")->capture_default_str();
  cmd->add_option("--trainer", f->trainer, "engine (LoRA on the model) | seeded (protocol only)")->capture_default_str();
  cmd->add_option("--seed", o.seed, "Seed of the data, faults and frozen-A seed")->capture_default_str();
  cmd->add_option("--lr", o.learning_rate, "Local learning rate")->capture_default_str();
  cmd->add_option("--batch", o.batch_size, "Sequences per local step")->capture_default_str();
  cmd->add_option("--seq", o.seq_len, "Tokens per training sequence")->capture_default_str();
  cmd->add_option("--rank", o.lora_rank, "LoRA rank")->capture_default_str();
  cmd->add_option("--alpha", o.lora_alpha, "LoRA alpha")->capture_default_str();
  cmd->add_option("--lora-mode", f->lora_mode, "frozen_a (train B) or fedit (train and average A and B)")
      ->check(CLI::IsMember({"frozen_a", "fedit"}))
      ->capture_default_str();
  cmd->add_option("--targets", o.lora_targets, "LoRA targets: q,k,v,o,gate,up,down | attn | all")->capture_default_str();
  cmd->add_option("--samples", o.samples_per_device, "Synthetic samples per device")->capture_default_str();
  cmd->add_option("--held-out", o.held_out_fraction, "Held-out fraction of each device's samples")->capture_default_str();
  cmd->add_option("--dropouts", f->dropouts, "Per-stage dropout rates, e.g. advertise_keys=0.05,masked_input=0.02");
  cmd->add_option("--disconnect-rate", o.faults.disconnect_rate, "Per device and round: MQTT link cut mid-round")
      ->capture_default_str();
  cmd->add_option("--secagg-profile", f->profile, "hardened | curious")->capture_default_str();
  cmd->add_option("--workers", o.worker_threads, "Training/crypto worker threads (0 = all cores)")->capture_default_str();
  cmd->add_option("--eval-devices", o.eval_devices, "Devices whose held-out perplexity is measured (0 = all)")
      ->capture_default_str();
  cmd->add_option("--check-in-timeout", f->check_in_s, "Seconds to collect check-ins")->capture_default_str();
  cmd->add_option("--training-timeout", f->training_s, "Seconds from invitation to key adverts")->capture_default_str();
  cmd->add_option("--stage-timeout", f->stage_s, "Seconds per later SecAgg stage")->capture_default_str();
  cmd->add_flag("-q,--quiet", f->quiet, "No progress output");
  CLI::App* app = &root;
  cmd->callback([f, app] {
    // A thousand agents log a line for every late check-in or enrolment at info/warn;
    // the progress display and the summary are the output here unless --log-level is given.
    const CLI::Option* level = app->get_option_no_throw("--log-level");
    if (level == nullptr || level->count() == 0) SetLogLevel(LogLevel::kError);
    ExitCode() = RunSimulate(*f);
  });
});

}  // namespace
}  // namespace flotilla::cli
#endif  // FLOTILLA_HAVE_SIMULATOR
