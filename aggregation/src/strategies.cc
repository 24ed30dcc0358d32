#include "flotilla/aggregation/strategies.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace flotilla::aggregation {
namespace {

// Neumaier-compensated double accumulator: the float inputs' rounding, not the sum's,
// dominates the error budget.
struct CompensatedSum {
  double sum = 0, comp = 0;
  void Add(double x) {
    const double t = sum + x;
    comp += std::abs(sum) >= std::abs(x) ? (sum - t) + x : (x - t) + sum;
    sum = t;
  }
  double Value() const { return sum + comp; }
};

Status CheckSameLength(std::span<const std::span<const float>> updates) {
  if (updates.empty()) return InvalidArgumentError("aggregate: no client updates");
  for (size_t i = 0; i < updates.size(); ++i) {
    if (updates[i].size() != updates[0].size()) {
      return InvalidArgumentError("aggregate: update " + std::to_string(i) + " has " +
                                  std::to_string(updates[i].size()) + " values, expected " +
                                  std::to_string(updates[0].size()));
    }
    for (float v : updates[i]) {
      if (!std::isfinite(v)) return InvalidArgumentError("aggregate: update " + std::to_string(i) + " not finite");
    }
  }
  return Status::Ok();
}

Status CheckWeights(std::span<const double> weights, size_t n) {
  if (weights.size() != n) return InvalidArgumentError("aggregate: one weight per client needed");
  for (double w : weights) {
    if (!std::isfinite(w) || w <= 0) return InvalidArgumentError("aggregate: weights must be finite and > 0");
  }
  return Status::Ok();
}

Result<std::vector<float>> WeightedMean(std::span<const std::span<const float>> values,
                                        std::span<const double> weights) {
  FLT_RETURN_IF_ERROR(CheckSameLength(values));
  FLT_RETURN_IF_ERROR(CheckWeights(weights, values.size()));
  CompensatedSum total;
  for (double w : weights) total.Add(w);
  std::vector<float> out(values[0].size());
  for (size_t j = 0; j < out.size(); ++j) {
    CompensatedSum s;
    for (size_t i = 0; i < values.size(); ++i) s.Add(weights[i] * static_cast<double>(values[i][j]));
    out[j] = static_cast<float>(s.Value() / total.Value());
  }
  return out;
}

template <typename F>
Result<std::vector<float>> PerCoordinate(std::span<const std::span<const float>> updates, F reduce) {
  FLT_RETURN_IF_ERROR(CheckSameLength(updates));
  std::vector<float> out(updates[0].size());
  std::vector<float> column(updates.size());
  for (size_t j = 0; j < out.size(); ++j) {
    for (size_t i = 0; i < updates.size(); ++i) column[i] = updates[i][j];
    std::sort(column.begin(), column.end());
    out[j] = reduce(column);
  }
  return out;
}

}  // namespace

Result<std::vector<float>> WeightedFedAvg(std::span<const ClientUpdate> updates) {
  std::vector<std::span<const float>> values;
  std::vector<double> weights;
  for (const ClientUpdate& u : updates) {
    values.push_back(u.values);
    weights.push_back(u.weight);
  }
  return WeightedMean(values, weights);
}

Result<std::vector<float>> CoordinateMedian(std::span<const std::span<const float>> updates) {
  return PerCoordinate(updates, [](const std::vector<float>& c) {
    const size_t n = c.size();
    return n % 2 == 1 ? c[n / 2]
                      : static_cast<float>((static_cast<double>(c[n / 2 - 1]) + static_cast<double>(c[n / 2])) / 2);
  });
}

Result<std::vector<float>> TrimmedMean(std::span<const std::span<const float>> updates, double trim_fraction) {
  if (!(trim_fraction >= 0 && trim_fraction < 0.5)) return InvalidArgumentError("trimmed mean: fraction not in [0, 0.5)");
  const size_t drop = static_cast<size_t>(std::floor(trim_fraction * static_cast<double>(updates.size())));
  return PerCoordinate(updates, [drop](const std::vector<float>& c) {
    CompensatedSum s;
    for (size_t i = drop; i < c.size() - drop; ++i) s.Add(static_cast<double>(c[i]));
    return static_cast<float>(s.Value() / static_cast<double>(c.size() - 2 * drop));
  });
}

double L2Norm(std::span<const float> values) {
  CompensatedSum s;
  for (float v : values) s.Add(static_cast<double>(v) * static_cast<double>(v));
  return std::sqrt(s.Value());
}

Status CheckUpdateNorm(std::span<const float> values, double bound) {
  const double norm = L2Norm(values);
  if (!(norm <= bound)) {
    return OutOfRangeError("update norm " + std::to_string(norm) + " exceeds the bound " + std::to_string(bound));
  }
  return Status::Ok();
}

double ClipToNorm(std::span<float> values, double bound) {
  const double norm = L2Norm(values);
  if (norm <= bound || norm == 0) return 1.0;
  const double f = bound / norm;
  for (float& v : values) v = static_cast<float>(static_cast<double>(v) * f);
  return f;
}

namespace {

Status CheckShape(const LoraFactors& f) {
  if (f.d == 0 || f.r == 0 || f.k == 0 || f.b.size() != size_t{f.d} * f.r || f.a.size() != size_t{f.r} * f.k) {
    return InvalidArgumentError("lora: factor sizes do not match d, r, k");
  }
  return Status::Ok();
}

Status CheckSameShapes(std::span<const LoraFactors> clients, std::span<const double> weights) {
  if (clients.empty()) return InvalidArgumentError("lora: no clients");
  FLT_RETURN_IF_ERROR(CheckWeights(weights, clients.size()));
  for (const LoraFactors& c : clients) {
    FLT_RETURN_IF_ERROR(CheckShape(c));
    if (c.d != clients[0].d || c.r != clients[0].r || c.k != clients[0].k) {
      return InvalidArgumentError("lora: clients disagree on the adapter shape");
    }
  }
  return Status::Ok();
}

}  // namespace

Result<std::vector<float>> LoraProduct(const LoraFactors& f) {
  FLT_RETURN_IF_ERROR(CheckShape(f));
  std::vector<float> w(size_t{f.d} * f.k);
  for (uint32_t i = 0; i < f.d; ++i) {
    for (uint32_t j = 0; j < f.k; ++j) {
      double s = 0;
      for (uint32_t q = 0; q < f.r; ++q) {
        s += static_cast<double>(f.b[size_t{i} * f.r + q]) * static_cast<double>(f.a[size_t{q} * f.k + j]);
      }
      w[size_t{i} * f.k + j] = static_cast<float>(s);
    }
  }
  return w;
}

Result<LoraFactors> AggregateFrozenA(std::span<const LoraFactors> clients, std::span<const double> weights) {
  FLT_RETURN_IF_ERROR(CheckSameShapes(clients, weights));
  for (const LoraFactors& c : clients) {
    if (c.a != clients[0].a) return InvalidArgumentError("lora: frozen-A clients must share A");
  }
  std::vector<std::span<const float>> bs;
  for (const LoraFactors& c : clients) bs.push_back(c.b);
  LoraFactors out = clients[0];
  FLT_ASSIGN_OR_RETURN(out.b, WeightedMean(bs, weights));
  return out;
}

Result<LoraFactors> AggregateFedIt(std::span<const LoraFactors> clients, std::span<const double> weights) {
  FLT_RETURN_IF_ERROR(CheckSameShapes(clients, weights));
  std::vector<std::span<const float>> as, bs;
  for (const LoraFactors& c : clients) {
    as.push_back(c.a);
    bs.push_back(c.b);
  }
  LoraFactors out = clients[0];
  FLT_ASSIGN_OR_RETURN(out.a, WeightedMean(as, weights));
  FLT_ASSIGN_OR_RETURN(out.b, WeightedMean(bs, weights));
  return out;
}

}  // namespace flotilla::aggregation
