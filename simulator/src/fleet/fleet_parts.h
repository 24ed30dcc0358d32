// Internals of the fleet simulator shared by fleet.cc and its tests: the PKI of a run,
// the in-process HTTP stand-ins, the per-round training recorder, a parallel-for and the
// progress display.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "flotilla/coordinator/round_ports.h"
#include "flotilla/coordinator/store_adapter_registry.h"
#include "flotilla/core/status.h"
#include "flotilla/device/blob_client.h"
#include "flotilla/device/local_trainer.h"
#include "flotilla/security/identity.h"
#include "flotilla/security/x509.h"

namespace flotilla::simulator::internal {

// Runs fn(i) for i in [0, n) on `threads` threads; returns the first error (the others
// still finish their current item and stop).
Status ParallelFor(size_t n, unsigned threads, const std::function<Status(size_t)>& fn);

// The fleet PKI of one run, in the `flotilla pki` layout (coordinator/pki.h): CA,
// coordinator and broker certificates, and one client certificate per device whose key
// is also the device's envelope-signing identity.
class FleetPki {
 public:
  // Creates <dir> with a fresh CA (replacing an earlier one in `dir`).
  static Result<FleetPki> Create(const std::filesystem::path& dir);
  struct Identity {
    std::string id;
    std::filesystem::path cert_file, key_file;
    std::string cert_pem;
    std::shared_ptr<const security::EcdsaPrivateKey> key;
  };
  // Issues (and writes) the certificate of `id`. Thread-safe.
  Result<Identity> Issue(const std::string& id) const;
  // The coordinator's identity (key from coordinator.key).
  Result<Identity> Coordinator() const;

  std::filesystem::path ca_cert, broker_cert, broker_key;

 private:
  std::filesystem::path dir_;
  security::CertificateAndKey ca_;
};

// UpdateUploader into an in-memory upload source (the coordinator's upload endpoint
// without HTTP). Thread-safe.
class InProcessUploader final : public device::UpdateUploader {
 public:
  explicit InProcessUploader(rounds::InMemoryUploadSource& uploads) : uploads_(uploads) {}
  Result<v1::ClaimCheck> Upload(const v1::UploadTarget& target, std::string_view round_id, std::string_view device_id,
                                ByteSpan sealed_box) override;

 private:
  rounds::InMemoryUploadSource& uploads_;
};

// AdapterFetcher that resolves the registry's URLs in process. Thread-safe.
class RegistryFetcher final : public device::AdapterFetcher {
 public:
  explicit RegistryFetcher(coordinator::StoreAdapterRegistry& registry) : registry_(registry) {}
  Result<Bytes> Fetch(std::string_view url, size_t max_bytes) override;

 private:
  coordinator::StoreAdapterRegistry& registry_;
};

// What the cohort's trainers did, per round id. Thread-safe.
class TrainingLog {
 public:
  struct RoundTotals {
    uint32_t trained = 0;
    uint32_t failures = 0;
    double seconds_total = 0;
    double seconds_max = 0;
    double loss_before_sum = 0;
    double loss_after_sum = 0;
  };
  void Record(std::string_view round_id, const Result<device::LocalTrainingResult>& result, double seconds);
  RoundTotals Totals(std::string_view round_id) const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, RoundTotals, std::less<>> rounds_;  // GUARDED_BY(mu_)
};

// Decorates a device's trainer: times every Train call and records it in the log.
class RecordingTrainer final : public device::LocalTrainer {
 public:
  RecordingTrainer(std::shared_ptr<device::LocalTrainer> inner, std::shared_ptr<TrainingLog> log)
      : inner_(std::move(inner)), log_(std::move(log)) {}
  bool HasData() const override { return inner_->HasData(); }
  Result<device::LocalTrainingResult> Train(std::string_view round_id, const v1::TrainingConfig& config,
                                            std::span<const float> global) override;

 private:
  std::shared_ptr<device::LocalTrainer> inner_;
  std::shared_ptr<TrainingLog> log_;
};

// A one-line progress display on stderr: redrawn in place on a terminal, otherwise a new
// line only when the text's "phase" changes (so logs stay short).
class Progress {
 public:
  explicit Progress(bool enabled);
  // `phase` groups updates (a new line on non-terminals when it changes).
  void Update(const std::string& phase, const std::string& detail);
  // Ends the current line.
  void Done(const std::string& final_line);

 private:
  bool enabled_;
  bool tty_;
  std::string last_phase_;
  size_t last_width_ = 0;
  std::chrono::steady_clock::time_point last_draw_{};
};

std::string Bar(double fraction, int width = 24);

}  // namespace flotilla::simulator::internal
