// Shared harness for the OTA integration tests: a signed repository served over
// loopback HTTP by ArtifactServer, and a device (OtaClient) with its own data and
// install directories, fake health checker and recording report sink.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "flotilla/core/file.h"
#include "flotilla/ota/artifact_server.h"
#include "flotilla/ota/client.h"
#include "flotilla/ota/fetcher.h"
#include "flotilla/ota/testing/client_fakes.h"
#include "flotilla/ota/testing/test_repository.h"
#include "flotilla/security/identity.h"

namespace flotilla::ota::testing {

// fsync is the dominant cost of these tests and proves nothing here (power loss is
// simulated explicitly): keep temp dirs on tmpfs when the caller did not choose TMPDIR.
// Inline, so every test that includes this header gets it before main().
inline const bool kFastTempDir = [] {
  if (::access("/dev/shm", W_OK) == 0) ::setenv("TMPDIR", "/dev/shm", 0);
  return true;
}();

inline constexpr char kTargetName[] = "models/tiny/base";
inline constexpr char kDeviceId[] = "dev-1";
inline constexpr uint64_t kChunk = 4096;

// Deterministic test content; `variant` changes every byte of chunks listed in `changed`.
Bytes ModelBytes(size_t size, int variant = 0, std::vector<size_t> changed_chunks = {});

// A client with its own HTTP fetcher (closing it frees the server's keep-alive worker).
struct DeviceClient {
  std::unique_ptr<HttpFetcher> fetcher;
  std::unique_ptr<OtaClient> client;
  OtaClient* operator->() const { return client.get(); }
};

class OtaHarness {
 public:
  OtaHarness();
  ~OtaHarness();

  // Registers `content` as the next release of kTargetName, publishes, assigns dev-1.
  v1::TargetInfo Release(const Bytes& content, uint64_t release_counter, const std::string& deployment);

  // Device options/deps over `device_dir` (a fresh one by default).
  OtaClientOptions Options(const std::filesystem::path& device_dir) const;
  DeviceClient NewClient(const std::filesystem::path& device_dir, CrashHook hook = nullptr,
                         bool allow_full_restart = true);
  DeviceClient NewClient(CrashHook hook = nullptr) { return NewClient(device_dir(), std::move(hook)); }

  TestRepository& repo() { return repo_; }
  ArtifactServer& server() { return *server_; }
  FakeHealthChecker& health() { return health_; }
  RecordingReportSink& reports() { return reports_; }
  const security::EcdsaPrivateKey& device_key() const { return *device_key_; }
  std::filesystem::path device_dir() const { return device_tmp_.path(); }
  std::vector<std::chrono::milliseconds>& sleeps() { return sleeps_; }
  HttpFetcherOptions& fetcher_options() { return fetcher_options_; }  // base_url is filled in
  std::filesystem::path ArtifactFile(const v1::TargetInfo& t) const;

  // SHA-256 hex of the file `current` points at ("" if none).
  static std::string CurrentSha(const std::filesystem::path& device_dir);

 private:
  TestRepository repo_;
  std::unique_ptr<ArtifactServer> server_;
  TempDir device_tmp_;
  FakeHealthChecker health_;
  RecordingReportSink reports_;
  std::shared_ptr<const security::EcdsaPrivateKey> device_key_;
  std::unique_ptr<security::EcdsaSigner> signer_;
  std::vector<std::chrono::milliseconds> sleeps_;
  HttpFetcherOptions fetcher_options_;
};

}  // namespace flotilla::ota::testing
