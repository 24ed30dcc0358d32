// libFuzzer target for untrusted OTA metadata: the outer SignedMetadata parser, the body
// parser behind the signature check (reached directly, as if a signature had verified),
// root validation, and a whole UpdateVerifier (with a real trust anchor) fed the bytes as
// every role. Invariants are asserted; any crash, hang or sanitizer report is a bug.
// The same entry point runs in ota_metadata_test on deterministic mutations every build.
#include <google/protobuf/stubs/logging.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "flotilla/ota/metadata.h"
#include "flotilla/ota/testing/test_repository.h"
#include "flotilla/ota/verifier.h"

namespace flotilla::ota {
namespace {

struct Harness {
  Harness() {
    google::protobuf::SetLogHandler(nullptr);  // invalid UTF-8 logs are expected noise
    testing::TestRepository repo;
    state = repo.ProvisionedState();
    now_ms = repo.clock().NowUnixMillis();
  }
  v1::OtaTrustedState state;
  int64_t now_ms = 0;
};

void Require(bool ok) {
  if (!ok) std::abort();
}

}  // namespace
}  // namespace flotilla::ota

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace flotilla;
  using namespace flotilla::ota;
  static Harness* h = new Harness();
  const ByteSpan in(data, size);
  for (v1::RoleType role : kAllRoles) {
    auto sm = ParseSignedMetadata(in, role);
    if (sm.ok()) Require(!sm->signed_().empty() && sm->signatures_size() > 0 && size <= MaxMetadataBytes(role));
    auto body = ParseMetadataBody(AsStringView(in), role);
    if (body.ok()) {
      Require(body->role() == role && body->version() > 0);
      if (role == v1::ROLE_TYPE_ROOT) Require(ValidateRoot(body->root()).ok());
    }
  }
  v1::RootMetadata root;
  if (root.ParseFromArray(data, static_cast<int>(size))) ValidateRoot(root).IgnoreError();

  auto v = UpdateVerifier::Create(h->state);
  Require(v.ok());
  Require(v->BeginCycle(h->now_ms).ok());
  // Nothing here is signed by the trust anchor's keys, so nothing may be accepted.
  Require(!v->UpdateRoot(in).ok());
  Require(!v->UpdateTimestamp(in).ok());
  Require(!v->UpdateSnapshot(in).ok());
  Require(!v->UpdateTargets(in).ok());
  Require(!v->VerifyDirector(in, DeviceIdentity{"dev-1", {"c"}, "soc"}).ok());
  Require(v->state().SerializeAsString() == [&] {
    v1::OtaTrustedState s = h->state;
    s.set_last_cycle_time_ms(h->now_ms);
    return s.SerializeAsString();
  }());
  return 0;
}
