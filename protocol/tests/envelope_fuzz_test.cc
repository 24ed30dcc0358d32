// Runs the libFuzzer entry point (tests/fuzz/envelope_fuzzer.cc, linked in) over a few
// thousand deterministic mutations of valid envelopes, so builds without clang exercise
// it too, and checks that no mutation yields different authenticated content.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "flotilla/core/check.h"
#include "flotilla/core/testing/fake_clock.h"
#include "flotilla/core/testing/seeded_random.h"
#include "flotilla/protocol/envelope.h"
#include "flotilla/protocol/payload.h"
#include "flotilla/protocol/testing/fake_signer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace flotilla::protocol {
namespace {

using flotilla::testing::FakeClock;
using flotilla::testing::SeededRandom;

// Same identities, keys and clock as the fuzz harness, so seeds open there.
struct Seeds {
  Seeds() : device("dev-1", 11), coordinator(std::string(kCoordinatorId), 99), random(42) {
    verifier.Add("dev-1", 11);
    verifier.Add(std::string(kCoordinatorId), 99);
    options.recipients = {std::string(kCoordinatorId), "dev-1", GroupRecipient("lab")};

    v1::Presence presence;
    presence.set_state(v1::PRESENCE_STATE_ONLINE);
    presence.set_session_id("s-1");
    Add(device, presence, kCoordinatorId);
    v1::RoundInvitation inv;
    inv.set_round_id("r-1");
    inv.mutable_secagg()->set_n(10);
    inv.mutable_secagg()->add_neighbours()->set_device_id("dev-2");
    inv.mutable_training()->add_lora_targets(v1::LORA_TARGET_Q);
    Add(coordinator, inv, "dev-1");
    v1::RoundAnnouncement ann;
    ann.set_round_id("r-1");
    ann.set_group("lab");
    Add(coordinator, ann, GroupRecipient("lab"));
    v1::MaskedInput masked;
    masked.set_round_id("r-1");
    masked.mutable_inline_box()->set_ciphertext(std::string(300, '\x5a'));
    Add(device, masked, kCoordinatorId);
    v1::UnmaskRequest unmask;
    unmask.add_alive(1);
    unmask.add_dead(2);
    unmask.add_neighbour_signatures()->set_signature("sig");
    Add(coordinator, unmask, "dev-1");
    v1::OtaReport report;
    report.set_outcome(v1::OTA_OUTCOME_SUCCESS);
    report.mutable_health()->set_latency_p95_ms(12.5);
    Add(device, report, kCoordinatorId);
    v1::Telemetry telemetry;
    (*telemetry.mutable_counters())["tokens"] = 3;
    Add(device, telemetry, kCoordinatorId);
  }

  template <typename Msg>
  void Add(const Signer& signer, const Msg& msg, std::string_view recipient) {
    Result<Bytes> wire = SealMessage(signer, msg, recipient, clock, random);
    FLT_CHECK_OK(wire);
    wires.push_back(*wire);
  }

  FakeClock clock;
  testing::FakeSigner device;
  testing::FakeSigner coordinator;
  testing::FakeVerifier verifier;
  SeededRandom random;
  OpenOptions options;
  std::vector<Bytes> wires;
};

Bytes Mutate(const Bytes& in, const std::vector<Bytes>& all, SeededRandom& rng) {
  Bytes out = in;
  const int ops = 1 + static_cast<int>(rng.Uniform(3));
  for (int op = 0; op < ops; ++op) {
    const size_t pos = out.empty() ? 0 : rng.Uniform(out.size());
    switch (rng.Uniform(8)) {
      case 0:  // flip one bit
        if (!out.empty()) out[pos] ^= static_cast<uint8_t>(1u << rng.Uniform(8));
        break;
      case 1:  // random byte
        if (!out.empty()) out[pos] = static_cast<uint8_t>(rng.NextU32());
        break;
      case 2: {  // interesting byte
        static constexpr uint8_t kInteresting[] = {0x00, 0x01, 0x7f, 0x80, 0xff, 0x0a, 0x12};
        if (!out.empty()) out[pos] = kInteresting[rng.Uniform(sizeof(kInteresting))];
        break;
      }
      case 3:  // insert
        out.insert(out.begin() + static_cast<std::ptrdiff_t>(pos), static_cast<uint8_t>(rng.NextU32()));
        break;
      case 4:  // delete
        if (!out.empty()) out.erase(out.begin() + static_cast<std::ptrdiff_t>(pos));
        break;
      case 5:  // truncate
        out.resize(pos);
        break;
      case 6: {  // duplicate a slice
        const size_t len = std::min<size_t>(out.size() - std::min(pos, out.size()), 1 + rng.Uniform(16));
        Bytes slice(out.begin() + static_cast<std::ptrdiff_t>(pos),
                    out.begin() + static_cast<std::ptrdiff_t>(pos + len));
        out.insert(out.begin() + static_cast<std::ptrdiff_t>(pos), slice.begin(), slice.end());
        break;
      }
      default: {  // splice with another seed
        const Bytes& other = all[rng.Uniform(all.size())];
        const size_t cut = rng.Uniform(other.size() + 1);
        out.resize(pos);
        out.insert(out.end(), other.begin() + static_cast<std::ptrdiff_t>(cut), other.end());
        break;
      }
    }
  }
  return out;
}

bool SameContent(const OpenedEnvelope& a, const OpenedEnvelope& b) {
  return a.sender_id == b.sender_id && a.message_id == b.message_id && a.timestamp_ms == b.timestamp_ms &&
         a.payload_type == b.payload_type && a.payload == b.payload && a.recipient == b.recipient;
}

TEST(EnvelopeFuzzTest, SeedsOpen) {
  Seeds seeds;
  for (const Bytes& wire : seeds.wires) {
    Result<OpenedEnvelope> r = Open(wire, seeds.verifier, seeds.clock, seeds.options);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_TRUE(ValidatePayload(r->payload_type, r->payload).ok());
    EXPECT_EQ(LLVMFuzzerTestOneInput(wire.data(), wire.size()), 0);
  }
  // FLOTILLA_WRITE_FUZZ_SEEDS=<dir> writes the seeds as a libFuzzer corpus.
  if (const char* dir = std::getenv("FLOTILLA_WRITE_FUZZ_SEEDS")) {
    for (size_t i = 0; i < seeds.wires.size(); ++i) {
      std::ofstream(std::string(dir) + "/seed-" + std::to_string(i), std::ios::binary)
          .write(reinterpret_cast<const char*>(seeds.wires[i].data()),
                 static_cast<std::streamsize>(seeds.wires[i].size()));
    }
  }
}

TEST(EnvelopeFuzzTest, MutationsNeverCrashNorForgeContent) {
  Seeds seeds;
  std::vector<OpenedEnvelope> originals;
  for (const Bytes& wire : seeds.wires) {
    originals.push_back(*Open(wire, seeds.verifier, seeds.clock, seeds.options));
  }
  SeededRandom rng(2024);
  int opened = 0;
  constexpr int kMutations = 4000;
  for (int i = 0; i < kMutations; ++i) {
    const size_t which = rng.Uniform(seeds.wires.size());
    const Bytes mutated = Mutate(seeds.wires[which], seeds.wires, rng);
    ASSERT_EQ(LLVMFuzzerTestOneInput(mutated.data(), mutated.size()), 0);
    Result<OpenedEnvelope> r = Open(mutated, seeds.verifier, seeds.clock, seeds.options);
    if (!r.ok()) continue;
    ++opened;
    // Whatever still opens must be one of the signed originals, byte for byte in content
    // (a mutation may only have touched unsigned framing, or spliced a whole seed).
    bool matches = false;
    for (const OpenedEnvelope& o : originals) matches |= SameContent(*r, o);
    ASSERT_TRUE(matches) << "mutation " << i << " opened with new content: " << ToHex(mutated);
  }
  // Nearly every mutation must be refused; a few may only touch unsigned framing.
  EXPECT_LT(opened, kMutations / 10);
}

}  // namespace
}  // namespace flotilla::protocol
