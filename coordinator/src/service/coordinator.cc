#include "flotilla/coordinator/coordinator.h"

#include <chrono>
#include <thread>

#include "flotilla/coordinator/pki.h"
#include "flotilla/core/file.h"
#include "flotilla/core/log.h"
#include "flotilla/protocol/mqtt_transport.h"
#include "flotilla/protocol/version.h"
#include "flotilla/security/csprng.h"
#include "flotilla/security/identity.h"

namespace flotilla::coordinator {

struct Coordinator::Mqtt {
  std::shared_ptr<const security::EcdsaPrivateKey> key;
  std::unique_ptr<security::EcdsaSigner> signer;
  std::unique_ptr<protocol::MqttTransport> transport;
};

Coordinator::~Coordinator() { (void)Shutdown(); }

Result<std::unique_ptr<Coordinator>> Coordinator::Start(const CoordinatorConfig& config) {
  std::unique_ptr<Coordinator> c(new Coordinator());
  c->config_ = config;
  FLT_ASSIGN_OR_RETURN(c->store_, Store::Open(config.data_dir));
  FLT_RETURN_IF_ERROR(c->metrics_.LoadFrom(*c->store_));

  std::string ca_pem;
  if (!config.pki_dir.empty()) {
    FLT_ASSIGN_OR_RETURN(ca_pem, ReadFileString(PkiLayout{config.pki_dir}.ca_cert(), 1 << 20));
  } else if (config.broker && !config.broker->ca_file.empty()) {
    FLT_ASSIGN_OR_RETURN(ca_pem, ReadFileString(config.broker->ca_file, 1 << 20));
  }
  c->enrolment_ = std::make_unique<Enrolment>(*c->store_, ca_pem, config.enrolment, RealClock());

  ApiServerOptions http;
  http.host = config.http_listen;
  http.port = config.http_port;
  http.max_upload_bytes = config.max_upload_bytes;
  http.public_url = config.public_url;
  http.round_defaults_json = config.round_defaults_json;
  FLT_ASSIGN_OR_RETURN(c->http_, ApiServer::Start(*c->store_, c->metrics_, http));

  if (config.broker) {
    if (ca_pem.empty()) return FailedPreconditionError("coordinator: enrolment needs the fleet CA (pki_dir or broker.ca_file)");
    auto m = std::make_unique<Mqtt>();
    FLT_ASSIGN_OR_RETURN(std::string key_pem, ReadFileString(config.broker->key_file, 1 << 20));
    FLT_ASSIGN_OR_RETURN(auto key, security::EcdsaPrivateKey::FromPem(key_pem));
    m->key = std::make_shared<const security::EcdsaPrivateKey>(std::move(key));
    m->signer = std::make_unique<security::EcdsaSigner>(std::string(protocol::kCoordinatorId), m->key);
    protocol::MqttTransportOptions topts;
    topts.server_uri = config.broker->uri;
    topts.client_id = std::string(protocol::kCoordinatorId);
    if (config.broker->uri.rfind("ssl://", 0) == 0) {
      topts.tls = protocol::MqttTlsOptions{config.broker->ca_file.string(), config.broker->cert_file.string(),
                                           config.broker->key_file.string(), true};
    }
    FLT_ASSIGN_OR_RETURN(m->transport, protocol::MqttTransport::Create(std::move(topts)));
    c->endpoint_ = std::make_unique<DeviceEndpoint>(*m->transport, *c->store_, *c->enrolment_, *m->signer, RealClock(),
                                                    security::SystemCsprng());
    FLT_RETURN_IF_ERROR(c->endpoint_->Start());
    FLT_RETURN_IF_ERROR(m->transport->StartConnect());
    FLT_RETURN_IF_ERROR(m->transport->WaitConnected(std::chrono::seconds(15)).WithContext("connecting to " + config.broker->uri));
    FLT_LOG(kInfo, "coordinator") << "connected to " << config.broker->uri;
    c->mqtt_ = std::move(m);
  }
  return c;
}

void Coordinator::Run(const std::atomic<bool>& stop) {
  using clock = std::chrono::steady_clock;
  auto next_flush = clock::now() + std::chrono::seconds(config_.metrics_flush_seconds);
  while (!stop.load()) {
    if (mqtt_) {
      mqtt_->transport->Poll(std::chrono::milliseconds(100));
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (clock::now() >= next_flush) {
      Status s = metrics_.FlushTo(*store_);
      if (!s.ok()) {
        FLT_LOG(kWarn, "coordinator") << "metrics flush: " << s.ToString();
      }
      next_flush = clock::now() + std::chrono::seconds(config_.metrics_flush_seconds);
    }
  }
}

Status Coordinator::Shutdown() {
  if (shut_down_) return Status::Ok();
  shut_down_ = true;
  if (http_) http_->Stop();
  Status s;
  if (mqtt_) s = mqtt_->transport->Disconnect();
  endpoint_.reset();
  mqtt_.reset();
  if (store_) {
    Status f = metrics_.FlushTo(*store_);
    if (s.ok()) s = f;
  }
  return s;
}

}  // namespace flotilla::coordinator
