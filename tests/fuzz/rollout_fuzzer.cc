// libFuzzer target for every rollout parser of untrusted bytes (coordinator/src/rollouts):
// the first input byte picks one.
//   0  rollout spec JSON (REST POST body, `ota rollout create --spec`, the database column)
//   1  the REST routes' small parsers: rollout id / ?limit=, {"reason"} bodies, ?status=
//   2  a device report envelope as it arrives (RolloutManager::HandleReport/HandleMessage)
//   3  an OtaReport payload behind a valid device signature (as if the device were
//      compromised), optionally with the real deployment id and nonce spliced in so the
//      outcome / target checks are reached
// Invariants are asserted (any crash, hang or sanitizer report is a bug too): a parsed
// spec that validates round-trips through its JSON form, parsed names print back
// unchanged, and the manager's counts stay consistent whatever a report says.
// The entry point also runs in rollout_test (deterministic mutations) on every build.
#include <google/protobuf/stubs/logging.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "flotilla/coordinator/rollout.h"
#include "flotilla/core/log.h"
#include "flotilla/core/testing/seeded_random.h"
#include "flotilla/ota/metadata.h"
#include "flotilla/ota/repository_layout.h"
#include "flotilla/ota/testing/test_repository.h"
#include "flotilla/protocol/envelope.h"
#include "flotilla/protocol/topics.h"
#include "flotilla/security/identity.h"
#include "rollout_json.h"

namespace flotilla::coordinator {
namespace {

using ota::testing::TestRepository;

void Require(bool ok) {
  if (!ok) std::abort();
}

class OneDeviceFleet final : public FleetView {
 public:
  Result<std::vector<FleetDevice>> ListDevices() override {
    return std::vector<FleetDevice>{{"dev-0", "test-soc"}, {"dev-1", "test-soc"}};
  }
};

// A real repository, rollout and device key, built once per process.
struct Harness {
  Harness() : state(TestRepository::Must(TempDir::Create("flotilla-rollout-fuzz"))), random(1) {
    google::protobuf::SetLogHandler(nullptr);  // invalid UTF-8 in fuzzed protos is expected noise
    SetLogLevel(LogLevel::kError);
    repo.AddTarget("models/fuzz", Bytes(3000, 1), 1);
    FLT_CHECK_OK(repo.repo().Publish());
    auto key = ota::testing::NewKey();
    device_keys.Add("dev-0", key->public_key());
    device = std::make_unique<security::EcdsaSigner>("dev-0", key);
    RolloutOptions o;
    o.db_path = state.path() / "rollouts.db";
    o.synchronous_full = false;
    RolloutDeps d;
    d.repository = &repo.repo();
    d.fleet = &fleet;
    d.device_keys = &device_keys;
    d.clock = &repo.clock();
    d.random = &random;
    manager = TestRepository::Must(RolloutManager::Open(o, d));
    PhaseSpec thresholds;
    thresholds.success_percent = 50;
    id = TestRepository::Must(manager->Create(MakeRolloutSpec("fuzz", {"models/fuzz"}, {}, {100}, thresholds))).id;
    FLT_CHECK_OK(manager->Tick());
    Bytes wire = TestRepository::Must(ReadFileBytes(repo.dir() / ota::DeviceDirectorPath("dev-0")));
    assignment = TestRepository::Must(ota::ParseTrustedMetadata(wire, v1::ROLE_TYPE_DIRECTOR)).director();
  }

  void CheckCounts() {
    const RolloutSummary s = TestRepository::Must(manager->Get(id));
    const RolloutCounts& c = s.counts;
    Require(c.eligible == 2 && c.assigned <= c.eligible);
    Require(c.succeeded + c.failed + c.in_progress + c.retracted + c.reverting + c.reverted == c.assigned);
  }

  TempDir state;
  TestRepository repo;
  flotilla::testing::SeededRandom random;
  OneDeviceFleet fleet;
  security::KeyRing device_keys;
  std::unique_ptr<security::EcdsaSigner> device;
  std::unique_ptr<RolloutManager> manager;
  int64_t id = 0;
  v1::DirectorAssignment assignment;
};

void FuzzSpec(std::string_view text) {
  auto spec = RolloutSpecFromJson(text);
  if (!spec.ok() || !ValidateRolloutSpec(*spec).ok()) return;
  const std::string once = RolloutSpecToJson(*spec);
  auto again = RolloutSpecFromJson(once);
  Require(again.ok() && ValidateRolloutSpec(*again).ok());
  Require(RolloutSpecToJson(*again) == once);
}

void FuzzRestParsers(std::string_view text) {
  if (auto id = internal::ParseRolloutId(text); id.ok()) Require(*id > 0);
  Require(internal::ReasonFromBody(text, "fallback").size() <= 512);
  if (auto s = ParseDeviceRolloutStatus(text); s.ok()) Require(ToString(*s) == text);
  if (auto s = ParseRolloutState(text); s.ok()) Require(ToString(*s) == text);
}

void FuzzEnvelope(Harness& h, ByteSpan wire, uint8_t flags) {
  const auto before = h.manager->stats();
  const Status s = h.manager->HandleReport(wire);
  Require(s.ok() || h.manager->stats().reports_rejected == before.reports_rejected + 1);
  protocol::Message m;
  m.topic = (flags & 1) ? "fl/v1/d/dev-0/up/event/ota-report" : "fl/v1/d/dev-1/up/event/ota-report";
  m.payload.assign(wire.begin(), wire.end());
  h.manager->HandleMessage(m);
  h.CheckCounts();
}

void FuzzSignedPayload(Harness& h, ByteSpan payload, uint8_t flags) {
  std::string body(AsStringView(payload));
  if (flags & 1) {
    v1::OtaReport r;
    if (r.ParseFromString(body)) {
      r.set_deployment_id(h.assignment.deployment_id() + ((flags & 2) ? "-rollback" : ""));
      r.set_nonce(h.assignment.nonce());
      body = r.SerializeAsString();
    }
  }
  auto sealed = protocol::Seal(*h.device, v1::PAYLOAD_TYPE_OTA_REPORT, AsBytes(body), "coordinator",
                               h.repo.clock(), h.random);
  if (!sealed.ok()) return;  // over the envelope limit
  (void)h.manager->HandleReport(*sealed);
  h.CheckCounts();
}

}  // namespace
}  // namespace flotilla::coordinator

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace flotilla;
  using namespace flotilla::coordinator;
  if (size < 2) return 0;
  const uint8_t mode = data[0] % 4;
  const uint8_t flags = data[1];
  const ByteSpan rest(data + 2, size - 2);
  switch (mode) {
    case 0:
      FuzzSpec(AsStringView(rest));
      break;
    case 1:
      FuzzRestParsers(AsStringView(rest));
      break;
    default: {
      static Harness* h = new Harness();
      if (mode == 2) {
        FuzzEnvelope(*h, rest, flags);
      } else {
        FuzzSignedPayload(*h, rest, flags);
      }
    }
  }
  return 0;
}
