#include "flotilla/coordinator/metrics.h"

#include <cmath>
#include <cstdio>

namespace flotilla::coordinator {
namespace {

constexpr std::string_view kBytesIn = "bytes_in_total";
constexpr std::string_view kBytesOut = "bytes_out_total";

// Prometheus float formatting: integers without exponent noise, +Inf spelled out.
std::string Num(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

// Label values may hold any UTF-8; escape \, " and newline as the format requires.
std::string Escape(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

void Header(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  out += "# HELP " + std::string(name) + " " + std::string(help) + "\n";
  out += "# TYPE " + std::string(name) + " " + std::string(type) + "\n";
}

void RenderHistogram(std::string& out, std::string_view name, std::string_view labels, const Histogram& h) {
  const std::string sep = labels.empty() ? "" : ",";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < kDurationBuckets.size(); ++i) {
    cumulative += h.buckets[i];
    out += std::string(name) + "_bucket{" + std::string(labels) + sep + "le=\"" + Num(kDurationBuckets[i]) + "\"} " +
           std::to_string(cumulative) + "\n";
  }
  out += std::string(name) + "_bucket{" + std::string(labels) + sep + "le=\"+Inf\"} " + std::to_string(h.count) + "\n";
  const std::string braces = labels.empty() ? "" : "{" + std::string(labels) + "}";
  out += std::string(name) + "_sum" + braces + " " + Num(h.sum) + "\n";
  out += std::string(name) + "_count" + braces + " " + std::to_string(h.count) + "\n";
}

}  // namespace

void Histogram::Observe(double value) {
  if (std::isnan(value)) return;
  ++count;
  sum += value;
  for (size_t i = 0; i < kDurationBuckets.size(); ++i) {
    if (value <= kDurationBuckets[i]) {
      ++buckets[i];
      return;
    }
  }
}

Result<StoreGauges> CollectGauges(Store& store) {
  StoreGauges g;
  FLT_ASSIGN_OR_RETURN(g.devices_online, store.CountDevices(PresenceState::kOnline, DeviceStatus::kActive));
  FLT_ASSIGN_OR_RETURN(g.devices_active, store.CountDevices(std::nullopt, DeviceStatus::kActive));
  FLT_ASSIGN_OR_RETURN(g.devices_revoked, store.CountDevices(std::nullopt, DeviceStatus::kRevoked));
  FLT_ASSIGN_OR_RETURN(g.rounds, store.CountRoundsByState());
  return g;
}

void Metrics::AddBytesIn(uint64_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  bytes_in_ += n;
}

void Metrics::AddBytesOut(uint64_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  bytes_out_ += n;
}

void Metrics::CountHttpResponse(int status) {
  const std::string cls = status >= 100 && status < 600 ? std::to_string(status / 100) + "xx" : "other";
  std::lock_guard<std::mutex> lock(mu_);
  ++http_[cls];
}

void Metrics::ObserveStageDuration(std::string_view stage, double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = stages_.find(stage);
  if (it == stages_.end()) it = stages_.emplace(std::string(stage), Histogram{}).first;
  it->second.Observe(seconds);
}

void Metrics::ObserveAggregation(double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  aggregation_.Observe(seconds);
}

uint64_t Metrics::bytes_in() const {
  std::lock_guard<std::mutex> lock(mu_);
  return bytes_in_;
}

uint64_t Metrics::bytes_out() const {
  std::lock_guard<std::mutex> lock(mu_);
  return bytes_out_;
}

Status Metrics::LoadFrom(Store& store) {
  FLT_ASSIGN_OR_RETURN(auto counters, store.Counters());
  std::lock_guard<std::mutex> lock(mu_);
  const auto get = [&](std::string_view name) -> uint64_t {
    auto it = counters.find(std::string(name));
    return it == counters.end() || it->second < 0 ? 0 : static_cast<uint64_t>(it->second);
  };
  bytes_in_ += get(kBytesIn);
  bytes_out_ += get(kBytesOut);
  flushed_in_ += get(kBytesIn);
  flushed_out_ += get(kBytesOut);
  return Status::Ok();
}

Status Metrics::FlushTo(Store& store) {
  uint64_t in = 0, out = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    in = bytes_in_;
    out = bytes_out_;
  }
  std::map<std::string, int64_t> deltas;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (in > flushed_in_) deltas[std::string(kBytesIn)] = static_cast<int64_t>(in - flushed_in_);
    if (out > flushed_out_) deltas[std::string(kBytesOut)] = static_cast<int64_t>(out - flushed_out_);
  }
  if (deltas.empty()) return Status::Ok();
  FLT_RETURN_IF_ERROR(store.AddCounters(deltas));
  std::lock_guard<std::mutex> lock(mu_);
  flushed_in_ = std::max(flushed_in_, in);
  flushed_out_ = std::max(flushed_out_, out);
  return Status::Ok();
}

std::string Metrics::Render(const StoreGauges& g) const {
  std::string out;
  out.reserve(4096);
  Header(out, "flotilla_devices_online", "gauge", "Active devices whose last presence is online.");
  out += "flotilla_devices_online " + std::to_string(g.devices_online) + "\n";
  Header(out, "flotilla_devices", "gauge", "Enrolled devices by status.");
  out += "flotilla_devices{status=\"active\"} " + std::to_string(g.devices_active) + "\n";
  out += "flotilla_devices{status=\"revoked\"} " + std::to_string(g.devices_revoked) + "\n";
  Header(out, "flotilla_rounds", "gauge", "Rounds by state.");
  for (RoundState s : AllRoundStates()) {
    auto it = g.rounds.find(s);
    out += "flotilla_rounds{state=\"" + std::string(ToString(s)) + "\"} " +
           std::to_string(it == g.rounds.end() ? 0 : it->second) + "\n";
  }
  std::lock_guard<std::mutex> lock(mu_);
  Header(out, "flotilla_stage_duration_seconds", "histogram", "Wall time of round stages.");
  for (const auto& [stage, h] : stages_) {
    RenderHistogram(out, "flotilla_stage_duration_seconds", "stage=\"" + Escape(stage) + "\"", h);
  }
  Header(out, "flotilla_aggregation_seconds", "histogram", "Time to aggregate (unmask and decode) a round.");
  RenderHistogram(out, "flotilla_aggregation_seconds", "", aggregation_);
  Header(out, "flotilla_bytes_in_total", "counter", "Bytes received over HTTP uploads.");
  out += "flotilla_bytes_in_total " + std::to_string(bytes_in_) + "\n";
  Header(out, "flotilla_bytes_out_total", "counter", "Bytes sent by HTTP downloads.");
  out += "flotilla_bytes_out_total " + std::to_string(bytes_out_) + "\n";
  Header(out, "flotilla_http_requests_total", "counter", "HTTP responses by status class.");
  for (const auto& [cls, n] : http_) {
    out += "flotilla_http_requests_total{code=\"" + cls + "\"} " + std::to_string(n) + "\n";
  }
  return out;
}

}  // namespace flotilla::coordinator
