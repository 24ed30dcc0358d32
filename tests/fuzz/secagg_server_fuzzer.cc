// libFuzzer target: arbitrary bytes replace one client's message to the SecAgg+ server
// at one stage of an otherwise honest round. The server must never crash, and whatever
// it accepts or rejects, a round that completes must output exactly the sum of the
// survivors it reports (no partial or corrupted state).
//   input[0]: profile (bit 0) and stage (bits 1-3); input[1]: sender index; rest: message.
#include <cstdint>
#include <string>

#include "flotilla/aggregation/testing/secagg_simulation.h"
#include "flotilla/core/check.h"

namespace flotilla::aggregation::fuzz {

int SecAggServerFuzzOne(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  static constexpr const char* kStages[] = {"advertise_keys", "share_keys", "masked_input",
                                            "consistency_check_response", "unmask_response"};
  testing::SimulationOptions o;
  o.n = 4;
  o.vector_length = 8;
  o.profile = (data[0] & 1) ? v1::SEC_AGG_PROFILE_HARDENED : v1::SEC_AGG_PROFILE_CURIOUS;
  const std::string_view stage = kStages[(data[0] >> 1) % 5];
  const uint32_t sender = 1 + data[1] % o.n;
  const std::string payload(reinterpret_cast<const char*>(data + 2), size - 2);
  auto sim = testing::SecAggSimulation::Create(o);
  FLT_CHECK(sim.ok());
  testing::SimulationHooks hooks;
  hooks.wire = [&](std::string_view type, uint32_t client, bool to_server, std::string& bytes) {
    if (to_server && client == sender && type == stage) bytes = payload;
  };
  auto out = (*sim)->Run(hooks);
  if (out.ok()) {
    FLT_CHECK_MSG(out->sum == (*sim)->ExpectedSum(out->survivors), "server output is not the survivors' sum");
    for (uint32_t u = 1; u <= o.n; ++u) {
      const HeldShares h = (*sim)->server().SharesHeldFor(u);
      FLT_CHECK(h.self_mask == 0 && h.mask_key == 0);  // released after Finish
    }
  }
  FLT_CHECK((*sim)->max_both_kinds_held() == 0);
  return 0;
}

}  // namespace flotilla::aggregation::fuzz

#ifdef FLOTILLA_FUZZER_ENTRY
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return flotilla::aggregation::fuzz::SecAggServerFuzzOne(data, size);
}
#endif
