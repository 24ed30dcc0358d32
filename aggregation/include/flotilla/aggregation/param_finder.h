// SecAgg+ graph parameters: the degree k of the random Harary graph and the Shamir
// threshold t, from Bell et al. (CCS 2020)'s analysis as coded in fcp's
// graph_parameter_finder.cc (shared/reference/secure-aggregation.md section 3):
// statistical security 2^-40, correctness failure below 2^-20, k even.
//   - the honest survivors' graph stays connected (union bound over pairs of gaps of k/2
//     consecutive bad nodes on the ring);
//   - t1: a client has more than t1 colluding neighbours with probability
//     <= 2^-41 / n (hypergeometric tail); t2: it keeps fewer than t2 surviving
//     neighbours with probability <= 2^-20 / n; t = max(t1 + 1, 2) if t1 < t2.
//   - semi-malicious (hardened): t1 is raised to ceil((t1 + k - 1.25) / 2) so that the
//     server cannot collect both shares of one secret from two disjoint halves.
// Pure functions, thread-safe.
#pragma once

#include <cstdint>

#include "flotilla/core/status.h"

namespace flotilla::aggregation {

enum class AdversaryModel : uint8_t {
  kNone = 0,           // no colluders; gamma must be 0
  kSemiHonest = 1,     // profile "curious"
  kSemiMalicious = 2,  // profile "hardened"
};

struct GraphParameters {
  uint32_t k = 0;  // neighbours per client (n - 1 for the complete graph)
  uint32_t t = 0;  // Shamir threshold
  bool complete = false;
  friend bool operator==(const GraphParameters&, const GraphParameters&) = default;
};

// Cohorts up to this size use the complete graph (classic SecAgg).
inline constexpr uint32_t kCompleteGraphMaxCohort = 100;

// Bell et al.'s (k, t) for a random Harary graph. FailedPrecondition for n outside
// [1, 10^6], gamma or delta outside [0, 1), infeasible rates (semi-honest: gamma + delta
// <= 0.9; semi-malicious: gamma + 2 delta <= 0.9), gamma > 0 with kNone, or no even k < n-1.
Result<GraphParameters> FindHararyParameters(uint32_t n, double gamma, double delta, AdversaryModel model);

// The smallest secure threshold for a Harary graph of the given even degree k, or
// FailedPrecondition if k itself is insecure (graph may disconnect) or no t in (t1, t2]
// exists. For k = FindHararyParameters(...).k this is its t.
Result<uint32_t> MinimumHararyThreshold(uint32_t n, uint32_t k, double gamma, double delta, AdversaryModel model);

// Threshold floor of the complete graph (k = n - 1): t > gamma * n (semi-honest) or
// t > (n + gamma * n) / 2 (semi-malicious), as fcp's CheckFullGraphParameters; and the
// correctness ceiling: t <= (n - 1) - floor(delta * n) alive neighbours. Returns the
// smallest admissible t, FailedPrecondition if none.
Result<uint32_t> MinimumCompleteGraphThreshold(uint32_t n, double gamma, double delta, AdversaryModel model);

// What a server proposes: the complete graph with its minimum t for n <= 100 (or when
// the Harary degree would reach n - 1), the Harary parameters otherwise.
Result<GraphParameters> ChooseGraphParameters(uint32_t n, double gamma, double delta, AdversaryModel model);

// The client's floor check on a received config: OK if (k, t) is at least as safe as the
// analysis demands for (n, gamma, delta, model): complete graph with t >= its floor, or
// an even k >= the finder's k with t >= MinimumHararyThreshold(k); always t <= k.
// FailedPrecondition saying which bound failed (DECLINE_REASON_PARAMETERS_REFUSED).
Status CheckGraphParametersFloor(uint32_t n, uint32_t k, uint32_t t, double gamma, double delta,
                                 AdversaryModel model);

}  // namespace flotilla::aggregation
