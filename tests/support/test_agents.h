// Real DeviceAgents for coordinator integration tests (target flotilla_test_agents): each
// gets a fleet certificate from the TestPki, its identity key, an mTLS MQTT session to the
// broker, a SeededLocalTrainer and HttpBlobClient uploads/fetches, and runs on its own
// thread. They enrol over MQTT with their certificates. Never commit what they write.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "flotilla/core/status.h"
#include "flotilla/device/agent.h"
#include "flotilla/device/blob_client.h"
#include "flotilla/device/worker_pool.h"
#include "test_pki.h"

namespace flotilla::testsupport {

struct TestAgentOptions {
  int devices = 10;
  std::string id_prefix = "dev-";          // ids are <prefix><two-digit index>
  std::filesystem::path data_root;         // <data_root>/<id> per device
  std::string broker_tls_uri;
  std::filesystem::path coordinator_cert;  // verifies the coordinator's envelopes
  std::string group = "fleet";
  std::string base_version = "base-test";
  Bytes base_sha256;                       // 32 bytes
  size_t max_inline_envelope_bytes = 64 * 1024;  // small: every masked input goes over HTTP
  bool certified_peer_keys = false;        // hardened profile: neighbours' keys from advert certificates
  // Hardened profile: every device is provisioned with the fleet's identity keys (one
  // shared OpenSSL key ring, DeviceAgentDeps::peer_verifier). Needs fast_crypto.
  bool provisioned_peer_keys = false;
  size_t trainable = 16;                   // SeededLocalTrainer's examples (not the vector length)
  // 0: every agent on its own thread (DeviceAgent::Start). N: N threads poll all agents
  // round-robin (thousands of agents in one process, as the simulator does).
  int poll_threads = 0;
  // The coordinator's OpenSSL signer, verifier and crypto suite on the devices too (thousands of
  // simulated devices on two cores; fast_crypto_test proves the suites bit-identical).
  bool fast_crypto = false;
  // Connects are started in batches of this many, `connect_batch_pause` apart.
  int connect_batch = 100;
  std::chrono::milliseconds connect_batch_pause{100};
  uint32_t worker_threads = 2;
};

class TestAgents {
 public:
  // Issues certificates from `pki`, opens and starts every agent. The first error stops.
  static Result<std::unique_ptr<TestAgents>> Start(TestPki& pki, const TestAgentOptions& options);
  ~TestAgents();  // stops every agent

  // True once every agent is enrolled, false after `timeout`.
  bool WaitEnrolled(std::chrono::milliseconds timeout) const;
  std::vector<std::unique_ptr<device::DeviceAgent>>& agents() { return agents_; }
  static std::string DeviceId(const std::string& prefix, int i);

 private:
  TestAgents() = default;
  void PollLoop(size_t first, size_t step);
  std::unique_ptr<device::WorkerPool> pool_;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> pollers_;
  std::shared_ptr<device::HttpBlobClient> blobs_;
  std::vector<std::unique_ptr<device::DeviceAgent>> agents_;
};

}  // namespace flotilla::testsupport
