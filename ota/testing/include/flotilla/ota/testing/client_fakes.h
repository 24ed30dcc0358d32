// Fakes for OtaClient's seams: a scriptable health checker and a report sink that
// records (and can refuse) reports. Thread-compatible (tests drive one client).
#pragma once

#include <string>
#include <vector>

#include "flotilla/ota/client.h"

namespace flotilla::ota::testing {

class FakeHealthChecker final : public HealthChecker {
 public:
  // Tries 1..fail_first fail; later tries pass. fail_first < 0: every try fails.
  int fail_first = 0;
  std::vector<std::string> checked_files;

  Result<v1::HealthFigures> Check(const HealthCheckContext& context) override {
    checked_files.push_back(context.artifact.string());
    if (fail_first < 0 || static_cast<int>(context.attempt) <= fail_first) {
      return FailedPreconditionError("golden prompt 2 regressed (try " + std::to_string(context.attempt) + ")");
    }
    v1::HealthFigures f;
    f.set_golden_prompts_passed(4);
    f.set_golden_prompts_total(4);
    f.set_latency_p95_ms(12.5);
    return f;
  }
};

class RecordingReportSink final : public ReportSink {
 public:
  int fail_next = 0;  // refuse this many sends (< 0: all)
  std::vector<v1::OtaReport> delivered;
  std::vector<Bytes> envelopes;
  int refused = 0;

  Status Send(ByteSpan sealed, const v1::OtaReport& report) override {
    if (fail_next != 0) {
      if (fail_next > 0) --fail_next;
      ++refused;
      return UnavailableError("broker unreachable");
    }
    delivered.push_back(report);
    envelopes.emplace_back(sealed.begin(), sealed.end());
    return Status::Ok();
  }
};

}  // namespace flotilla::ota::testing
