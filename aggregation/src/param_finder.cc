// Bell et al.'s SecAgg+ parameter analysis. The arithmetic mirrors fcp's finder (same
// tail bounds, same rounding outwards, same kSmall guard) so that the published vectors
// come out identical; see param_finder.h for the argument.
#include "flotilla/aggregation/param_finder.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>

namespace flotilla::aggregation {
namespace {

constexpr double kSecurityBits = 40;     // statistical security 2^-40
constexpr double kCorrectnessBits = 20;  // failure probability < 2^-20
constexpr double kSmall = 1e-14;         // keeps rounding of rate * n on the safe side
constexpr uint32_t kMaxClients = 1000000;

// Hypergeometric: draw `sampled` of `total` items of which `marked` are marked; X = number
// of marked items drawn. Log-space PMF, tail sums by the PMF ratio recurrence.
class Hypergeometric {
 public:
  Hypergeometric(double total, double marked, double sampled) : n_(total), k_(marked), s_(sampled) {}

  double Pmf(double x, double counted) const {
    if (x < 0 || x > s_ || x > counted) return 0;
    if (n_ + x < counted + s_) return 0;
    const double log_pmf = std::lgamma(s_ + 1) + std::lgamma(counted + 1) + std::lgamma(n_ - counted + 1) +
                           std::lgamma(n_ - s_ + 1) - std::lgamma(x + 1) - std::lgamma(s_ - x + 1) -
                           std::lgamma(counted - x + 1) - std::lgamma(n_ + 1) -
                           std::lgamma(n_ - s_ - counted + x + 1);
    return std::exp(log_pmf);
  }

  // P[X <= x], summing downwards from x until the terms stop mattering.
  double LowerTail(double x, double counted) const {
    double pmf = Pmf(x, counted);
    double sum = 0;
    while (pmf > sum * 1e-16) {
      sum += pmf;
      pmf *= x * (n_ - counted - s_ + x) / ((counted - x + 1) * (s_ - x + 1));
      x -= 1;
    }
    return sum;
  }

  double Cdf(double x) const {
    x = std::floor(x);
    const double mean = k_ * s_ / n_;
    // Sum the short tail: above the mean, count the unmarked items instead.
    return x > mean ? 1 - LowerTail(s_ - x - 1, n_ - k_) : LowerTail(x, k_);
  }

  // Largest x (rounded away from the median) with P[X <= x] < q; with `upper`, the
  // smallest x with P[X > x] <= q.
  double Quantile(double q, bool upper) const {
    if (q > 0.5) {
      q = 1 - q;
      upper = !upper;
    }
    return upper ? s_ - LowerQuantile(q, n_ - k_) - 1 : LowerQuantile(q, k_);
  }

 private:
  double LowerQuantile(double q, double counted) const {
    // Start below the answer: the larger of the trivial bound and Hoeffding's tail bound.
    double x = std::max({-1.0, counted + s_ - n_ - 1, s_ * (counted / n_ - std::sqrt(-std::log(q) / (2 * s_)))});
    x = std::floor(x);
    double cdf = LowerTail(x, counted);
    double pmf = Pmf(x, counted);
    while (cdf < q && x < s_) {
      if (pmf > 0) {
        pmf = pmf / (x + 1) / (n_ - counted - s_ + x + 1) * (counted - x) * (s_ - x);
      } else {
        pmf = Pmf(x + 1, counted);
      }
      cdf += pmf;
      x += 1;
    }
    return x - 1;
  }

  double n_, k_, s_;
};

Status CheckRates(uint32_t n, double gamma, double delta, AdversaryModel model) {
  if (n == 0 || n > kMaxClients) {
    return FailedPreconditionError("param finder: n=" + std::to_string(n) + " not in [1, 10^6]");
  }
  if (!(gamma >= 0 && gamma < 1)) return FailedPreconditionError("param finder: colluding fraction not in [0, 1)");
  if (!(delta >= 0 && delta < 1)) return FailedPreconditionError("param finder: dropout rate not in [0, 1)");
  if (model == AdversaryModel::kNone && gamma > 0) {
    return FailedPreconditionError("param finder: no-adversary model needs gamma = 0");
  }
  if (model != AdversaryModel::kSemiMalicious && gamma + delta > 0.9) {
    return FailedPreconditionError("param finder: semi-honest needs gamma + delta <= 0.9");
  }
  if (model == AdversaryModel::kSemiMalicious && gamma + 2 * delta > 0.9) {
    return FailedPreconditionError("param finder: semi-malicious needs gamma + 2 delta <= 0.9");
  }
  return Status::Ok();
}

// log P[the Harary graph minus the bad nodes is disconnected] (union bound).
double LogDisconnectProbability(uint32_t n_int, uint32_t k_int, double gamma, double delta) {
  const double n = n_int, k = k_int;
  const double bad = std::floor((gamma + kSmall) * n) + std::floor((delta + kSmall) * n);
  if (k > bad) return -HUGE_VAL;
  const double log_gap_pairs = std::log(n) + std::log(n - k - 1) - std::log(2.0);
  return log_gap_pairs + std::lgamma(bad + 1) + std::lgamma(n - k + 1) - std::lgamma(n + 1) -
         std::lgamma(bad - k + 1);
}

std::optional<uint32_t> ThresholdFor(uint32_t n_int, uint32_t k_int, double gamma, double delta,
                                     AdversaryModel model) {
  const double n = n_int, k = k_int;
  const double bits_per_event = kSecurityBits + 1;  // 2^-40 split over two bad events
  if (LogDisconnectProbability(n_int, k_int, gamma, delta) >= -bits_per_event * std::log(2.0)) {
    return std::nullopt;
  }
  const double colluders = std::floor((gamma + kSmall) * n);
  const double survivors = std::ceil((1 - delta - kSmall) * n);
  const Hypergeometric colluding_neighbours(n, colluders, k);
  const Hypergeometric surviving_neighbours(n, survivors, k);
  double t1 = colluding_neighbours.Quantile(std::pow(2.0, -bits_per_event) / n, /*upper=*/true);
  const double q2 = std::pow(2.0, -kCorrectnessBits) / n;
  double t2 = surviving_neighbours.Quantile(q2, /*upper=*/false);
  if (surviving_neighbours.Cdf(t2) < q2) t2 += 1;
  if (model == AdversaryModel::kSemiMalicious) t1 = std::ceil((t1 + k - 1.25) / 2);
  if (t2 <= t1) return std::nullopt;
  return static_cast<uint32_t>(std::max(t1 + 1, 2.0));
}

}  // namespace

Result<GraphParameters> FindHararyParameters(uint32_t n, double gamma, double delta, AdversaryModel model) {
  FLT_RETURN_IF_ERROR(CheckRates(n, gamma, delta, model));
  for (uint32_t k = 2; k + 1 < n; k += 2) {
    if (auto t = ThresholdFor(n, k, gamma, delta, model)) return GraphParameters{k, *t, false};
  }
  return FailedPreconditionError("param finder: no Harary degree below n-1 is secure for n=" + std::to_string(n));
}

Result<uint32_t> MinimumHararyThreshold(uint32_t n, uint32_t k, double gamma, double delta, AdversaryModel model) {
  FLT_RETURN_IF_ERROR(CheckRates(n, gamma, delta, model));
  if (k < 2 || k % 2 != 0 || k + 1 >= n) {
    return FailedPreconditionError("param finder: Harary degree k=" + std::to_string(k) + " must be even, in [2, n-2]");
  }
  auto t = ThresholdFor(n, k, gamma, delta, model);
  if (!t) return FailedPreconditionError("param finder: degree k=" + std::to_string(k) + " is insecure for n=" +
                                         std::to_string(n));
  return *t;
}

Result<uint32_t> MinimumCompleteGraphThreshold(uint32_t n, double gamma, double delta, AdversaryModel model) {
  FLT_RETURN_IF_ERROR(CheckRates(n, gamma, delta, model));
  if (n < 2) return FailedPreconditionError("param finder: secure aggregation needs at least 2 clients");
  const double colluders = std::ceil(gamma * n - kSmall);
  double floor_t = model == AdversaryModel::kSemiMalicious ? std::ceil((n + gamma * n) / 2 - kSmall) + 1
                                                           : colluders + 1;
  floor_t = std::max(floor_t, 1.0);
  const double dropped = std::floor((delta + kSmall) * n);
  const double ceiling_t = (n - 1.0) - dropped;  // alive neighbours of a survivor
  if (floor_t > ceiling_t) {
    return FailedPreconditionError("param finder: complete graph of n=" + std::to_string(n) +
                                   " has no threshold above the collusion floor " + std::to_string(floor_t) +
                                   " that survives the dropout rate");
  }
  return static_cast<uint32_t>(floor_t);
}

Result<GraphParameters> ChooseGraphParameters(uint32_t n, double gamma, double delta, AdversaryModel model) {
  if (n > kCompleteGraphMaxCohort) {
    auto harary = FindHararyParameters(n, gamma, delta, model);
    if (harary.ok()) return harary;
  }
  FLT_ASSIGN_OR_RETURN(uint32_t t, MinimumCompleteGraphThreshold(n, gamma, delta, model));
  return GraphParameters{n - 1, t, true};
}

Status CheckGraphParametersFloor(uint32_t n, uint32_t k, uint32_t t, double gamma, double delta,
                                 AdversaryModel model) {
  if (t == 0 || t > k) {
    return FailedPreconditionError("parameters refused: threshold t=" + std::to_string(t) + " not in [1, k=" +
                                   std::to_string(k) + "]");
  }
  if (n >= 2 && k == n - 1) {
    FLT_ASSIGN_OR_RETURN(uint32_t floor_t, MinimumCompleteGraphThreshold(n, gamma, delta, model));
    if (t < floor_t) {
      return FailedPreconditionError("parameters refused: complete-graph threshold t=" + std::to_string(t) +
                                     " below the floor " + std::to_string(floor_t));
    }
    return Status::Ok();
  }
  FLT_ASSIGN_OR_RETURN(GraphParameters floor, FindHararyParameters(n, gamma, delta, model));
  if (k < floor.k) {
    return FailedPreconditionError("parameters refused: degree k=" + std::to_string(k) + " below the floor " +
                                   std::to_string(floor.k));
  }
  FLT_ASSIGN_OR_RETURN(uint32_t floor_t, MinimumHararyThreshold(n, k, gamma, delta, model));
  if (t < floor_t) {
    return FailedPreconditionError("parameters refused: threshold t=" + std::to_string(t) + " below the floor " +
                                   std::to_string(floor_t) + " for k=" + std::to_string(k));
  }
  return Status::Ok();
}

}  // namespace flotilla::aggregation
