// libFuzzer target: arbitrary bytes replace the coordinator's message to client 1 at one
// stage of an otherwise honest round. The client must never crash; if it refuses, it
// either keeps its state (stale/out-of-order message) or aborts having released nothing,
// and the server never holds both shares of any client.
//   input[0]: profile (bit 0) and stage (bits 1-3); rest: message bytes.
#include <cstdint>
#include <string>

#include "flotilla/aggregation/testing/secagg_simulation.h"
#include "flotilla/core/check.h"

namespace flotilla::aggregation::fuzz {

int SecAggClientFuzzOne(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static constexpr const char* kStages[] = {"neighbour_keys", "forwarded_shares", "consistency_check_request",
                                            "unmask_request", "unmask_request"};
  testing::SimulationOptions o;
  o.n = 4;
  o.vector_length = 8;
  o.profile = (data[0] & 1) ? v1::SEC_AGG_PROFILE_HARDENED : v1::SEC_AGG_PROFILE_CURIOUS;
  const std::string_view stage = kStages[(data[0] >> 1) % 5];
  const std::string payload(reinterpret_cast<const char*>(data + 1), size - 1);
  auto sim = testing::SecAggSimulation::Create(o);
  FLT_CHECK(sim.ok());
  bool replaced = false;
  testing::SimulationHooks hooks;
  hooks.wire = [&](std::string_view type, uint32_t client, bool to_server, std::string& bytes) {
    if (!to_server && client == 1 && type == stage) {
      replaced = bytes != payload;
      bytes = payload;
    }
  };
  auto out = (*sim)->Run(hooks);
  SecAggClient& c = (*sim)->client(1);
  if (c.state() == ClientState::kAborted) {
    FLT_CHECK(!c.abort_status().ok());
    // An aborted client never releases anything afterwards.
    v1::UnmaskRequest again;
    again.set_round_id((*sim)->config().round_id());
    FLT_CHECK(!c.HandleUnmaskRequest(again).ok());
  }
  // No exact-sum check here: the mutated bytes play a malicious coordinator, which can
  // always make its own output wrong (e.g. by withholding one forwarded share, so a
  // client masks with fewer neighbours than it tells the others). SecAgg protects the
  // inputs' privacy from the coordinator, not the result's integrity from it.
  FLT_CHECK((*sim)->max_both_kinds_held() == 0);
  if (!replaced && out.ok()) {
    FLT_CHECK_MSG(out->sum == (*sim)->ExpectedSum(out->survivors), "honest round output is not the survivors' sum");
  }
  return 0;
}

}  // namespace flotilla::aggregation::fuzz

#ifdef FLOTILLA_FUZZER_ENTRY
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return flotilla::aggregation::fuzz::SecAggClientFuzzOne(data, size);
}
#endif
