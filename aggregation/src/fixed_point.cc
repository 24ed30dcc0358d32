#include "flotilla/aggregation/fixed_point.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <string>

namespace flotilla::aggregation {

Status ValidateFixedPoint(const FixedPointConfig& config, uint64_t max_clients) {
  if (config.bit_width < 2 || config.bit_width > kMaxBitWidth) {
    return InvalidArgumentError("fixed point: bit width " + std::to_string(config.bit_width) + " not in [2, 32]");
  }
  if (config.quant_bits < 2 || config.quant_bits > config.bit_width) {
    return InvalidArgumentError("fixed point: quant bits " + std::to_string(config.quant_bits) + " not in [2, b=" +
                                std::to_string(config.bit_width) + "]");
  }
  if (!std::isfinite(config.clip) || config.clip <= 0) {
    return InvalidArgumentError("fixed point: clip bound must be finite and > 0");
  }
  if (max_clients == 0) return InvalidArgumentError("fixed point: cohort size must be > 0");
  // n * 2^(q-1) * 2 <= 2^b  <=>  n <= 2^(b-q)
  const uint32_t headroom_bits = config.bit_width - config.quant_bits;
  if (headroom_bits < 63 && max_clients > (uint64_t{1} << headroom_bits)) {
    return InvalidArgumentError("fixed point: overflow risk: n=" + std::to_string(max_clients) + " clients at q=" +
                                std::to_string(config.quant_bits) + " bits can wrap Z_2^" +
                                std::to_string(config.bit_width) + " (needs n * 2^(q-1) * 2 <= 2^b)");
  }
  return Status::Ok();
}

uint32_t QuantBitsFor(uint32_t bit_width, uint64_t max_clients) {
  const uint32_t log_n = max_clients <= 1 ? 0 : static_cast<uint32_t>(std::bit_width(max_clients - 1));
  return bit_width > log_n ? bit_width - log_n : 0;
}

double FixedPointScale(const FixedPointConfig& config) {
  return (std::ldexp(1.0, static_cast<int>(config.quant_bits) - 1) - 1.0) / config.clip;
}

int64_t RingToSigned(uint32_t v, uint32_t bit_width) {
  const uint32_t masked = v & RingMask(bit_width);
  const uint64_t half = uint64_t{1} << (bit_width - 1);
  return masked >= half ? static_cast<int64_t>(masked) - static_cast<int64_t>(uint64_t{1} << bit_width)
                        : static_cast<int64_t>(masked);
}

uint32_t SignedToRing(int64_t v, uint32_t bit_width) {
  return static_cast<uint32_t>(static_cast<uint64_t>(v)) & RingMask(bit_width);
}

namespace {

template <typename T>
Result<std::vector<uint32_t>> Encode(std::span<const T> values, const FixedPointConfig& config, Random& rng) {
  FLT_RETURN_IF_ERROR(ValidateFixedPoint(config, 1));
  const double scale = FixedPointScale(config);
  const double max_level = std::ldexp(1.0, static_cast<int>(config.quant_bits) - 1) - 1.0;
  std::vector<uint32_t> out(values.size());
  constexpr size_t kChunk = 4096;
  uint64_t bits[kChunk];
  for (size_t base = 0; base < values.size(); base += kChunk) {
    const size_t n = std::min(kChunk, values.size() - base);
    rng.Fill(std::span<uint8_t>(reinterpret_cast<uint8_t*>(bits), n * sizeof(uint64_t)));
    for (size_t i = 0; i < n; ++i) {
      const double x = static_cast<double>(values[base + i]);
      if (!std::isfinite(x)) {
        return InvalidArgumentError("fixed point: value " + std::to_string(base + i) + " is not finite");
      }
      // Clipping in the scaled domain keeps |level| <= 2^(q-1) - 1 exactly.
      const double v = std::clamp(x * scale, -max_level, max_level);
      const double lo = std::floor(v);
      const double frac = v - lo;
      const double u = static_cast<double>(bits[i] >> 11) * 0x1.0p-53;  // uniform in [0, 1)
      const auto level = static_cast<int64_t>(lo) + (u < frac ? 1 : 0);
      out[base + i] = SignedToRing(level, config.bit_width);
    }
  }
  return out;
}

}  // namespace

Result<std::vector<uint32_t>> EncodeFixedPoint(std::span<const double> values, const FixedPointConfig& config,
                                               Random& rng) {
  return Encode(values, config, rng);
}

Result<std::vector<uint32_t>> EncodeFixedPoint(std::span<const float> values, const FixedPointConfig& config,
                                               Random& rng) {
  return Encode(values, config, rng);
}

std::vector<double> DecodeFixedPointSum(std::span<const uint32_t> sum, const FixedPointConfig& config) {
  const double scale = FixedPointScale(config);
  std::vector<double> out(sum.size());
  for (size_t i = 0; i < sum.size(); ++i) {
    out[i] = static_cast<double>(RingToSigned(sum[i], config.bit_width)) / scale;
  }
  return out;
}

Result<std::vector<double>> WeightedPayload(std::span<const float> delta, double weight, double max_weight) {
  if (!std::isfinite(weight) || weight <= 0 || weight > max_weight) {
    return InvalidArgumentError("weighted payload: weight " + std::to_string(weight) + " not in (0, " +
                                std::to_string(max_weight) + "]");
  }
  std::vector<double> out(delta.size() + 1);
  for (size_t i = 0; i < delta.size(); ++i) out[i] = weight * static_cast<double>(delta[i]);
  out.back() = weight;
  return out;
}

Result<std::vector<double>> WeightedAverageFromSum(std::span<const double> decoded_sum) {
  if (decoded_sum.empty()) return InvalidArgumentError("weighted average: empty sum (no weight coordinate)");
  const double total = decoded_sum.back();
  if (!(total > 0)) return FailedPreconditionError("weighted average: summed weight is not positive");
  std::vector<double> out(decoded_sum.size() - 1);
  for (size_t i = 0; i < out.size(); ++i) out[i] = decoded_sum[i] / total;
  return out;
}

}  // namespace flotilla::aggregation
