// libFuzzer target for everything that decodes untrusted protocol bytes: Open() (with a
// real key check and with an accept-all verifier, to reach the checks behind the
// signature), every payload type's parser, and the topic parser. Each run also asserts
// invariants and aborts if one breaks. The same entry point is linked into
// protocol_envelope_test, which feeds it deterministic mutations on every build.
#include <google/protobuf/stubs/logging.h>

#include <cstddef>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "flotilla/core/testing/fake_clock.h"
#include "flotilla/protocol/envelope.h"
#include "flotilla/protocol/payload.h"
#include "flotilla/protocol/testing/fake_signer.h"
#include "flotilla/protocol/topics.h"

namespace flotilla::protocol {
namespace {

class AcceptAnyVerifier final : public SignatureVerifier {
 public:
  Status Verify(std::string_view, ByteSpan, ByteSpan) const override { return Status::Ok(); }
};

struct Harness {
  Harness() {
    // Parsers log invalid UTF-8 at ERROR; that is expected here and only noise.
    google::protobuf::SetLogHandler(nullptr);
    // Keys of the identities the seed envelopes use (envelope_fuzz_test.cc).
    verifier.Add("dev-1", 11);
    verifier.Add(std::string(kCoordinatorId), 99);
    options.recipients = {std::string(kCoordinatorId), "dev-1", GroupRecipient("lab")};
  }
  ::flotilla::testing::FakeClock clock;  // fixed: the fuzzer's view of "now"
  ::flotilla::protocol::testing::FakeVerifier verifier;
  AcceptAnyVerifier accept_any;
  OpenOptions options;
};

void Require(bool cond, const char* what) {
  if (!cond) {
    fprintf(stderr, "envelope_fuzzer invariant broken: %s\n", what);
    abort();
  }
}

void CheckOpened(const Harness& h, const Result<OpenedEnvelope>& r) {
  if (!r.ok()) {
    Require(r.status().message().rfind("envelope: ", 0) == 0, "error message names the envelope");
    return;
  }
  const OpenedEnvelope& e = *r;
  Require(e.protocol_version == kProtocolVersion, "version checked");
  Require(IsKnownPayloadType(e.payload_type), "payload type checked");
  Require(IsValidName(e.sender_id), "sender id valid");
  Require(e.message_id.size() == kMessageIdBytes, "message id size");
  Require(e.payload.size() <= kMaxEnvelopeBytes, "payload bounded");
  bool recipient_ok = false;
  for (const std::string& rcpt : h.options.recipients) recipient_ok |= rcpt == e.recipient;
  Require(recipient_ok, "recipient checked");
  const int64_t now = h.clock.NowUnixMillis();
  Require(e.timestamp_ms >= now - h.options.max_age.count(), "not stale");
  Require(e.timestamp_ms <= now + h.options.max_future_skew.count(), "not from the future");
  ValidatePayload(e.payload_type, e.payload).IgnoreError();
}

}  // namespace

int FuzzOneInput(const uint8_t* data, size_t size) {
  static const Harness* harness = new Harness();  // never destroyed: no exit-time races
  const Harness& h = *harness;
  const ByteSpan in(data, size);

  const Result<OpenedEnvelope> real = Open(in, h.verifier, h.clock, h.options);
  CheckOpened(h, real);
  const Result<OpenedEnvelope> any = Open(in, h.accept_any, h.clock, h.options);
  CheckOpened(h, any);
  // A real signature check can only refuse more, never less.
  Require(!real.ok() || any.ok(), "accept-any verifier accepts whatever a real one does");

  const std::string_view text = AsStringView(in);
  const google::protobuf::EnumDescriptor* types = flotilla::v1::PayloadType_descriptor();
  for (int i = 0; i < types->value_count(); ++i) {
    const auto type = static_cast<PayloadType>(types->value(i)->number());
    if (IsKnownPayloadType(type)) ValidatePayload(type, text).IgnoreError();
  }

  Result<Topic> topic = ParseTopic(text);
  if (topic.ok()) {
    Result<std::string> again = FormatTopic(*topic);
    Require(again.ok() && *again == text, "a parsed topic formats back to the same string");
  }
  return 0;
}

}  // namespace flotilla::protocol

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return flotilla::protocol::FuzzOneInput(data, size);
}
