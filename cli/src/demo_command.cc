// `flotilla demo`: the foundation smoke demo. Everything is real: a fleet CA and
// certificates made by flotilla_security, a Mosquitto broker on a free loopback port with
// an mTLS listener and per-device ACLs, a coordinator and devices connected through
// MqttTransport, and ECDSA-signed envelopes checked on arrival (signature, recipient,
// topic binding, replay window). It then shows what gets refused: a replayed message, a
// forged sender, a publish on another device's topic and an oversized payload.
// Exit code 0 only if every step behaved as expected.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "command_registry.h"
#include "flotilla/core/file.h"
#include "flotilla/core/log.h"
#include "flotilla/core/random.h"
#include "flotilla/protocol/envelope.h"
#include "flotilla/protocol/mosquitto_broker.h"
#include "flotilla/protocol/mqtt_transport.h"
#include "flotilla/protocol/payload.h"
#include "flotilla/protocol/replay_window.h"
#include "flotilla/protocol/topics.h"
#include "flotilla/security/csprng.h"
#include "flotilla/security/identity.h"
#include "flotilla/security/x509.h"

namespace flotilla::cli {
namespace {

using namespace std::chrono_literals;
using protocol::MqttTransport;
using protocol::OpenedEnvelope;

constexpr std::string_view kGroup = "demo";

struct DemoOptions {
  std::string work_dir;
  int devices = 2;
};

// One MQTT participant: identity, transport and what it has received (already verified).
struct Participant {
  std::string id;
  std::shared_ptr<const security::EcdsaPrivateKey> key;
  std::unique_ptr<security::EcdsaSigner> signer;
  std::unique_ptr<MqttTransport> transport;
  protocol::ReplayWindow replay;
  std::vector<std::string> recipients;  // whom this participant answers to
  std::vector<OpenedEnvelope> accepted;
  std::vector<std::string> refused;  // reasons
};

class Demo {
 public:
  explicit Demo(DemoOptions options) : options_(std::move(options)) {}

  int Run() {
    Status s = RunSteps();
    std::printf("\n");
    if (!s.ok()) {
      std::printf("demo FAILED: %s\n", s.ToString().c_str());
      return 1;
    }
    std::printf("demo: all %d checks passed\n", checks_);
    return 0;
  }

 private:
  Status Check(bool ok, const std::string& what) {
    ++checks_;
    std::printf("  [%s] %s\n", ok ? "ok" : "FAIL", what.c_str());
    std::fflush(stdout);
    if (!ok) return InternalError("check failed: " + what);
    return Status::Ok();
  }

  Status RunSteps() {
    // --- 1. PKI --------------------------------------------------------------------
    std::optional<TempDir> temp;
    std::filesystem::path dir;
    if (options_.work_dir.empty()) {
      FLT_ASSIGN_OR_RETURN(TempDir t, TempDir::Create("flotilla-demo"));
      temp.emplace(std::move(t));
      dir = temp->path();
    } else {
      dir = options_.work_dir;
      std::error_code ec;
      std::filesystem::create_directories(dir, ec);
      if (ec) return UnavailableError("cannot create " + dir.string() + ": " + ec.message());
    }
    std::printf("flotilla demo — work dir %s\n\n1. fleet PKI (ECDSA P-256, made in-process)\n", dir.c_str());
    FLT_ASSIGN_OR_RETURN(auto ca, security::CreateCertificateAuthority("flotilla-demo-ca"));
    FLT_RETURN_IF_ERROR(WriteFileAtomic(dir / "ca.crt", ca.cert_pem));
    security::CertificateRequest broker_req;
    broker_req.common_name = "broker";
    broker_req.role = security::CertificateRole::kServer;
    broker_req.dns_names = {"localhost"};
    broker_req.ip_addresses = {"127.0.0.1"};
    FLT_ASSIGN_OR_RETURN(auto broker_cert, security::IssueCertificate(ca, broker_req));
    FLT_RETURN_IF_ERROR(WriteFileAtomic(dir / "broker.crt", broker_cert.cert_pem));
    FLT_RETURN_IF_ERROR(WriteFileAtomic(dir / "broker.key", broker_cert.key_pem, 0600));
    std::printf("  fleet CA, broker certificate (SAN 127.0.0.1, localhost)\n");

    std::vector<std::string> ids = {std::string(protocol::kCoordinatorId)};
    for (int i = 1; i <= options_.devices; ++i) {
      char name[32];
      std::snprintf(name, sizeof name, "dev-%04d", i);
      ids.push_back(name);
    }
    std::map<std::string, security::CertificateAndKey> certs;
    for (const auto& id : ids) {
      security::CertificateRequest req;
      req.common_name = id;
      req.role = id == protocol::kCoordinatorId ? security::CertificateRole::kBoth : security::CertificateRole::kClient;
      FLT_ASSIGN_OR_RETURN(auto cert, security::IssueCertificate(ca, req));
      FLT_RETURN_IF_ERROR(security::VerifyCertificate(ca.cert_pem, cert.cert_pem));
      FLT_RETURN_IF_ERROR(WriteFileAtomic(dir / (id + ".crt"), cert.cert_pem));
      FLT_RETURN_IF_ERROR(WriteFileAtomic(dir / (id + ".key"), cert.key_pem, 0600));
      certs[id] = std::move(cert);
      std::printf("  certificate for %s (CN = client id = MQTT username)\n", id.c_str());
    }

    // --- 2. broker -----------------------------------------------------------------
    protocol::MosquittoBrokerOptions bopts;
    bopts.work_dir = dir / "broker";
    std::filesystem::create_directories(bopts.work_dir);
    bopts.tls = protocol::MosquittoTlsListenerOptions{dir / "ca.crt", dir / "broker.crt", dir / "broker.key",
                                                      std::string(protocol::kCoordinatorId)};
    FLT_ASSIGN_OR_RETURN(auto broker, protocol::MosquittoBroker::Start(bopts));
    std::printf("\n2. mosquitto (pid %d): plain %s, mTLS %s (require_certificate, ACL per device)\n",
                static_cast<int>(broker->pid()), broker->plain_uri().c_str(), broker->tls_uri().c_str());

    // --- 3. participants -------------------------------------------------------------
    // Everyone knows everyone's public key from the certificates (in the product the
    // coordinator's registry fills the key ring at enrolment).
    auto ring = std::make_shared<security::KeyRing>();
    for (const auto& [id, cert] : certs) {
      FLT_ASSIGN_OR_RETURN(auto pub, security::EcdsaPublicKey::FromCertificatePem(cert.cert_pem));
      ring->Add(id, pub);
    }
    std::printf("\n3. connect over mTLS\n");
    std::map<std::string, size_t> filter_counts;
    for (const auto& id : ids) {
      auto p = std::make_unique<Participant>();
      p->id = id;
      FLT_ASSIGN_OR_RETURN(auto key, security::EcdsaPrivateKey::FromPem(certs[id].key_pem));
      p->key = std::make_shared<const security::EcdsaPrivateKey>(std::move(key));
      p->signer = std::make_unique<security::EcdsaSigner>(id, p->key);
      const bool is_coordinator = id == protocol::kCoordinatorId;
      p->recipients = is_coordinator ? std::vector<std::string>{std::string(protocol::kCoordinatorId)}
                                     : std::vector<std::string>{id, protocol::GroupRecipient(kGroup)};
      protocol::MqttTransportOptions topts;
      topts.server_uri = broker->tls_uri();
      topts.client_id = id;
      topts.tls = protocol::MqttTlsOptions{(dir / "ca.crt").string(), (dir / (id + ".crt")).string(),
                                           (dir / (id + ".key")).string(), true};
      if (!is_coordinator) {
        // The Will is a pre-signed OFFLINE presence: the broker publishes it if we vanish.
        v1::Presence offline;
        offline.set_state(v1::PRESENCE_STATE_OFFLINE);
        offline.set_timestamp_ms(RealClock().NowUnixMillis());
        FLT_ASSIGN_OR_RETURN(Bytes will, protocol::SealMessage(*p->signer, offline, protocol::kCoordinatorId,
                                                               RealClock(), security::SystemCsprng()));
        FLT_ASSIGN_OR_RETURN(std::string will_topic, protocol::FormatTopic(protocol::Topic::Presence(id)));
        topts.will = protocol::MqttWill{will_topic, std::move(will), true, 1, 5};
      }
      FLT_ASSIGN_OR_RETURN(p->transport, MqttTransport::Create(std::move(topts)));
      Participant* raw = p.get();
      p->transport->SetMessageHandler([this, raw, ring](const protocol::Message& m) { OnMessage(*raw, *ring, m); });
      auto filters = is_coordinator ? protocol::CoordinatorSubscriptions()
                                    : protocol::DeviceSubscriptions(id, std::vector<std::string>{std::string(kGroup)});
      FLT_RETURN_IF_ERROR(filters.status());
      for (const auto& f : *filters) FLT_RETURN_IF_ERROR(p->transport->Subscribe(f.filter, f.qos));
      // Connect everyone in parallel: a lone Paho connect waits on its 1 s poll tick.
      FLT_RETURN_IF_ERROR(p->transport->StartConnect().WithContext("connecting " + id));
      filter_counts[id] = filters->size();
      participants_[id] = std::move(p);
    }
    const auto t0 = std::chrono::steady_clock::now();
    for (auto& [id, p] : participants_) {
      FLT_RETURN_IF_ERROR(p->transport->WaitConnected(15s).WithContext("connecting " + id));
    }
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
    for (auto& [id, p] : participants_) {
      std::printf("  %-12s connected, subscribed to %zu filter(s)\n", id.c_str(), filter_counts[id]);
    }
    std::printf("  %zu mTLS connections up in %lld ms\n", participants_.size(), static_cast<long long>(ms));
    Participant& coord = *participants_[std::string(protocol::kCoordinatorId)];
    Participant& dev1 = *participants_["dev-0001"];
    Participant& dev2 = *participants_[options_.devices >= 2 ? "dev-0002" : "dev-0001"];

    // --- 4. uplink: presence + reported state ------------------------------------------
    std::printf("\n4. devices report presence and state (signed envelopes, retained)\n");
    for (auto& [id, p] : participants_) {
      if (id == protocol::kCoordinatorId) continue;
      v1::Presence online;
      online.set_state(v1::PRESENCE_STATE_ONLINE);
      online.set_timestamp_ms(RealClock().NowUnixMillis());
      FLT_RETURN_IF_ERROR(SendTo(*p, protocol::Topic::Presence(id), online, protocol::kCoordinatorId));
      v1::ReportedState reported;
      reported.set_firmware_version("demo-1.0");
      reported.set_adapter_version("none");
      reported.mutable_eligibility()->set_charging(true);
      reported.mutable_eligibility()->set_idle(true);
      reported.mutable_eligibility()->set_battery_percent(100);
      reported.mutable_capabilities()->set_cpu_cores(2);
      reported.add_groups(std::string(kGroup));
      reported.set_timestamp_ms(RealClock().NowUnixMillis());
      FLT_RETURN_IF_ERROR(SendTo(*p, protocol::Topic::Reported(id), reported, protocol::kCoordinatorId));
    }
    const size_t expect_up = 2 * static_cast<size_t>(options_.devices);
    PumpUntil([&] { return coord.accepted.size() >= expect_up; }, 10s);
    FLT_RETURN_IF_ERROR(Check(coord.accepted.size() == expect_up,
                              "coordinator verified " + std::to_string(coord.accepted.size()) + "/" +
                                  std::to_string(expect_up) + " signed uplink envelopes"));

    // --- 5. downlink: a round announcement to the group ----------------------------------
    std::printf("\n5. coordinator announces a round to group '%s'\n", std::string(kGroup).c_str());
    v1::RoundAnnouncement ann;
    ann.set_round_id("round-1");
    ann.set_group(std::string(kGroup));
    ann.set_target_cohort_size(static_cast<uint32_t>(options_.devices));
    ann.set_check_in_deadline_ms(RealClock().NowUnixMillis() + 60'000);
    FLT_ASSIGN_OR_RETURN(Bytes ann_wire, protocol::SealMessage(*coord.signer, ann, protocol::GroupRecipient(kGroup),
                                                               RealClock(), security::SystemCsprng()));
    FLT_ASSIGN_OR_RETURN(std::string round_topic, protocol::FormatTopic(protocol::Topic::GroupRound(std::string(kGroup))));
    FLT_RETURN_IF_ERROR(coord.transport->Publish(round_topic, ann_wire, {}));
    auto devices_with = [&](size_t n) {
      for (auto& [id, p] : participants_)
        if (id != protocol::kCoordinatorId && p->accepted.size() < n) return false;
      return true;
    };
    PumpUntil([&] { return devices_with(1); }, 10s);
    FLT_RETURN_IF_ERROR(Check(devices_with(1), "every device verified the coordinator's announcement"));

    // Devices answer on their own event topic.
    for (auto& [id, p] : participants_) {
      if (id == protocol::kCoordinatorId) continue;
      v1::RoundResponse resp;
      resp.set_round_id("round-1");
      resp.set_accepted(true);
      FLT_RETURN_IF_ERROR(SendTo(*p, protocol::Topic::Event(id, std::string(protocol::topic_names::kRoundEvent)), resp,
                                 protocol::kCoordinatorId));
    }
    PumpUntil([&] { return coord.accepted.size() >= expect_up + static_cast<size_t>(options_.devices); }, 10s);
    FLT_RETURN_IF_ERROR(Check(coord.accepted.size() == expect_up + static_cast<size_t>(options_.devices),
                              "coordinator verified every device's round response"));

    // --- 6. what gets refused ------------------------------------------------------------
    std::printf("\n6. attacks and limits\n");
    // a) replay: the same announcement bytes again.
    size_t refused_before = dev1.refused.size();
    FLT_RETURN_IF_ERROR(coord.transport->Publish(round_topic, ann_wire, {}));
    PumpUntil([&] { return dev1.refused.size() > refused_before; }, 10s);
    FLT_RETURN_IF_ERROR(Check(dev1.refused.size() > refused_before && dev1.accepted.size() == 1,
                              "replayed announcement refused by dev-0001: " + LastReason(dev1)));

    // b) forged sender: dev2's key signs an envelope that claims to come from dev-0001.
    refused_before = coord.refused.size();
    size_t accepted_before = coord.accepted.size();
    security::EcdsaSigner forger("dev-0001", dev2.key);
    v1::ReportedState fake;
    fake.set_firmware_version("evil");
    FLT_ASSIGN_OR_RETURN(Bytes forged, protocol::SealMessage(forger, fake, protocol::kCoordinatorId, RealClock(),
                                                             security::SystemCsprng()));
    FLT_ASSIGN_OR_RETURN(std::string dev2_topic, protocol::FormatTopic(protocol::Topic::Reported(dev2.id)));
    FLT_RETURN_IF_ERROR(dev2.transport->Publish(dev2_topic, forged, {}));
    PumpUntil([&] { return coord.refused.size() > refused_before; }, 10s);
    FLT_RETURN_IF_ERROR(Check(coord.refused.size() > refused_before && coord.accepted.size() == accepted_before,
                              "forged sender refused by the coordinator: " + LastReason(coord)));

    // c) ACL: a device publishing on another device's topic is refused by the broker.
    if (options_.devices >= 2) {
      FLT_ASSIGN_OR_RETURN(std::string other, protocol::FormatTopic(protocol::Topic::Reported(dev1.id)));
      v1::ReportedState r;
      FLT_ASSIGN_OR_RETURN(Bytes wire, protocol::SealMessage(*dev2.signer, r, protocol::kCoordinatorId, RealClock(),
                                                             security::SystemCsprng()));
      protocol::PublishOptions po;
      po.ack_timeout = 5s;
      Status acl = dev2.transport->Publish(other, wire, po);
      accepted_before = coord.accepted.size();
      PumpUntil([] { return false; }, 500ms);
      FLT_RETURN_IF_ERROR(Check(acl.code() == StatusCode::kPermissionDenied && coord.accepted.size() == accepted_before,
                                "dev-0002 publishing on dev-0001's topic refused by the broker: " + acl.message()));
    }

    // d) payload over the 128 KiB cap never leaves the device.
    Bytes big(200 * 1024, 0x5a);
    FLT_ASSIGN_OR_RETURN(std::string dev1_event, protocol::FormatTopic(protocol::Topic::Event(dev1.id, "blob")));
    Status too_big = dev1.transport->Publish(dev1_event, big, {});
    FLT_RETURN_IF_ERROR(Check(too_big.code() == StatusCode::kResourceExhausted,
                              "200 KiB payload refused locally: " + too_big.message()));

    // --- 7. tidy shutdown -------------------------------------------------------------------
    std::printf("\n7. shutdown\n");
    for (auto& [id, p] : participants_) FLT_RETURN_IF_ERROR(p->transport->Disconnect());
    participants_.clear();
    FLT_RETURN_IF_ERROR(broker->Stop());
    std::printf("  clients disconnected, broker stopped\n");
    return Status::Ok();
  }

  template <typename Msg>
  Status SendTo(Participant& from, const protocol::Topic& topic, const Msg& msg, std::string_view recipient) {
    FLT_ASSIGN_OR_RETURN(Bytes wire, protocol::SealMessage(*from.signer, msg, recipient, RealClock(),
                                                           security::SystemCsprng()));
    FLT_ASSIGN_OR_RETURN(std::string name, protocol::FormatTopic(topic));
    protocol::PublishOptions po;
    po.retain = protocol::PolicyFor(topic.kind).retain;
    return from.transport->Publish(name, wire, po);
  }

  // Runs on the participant's owner thread (this one), from Poll().
  void OnMessage(Participant& p, const security::KeyRing& ring, const protocol::Message& m) {
    auto topic = protocol::ParseTopic(m.topic);
    if (!topic.ok()) return Refuse(p, m.topic, topic.status());
    protocol::OpenOptions opts;
    opts.recipients = p.recipients;
    auto env = protocol::Open(m.payload, ring, RealClock(), opts);
    if (!env.ok()) return Refuse(p, m.topic, env.status());
    if (Status s = protocol::CheckTopicBinding(*topic, *env); !s.ok()) return Refuse(p, m.topic, s);
    if (Status s = p.replay.Check(*env, RealClock()); !s.ok()) return Refuse(p, m.topic, s);
    std::printf("  %-12s <- %-34s %s from %s (signature ok)\n", p.id.c_str(), m.topic.c_str(),
                protocol::PayloadTypeName(env->payload_type).c_str(), env->sender_id.c_str());
    p.accepted.push_back(std::move(env).value());
  }

  void Refuse(Participant& p, const std::string& topic, const Status& why) {
    FLT_LOG(kDebug, "demo") << p.id << " refused a message on " << topic << ": " << why.ToString();
    p.refused.push_back(why.ToString());
  }

  static std::string LastReason(const Participant& p) { return p.refused.empty() ? "-" : p.refused.back(); }

  void PumpUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      size_t n = 0;
      for (auto& [id, p] : participants_) n += p->transport->Poll(0ms);
      if (n == 0) {
        // Nothing queued anywhere: block briefly on one transport.
        participants_.begin()->second->transport->Poll(20ms);
      }
    }
  }

  DemoOptions options_;
  std::map<std::string, std::unique_ptr<Participant>> participants_;
  int checks_ = 0;
};

CommandRegistration demo_registration("demo", [](CLI::App& root) {
  auto opts = std::make_shared<DemoOptions>();
  CLI::App* cmd = root.add_subcommand(
      "demo", "Smoke demo: broker with mTLS, a coordinator and devices exchanging signed envelopes");
  cmd->add_option("--work-dir", opts->work_dir, "Keep certificates and broker files here (default: temp dir)");
  cmd->add_option("--devices", opts->devices, "Number of devices")->check(CLI::Range(1, 50))->capture_default_str();
  cmd->callback([opts] { ExitCode() = Demo(*opts).Run(); });
});

}  // namespace
}  // namespace flotilla::cli
