#include "test_agents.h"

#include <cstdio>
#include <thread>

#include "flotilla/aggregation/crypto_suite.h"
#include "flotilla/coordinator/round_fast_identity.h"
#include "flotilla/core/file.h"
#include "flotilla/device/local_trainer.h"
#include "flotilla/protocol/mqtt_transport.h"
#include "flotilla/security/identity.h"

namespace flotilla::testsupport {

std::string TestAgents::DeviceId(const std::string& prefix, int i) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%02d", i);
  return prefix + buf;
}

Result<std::unique_ptr<TestAgents>> TestAgents::Start(TestPki& pki, const TestAgentOptions& o) {
  std::unique_ptr<TestAgents> fleet(new TestAgents());
  fleet->pool_ = std::make_unique<device::WorkerPool>(o.worker_threads);
  fleet->blobs_ = std::make_shared<device::HttpBlobClient>(device::HttpBlobClientOptions{});
  FLT_ASSIGN_OR_RETURN(std::string coordinator_pem, ReadFileString(o.coordinator_cert));
  // Every device checks every coordinator message: with fast_crypto that is OpenSSL too
  // (round_fast_identity_test proves the two verifiers agree).
  std::shared_ptr<protocol::SignatureVerifier> coordinator_keys;
  if (o.fast_crypto) {
    auto ring = std::make_shared<rounds::OpenSslKeyRing>();
    FLT_RETURN_IF_ERROR(ring->AddCertificatePem("coordinator", coordinator_pem));
    coordinator_keys = std::move(ring);
  } else {
    auto ring = std::make_shared<security::KeyRing>();
    FLT_ASSIGN_OR_RETURN(security::EcdsaPublicKey coordinator_key,
                         security::EcdsaPublicKey::FromCertificatePem(coordinator_pem));
    ring->Add("coordinator", std::move(coordinator_key));
    coordinator_keys = std::move(ring);
  }
  if (o.provisioned_peer_keys && !o.fast_crypto) {
    return InvalidArgumentError("test agents: provisioned_peer_keys needs fast_crypto");
  }
  std::shared_ptr<rounds::OpenSslKeyRing> peer_ring;
  if (o.provisioned_peer_keys) peer_ring = std::make_shared<rounds::OpenSslKeyRing>();
  for (int i = 0; i < o.devices; ++i) {
    const std::string id = DeviceId(o.id_prefix, i);
    FLT_ASSIGN_OR_RETURN(auto files, pki.IssueClient(id));
    const auto [cert, key_file] = files;
    FLT_ASSIGN_OR_RETURN(std::string key_pem, ReadFileString(key_file));
    FLT_ASSIGN_OR_RETURN(security::EcdsaPrivateKey private_key, security::EcdsaPrivateKey::FromPem(key_pem));
    auto key = std::make_shared<const security::EcdsaPrivateKey>(std::move(private_key));
    device::DeviceAgentConfig ac;
    ac.device_id = id;
    ac.data_dir = o.data_root / id;
    ac.groups = {o.group};
    ac.base_model.set_version(o.base_version);
    ac.base_model.set_sha256(o.base_sha256.data(), o.base_sha256.size());
    FLT_ASSIGN_OR_RETURN(ac.certificate_pem, ReadFileString(cert));
    if (peer_ring) {
      FLT_RETURN_IF_ERROR(peer_ring->AddCertificatePem(id, ac.certificate_pem));
      ac.advertise_certificate = false;  // nobody needs it: every neighbour has the key
    }
    ac.identity_public_key_der = key->public_key().der();
    ac.max_inline_envelope_bytes = o.max_inline_envelope_bytes;
    if (o.certified_peer_keys) {
      FLT_ASSIGN_OR_RETURN(ac.fleet_ca_pem, ReadFileString(pki.ca_cert));
    }
    device::DeviceAgentDeps deps;
    deps.transport_factory = [uri = o.broker_tls_uri, ca = pki.ca_cert.string(), id, cert = cert,
                              key_file = key_file](const protocol::Message& will)
        -> Result<std::unique_ptr<protocol::Transport>> {
      protocol::MqttTransportOptions mo;
      mo.server_uri = uri;
      mo.client_id = id;
      mo.tls = protocol::MqttTlsOptions{ca, cert.string(), key_file.string(), true};
      mo.will = protocol::MqttWill{will.topic, will.payload, will.retained, will.qos == 0 ? 1 : will.qos, 0};
      FLT_ASSIGN_OR_RETURN(std::unique_ptr<protocol::MqttTransport> t, protocol::MqttTransport::Create(mo));
      return std::unique_ptr<protocol::Transport>(std::move(t));
    };
    if (o.fast_crypto) {
      FLT_ASSIGN_OR_RETURN(std::unique_ptr<rounds::OpenSslEcdsaSigner> fast,
                           rounds::OpenSslEcdsaSigner::FromPem(id, key_pem));
      deps.signer = std::move(fast);
      deps.crypto = &aggregation::CoordinatorCryptoSuite();
    } else {
      deps.signer = std::make_shared<security::EcdsaSigner>(id, key);
    }
    deps.verifier = coordinator_keys;
    deps.peer_verifier = peer_ring;
    deps.trainer =
        std::make_shared<device::SeededLocalTrainer>(1000 + static_cast<uint64_t>(i), o.trainable, 0.05f);
    deps.uploader = fleet->blobs_;
    deps.fetcher = fleet->blobs_;
    deps.runner = fleet->pool_.get();
    FLT_ASSIGN_OR_RETURN(auto agent, device::DeviceAgent::Open(std::move(ac), std::move(deps)));
    fleet->agents_.push_back(std::move(agent));
  }
  // Staggered connects: a thousand TLS handshakes at once would time out.
  for (size_t i = 0; i < fleet->agents_.size(); ++i) {
    if (o.poll_threads == 0) {
      FLT_RETURN_IF_ERROR(fleet->agents_[i]->Start());
    } else {
      FLT_RETURN_IF_ERROR(fleet->agents_[i]->StartConnect());
    }
    if (o.connect_batch > 0 && (i + 1) % static_cast<size_t>(o.connect_batch) == 0) {
      std::this_thread::sleep_for(o.connect_batch_pause);
    }
  }
  for (int t = 0; t < o.poll_threads; ++t) {
    fleet->pollers_.emplace_back(
        [f = fleet.get(), t, n = o.poll_threads] { f->PollLoop(static_cast<size_t>(t), static_cast<size_t>(n)); });
  }
  return fleet;
}

void TestAgents::PollLoop(size_t first, size_t step) {
  while (!stop_.load()) {
    size_t handled = 0;
    for (size_t i = first; i < agents_.size(); i += step) handled += agents_[i]->Poll(std::chrono::milliseconds(0));
    if (handled == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

TestAgents::~TestAgents() {
  stop_.store(true);
  for (auto& t : pollers_) t.join();
  for (auto& a : agents_) a->Stop();
  agents_.clear();
}

bool TestAgents::WaitEnrolled(std::chrono::milliseconds timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    bool all = true;
    for (const auto& a : agents_) all = all && a->status().enrolled;
    if (all) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

}  // namespace flotilla::testsupport
