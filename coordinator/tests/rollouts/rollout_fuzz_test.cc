// Runs the libFuzzer entry point (tests/fuzz/rollout_fuzzer.cc) on deterministic
// mutations of real inputs for each of its modes, so every build exercises it without
// clang.
#include <gtest/gtest.h>

#include "flotilla/core/bytes.h"
#include "flotilla/core/log.h"
#include "flotilla/core/testing/seeded_random.h"
#include "flotilla/v1/ota.pb.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace flotilla::coordinator {
namespace {

Bytes Input(uint8_t mode, uint8_t flags, std::string_view body) {
  std::string s;
  s += static_cast<char>(mode);
  s += static_cast<char>(flags);
  s += body;
  return ToBytes(s);
}

void Mutate(Bytes& m, flotilla::testing::SeededRandom& rng) {
  const int edits = 1 + static_cast<int>(rng.Uniform(4));
  for (int e = 0; e < edits && m.size() > 2; ++e) {
    const size_t at = 2 + rng.Uniform(m.size() - 2);  // keep the mode byte
    switch (rng.Uniform(5)) {
      case 0: m[at] ^= static_cast<uint8_t>(1u << rng.Uniform(8)); break;
      case 1: m.resize(at); break;
      case 2: m.insert(m.begin() + static_cast<std::ptrdiff_t>(at), static_cast<uint8_t>(rng.Uniform(256))); break;
      case 3: m.erase(m.begin() + static_cast<std::ptrdiff_t>(at)); break;
      default: m[at] = static_cast<uint8_t>("{}[]\",:0-9e\\"[rng.Uniform(13)]); break;
    }
  }
}

TEST(RolloutFuzzTest, MutatedSpecsBodiesAndReportsNeverCrashOrBreakInvariants) {
  const LogLevel level = GetLogLevel();
  v1::OtaReport ok;
  ok.set_outcome(v1::OTA_OUTCOME_SUCCESS);
  ok.set_target_name("models/fuzz");
  ok.set_target_sha256(std::string(32, 'x'));
  v1::OtaReport bad = ok;
  bad.set_outcome(v1::OTA_OUTCOME_ROLLED_BACK);
  bad.set_error("golden prompt 2 regressed");
  struct Seed {
    Bytes bytes;
    int mutations;
  };
  const std::vector<Seed> seeds = {
      {Input(0, 0, R"({"name": "15m-v2", "targets": ["models/15m/base"], "canary_devices": ["lab-1"],
          "max_assignments_per_minute": 600, "repository_url": "https://ota.example/repo",
          "phases": [{"canary": true, "success_percent": 100},
                     {"percent": 10, "success_percent": 95, "max_failure_percent": 5, "min_finished": 20},
                     {"percent": 100, "success_percent": 95, "max_failures": 50, "pause_after": true}]})"),
       600},
      {Input(0, 0, R"({"name":"a","targets":["t"],"phases":[{"percent":100}]})"), 300},
      {Input(1, 0, "42"), 100},
      {Input(1, 0, R"({"reason": "perplexity regression"})"), 100},
      {Input(1, 0, "rolling_back"), 100},
      {Input(2, 1, ok.SerializeAsString()), 150},
      {Input(3, 1, ok.SerializeAsString()), 150},
      {Input(3, 3, bad.SerializeAsString()), 100},
      {Input(3, 0, bad.SerializeAsString()), 50},
  };
  flotilla::testing::SeededRandom rng(7);
  int runs = 0;
  for (const Seed& seed : seeds) {
    LLVMFuzzerTestOneInput(seed.bytes.data(), seed.bytes.size());
    for (int i = 0; i < seed.mutations; ++i) {
      Bytes m = seed.bytes;
      Mutate(m, rng);
      LLVMFuzzerTestOneInput(m.data(), m.size());
      ++runs;
    }
  }
  SetLogLevel(level);
  EXPECT_EQ(runs, 1650);
}

}  // namespace
}  // namespace flotilla::coordinator
