// Shamir secret sharing over GF(p), p = 2^61 - 1 (Mersenne prime), for SecAgg seeds and
// X25519 private keys. Pure functions, thread-safe.
//
// Encoding: a secret of L bytes is cut into ceil(L / 7) chunks of 7 bytes (the last one
// may be shorter); chunk j is read as a little-endian integer (< 2^56 < p) and becomes
// field element j. Every element is shared with an independent random polynomial of
// degree t-1 whose constant term is the element; all elements of one share use the same
// x. Share = {x, y[0..ceil(L/7))}, each y[j] in [0, p).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "flotilla/core/bytes.h"
#include "flotilla/core/random.h"
#include "flotilla/core/status.h"

namespace flotilla::security {

inline constexpr uint64_t kShamirPrime = (uint64_t{1} << 61) - 1;
inline constexpr size_t kShamirBytesPerElement = 7;

struct ShamirShare {
  uint64_t x = 0;
  std::vector<uint64_t> y;
  friend bool operator==(const ShamirShare&, const ShamirShare&) = default;
};

// Number of field elements a secret of `secret_len` bytes occupies.
constexpr size_t ShamirElementCount(size_t secret_len) {
  return (secret_len + kShamirBytesPerElement - 1) / kShamirBytesPerElement;
}

// Shares `secret` (non-empty) among the given x coordinates with threshold t
// (1 <= t <= xs.size()). Polynomial coefficients come from `rng` (production: the
// CSPRNG). InvalidArgument for x = 0, x >= p, duplicate x or a bad threshold.
Result<std::vector<ShamirShare>> ShamirSplit(ByteSpan secret, size_t threshold, std::span<const uint64_t> xs,
                                             Random& rng);
// Same with x = 1..n.
Result<std::vector<ShamirShare>> ShamirSplit(ByteSpan secret, size_t threshold, size_t n, Random& rng);

// Recovers a `secret_len`-byte secret from at least `threshold` shares. The first
// `threshold` shares are interpolated; any further shares must lie on the same
// polynomials (else DataLoss naming the share: with one extra share, a single corrupted
// share is always detected). InvalidArgument for fewer than t shares, bad or duplicate
// x, y values >= p or of the wrong count. DataLoss if a decoded element is not a valid
// chunk (>= 2^56): this catches a corrupted element among exactly t shares with
// probability 31/32 only, so pass extra shares when they are available.
Result<Bytes> ShamirReconstruct(std::span<const ShamirShare> shares, size_t threshold, size_t secret_len);

}  // namespace flotilla::security
