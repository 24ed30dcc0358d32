// Test support for round tests (unit tests over the in-memory transport and the
// integration test over Mosquitto): in-process HTTP stand-ins that connect the device
// agent's uploader/fetcher to the coordinator's UploadSource/AdapterRegistry, a recorder
// of the devices' plaintext updates (the TEST ONLY hooks), and the expected-sum check.
// Header-only; test code links both flotilla_device and flotilla_rounds.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "flotilla/coordinator/round_driver.h"
#include "flotilla/coordinator/round_ports.h"
#include "flotilla/device/agent.h"
#include "flotilla/device/blob_client.h"
#include "flotilla/security/hash.h"

namespace flotilla::rounds::testing {

// The device's HTTP side resolved in process: uploads go to an InMemoryUploadSource,
// adapter URLs are read from a DirectoryAdapterRegistry. Thread-safe.
class InProcessBlobs final : public device::UpdateUploader, public device::AdapterFetcher {
 public:
  InProcessBlobs(InMemoryUploadSource* uploads, DirectoryAdapterRegistry* adapters)
      : uploads_(uploads), adapters_(adapters) {}

  Result<v1::ClaimCheck> Upload(const v1::UploadTarget& target, std::string_view round_id, std::string_view device_id,
                                ByteSpan sealed_box) override {
    FLT_RETURN_IF_ERROR(uploads_->Put(round_id, device_id, target.token(), sealed_box));
    const security::Sha256Digest d = security::Sha256(sealed_box);
    v1::ClaimCheck claim;
    claim.set_url(target.url());
    claim.set_sha256(d.data(), d.size());
    claim.set_size(sealed_box.size());
    claim.set_upload_id(ToHex(d));
    std::lock_guard<std::mutex> lock(mu_);
    ++uploads_done_;
    return claim;
  }
  Result<Bytes> Fetch(std::string_view url, size_t max_bytes) override {
    FLT_ASSIGN_OR_RETURN(Bytes b, adapters_->ReadUrl(url));
    if (b.size() > max_bytes) return ResourceExhaustedError("too big");
    std::lock_guard<std::mutex> lock(mu_);
    ++fetches_;
    return b;
  }
  size_t uploads() const {
    std::lock_guard<std::mutex> lock(mu_);
    return uploads_done_;
  }
  size_t fetches() const {
    std::lock_guard<std::mutex> lock(mu_);
    return fetches_;
  }

 private:
  InMemoryUploadSource* uploads_;
  DirectoryAdapterRegistry* adapters_;
  mutable std::mutex mu_;
  size_t uploads_done_ = 0;  // GUARDED_BY(mu_)
  size_t fetches_ = 0;       // GUARDED_BY(mu_)
};

// Collects both sides' TEST ONLY records. Thread-safe (device hooks run on workers).
class RoundRecorder {
 public:
  void Device(const device::PlaintextUpdateRecord& r) {
    std::lock_guard<std::mutex> lock(mu_);
    device_[r.round_id][r.device_id] = r;
  }
  void Coordinator(const RoundTestRecord& r) {
    std::lock_guard<std::mutex> lock(mu_);
    coordinator_[r.round_id] = r;
  }
  bool HasCoordinator(const std::string& round_id) const {
    std::lock_guard<std::mutex> lock(mu_);
    return coordinator_.count(round_id) > 0;
  }
  RoundTestRecord coordinator(const std::string& round_id) const {
    std::lock_guard<std::mutex> lock(mu_);
    return coordinator_.at(round_id);
  }
  std::map<std::string, device::PlaintextUpdateRecord> devices(const std::string& round_id) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = device_.find(round_id);
    return it == device_.end() ? std::map<std::string, device::PlaintextUpdateRecord>{} : it->second;
  }
  // The sum mod 2^32 of the encoded inputs the named devices computed (what SecAgg must
  // output); empty if one of them recorded nothing.
  std::vector<uint32_t> ExpectedSum(const std::string& round_id, const std::vector<std::string>& members) const {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<uint32_t> sum;
    auto it = device_.find(round_id);
    if (it == device_.end()) return sum;
    for (const std::string& id : members) {
      auto d = it->second.find(id);
      if (d == it->second.end()) return {};
      if (sum.empty()) sum.assign(d->second.encoded.size(), 0);
      for (size_t i = 0; i < sum.size(); ++i) sum[i] += d->second.encoded[i];
    }
    return sum;
  }
  // Double-precision weighted mean of the named devices' float deltas.
  std::vector<double> PlainWeightedMean(const std::string& round_id, const std::vector<std::string>& members) const {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<double> acc;
    double w = 0;
    for (const std::string& id : members) {
      const auto& r = device_.at(round_id).at(id);
      if (acc.empty()) acc.assign(r.delta.size(), 0.0);
      for (size_t i = 0; i < acc.size(); ++i) acc[i] += r.weight * static_cast<double>(r.delta[i]);
      w += r.weight;
    }
    for (double& v : acc) v /= w;
    return acc;
  }

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::map<std::string, device::PlaintextUpdateRecord>> device_;  // GUARDED_BY(mu_)
  std::map<std::string, RoundTestRecord> coordinator_;                                    // GUARDED_BY(mu_)
};

}  // namespace flotilla::rounds::testing
