#include "flotilla/simulator/report.h"

#include <cstdio>

#include <nlohmann/json.hpp>

#include "flotilla/core/file.h"

namespace flotilla::simulator {
namespace {

using nlohmann::json;

json PerplexityJson(const std::optional<PerplexityStats>& p) {
  if (!p) return nullptr;
  return json{{"devices", p->devices},     {"mean", p->mean},
              {"min", p->min},             {"max", p->max},
              {"pooled", p->pooled},       {"pooled_loss", p->pooled_loss},
              {"pooled_tokens", p->pooled_tokens}, {"eval_ms", p->eval_ms}};
}

json RoundJson(const RoundReport& r) {
  json stages = json::array();
  for (const StageReport& s : r.stages) {
    stages.push_back({{"stage", s.stage}, {"duration_ms", s.duration_ms}, {"answered", s.answered},
                      {"expected", s.expected}});
  }
  return json{
      {"number", r.number},
      {"round_id", r.round_id},
      {"state", r.state},
      {"reason", r.reason},
      {"check_ins", r.check_ins},
      {"cohort", r.cohort},
      {"declined", r.declined},
      {"survivors", r.survivors},
      {"stages", stages},
      {"duration_ms", r.duration_ms},
      {"wall_ms", r.wall_ms},
      {"unmask_ms", r.unmask_ms},
      {"adapter_version", r.adapter_version},
      {"traffic",
       {{"messages_in", r.messages_in},
        {"messages_out", r.messages_out},
        {"bytes_in", r.bytes_in},
        {"bytes_out", r.bytes_out},
        {"uploads", r.uploads},
        {"messages_rejected", r.messages_rejected}}},
      {"training",
       {{"trained", r.trained},
        {"failures", r.training_failures},
        {"seconds_total", r.train_seconds_total},
        {"seconds_max", r.train_seconds_max},
        {"loss_before_mean", r.loss_before_mean},
        {"loss_after_mean", r.loss_after_mean}}},
      {"faults", {{"drops", r.drops}, {"disconnects", r.disconnects}}},
      {"perplexity", PerplexityJson(r.eval)},
  };
}

}  // namespace

std::string ReportToJson(const SimulationReport& report) {
  json rounds = json::array();
  for (const RoundReport& r : report.rounds) rounds.push_back(RoundJson(r));
  json doc{
      {"schema", "flotilla.simulate.v1"},
      {"parameters",
       {{"devices", report.devices},
        {"rounds", report.rounds_requested},
        {"cohort", report.cohort},
        {"local_steps", report.local_steps},
        {"seed", report.seed},
        {"trainer", report.trainer},
        {"model", report.model},
        {"model_sha256", report.model_sha256},
        {"trainable_length", report.trainable_length},
        {"lora", report.lora},
        {"secagg_profile", report.secagg_profile},
        {"dropouts", report.dropouts},
        {"disconnect_rate", report.disconnect_rate},
        {"worker_threads", report.worker_threads}}},
      {"setup_ms",
       {{"pki", report.pki_ms},
        {"data", report.data_ms},
        {"broker", report.broker_ms},
        {"agents", report.agents_ms},
        {"connect", report.connect_ms}}},
      {"connected", report.connected},
      {"initial_perplexity", PerplexityJson(report.initial_eval)},
      {"rounds", rounds},
      {"rounds_published", report.rounds_published},
      {"wall_ms", report.wall_ms},
      {"files",
       {{"out_dir", report.out_dir}, {"coordinator_db", report.coordinator_db}, {"journal_db", report.journal_db}}},
  };
  return doc.dump(2) + "\n";
}

Status WriteReport(const SimulationReport& report, const std::filesystem::path& path) {
  return WriteFileAtomic(path, ReportToJson(report));
}

std::string FormatPerplexity(const PerplexityStats& p) {
  char buf[200];
  std::snprintf(buf, sizeof(buf), "perplexity %.2f (devices: min %.2f, max %.2f over %zu; pooled %.2f)", p.mean, p.min,
                p.max, p.devices, p.pooled);
  return buf;
}

std::string FormatRoundLine(const RoundReport& r, uint32_t of) {
  char buf[400];
  std::snprintf(buf, sizeof(buf),
                "round %u/%u %s: cohort %u, survivors %u, %.1f s (coordinator %.1f s, local training %.1f s summed, "
                "max %.2f s per device), in %.1f KiB / out %.1f KiB",
                r.number, of, r.state.c_str(), r.cohort, r.survivors, static_cast<double>(r.wall_ms) / 1000.0,
                static_cast<double>(r.duration_ms) / 1000.0, r.train_seconds_total, r.train_seconds_max,
                static_cast<double>(r.bytes_in) / 1024.0, static_cast<double>(r.bytes_out) / 1024.0);
  std::string line = buf;
  if (!r.reason.empty()) line += " [" + r.reason + "]";
  if (r.eval) line += "\n    " + FormatPerplexity(*r.eval);
  return line;
}

}  // namespace flotilla::simulator
