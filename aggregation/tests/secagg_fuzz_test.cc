// Runs the SecAgg+ fuzz entry points (tests/fuzz/secagg_*_fuzzer.cc, linked in) over
// deterministic mutations of the messages of a real round, so builds without clang
// exercise them too. The entry points FLT_CHECK their invariants (exact survivors' sum,
// nothing released after an abort, never both shares of one client).
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "flotilla/aggregation/testing/secagg_simulation.h"
#include "flotilla/core/testing/seeded_random.h"

namespace flotilla::aggregation::fuzz {
int SecAggServerFuzzOne(const uint8_t* data, size_t size);
int SecAggClientFuzzOne(const uint8_t* data, size_t size);
}  // namespace flotilla::aggregation::fuzz

namespace flotilla::aggregation {
namespace {

// (type, client) -> bytes of the honest round the fuzz harness replays (same options).
std::map<std::pair<std::string, uint32_t>, std::string> HonestTranscript(v1::SecAggProfile profile) {
  testing::SimulationOptions o;
  o.n = 4;
  o.vector_length = 8;
  o.profile = profile;
  auto sim = testing::SecAggSimulation::Create(o).value();
  std::map<std::pair<std::string, uint32_t>, std::string> t;
  testing::SimulationHooks hooks;
  hooks.transcript = [&](std::string_view type, uint32_t client, const std::string& bytes) {
    t[{std::string(type), client}] = bytes;
  };
  EXPECT_TRUE(sim->Run(hooks).ok());
  return t;
}

std::vector<std::string> Mutations(const std::string& seed, flotilla::testing::SeededRandom& rng, int count) {
  std::vector<std::string> out = {seed, "", std::string(1, '\xff')};
  for (int i = 0; i < count; ++i) {
    std::string m = seed;
    switch (rng.Uniform(4)) {
      case 0:  // flip bits
        for (int f = 0, n = 1 + static_cast<int>(rng.Uniform(4)); f < n && !m.empty(); ++f) {
          m[rng.Uniform(m.size())] = static_cast<char>(m[rng.Uniform(m.size())] ^ (1 << rng.Uniform(8)));
        }
        break;
      case 1:  // truncate
        m.resize(m.empty() ? 0 : rng.Uniform(m.size()));
        break;
      case 2:  // insert random bytes
        for (int f = 0, n = 1 + static_cast<int>(rng.Uniform(8)); f < n; ++f) {
          m.insert(m.begin() + static_cast<long>(m.empty() ? 0 : rng.Uniform(m.size())),
                   static_cast<char>(rng.NextU32()));
        }
        break;
      default:  // random garbage of similar size
        m.assign(rng.Uniform(seed.size() + 16), '\0');
        for (char& c : m) c = static_cast<char>(rng.NextU32());
    }
    out.push_back(std::move(m));
  }
  return out;
}

#ifdef FLOTILLA_SANITIZED
constexpr int kMutationsPerSeed = 6;
#else
constexpr int kMutationsPerSeed = 16;
#endif

TEST(SecAggFuzzTest, ServerSurvivesMutatedClientMessages) {
  flotilla::testing::SeededRandom rng(1);
  const char* stages[] = {"advertise_keys", "share_keys", "masked_input", "consistency_check_response",
                          "unmask_response"};
  size_t runs = 0;
  for (uint8_t profile : {0, 1}) {
    auto transcript = HonestTranscript(profile ? v1::SEC_AGG_PROFILE_HARDENED : v1::SEC_AGG_PROFILE_CURIOUS);
    for (uint8_t stage = 0; stage < 5; ++stage) {
      if (profile == 0 && stage == 3) continue;  // no consistency stage when curious
      const uint32_t sender = 1 + stage % 4;
      const std::string& seed = transcript[{stages[stage], sender}];
      ASSERT_FALSE(seed.empty()) << stages[stage];
      for (const std::string& m : Mutations(seed, rng, kMutationsPerSeed)) {
        std::string input;
        input.push_back(static_cast<char>(profile | (stage << 1)));
        input.push_back(static_cast<char>(sender - 1));
        input += m;
        fuzz::SecAggServerFuzzOne(reinterpret_cast<const uint8_t*>(input.data()), input.size());
        ++runs;
      }
    }
  }
  EXPECT_EQ(runs, 9u * (kMutationsPerSeed + 3));  // 9 (profile, stage) pairs
}

TEST(SecAggFuzzTest, ClientSurvivesMutatedCoordinatorMessages) {
  flotilla::testing::SeededRandom rng(2);
  const char* stages[] = {"neighbour_keys", "forwarded_shares", "consistency_check_request", "unmask_request"};
  size_t runs = 0;
  for (uint8_t profile : {0, 1}) {
    auto transcript = HonestTranscript(profile ? v1::SEC_AGG_PROFILE_HARDENED : v1::SEC_AGG_PROFILE_CURIOUS);
    for (uint8_t stage = 0; stage < 4; ++stage) {
      if (profile == 0 && stage == 2) continue;
      const std::string& seed = transcript[{stages[stage], 1}];
      ASSERT_FALSE(seed.empty()) << stages[stage];
      for (const std::string& m : Mutations(seed, rng, kMutationsPerSeed)) {
        std::string input;
        input.push_back(static_cast<char>(profile | (stage << 1)));
        input += m;
        fuzz::SecAggClientFuzzOne(reinterpret_cast<const uint8_t*>(input.data()), input.size());
        ++runs;
      }
    }
  }
  EXPECT_EQ(runs, 7u * (kMutationsPerSeed + 3));  // 7 (profile, stage) pairs
}

}  // namespace
}  // namespace flotilla::aggregation
