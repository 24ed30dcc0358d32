// Every flotilla.v1 message round-trips with every field set, enums follow the rules of
// the .proto headers, and the v1 wire format (field numbers and types) stays frozen.
#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "flotilla/protocol/payload.h"
#include "flotilla/v1/device.pb.h"
#include "flotilla/v1/envelope.pb.h"
#include "flotilla/v1/ota.pb.h"
#include "flotilla/v1/round.pb.h"

namespace flotilla::protocol {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::EnumDescriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::FileDescriptor;
using google::protobuf::Message;
using google::protobuf::MessageFactory;
using google::protobuf::Reflection;
using google::protobuf::util::MessageDifferencer;

std::vector<const FileDescriptor*> V1Files() {
  return {v1::Envelope::descriptor()->file(), v1::Presence::descriptor()->file(),
          v1::RoundInvitation::descriptor()->file(), v1::SignedMetadata::descriptor()->file()};
}

std::vector<const Descriptor*> AllMessages() {
  std::vector<const Descriptor*> out;
  for (const FileDescriptor* file : V1Files()) {
    for (int i = 0; i < file->message_type_count(); ++i) out.push_back(file->message_type(i));
  }
  return out;
}

// Sets every field of `m` (recursively) to a value that differs from the proto3 default
// and is distinct per field, element and nesting path (`salt`), so map keys never
// collide. For each oneof, member number (variant % members) is set.
void Fill(Message& m, int variant, int salt = 0, int depth = 0) {
  const Descriptor* d = m.GetDescriptor();
  const Reflection* r = m.GetReflection();
  ASSERT_LT(depth, 8) << "unexpected recursion in " << d->full_name();
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    if (const auto* oneof = f->real_containing_oneof()) {
      if (oneof->field(variant % oneof->field_count()) != f) continue;
    }
    const int n = f->is_repeated() ? 2 : 1;
    for (int k = 0; k < n; ++k) {
      const int v = salt * 1000 + f->number() * 10 + k + 1;  // never 0
      switch (f->cpp_type()) {
        case FieldDescriptor::CPPTYPE_INT32:
          f->is_repeated() ? r->AddInt32(&m, f, -v) : r->SetInt32(&m, f, -v);
          break;
        case FieldDescriptor::CPPTYPE_INT64:
          f->is_repeated() ? r->AddInt64(&m, f, -int64_t{v} << 33) : r->SetInt64(&m, f, -int64_t{v} << 33);
          break;
        case FieldDescriptor::CPPTYPE_UINT32:
          f->is_repeated() ? r->AddUInt32(&m, f, 0x80000000u + static_cast<uint32_t>(v))
                           : r->SetUInt32(&m, f, 0x80000000u + static_cast<uint32_t>(v));
          break;
        case FieldDescriptor::CPPTYPE_UINT64:
          f->is_repeated() ? r->AddUInt64(&m, f, (uint64_t{1} << 63) + static_cast<uint64_t>(v))
                           : r->SetUInt64(&m, f, (uint64_t{1} << 63) + static_cast<uint64_t>(v));
          break;
        case FieldDescriptor::CPPTYPE_DOUBLE:
          f->is_repeated() ? r->AddDouble(&m, f, v + 0.25) : r->SetDouble(&m, f, v + 0.25);
          break;
        case FieldDescriptor::CPPTYPE_FLOAT:
          f->is_repeated() ? r->AddFloat(&m, f, static_cast<float>(v) + 0.5f)
                           : r->SetFloat(&m, f, static_cast<float>(v) + 0.5f);
          break;
        case FieldDescriptor::CPPTYPE_BOOL:
          f->is_repeated() ? r->AddBool(&m, f, true) : r->SetBool(&m, f, true);
          break;
        case FieldDescriptor::CPPTYPE_ENUM: {
          const EnumDescriptor* e = f->enum_type();
          const int value = e->value(e->value_count() - 1 - (k % (e->value_count() - 1)))->number();
          f->is_repeated() ? r->AddEnumValue(&m, f, value) : r->SetEnumValue(&m, f, value);
          break;
        }
        case FieldDescriptor::CPPTYPE_STRING: {
          std::string s = f->name() + "-" + std::to_string(v);
          if (f->type() == FieldDescriptor::TYPE_BYTES) s += std::string("\0\xff\x80", 3);  // not UTF-8
          f->is_repeated() ? r->AddString(&m, f, s) : r->SetString(&m, f, s);
          break;
        }
        case FieldDescriptor::CPPTYPE_MESSAGE: {
          Message* sub = f->is_repeated() ? r->AddMessage(&m, f) : r->MutableMessage(&m, f);
          Fill(*sub, variant, salt * 3 + k + 1, depth + 1);
          break;
        }
      }
    }
  }
}

// Every field that Fill set is present (no field was dropped by serialization).
void ExpectAllSet(const Message& m, int variant) {
  const Descriptor* d = m.GetDescriptor();
  const Reflection* r = m.GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    if (const auto* oneof = f->real_containing_oneof()) {
      if (oneof->field(variant % oneof->field_count()) != f) {
        EXPECT_FALSE(r->HasField(m, f)) << f->full_name();
        continue;
      }
    }
    if (f->is_repeated()) {
      EXPECT_EQ(r->FieldSize(m, f), 2) << f->full_name();
    } else {
      EXPECT_TRUE(r->HasField(m, f)) << f->full_name();
    }
  }
}

int VariantCount(const Descriptor* d) {
  int variants = 1;
  for (int i = 0; i < d->real_oneof_decl_count(); ++i) variants = std::max(variants, d->oneof_decl(i)->field_count());
  return variants;
}

TEST(MessagesTest, EveryMessageRoundTripsWithEveryFieldSet) {
  for (const FileDescriptor* file : V1Files()) ASSERT_GT(file->message_type_count(), 0) << file->name();
  const std::vector<const Descriptor*> messages = AllMessages();
  for (const Descriptor* d : messages) {
    for (int variant = 0; variant < VariantCount(d); ++variant) {
      SCOPED_TRACE(d->full_name() + " variant " + std::to_string(variant));
      const Message* prototype = MessageFactory::generated_factory()->GetPrototype(d);
      std::unique_ptr<Message> original(prototype->New());
      Fill(*original, variant);
      ExpectAllSet(*original, variant);

      std::string wire;
      ASSERT_TRUE(original->SerializeToString(&wire));
      ASSERT_FALSE(wire.empty());
      std::unique_ptr<Message> parsed(prototype->New());
      ASSERT_TRUE(parsed->ParseFromString(wire));
      ExpectAllSet(*parsed, variant);
      std::string diff;
      MessageDifferencer differencer;
      differencer.ReportDifferencesToString(&diff);
      EXPECT_TRUE(differencer.Compare(*original, *parsed)) << diff;
      EXPECT_TRUE(parsed->GetReflection()->GetUnknownFields(*parsed).empty());
    }
  }
}

TEST(MessagesTest, RoundTripDetectsAChangedField) {
  // The comparison above can fail: a single changed nested value is reported.
  v1::RoundInvitation a;
  Fill(a, 0);
  v1::RoundInvitation b = a;
  b.mutable_secagg()->mutable_neighbours(1)->set_index(7);
  std::string diff;
  MessageDifferencer differencer;
  differencer.ReportDifferencesToString(&diff);
  EXPECT_FALSE(differencer.Compare(a, b));
  EXPECT_NE(diff.find("neighbours"), std::string::npos) << diff;
}

TEST(MessagesTest, HandBuiltInvitationKeepsItsValues) {
  v1::RoundInvitation inv;
  inv.set_round_id("r-42");
  inv.mutable_training()->add_lora_targets(v1::LORA_TARGET_Q);
  inv.mutable_training()->add_lora_targets(v1::LORA_TARGET_V);
  inv.mutable_training()->set_rank(8);
  inv.mutable_training()->set_alpha(16.0f);
  inv.mutable_training()->set_frozen_a_seed(0xdeadbeefcafef00dULL);
  v1::SecAggConfig* sa = inv.mutable_secagg();
  sa->set_n(1000);
  sa->set_k(66);
  sa->set_t(31);
  sa->set_bit_width(32);
  sa->set_profile(v1::SEC_AGG_PROFILE_HARDENED);
  sa->set_self_index(5);
  for (uint32_t i : {4u, 6u}) {
    v1::Neighbour* nb = sa->add_neighbours();
    nb->set_index(i);
    nb->set_device_id("dev-" + std::to_string(i));
  }
  std::string wire = inv.SerializeAsString();
  v1::RoundInvitation back;
  ASSERT_TRUE(back.ParseFromString(wire));
  EXPECT_EQ(back.round_id(), "r-42");
  EXPECT_EQ(back.training().lora_targets_size(), 2);
  EXPECT_EQ(back.training().lora_targets(1), v1::LORA_TARGET_V);
  EXPECT_EQ(back.training().frozen_a_seed(), 0xdeadbeefcafef00dULL);
  EXPECT_EQ(back.secagg().k(), 66u);
  EXPECT_EQ(back.secagg().profile(), v1::SEC_AGG_PROFILE_HARDENED);
  ASSERT_EQ(back.secagg().neighbours_size(), 2);
  EXPECT_EQ(back.secagg().neighbours(1).device_id(), "dev-6");
}

TEST(MessagesTest, MaskedInputCarriesEitherABoxOrAClaimCheck) {
  v1::MaskedInput in;
  in.mutable_inline_box()->set_ciphertext("ct");
  in.mutable_claim()->set_url("https://coordinator/upload/1");  // replaces the box (oneof)
  v1::MaskedInput back;
  ASSERT_TRUE(back.ParseFromString(in.SerializeAsString()));
  EXPECT_EQ(back.data_case(), v1::MaskedInput::kClaim);
  EXPECT_FALSE(back.has_inline_box());
}

TEST(MessagesTest, EveryEnumStartsWithUnspecifiedZero) {
  int enums = 0;
  for (const FileDescriptor* file : V1Files()) {
    for (int i = 0; i < file->enum_type_count(); ++i) {
      const EnumDescriptor* e = file->enum_type(i);
      ++enums;
      ASSERT_GE(e->value_count(), 2) << e->full_name();
      EXPECT_EQ(e->value(0)->number(), 0) << e->full_name();
      EXPECT_NE(e->value(0)->name().find("_UNSPECIFIED"), std::string::npos) << e->full_name();
    }
  }
  EXPECT_GE(enums, 15);
}

TEST(MessagesTest, EveryFileIsProto3InPackageFlotillaV1) {
  for (const FileDescriptor* file : V1Files()) {
    EXPECT_EQ(file->package(), "flotilla.v1") << file->name();
    EXPECT_EQ(file->syntax(), FileDescriptor::SYNTAX_PROTO3) << file->name();
  }
}

TEST(MessagesTest, EveryPayloadTypeHasAMessageAndARoute) {
  const EnumDescriptor* e = v1::PayloadType_descriptor();
  std::set<std::string> payload_messages;
  for (int i = 1; i < e->value_count(); ++i) {
    const auto type = static_cast<PayloadType>(e->value(i)->number());
    SCOPED_TRACE(e->value(i)->name());
    std::unique_ptr<google::protobuf::Message> msg = NewPayloadMessage(type);
    ASSERT_NE(msg, nullptr);
    EXPECT_TRUE(payload_messages.insert(msg->GetDescriptor()->full_name()).second) << "two types, one message";
    EXPECT_FALSE(RoutesFor(type).empty());
    EXPECT_TRUE(IsKnownPayloadType(type));
  }
  EXPECT_EQ(NewPayloadMessage(v1::PAYLOAD_TYPE_UNSPECIFIED), nullptr);
  EXPECT_EQ(NewPayloadMessage(static_cast<PayloadType>(999)), nullptr);
  EXPECT_TRUE(RoutesFor(static_cast<PayloadType>(999)).empty());
  EXPECT_FALSE(IsKnownPayloadType(0));
  EXPECT_FALSE(IsKnownPayloadType(999));
}

TEST(MessagesTest, PayloadTypeOfAgreesWithNewPayloadMessage) {
  auto check = [](auto msg) {
    using Msg = decltype(msg);
    std::unique_ptr<google::protobuf::Message> made = NewPayloadMessage(PayloadTypeOf<Msg>::value);
    ASSERT_NE(made, nullptr);
    EXPECT_EQ(made->GetDescriptor(), Msg::descriptor());
  };
  check(v1::EnrolmentRequest{});
  check(v1::EnrolmentResponse{});
  check(v1::Presence{});
  check(v1::ReportedState{});
  check(v1::Telemetry{});
  check(v1::DesiredState{});
  check(v1::RoundAnnouncement{});
  check(v1::RoundCheckIn{});
  check(v1::RoundInvitation{});
  check(v1::RoundResponse{});
  check(v1::AdvertiseKeys{});
  check(v1::NeighbourKeys{});
  check(v1::ShareKeys{});
  check(v1::ForwardedShares{});
  check(v1::MaskedInput{});
  check(v1::ConsistencyCheckRequest{});
  check(v1::ConsistencyCheckResponse{});
  check(v1::UnmaskRequest{});
  check(v1::UnmaskResponse{});
  check(v1::AggregateResult{});
  check(v1::RoundAbort{});
  check(v1::TrainingMetrics{});
  check(v1::UpdateHint{});
  check(v1::OtaReport{});
}

// One line per field and enum value: "Message.field = number type". The v1 wire format
// is frozen: every line of kFrozenV1 must stay true. New fields and enum values are fine
// (append their lines). Removing a field means marking it `reserved` in the .proto and
// deleting its line here in the same, reviewed change; renumbering is never allowed.
std::string WireListing() {
  std::ostringstream out;
  for (const FileDescriptor* file : V1Files()) {
    for (int i = 0; i < file->enum_type_count(); ++i) {
      const EnumDescriptor* e = file->enum_type(i);
      for (int j = 0; j < e->value_count(); ++j) {
        out << e->name() << "." << e->value(j)->name() << " = " << e->value(j)->number() << "\n";
      }
    }
    for (int i = 0; i < file->message_type_count(); ++i) {
      const Descriptor* d = file->message_type(i);
      for (int j = 0; j < d->field_count(); ++j) {
        const FieldDescriptor* f = d->field(j);
        out << d->name() << "." << f->name() << " = " << f->number() << " " << (f->is_repeated() ? "repeated " : "")
            << (f->is_map() ? std::string("map") : std::string(f->type_name()));
        if (f->message_type() != nullptr && !f->is_map()) out << " " << f->message_type()->name();
        if (f->enum_type() != nullptr) out << " " << f->enum_type()->name();
        out << "\n";
      }
    }
  }
  return out.str();
}

constexpr char kFrozenV1[] = R"(
PayloadType.PAYLOAD_TYPE_UNSPECIFIED = 0
PayloadType.PAYLOAD_TYPE_ENROLMENT_REQUEST = 1
PayloadType.PAYLOAD_TYPE_ENROLMENT_RESPONSE = 2
PayloadType.PAYLOAD_TYPE_PRESENCE = 3
PayloadType.PAYLOAD_TYPE_REPORTED_STATE = 4
PayloadType.PAYLOAD_TYPE_TELEMETRY = 5
PayloadType.PAYLOAD_TYPE_DESIRED_STATE = 6
PayloadType.PAYLOAD_TYPE_ROUND_ANNOUNCEMENT = 20
PayloadType.PAYLOAD_TYPE_ROUND_CHECK_IN = 21
PayloadType.PAYLOAD_TYPE_ROUND_INVITATION = 22
PayloadType.PAYLOAD_TYPE_ROUND_RESPONSE = 23
PayloadType.PAYLOAD_TYPE_ADVERTISE_KEYS = 24
PayloadType.PAYLOAD_TYPE_NEIGHBOUR_KEYS = 25
PayloadType.PAYLOAD_TYPE_SHARE_KEYS = 26
PayloadType.PAYLOAD_TYPE_FORWARDED_SHARES = 27
PayloadType.PAYLOAD_TYPE_MASKED_INPUT = 28
PayloadType.PAYLOAD_TYPE_CONSISTENCY_CHECK_REQUEST = 29
PayloadType.PAYLOAD_TYPE_CONSISTENCY_CHECK_RESPONSE = 30
PayloadType.PAYLOAD_TYPE_UNMASK_REQUEST = 31
PayloadType.PAYLOAD_TYPE_UNMASK_RESPONSE = 32
PayloadType.PAYLOAD_TYPE_AGGREGATE_RESULT = 33
PayloadType.PAYLOAD_TYPE_ROUND_ABORT = 34
PayloadType.PAYLOAD_TYPE_TRAINING_METRICS = 35
PayloadType.PAYLOAD_TYPE_UPDATE_HINT = 50
PayloadType.PAYLOAD_TYPE_OTA_REPORT = 51
Envelope.body = 1 bytes
Envelope.signature = 2 bytes
EnvelopeBody.protocol_version = 1 uint32
EnvelopeBody.sender_id = 2 string
EnvelopeBody.message_id = 3 bytes
EnvelopeBody.timestamp_ms = 4 int64
EnvelopeBody.payload_type = 5 enum PayloadType
EnvelopeBody.payload = 6 bytes
EnvelopeBody.recipient = 7 string
PresenceState.PRESENCE_STATE_UNSPECIFIED = 0
PresenceState.PRESENCE_STATE_ONLINE = 1
PresenceState.PRESENCE_STATE_OFFLINE = 2
OtaSlot.OTA_SLOT_UNSPECIFIED = 0
OtaSlot.OTA_SLOT_A = 1
OtaSlot.OTA_SLOT_B = 2
HardwareInfo.vendor = 1 string
HardwareInfo.model = 2 string
HardwareInfo.soc = 3 string
HardwareInfo.npu = 4 string
HardwareInfo.hardware_class = 5 string
HardwareInfo.serial_number = 6 string
HardwareInfo.capabilities = 7 message Capabilities
EnrolmentRequest.device_id = 1 string
EnrolmentRequest.certificate_pem = 2 string
EnrolmentRequest.identity_public_key = 3 bytes
EnrolmentRequest.enrolment_token = 4 string
EnrolmentRequest.hardware = 5 message HardwareInfo
EnrolmentRequest.firmware_version = 6 string
EnrolmentRequest.sdk_version = 7 string
EnrolmentResponse.device_id = 1 string
EnrolmentResponse.accepted = 2 bool
EnrolmentResponse.reason = 3 string
EnrolmentResponse.groups = 4 repeated string
EnrolmentResponse.coordinator_id = 5 string
Presence.state = 1 enum PresenceState
Presence.session_id = 2 string
Presence.timestamp_ms = 3 int64
ModelVersion.version = 1 string
ModelVersion.sha256 = 2 bytes
Capabilities.cpu_features = 1 repeated string
Capabilities.ram_bytes = 2 uint64
Capabilities.storage_bytes = 3 uint64
Capabilities.cpu_cores = 4 uint32
Eligibility.charging = 1 bool
Eligibility.idle = 2 bool
Eligibility.unmetered_link = 3 bool
Eligibility.free_memory_bytes = 4 uint64
Eligibility.battery_percent = 5 uint32
ReportedState.base_model = 1 message ModelVersion
ReportedState.adapter_version = 2 string
ReportedState.firmware_version = 3 string
ReportedState.active_slot = 4 enum OtaSlot
ReportedState.capabilities = 5 message Capabilities
ReportedState.eligibility = 6 message Eligibility
ReportedState.timestamp_ms = 7 int64
ReportedState.groups = 8 repeated string
DesiredState.base_model = 1 message ModelVersion
DesiredState.adapter_version = 2 string
DesiredState.deployment_id = 3 string
Telemetry.timestamp_ms = 1 int64
Telemetry.uptime_s = 2 uint64
Telemetry.cpu_load = 3 float
Telemetry.rss_bytes = 4 uint64
Telemetry.free_memory_bytes = 5 uint64
Telemetry.temperature_c = 6 float
Telemetry.counters = 7 repeated map
LoraTarget.LORA_TARGET_UNSPECIFIED = 0
LoraTarget.LORA_TARGET_Q = 1
LoraTarget.LORA_TARGET_K = 2
LoraTarget.LORA_TARGET_V = 3
LoraTarget.LORA_TARGET_O = 4
LoraTarget.LORA_TARGET_GATE = 5
LoraTarget.LORA_TARGET_UP = 6
LoraTarget.LORA_TARGET_DOWN = 7
LoraMode.LORA_MODE_UNSPECIFIED = 0
LoraMode.LORA_MODE_FROZEN_A = 1
LoraMode.LORA_MODE_FEDIT = 2
SecAggProfile.SEC_AGG_PROFILE_UNSPECIFIED = 0
SecAggProfile.SEC_AGG_PROFILE_CURIOUS = 1
SecAggProfile.SEC_AGG_PROFILE_HARDENED = 2
PrgAlgorithm.PRG_ALGORITHM_UNSPECIFIED = 0
PrgAlgorithm.PRG_ALGORITHM_AES128_CTR = 1
PrgAlgorithm.PRG_ALGORITHM_CHACHA20 = 2
NoiseMechanism.NOISE_MECHANISM_UNSPECIFIED = 0
NoiseMechanism.NOISE_MECHANISM_DISCRETE_GAUSSIAN = 1
NoiseMechanism.NOISE_MECHANISM_SKELLAM = 2
DeclineReason.DECLINE_REASON_UNSPECIFIED = 0
DeclineReason.DECLINE_REASON_NOT_ELIGIBLE = 1
DeclineReason.DECLINE_REASON_BUSY = 2
DeclineReason.DECLINE_REASON_MODEL_MISMATCH = 3
DeclineReason.DECLINE_REASON_PARAMETERS_REFUSED = 4
DeclineReason.DECLINE_REASON_NO_DATA = 5
DeclineReason.DECLINE_REASON_POLICY = 6
AbortReason.ABORT_REASON_UNSPECIFIED = 0
AbortReason.ABORT_REASON_TOO_FEW_PARTICIPANTS = 1
AbortReason.ABORT_REASON_TOO_FEW_SURVIVORS = 2
AbortReason.ABORT_REASON_DEADLINE = 3
AbortReason.ABORT_REASON_PROTOCOL_VIOLATION = 4
AbortReason.ABORT_REASON_OPERATOR = 5
AbortReason.ABORT_REASON_INTERNAL = 6
AbortReason.ABORT_REASON_OVERFLOW = 7
RoundAnnouncement.round_id = 1 string
RoundAnnouncement.group = 2 string
RoundAnnouncement.base_model = 3 message ModelVersion
RoundAnnouncement.adapter_version = 4 string
RoundAnnouncement.check_in_deadline_ms = 5 int64
RoundAnnouncement.min_eligibility = 6 message Eligibility
RoundAnnouncement.target_cohort_size = 7 uint32
RoundCheckIn.round_id = 1 string
RoundCheckIn.eligibility = 2 message Eligibility
RoundCheckIn.base_model = 3 message ModelVersion
RoundCheckIn.adapter_version = 4 string
TrainingConfig.base_model_sha256 = 1 bytes
TrainingConfig.adapter_version = 2 string
TrainingConfig.lora_targets = 3 repeated enum LoraTarget
TrainingConfig.rank = 4 uint32
TrainingConfig.alpha = 5 float
TrainingConfig.frozen_a_seed = 6 uint64
TrainingConfig.mode = 7 enum LoraMode
TrainingConfig.local_steps = 8 uint32
TrainingConfig.learning_rate = 9 float
TrainingConfig.gradient_clip_norm = 10 float
TrainingConfig.batch_size = 11 uint32
TrainingConfig.max_examples = 12 uint32
TrainingConfig.adapter_url = 13 string
TrainingConfig.adapter_sha256 = 14 bytes
TrainingConfig.trainable_length = 15 uint64
DpConfig.mechanism = 1 enum NoiseMechanism
DpConfig.l2_clip = 2 double
DpConfig.central_stddev = 3 double
StageDeadlines.advertise_keys_ms = 1 int64
StageDeadlines.share_keys_ms = 2 int64
StageDeadlines.masked_input_ms = 3 int64
StageDeadlines.consistency_check_ms = 4 int64
StageDeadlines.unmask_ms = 5 int64
Neighbour.index = 1 uint32
Neighbour.device_id = 2 string
SecAggConfig.round_id = 1 string
SecAggConfig.n = 2 uint32
SecAggConfig.k = 3 uint32
SecAggConfig.t = 4 uint32
SecAggConfig.bit_width = 5 uint32
SecAggConfig.quant_bits = 6 uint32
SecAggConfig.clip_bound = 7 double
SecAggConfig.prg = 8 enum PrgAlgorithm
SecAggConfig.model_sha256 = 9 bytes
SecAggConfig.graph_seed = 10 bytes
SecAggConfig.profile = 11 enum SecAggProfile
SecAggConfig.deadlines = 12 message StageDeadlines
SecAggConfig.max_colluding_fraction = 13 double
SecAggConfig.max_dropout_rate = 14 double
SecAggConfig.min_survivors = 15 uint32
SecAggConfig.dp = 16 message DpConfig
SecAggConfig.self_index = 17 uint32
SecAggConfig.neighbours = 18 repeated message Neighbour
UploadTarget.url = 1 string
UploadTarget.token = 2 string
UploadTarget.max_bytes = 3 uint64
RoundInvitation.round_id = 1 string
RoundInvitation.training = 2 message TrainingConfig
RoundInvitation.secagg = 3 message SecAggConfig
RoundInvitation.coordinator_box_public_key = 4 bytes
RoundInvitation.upload = 5 message UploadTarget
RoundInvitation.accept_deadline_ms = 6 int64
RoundResponse.round_id = 1 string
RoundResponse.accepted = 2 bool
RoundResponse.reason = 3 enum DeclineReason
RoundResponse.detail = 4 string
AdvertiseKeys.round_id = 1 string
AdvertiseKeys.index = 2 uint32
AdvertiseKeys.pk_c = 3 bytes
AdvertiseKeys.pk_s = 4 bytes
AdvertiseKeys.signature = 5 bytes
AdvertiseKeys.device_id = 6 string
NeighbourKeys.round_id = 1 string
NeighbourKeys.adverts = 2 repeated message AdvertiseKeys
EncryptedShare.from = 1 uint32
EncryptedShare.to = 2 uint32
EncryptedShare.ciphertext = 3 bytes
ShareKeys.round_id = 1 string
ShareKeys.from = 2 uint32
ShareKeys.shares = 3 repeated message EncryptedShare
ForwardedShares.round_id = 1 string
ForwardedShares.to = 2 uint32
ForwardedShares.shares = 3 repeated message EncryptedShare
MaskedVector.format_version = 1 uint32
MaskedVector.bit_width = 2 uint32
MaskedVector.length = 3 uint64
MaskedVector.packed = 4 bytes
SealedBox.ephemeral_public_key = 1 bytes
SealedBox.nonce = 2 bytes
SealedBox.ciphertext = 3 bytes
ClaimCheck.url = 1 string
ClaimCheck.sha256 = 2 bytes
ClaimCheck.size = 3 uint64
ClaimCheck.upload_id = 4 string
MaskedInput.round_id = 1 string
MaskedInput.index = 2 uint32
MaskedInput.inline_box = 3 message SealedBox
MaskedInput.claim = 4 message ClaimCheck
ConsistencyCheckRequest.round_id = 1 string
ConsistencyCheckRequest.n = 2 uint32
ConsistencyCheckRequest.survivors_bitmap = 3 bytes
ConsistencyCheckResponse.round_id = 1 string
ConsistencyCheckResponse.index = 2 uint32
ConsistencyCheckResponse.signature = 3 bytes
ConsistencySignature.index = 1 uint32
ConsistencySignature.signature = 2 bytes
UnmaskRequest.round_id = 1 string
UnmaskRequest.alive = 2 repeated uint32
UnmaskRequest.dead = 3 repeated uint32
UnmaskRequest.neighbour_signatures = 4 repeated message ConsistencySignature
ShareRelease.owner = 1 uint32
ShareRelease.share = 2 bytes
UnmaskResponse.round_id = 1 string
UnmaskResponse.index = 2 uint32
UnmaskResponse.self_mask_shares = 3 repeated message ShareRelease
UnmaskResponse.mask_key_shares = 4 repeated message ShareRelease
TrainingMetrics.round_id = 1 string
TrainingMetrics.loss_before = 2 float
TrainingMetrics.loss_after = 3 float
TrainingMetrics.examples = 4 uint64
TrainingMetrics.steps = 5 uint32
TrainingMetrics.duration_ms = 6 uint64
RoundMetrics.survivors = 1 uint32
RoundMetrics.dropped = 2 uint32
RoundMetrics.mean_loss = 3 double
RoundMetrics.total_examples = 4 uint64
RoundMetrics.duration_ms = 5 uint64
AggregateResult.round_id = 1 string
AggregateResult.new_adapter_version = 2 string
AggregateResult.adapter_sha256 = 3 bytes
AggregateResult.n = 4 uint32
AggregateResult.survivors_bitmap = 5 bytes
AggregateResult.metrics = 6 message RoundMetrics
AggregateResult.adapter_url = 7 string
RoundAbort.round_id = 1 string
RoundAbort.reason = 2 enum AbortReason
RoundAbort.detail = 3 string
RoleType.ROLE_TYPE_UNSPECIFIED = 0
RoleType.ROLE_TYPE_ROOT = 1
RoleType.ROLE_TYPE_TARGETS = 2
RoleType.ROLE_TYPE_SNAPSHOT = 3
RoleType.ROLE_TYPE_TIMESTAMP = 4
RoleType.ROLE_TYPE_DIRECTOR = 5
KeyType.KEY_TYPE_UNSPECIFIED = 0
KeyType.KEY_TYPE_ECDSA_P256_SHA256 = 1
TargetKind.TARGET_KIND_UNSPECIFIED = 0
TargetKind.TARGET_KIND_BASE_MODEL = 1
TargetKind.TARGET_KIND_ADAPTER = 2
OtaState.OTA_STATE_UNSPECIFIED = 0
OtaState.OTA_STATE_IDLE = 1
OtaState.OTA_STATE_CHECK = 2
OtaState.OTA_STATE_DOWNLOAD = 3
OtaState.OTA_STATE_VERIFY = 4
OtaState.OTA_STATE_STAGE = 5
OtaState.OTA_STATE_SWITCH = 6
OtaState.OTA_STATE_HEALTH = 7
OtaState.OTA_STATE_COMMIT = 8
OtaState.OTA_STATE_ROLLBACK = 9
OtaOutcome.OTA_OUTCOME_UNSPECIFIED = 0
OtaOutcome.OTA_OUTCOME_IN_PROGRESS = 1
OtaOutcome.OTA_OUTCOME_SUCCESS = 2
OtaOutcome.OTA_OUTCOME_FAILURE = 3
OtaOutcome.OTA_OUTCOME_ROLLED_BACK = 4
SignedMetadata.signed = 1 bytes
SignedMetadata.signatures = 2 repeated message MetadataSignature
MetadataSignature.key_id = 1 string
MetadataSignature.signature = 2 bytes
Metadata.spec_version = 1 uint32
Metadata.role = 2 enum RoleType
Metadata.version = 3 uint64
Metadata.expires_ms = 4 int64
Metadata.root = 10 message RootMetadata
Metadata.targets = 11 message TargetsMetadata
Metadata.snapshot = 12 message SnapshotMetadata
Metadata.timestamp = 13 message TimestampMetadata
Metadata.director = 14 message DirectorAssignment
PublicKey.key_id = 1 string
PublicKey.key_type = 2 enum KeyType
PublicKey.public_key_der = 3 bytes
RoleKeys.role = 1 enum RoleType
RoleKeys.key_ids = 2 repeated string
RoleKeys.threshold = 3 uint32
RootMetadata.keys = 1 repeated message PublicKey
RootMetadata.roles = 2 repeated message RoleKeys
Chunk.offset = 1 uint64
Chunk.length = 2 uint64
Chunk.sha256 = 3 bytes
TargetInfo.name = 1 string
TargetInfo.length = 2 uint64
TargetInfo.sha256 = 3 bytes
TargetInfo.release_counter = 4 uint64
TargetInfo.hardware_compat = 5 repeated string
TargetInfo.kind = 6 enum TargetKind
TargetInfo.base_model_sha256 = 7 bytes
TargetInfo.chunk_size = 8 uint32
TargetInfo.chunks = 9 repeated message Chunk
TargetInfo.custom = 10 bytes
TargetsMetadata.targets = 1 repeated message TargetInfo
MetaFileInfo.name = 1 string
MetaFileInfo.version = 2 uint64
MetaFileInfo.length = 3 uint64
MetaFileInfo.sha256 = 4 bytes
SnapshotMetadata.meta = 1 repeated message MetaFileInfo
TimestampMetadata.snapshot = 1 message MetaFileInfo
AssignedTarget.name = 1 string
AssignedTarget.sha256 = 2 bytes
AssignedTarget.length = 3 uint64
AssignedTarget.release_counter = 4 uint64
DirectorAssignment.device_id = 1 string
DirectorAssignment.cohort = 2 string
DirectorAssignment.targets = 3 repeated message AssignedTarget
DirectorAssignment.deployment_id = 4 string
DirectorAssignment.nonce = 5 bytes
UpdateHint.deployment_id = 1 string
UpdateHint.repository_url = 2 string
UpdateHint.timestamp_version = 3 uint64
HealthFigures.golden_prompts_passed = 1 uint32
HealthFigures.golden_prompts_total = 2 uint32
HealthFigures.latency_p95_ms = 3 double
HealthFigures.peak_rss_bytes = 4 uint64
HealthFigures.perplexity = 5 double
HealthFigures.attempts = 6 uint32
OtaReport.deployment_id = 1 string
OtaReport.target_name = 2 string
OtaReport.target_sha256 = 3 bytes
OtaReport.state = 4 enum OtaState
OtaReport.outcome = 5 enum OtaOutcome
OtaReport.error = 6 string
OtaReport.health = 7 message HealthFigures
OtaReport.nonce = 8 bytes
OtaReport.timestamp_ms = 9 int64
OtaReport.bytes_downloaded = 10 uint64
OtaReleaseCounter.name = 1 string
OtaReleaseCounter.counter = 2 uint64
OtaTrustedState.root = 1 bytes
OtaTrustedState.timestamp = 2 bytes
OtaTrustedState.snapshot = 3 bytes
OtaTrustedState.targets = 4 bytes
OtaTrustedState.director_version = 5 uint64
OtaTrustedState.release_counters = 6 repeated message OtaReleaseCounter
OtaTrustedState.last_cycle_time_ms = 7 int64
OtaJournalRecord.state = 1 enum OtaState
OtaJournalRecord.cycle_time_ms = 2 int64
OtaJournalRecord.target = 3 message TargetInfo
OtaJournalRecord.deployment_id = 4 string
OtaJournalRecord.nonce = 5 bytes
OtaJournalRecord.next_chunk = 6 uint64
OtaJournalRecord.etag = 7 string
OtaJournalRecord.bytes_downloaded = 8 uint64
OtaJournalRecord.download_failures = 9 uint32
OtaJournalRecord.health_attempts = 10 uint32
OtaJournalRecord.prev_slot = 11 string
OtaJournalRecord.new_slot = 12 string
OtaJournalRecord.outcome = 13 enum OtaOutcome
OtaJournalRecord.error = 14 string
OtaJournalRecord.failed_state = 15 enum OtaState
OtaJournalRecord.health = 16 message HealthFigures
OtaJournalRecord.pending_report = 17 bytes
OtaJournalRecord.report_attempts = 18 uint32
OtaJournalRecord.last_rolled_back_sha256 = 19 bytes
)";

TEST(MessagesTest, V1WireFormatIsFrozen) {
  const std::string current = WireListing();
  std::set<std::string> now_lines;
  std::istringstream cur(current);
  for (std::string line; std::getline(cur, line);) now_lines.insert(line);
  std::istringstream golden(kFrozenV1);
  int checked = 0;
  for (std::string line; std::getline(golden, line);) {
    if (line.empty()) continue;
    ++checked;
    EXPECT_TRUE(now_lines.count(line)) << "frozen v1 wire entry changed or removed: '" << line
                                       << "'. Field numbers are never reused; append new fields instead.";
  }
  EXPECT_GE(checked, 350);
  if (::testing::Test::HasFailure()) ADD_FAILURE() << "current listing:\n" << current;
}

}  // namespace
}  // namespace flotilla::protocol
