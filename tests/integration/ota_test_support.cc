#include "ota_test_support.h"

#include <unistd.h>

#include <cstdlib>

#include "flotilla/core/check.h"
#include "flotilla/ota/repository_layout.h"
#include "flotilla/security/hash.h"

namespace flotilla::ota::testing {
Bytes ModelBytes(size_t size, int variant, std::vector<size_t> changed_chunks) {
  Bytes b(size);
  for (size_t i = 0; i < size; ++i) b[i] = static_cast<uint8_t>((i * 31) ^ (i >> 8) ^ (i >> 16));
  for (size_t c : changed_chunks) {
    for (size_t i = c * kChunk; i < std::min(size, (c + 1) * kChunk); ++i) b[i] = static_cast<uint8_t>(b[i] + variant);
  }
  return b;
}

OtaHarness::OtaHarness() : device_tmp_(TestRepository::Must(TempDir::Create("flotilla-ota-device"))) {
  server_ = TestRepository::Must(ArtifactServer::Start(repo_.dir()));
  fetcher_options_.read_timeout = std::chrono::seconds(5);
  fetcher_options_.min_bytes_per_second = 0;
  device_key_ = NewKey();
  signer_ = std::make_unique<security::EcdsaSigner>(kDeviceId, device_key_);
}

OtaHarness::~OtaHarness() { server_->Stop(); }

v1::TargetInfo OtaHarness::Release(const Bytes& content, uint64_t release_counter, const std::string& deployment) {
  v1::TargetInfo t = repo_.AddTarget(kTargetName, content, release_counter, {}, kChunk);
  FLT_CHECK_OK(repo_.repo().Publish());
  repo_.AssignDevice(kDeviceId, {kTargetName}, deployment);
  return t;
}

OtaClientOptions OtaHarness::Options(const std::filesystem::path& device_dir) const {
  OtaClientOptions o;
  o.data_dir = device_dir / "data";
  o.install_dir = device_dir / "models";
  o.target_name = kTargetName;
  o.device = DeviceIdentity{kDeviceId, {"canary"}, "test-soc"};
  o.provisioned_root = ToBytes(repo_.ProvisionedState().root());
  o.max_download_attempts = 4;
  o.backoff_initial = std::chrono::milliseconds(8);
  o.backoff_max = std::chrono::milliseconds(40);
  return o;
}

DeviceClient OtaHarness::NewClient(const std::filesystem::path& device_dir, CrashHook hook, bool allow_full_restart) {
  DeviceClient dc;
  HttpFetcherOptions fo = fetcher_options_;
  fo.base_url = server_->base_url();
  dc.fetcher = TestRepository::Must(HttpFetcher::Create(fo));
  OtaClientOptions o = Options(device_dir);
  o.allow_full_restart = allow_full_restart;
  OtaClientDeps d;
  d.fetcher = dc.fetcher.get();
  d.health = &health_;
  d.reports = &reports_;
  d.signer = signer_.get();
  d.clock = &repo_.clock();
  d.crash_hook = std::move(hook);
  d.sleep = [this](std::chrono::milliseconds ms) { sleeps_.push_back(ms); };
  dc.client = TestRepository::Must(OtaClient::Open(std::move(o), std::move(d)));
  return dc;
}

std::filesystem::path OtaHarness::ArtifactFile(const v1::TargetInfo& t) const {
  return repo_.dir() / ArtifactPath(AsBytes(t.sha256()));
}

std::string OtaHarness::CurrentSha(const std::filesystem::path& device_dir) {
  const auto p = device_dir / "models" / "current" / "artifact";
  std::error_code ec;
  if (!std::filesystem::exists(p, ec)) return "";
  auto b = ReadFileBytes(p);
  if (!b.ok()) return "unreadable";
  return ToHex(security::Sha256(*b));
}

}  // namespace flotilla::ota::testing
