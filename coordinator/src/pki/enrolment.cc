#include "flotilla/coordinator/enrolment.h"

#include "flotilla/core/log.h"
#include "flotilla/protocol/envelope.h"
#include "flotilla/protocol/payload.h"
#include "flotilla/protocol/topics.h"
#include "flotilla/protocol/version.h"
#include "flotilla/security/identity.h"
#include "flotilla/security/x509.h"
#include "flotilla/v1/envelope.pb.h"

namespace flotilla::coordinator {
namespace {

constexpr size_t kMaxCertificatePem = 16 * 1024;

}  // namespace

Result<v1::EnrolmentRequest> PeekEnrolmentRequest(ByteSpan wire) {
  if (wire.size() > protocol::kMaxEnvelopeBytes) {
    return InvalidArgumentError("enrolment: envelope of " + std::to_string(wire.size()) + " bytes is over the limit");
  }
  v1::Envelope envelope;
  if (!envelope.ParseFromArray(wire.data(), static_cast<int>(wire.size()))) {
    return InvalidArgumentError("enrolment: not an envelope");
  }
  v1::EnvelopeBody body;
  if (!body.ParseFromString(envelope.body())) return InvalidArgumentError("enrolment: envelope body does not parse");
  if (body.payload_type() != v1::PAYLOAD_TYPE_ENROLMENT_REQUEST) {
    return InvalidArgumentError("enrolment: envelope carries " + protocol::PayloadTypeName(body.payload_type()) +
                                ", expected ENROLMENT_REQUEST");
  }
  v1::EnrolmentRequest request;
  FLT_RETURN_IF_ERROR(protocol::ParsePayload(body.payload(), request));
  if (request.device_id() != body.sender_id()) {
    return InvalidArgumentError("enrolment: request names device '" + request.device_id() + "' but the sender is '" +
                                body.sender_id() + "'");
  }
  if (request.certificate_pem().size() > kMaxCertificatePem) {
    return InvalidArgumentError("enrolment: certificate larger than 16 KiB");
  }
  return request;
}

Enrolment::Enrolment(Store& store, std::string ca_cert_pem, EnrolmentPolicy policy, const Clock& clock)
    : store_(store), ca_cert_pem_(std::move(ca_cert_pem)), policy_(policy), clock_(clock) {}

Result<DeviceRecord> Enrolment::HandleEnvelope(std::string_view topic_device_id, ByteSpan wire) {
  FLT_ASSIGN_OR_RETURN(v1::EnrolmentRequest peeked, PeekEnrolmentRequest(wire));
  const std::string& id = peeked.device_id();
  FLT_RETURN_IF_ERROR(protocol::ValidateName("device id", id));
  if (id != topic_device_id) {
    return PermissionDeniedError("enrolment: request for '" + id + "' arrived on the topic of '" +
                                 std::string(topic_device_id) + "'");
  }
  if (id == protocol::kCoordinatorId) return PermissionDeniedError("enrolment: reserved device id");
  const std::string& key_der = peeked.identity_public_key();
  FLT_ASSIGN_OR_RETURN(security::EcdsaPublicKey key,
                       security::EcdsaPublicKey::FromDer(AsBytes(key_der)));
  if (!peeked.certificate_pem().empty()) {
    const std::string& cert = peeked.certificate_pem();
    FLT_RETURN_IF_ERROR(security::VerifyCertificate(ca_cert_pem_, cert).WithContext("enrolment certificate"));
    FLT_ASSIGN_OR_RETURN(std::string cn, security::CertificateCommonName(cert));
    if (cn != id) {
      return PermissionDeniedError("enrolment: certificate CN '" + cn + "' differs from device id '" + id + "'");
    }
    FLT_ASSIGN_OR_RETURN(security::EcdsaPublicKey cert_key, security::EcdsaPublicKey::FromCertificatePem(cert));
    if (!(cert_key == key)) {
      return PermissionDeniedError("enrolment: identity key differs from the certificate's key");
    }
  } else if (peeked.enrolment_token().empty()) {
    return PermissionDeniedError("enrolment: needs a fleet certificate or an enrolment token");
  }
  // Now the full envelope check (signature, version, recipient, timestamp) with the key
  // the request named: nothing below trusts the peeked copy.
  security::KeyRing ring;
  ring.Add(id, key);
  protocol::OpenOptions opts;
  opts.recipients = {std::string(protocol::kCoordinatorId)};
  FLT_ASSIGN_OR_RETURN(protocol::OpenedEnvelope env, protocol::Open(wire, ring, clock_, opts));
  FLT_RETURN_IF_ERROR(protocol::CheckTopicBinding(
      protocol::Topic::Event(id, std::string(protocol::topic_names::kEnrolEvent)), env));
  FLT_ASSIGN_OR_RETURN(v1::EnrolmentRequest request, protocol::UnpackPayload<v1::EnrolmentRequest>(env));

  EnrolDeviceRequest record;
  record.device_id = id;
  record.identity_public_key = key.der();
  record.certificate_pem = request.certificate_pem();
  if (request.has_hardware()) record.hardware = ToBytes(request.hardware().SerializeAsString());
  record.firmware_version = request.firmware_version().substr(0, 128);
  record.sdk_version = request.sdk_version().substr(0, 128);
  record.enrolment_token = request.enrolment_token();
  record.require_token = policy_.require_token;
  return store_.EnrolDevice(record, "mqtt");
}

v1::EnrolmentResponse Enrolment::ResponseFor(std::string_view device_id, const Result<DeviceRecord>& outcome) {
  v1::EnrolmentResponse r;
  r.set_device_id(std::string(device_id));
  r.set_coordinator_id(std::string(protocol::kCoordinatorId));
  r.set_accepted(outcome.ok());
  if (outcome.ok()) {
    for (const auto& g : outcome->groups) r.add_groups(g);
  } else {
    r.set_reason(outcome.status().message());
  }
  return r;
}

}  // namespace flotilla::coordinator
