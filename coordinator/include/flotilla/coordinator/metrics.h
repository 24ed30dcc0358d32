// Coordinator metrics in the Prometheus text exposition format (version 0.0.4), served
// at GET /metrics. Counters that must survive a restart (bytes in/out) are persisted in
// the store's metrics_counters table by LoadFrom/FlushTo; gauges (devices online, rounds
// by state) are read from the store at scrape time.
//
// Exposed families:
//   flotilla_devices_online                       gauge
//   flotilla_devices{status="active|revoked"}     gauge
//   flotilla_rounds{state="..."}                  gauge, every RoundState listed
//   flotilla_stage_duration_seconds{stage="..."}  histogram (round engine observes)
//   flotilla_aggregation_seconds                  histogram
//   flotilla_bytes_in_total / _out_total          counters (HTTP uploads / downloads)
//   flotilla_http_requests_total{code="2xx|..."}  counter
//
// Thread-safe: every method may be called from any thread.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

#include "flotilla/coordinator/store.h"
#include "flotilla/core/status.h"

namespace flotilla::coordinator {

// Upper bounds (seconds) of the duration histogram buckets; +Inf is implicit.
inline constexpr std::array<double, 12> kDurationBuckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                           0.5,   1,    2.5,   5,    10,  60};

struct Histogram {
  std::array<uint64_t, kDurationBuckets.size()> buckets{};  // non-cumulative counts
  uint64_t count = 0;
  double sum = 0;
  void Observe(double value);
};

// Values read from the store for one scrape.
struct StoreGauges {
  int64_t devices_online = 0;
  int64_t devices_active = 0;
  int64_t devices_revoked = 0;
  std::map<RoundState, int64_t> rounds;
};
Result<StoreGauges> CollectGauges(Store& store);

class Metrics {
 public:
  void AddBytesIn(uint64_t n);
  void AddBytesOut(uint64_t n);
  void CountHttpResponse(int status);
  void ObserveStageDuration(std::string_view stage, double seconds);
  void ObserveAggregation(double seconds);

  uint64_t bytes_in() const;
  uint64_t bytes_out() const;

  // Adds the persisted counter values (call once at start, before serving).
  Status LoadFrom(Store& store);
  // Writes what was counted since the last flush (one transaction). A failed flush keeps
  // the deltas for the next one.
  Status FlushTo(Store& store);

  std::string Render(const StoreGauges& gauges) const;

 private:
  mutable std::mutex mu_;
  uint64_t bytes_in_ = 0;                            // GUARDED_BY(mu_)
  uint64_t bytes_out_ = 0;                           // GUARDED_BY(mu_)
  uint64_t flushed_in_ = 0;                          // GUARDED_BY(mu_)
  uint64_t flushed_out_ = 0;                         // GUARDED_BY(mu_)
  std::map<std::string, uint64_t> http_;             // GUARDED_BY(mu_)
  std::map<std::string, Histogram, std::less<>> stages_;  // GUARDED_BY(mu_)
  Histogram aggregation_;                            // GUARDED_BY(mu_)
};

}  // namespace flotilla::coordinator
