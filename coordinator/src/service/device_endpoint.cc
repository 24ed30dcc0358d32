#include "flotilla/coordinator/device_endpoint.h"

#include "flotilla/core/log.h"
#include "flotilla/protocol/payload.h"
#include "flotilla/security/identity.h"

namespace flotilla::coordinator {

Status StoreKeyVerifier::Verify(std::string_view identity, ByteSpan message, ByteSpan signature) const {
  FLT_ASSIGN_OR_RETURN(DeviceRecord d, store_.GetDevice(identity));
  if (d.status != DeviceStatus::kActive) return PermissionDeniedError("device '" + d.id + "' is revoked");
  FLT_ASSIGN_OR_RETURN(security::EcdsaPublicKey key, security::EcdsaPublicKey::FromDer(d.identity_public_key));
  return key.Verify(message, signature);
}

DeviceEndpoint::DeviceEndpoint(protocol::Transport& transport, Store& store, Enrolment& enrolment,
                               const protocol::Signer& signer, const Clock& clock, Random& random)
    : transport_(transport),
      store_(store),
      enrolment_(enrolment),
      signer_(signer),
      clock_(clock),
      random_(random),
      verifier_(store) {}

Status DeviceEndpoint::Start() {
  transport_.SetMessageHandler([this](const protocol::Message& m) { HandleMessage(m); });
  FLT_ASSIGN_OR_RETURN(auto filters, protocol::CoordinatorSubscriptions());
  for (const auto& f : filters) FLT_RETURN_IF_ERROR(transport_.Subscribe(f.filter, f.qos));
  return Status::Ok();
}

DeviceEndpointStats DeviceEndpoint::stats() const {
  return {accepted_.load(), refused_.load(), enrolments_.load(), enrolments_refused_.load()};
}

void DeviceEndpoint::Refuse(const std::string& topic, const Status& why) {
  ++refused_;
  FLT_LOG(kDebug, "endpoint") << "refused message on " << topic << ": " << why.ToString();
}

void DeviceEndpoint::HandleEnrolment(const std::string& device_id, const protocol::Message& m) {
  Result<DeviceRecord> outcome = enrolment_.HandleEnvelope(device_id, m.payload);
  if (outcome.ok()) {
    ++enrolments_;
  } else {
    ++enrolments_refused_;
    FLT_LOG(kInfo, "endpoint") << "enrolment of " << device_id << " refused: " << outcome.status().ToString();
  }
  const v1::EnrolmentResponse response = Enrolment::ResponseFor(device_id, outcome);
  auto wire = protocol::SealMessage(signer_, response, device_id, clock_, random_);
  auto topic = protocol::FormatTopic(
      protocol::Topic::Command(device_id, std::string(protocol::topic_names::kEnrolmentCommand)));
  if (!wire.ok() || !topic.ok()) return;
  protocol::PublishOptions po;
  po.message_expiry_seconds = 300;
  Status s = transport_.Publish(*topic, *wire, po);
  if (!s.ok()) {
    FLT_LOG(kWarn, "endpoint") << "cannot answer enrolment of " << device_id << ": " << s.ToString();
  }
}

void DeviceEndpoint::HandleMessage(const protocol::Message& m) {
  if (m.payload.empty()) return;  // a cleared retained message
  auto topic = protocol::ParseTopic(m.topic);
  if (!topic.ok()) return Refuse(m.topic, topic.status());
  if (!protocol::IsUplink(topic->kind)) return Refuse(m.topic, InvalidArgumentError("not an uplink topic"));
  if (topic->kind == protocol::TopicKind::kEvent && topic->name == protocol::topic_names::kEnrolEvent) {
    return HandleEnrolment(topic->device_id, m);
  }
  protocol::OpenOptions opts;
  opts.recipients = {std::string(protocol::kCoordinatorId)};
  // Retained presence/reported may be old (the device's last word before we started):
  // the replay window still bounds it, the store ignores anything older than it has.
  auto env = protocol::Open(m.payload, verifier_, clock_, opts);
  if (!env.ok()) return Refuse(m.topic, env.status());
  if (Status s = protocol::CheckTopicBinding(*topic, *env); !s.ok()) return Refuse(m.topic, s);
  if (Status s = replay_.Check(*env, clock_); !s.ok()) return Refuse(m.topic, s);
  ++accepted_;
  switch (topic->kind) {
    case protocol::TopicKind::kPresence: {
      auto p = protocol::UnpackPayload<v1::Presence>(*env);
      if (!p.ok()) return Refuse(m.topic, p.status());
      const PresenceState state = p->state() == v1::PRESENCE_STATE_ONLINE    ? PresenceState::kOnline
                                  : p->state() == v1::PRESENCE_STATE_OFFLINE ? PresenceState::kOffline
                                                                             : PresenceState::kUnknown;
      if (state == PresenceState::kUnknown) return Refuse(m.topic, InvalidArgumentError("presence state unspecified"));
      auto changed = store_.SetPresence(topic->device_id, state, p->session_id().substr(0, 64), p->timestamp_ms());
      if (!changed.ok()) {
        FLT_LOG(kWarn, "endpoint") << "presence of " << topic->device_id << ": " << changed.status().ToString();
      }
      return;
    }
    case protocol::TopicKind::kReported: {
      auto r = protocol::UnpackPayload<v1::ReportedState>(*env);
      if (!r.ok()) return Refuse(m.topic, r.status());
      Status s = store_.SetReportedState(topic->device_id, AsBytes(env->payload), r->timestamp_ms());
      if (!s.ok()) {
        FLT_LOG(kWarn, "endpoint") << "reported state of " << topic->device_id << ": " << s.ToString();
      }
      return;
    }
    default:
      (void)store_.TouchDevice(topic->device_id);
      if (uplink_) uplink_(*topic, *env);
      return;
  }
}

}  // namespace flotilla::coordinator
