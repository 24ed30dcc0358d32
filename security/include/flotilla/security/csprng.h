// The CSPRNG every key, nonce, serial and Shamir coefficient comes from: mbedTLS
// CTR_DRBG (AES-256, NIST SP 800-90A) seeded from mbedtls_entropy (getrandom(2)).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "flotilla/core/random.h"
#include "flotilla/core/status.h"

namespace flotilla::security {

// A CTR_DRBG instance. Thread-safe (one mutex around the DRBG). Reseeds from the entropy
// source every kReseedIntervalRequests requests and after fork() (the child must never
// repeat the parent's stream). Fill() aborts if the entropy source fails: there is no
// weaker fallback, and a caller cannot do anything sensible without randomness.
class CtrDrbg final : public Random {
 public:
  static constexpr int kReseedIntervalRequests = 10000;

  // Seeds a new instance; `personalization` is mixed into the seed (domain separation).
  // Unavailable if the entropy source fails.
  static Result<std::unique_ptr<CtrDrbg>> Open(std::string_view personalization = "flotilla");
  ~CtrDrbg() override;
  CtrDrbg(const CtrDrbg&) = delete;
  CtrDrbg& operator=(const CtrDrbg&) = delete;

  void Fill(std::span<uint8_t> out) override;
  // Forces a reseed from the entropy source now.
  Status Reseed();

 private:
  struct Impl;
  explicit CtrDrbg(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The process-wide CtrDrbg (created on first use, never destroyed so that threads still
// running at exit can use it). Thread-safe.
Random& SystemCsprng();

}  // namespace flotilla::security
