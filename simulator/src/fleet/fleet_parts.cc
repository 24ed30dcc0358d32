#include "fleet_parts.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <thread>

#include "flotilla/coordinator/pki.h"
#include "flotilla/core/file.h"
#include "flotilla/security/hash.h"

namespace flotilla::simulator::internal {

namespace fs = std::filesystem;

Status ParallelFor(size_t n, unsigned threads, const std::function<Status(size_t)>& fn) {
  threads = std::max(1u, std::min<unsigned>(threads, static_cast<unsigned>(std::max<size_t>(n, 1))));
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex mu;
  Status first = Status::Ok();
  auto work = [&] {
    for (size_t i = next.fetch_add(1); i < n && !failed.load(); i = next.fetch_add(1)) {
      Status s = fn(i);
      if (!s.ok()) {
        std::lock_guard<std::mutex> lock(mu);
        if (first.ok()) first = std::move(s);
        failed = true;
      }
    }
  };
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
  return first;
}

// ---------------------------------------------------------------- FleetPki

Result<FleetPki> FleetPki::Create(const fs::path& dir) {
  coordinator::PkiInitOptions init;
  init.overwrite = true;
  init.ca_name = "flotilla simulator fleet CA";
  FLT_RETURN_IF_ERROR(coordinator::InitPki(dir, init));
  const coordinator::PkiLayout layout{dir};
  FleetPki pki;
  pki.dir_ = dir;
  pki.ca_cert = layout.ca_cert();
  pki.broker_cert = layout.broker_cert();
  pki.broker_key = layout.broker_key();
  FLT_ASSIGN_OR_RETURN(pki.ca_.cert_pem, ReadFileString(layout.ca_cert()));
  FLT_ASSIGN_OR_RETURN(pki.ca_.key_pem, ReadFileString(layout.ca_key()));
  return pki;
}

Result<FleetPki::Identity> FleetPki::Issue(const std::string& id) const {
  const coordinator::PkiLayout layout{dir_};
  security::CertificateRequest req;
  req.common_name = id;
  req.role = security::CertificateRole::kClient;
  FLT_ASSIGN_OR_RETURN(security::CertificateAndKey pair, security::IssueCertificate(ca_, req));
  Identity out;
  out.id = id;
  out.cert_file = layout.device_cert(id);
  out.key_file = layout.device_key(id);
  FLT_RETURN_IF_ERROR(WriteFileAtomic(out.cert_file, pair.cert_pem));
  FLT_RETURN_IF_ERROR(WriteFileAtomic(out.key_file, pair.key_pem, 0600));
  FLT_ASSIGN_OR_RETURN(security::EcdsaPrivateKey key, security::EcdsaPrivateKey::FromPem(pair.key_pem));
  out.key = std::make_shared<const security::EcdsaPrivateKey>(std::move(key));
  out.cert_pem = std::move(pair.cert_pem);
  return out;
}

Result<FleetPki::Identity> FleetPki::Coordinator() const {
  const coordinator::PkiLayout layout{dir_};
  Identity out;
  out.id = "coordinator";
  out.cert_file = layout.coordinator_cert();
  out.key_file = layout.coordinator_key();
  FLT_ASSIGN_OR_RETURN(out.cert_pem, ReadFileString(out.cert_file));
  FLT_ASSIGN_OR_RETURN(std::string key_pem, ReadFileString(out.key_file));
  FLT_ASSIGN_OR_RETURN(security::EcdsaPrivateKey key, security::EcdsaPrivateKey::FromPem(key_pem));
  out.key = std::make_shared<const security::EcdsaPrivateKey>(std::move(key));
  return out;
}

// ---------------------------------------------------------------- in-process HTTP stand-ins

Result<v1::ClaimCheck> InProcessUploader::Upload(const v1::UploadTarget& target, std::string_view round_id,
                                                 std::string_view device_id, ByteSpan sealed_box) {
  if (target.max_bytes() != 0 && sealed_box.size() > target.max_bytes()) {
    return ResourceExhaustedError("upload of " + std::to_string(sealed_box.size()) + " bytes is over the target's " +
                                  std::to_string(target.max_bytes()));
  }
  FLT_RETURN_IF_ERROR(uploads_.Put(round_id, device_id, target.token(), sealed_box));
  const security::Sha256Digest d = security::Sha256(sealed_box);
  v1::ClaimCheck claim;
  claim.set_url(target.url());
  claim.set_sha256(d.data(), d.size());
  claim.set_size(sealed_box.size());
  claim.set_upload_id(ToHex(ByteSpan(d.data(), d.size())));
  return claim;
}

Result<Bytes> RegistryFetcher::Fetch(std::string_view url, size_t max_bytes) {
  FLT_ASSIGN_OR_RETURN(Bytes bytes, registry_.ReadUrl(url));
  if (bytes.size() > max_bytes) {
    return ResourceExhaustedError("adapter at " + std::string(url) + " is over " + std::to_string(max_bytes) + " bytes");
  }
  return bytes;
}

// ---------------------------------------------------------------- training log

void TrainingLog::Record(std::string_view round_id, const Result<device::LocalTrainingResult>& result,
                         double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = rounds_.find(round_id);
  if (it == rounds_.end()) it = rounds_.emplace(std::string(round_id), RoundTotals{}).first;
  RoundTotals& t = it->second;
  t.seconds_total += seconds;
  t.seconds_max = std::max(t.seconds_max, seconds);
  if (!result.ok()) {
    ++t.failures;
    return;
  }
  ++t.trained;
  t.loss_before_sum += static_cast<double>(result->loss_before);
  t.loss_after_sum += static_cast<double>(result->loss_after);
}

TrainingLog::RoundTotals TrainingLog::Totals(std::string_view round_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = rounds_.find(round_id);
  return it == rounds_.end() ? RoundTotals{} : it->second;
}

Result<device::LocalTrainingResult> RecordingTrainer::Train(std::string_view round_id,
                                                            const v1::TrainingConfig& config,
                                                            std::span<const float> global) {
  const auto start = std::chrono::steady_clock::now();
  Result<device::LocalTrainingResult> r = inner_->Train(round_id, config, global);
  log_->Record(round_id, r, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return r;
}

// ---------------------------------------------------------------- progress

Progress::Progress(bool enabled) : enabled_(enabled), tty_(enabled && ::isatty(STDERR_FILENO) == 1) {}

void Progress::Update(const std::string& phase, const std::string& detail) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  const std::string line = phase + " " + detail;
  if (tty_) {
    if (phase == last_phase_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
    std::fprintf(stderr, "\r%s%s", line.c_str(),
                 std::string(last_width_ > line.size() ? last_width_ - line.size() : 0, ' ').c_str());
    last_width_ = line.size();
  } else {
    if (phase == last_phase_) return;
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  std::fflush(stderr);
  last_phase_ = phase;
  last_draw_ = now;
}

void Progress::Done(const std::string& final_line) {
  if (!enabled_) return;
  if (tty_) {
    std::fprintf(stderr, "\r%s%s\n", final_line.c_str(),
                 std::string(last_width_ > final_line.size() ? last_width_ - final_line.size() : 0, ' ').c_str());
  } else {
    std::fprintf(stderr, "%s\n", final_line.c_str());
  }
  std::fflush(stderr);
  last_phase_.clear();
  last_width_ = 0;
}

std::string Bar(double fraction, int width) {
  fraction = std::clamp(fraction, 0.0, 1.0);
  const int full = static_cast<int>(std::lround(fraction * width));
  return "[" + std::string(static_cast<size_t>(full), '#') + std::string(static_cast<size_t>(width - full), '.') + "]";
}

}  // namespace flotilla::simulator::internal
