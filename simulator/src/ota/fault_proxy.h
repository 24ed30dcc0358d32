// A faulting HTTP proxy for the OTA fleet simulator: devices use
// <proxy>/d/<device id>/ as their repository base URL; the proxy forwards every GET (with
// Range / If-Range) to the real ArtifactServer and answers a seeded share of the
// artifact requests (paths under artifacts/) with a fault instead: a 503, the upstream
// response cut off halfway (connection closed), or half of it followed by a stall longer
// than the device's read timeout. Metadata is passed through untouched.
//
// Decisions are a pure function of (seed, device, the device's request number), so a
// run is reproducible (simulation choices, not secrets: SplitMix64). Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "flotilla/core/status.h"
#include "flotilla/simulator/ota_fleet.h"

namespace flotilla::simulator::internal {

// SplitMix64 over (seed, a, b): a uniform 64-bit value. Pure.
uint64_t Mix(uint64_t seed, uint64_t a, uint64_t b);
uint64_t HashName(std::string_view name);
// Uniform in [0, 1) from Mix().
double Unit(uint64_t seed, uint64_t a, uint64_t b);

struct FaultProxyOptions {
  std::string upstream;  // "http://127.0.0.1:<port>"
  double rate = 0;       // share of artifact requests faulted
  std::vector<DownloadFault> kinds;
  std::chrono::milliseconds stall{1500};
  uint64_t seed = 1;
};

class FaultProxy {
 public:
  static Result<std::unique_ptr<FaultProxy>> Start(FaultProxyOptions options);
  ~FaultProxy();
  FaultProxy(const FaultProxy&) = delete;
  FaultProxy& operator=(const FaultProxy&) = delete;

  // The base URL a device uses (its id must be a valid protocol name: no '/').
  std::string DeviceBaseUrl(std::string_view device) const;
  // Faults injected so far, per device and in total.
  std::map<std::string, uint64_t> FaultsPerDevice() const;
  uint64_t faults_injected() const;
  void Stop();

 private:
  struct Impl;
  explicit FaultProxy(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace flotilla::simulator::internal
