// Shamir secret sharing over GF(2^61 - 1); encoding in shamir.h.
#include "flotilla/security/shamir.h"

#include <algorithm>
#include <string>
#include <unordered_set>

#include "gf61.h"

namespace flotilla::security {
namespace {

using gf61::Add;
using gf61::Mul;
using gf61::Sub;

Status CheckXs(std::span<const uint64_t> xs, std::string_view what) {
  std::unordered_set<uint64_t> seen;
  seen.reserve(xs.size());
  for (size_t i = 0; i < xs.size(); ++i) {
    const uint64_t x = xs[i];
    if (x == 0 || x >= kShamirPrime) {
      return InvalidArgumentError(std::string(what) + ": x[" + std::to_string(i) + "] = " + std::to_string(x) +
                                  " is not in [1, 2^61 - 1)");
    }
    if (!seen.insert(x).second) {
      return InvalidArgumentError(std::string(what) + ": duplicate x = " + std::to_string(x));
    }
  }
  return Status::Ok();
}

// Lagrange basis values l_i(x) = prod_{j != i} (x - x_j) / (x_i - x_j) for nodes xs.
std::vector<uint64_t> LagrangeAt(std::span<const uint64_t> xs, uint64_t x) {
  std::vector<uint64_t> out(xs.size());
  for (size_t i = 0; i < xs.size(); ++i) {
    uint64_t num = 1, den = 1;
    for (size_t j = 0; j < xs.size(); ++j) {
      if (j == i) continue;
      num = Mul(num, Sub(x, xs[j]));
      den = Mul(den, Sub(xs[i], xs[j]));
    }
    out[i] = Mul(num, gf61::Inv(den));
  }
  return out;
}

uint64_t Combine(std::span<const ShamirShare> shares, std::span<const uint64_t> weights, size_t element) {
  uint64_t acc = 0;
  for (size_t i = 0; i < weights.size(); ++i) acc = Add(acc, Mul(weights[i], shares[i].y[element]));
  return acc;
}

}  // namespace

Result<std::vector<ShamirShare>> ShamirSplit(ByteSpan secret, size_t threshold, std::span<const uint64_t> xs,
                                             Random& rng) {
  if (secret.empty()) return InvalidArgumentError("shamir split: empty secret");
  if (threshold < 1 || threshold > xs.size()) {
    return InvalidArgumentError("shamir split: threshold " + std::to_string(threshold) + " not in [1, " +
                                std::to_string(xs.size()) + "]");
  }
  FLT_RETURN_IF_ERROR(CheckXs(xs, "shamir split"));
  const size_t elements = ShamirElementCount(secret.size());
  std::vector<ShamirShare> shares(xs.size());
  for (size_t i = 0; i < xs.size(); ++i) {
    shares[i].x = xs[i];
    shares[i].y.resize(elements);
  }
  std::vector<uint64_t> coeffs(threshold);
  for (size_t e = 0; e < elements; ++e) {
    const size_t begin = e * kShamirBytesPerElement;
    const size_t end = std::min(secret.size(), begin + kShamirBytesPerElement);
    uint64_t s = 0;
    for (size_t b = begin; b < end; ++b) s |= static_cast<uint64_t>(secret[b]) << (8 * (b - begin));
    coeffs[0] = s;
    for (size_t k = 1; k < threshold; ++k) coeffs[k] = rng.Uniform(kShamirPrime);
    for (ShamirShare& share : shares) {  // Horner
      uint64_t y = 0;
      for (size_t k = threshold; k-- > 0;) y = Add(Mul(y, share.x), coeffs[k]);
      share.y[e] = y;
    }
  }
  std::fill(coeffs.begin(), coeffs.end(), 0);
  return shares;
}

Result<std::vector<ShamirShare>> ShamirSplit(ByteSpan secret, size_t threshold, size_t n, Random& rng) {
  std::vector<uint64_t> xs(n);
  for (size_t i = 0; i < n; ++i) xs[i] = i + 1;
  return ShamirSplit(secret, threshold, xs, rng);
}

Result<Bytes> ShamirReconstruct(std::span<const ShamirShare> shares, size_t threshold, size_t secret_len) {
  if (threshold < 1) return InvalidArgumentError("shamir reconstruct: threshold must be at least 1");
  if (secret_len == 0) return InvalidArgumentError("shamir reconstruct: secret length must be positive");
  if (shares.size() < threshold) {
    return InvalidArgumentError("shamir reconstruct: " + std::to_string(shares.size()) + " shares, need " +
                                std::to_string(threshold));
  }
  const size_t elements = ShamirElementCount(secret_len);
  std::vector<uint64_t> xs(shares.size());
  for (size_t i = 0; i < shares.size(); ++i) {
    xs[i] = shares[i].x;
    if (shares[i].y.size() != elements) {
      return InvalidArgumentError("shamir reconstruct: share x = " + std::to_string(shares[i].x) + " has " +
                                  std::to_string(shares[i].y.size()) + " values, expected " +
                                  std::to_string(elements) + " for a " + std::to_string(secret_len) + "-byte secret");
    }
    for (uint64_t y : shares[i].y) {
      if (y >= kShamirPrime) {
        return InvalidArgumentError("shamir reconstruct: share x = " + std::to_string(shares[i].x) +
                                    " has a value >= 2^61 - 1");
      }
    }
  }
  FLT_RETURN_IF_ERROR(CheckXs(xs, "shamir reconstruct"));

  const std::span<const uint64_t> nodes(xs.data(), threshold);
  const std::vector<uint64_t> at_zero = LagrangeAt(nodes, 0);
  // Shares beyond the first t must agree with the interpolated polynomials.
  for (size_t extra = threshold; extra < shares.size(); ++extra) {
    const std::vector<uint64_t> w = LagrangeAt(nodes, shares[extra].x);
    for (size_t e = 0; e < elements; ++e) {
      if (Combine(shares, w, e) != shares[extra].y[e]) {
        return DataLossError("shamir reconstruct: share x = " + std::to_string(shares[extra].x) +
                             " is inconsistent with the others");
      }
    }
  }
  Bytes secret(secret_len);
  for (size_t e = 0; e < elements; ++e) {
    uint64_t s = Combine(shares, at_zero, e);
    const size_t begin = e * kShamirBytesPerElement;
    const size_t n = std::min(secret_len - begin, kShamirBytesPerElement);
    for (size_t b = 0; b < n; ++b, s >>= 8) secret[begin + b] = static_cast<uint8_t>(s);
    if (s != 0) {
      std::fill(secret.begin(), secret.end(), 0);
      return DataLossError("shamir reconstruct: element " + std::to_string(e) +
                           " does not decode to secret bytes (corrupted share or wrong length)");
    }
  }
  return secret;
}

}  // namespace flotilla::security
