// End-to-end SecAgg+ rounds through the real client and server state machines
// (reference section 8, tests 1-4, 10, 11, 13).
#include <gtest/gtest.h>

#include <optional>

#include <cmath>
#include <set>

#include "flotilla/aggregation/fixed_point.h"
#include "flotilla/aggregation/masked_vector.h"
#include "flotilla/aggregation/secagg_client.h"
#include "flotilla/aggregation/secagg_server.h"
#include "flotilla/aggregation/testing/secagg_simulation.h"
#include "flotilla/core/testing/seeded_random.h"
#include "flotilla/security/hash.h"

namespace flotilla::aggregation {
namespace {

using testing::DropAt;
using testing::SecAggSimulation;
using testing::SimulationHooks;
using testing::SimulationOptions;

#ifdef FLOTILLA_SANITIZED
constexpr uint32_t kLargeN = 200;  // sanitizers are ~10x slower; the code paths are the same
#else
constexpr uint32_t kLargeN = 1000;
#endif

std::vector<uint32_t> SurvivorsOf(const SimulationOptions& o) {
  std::vector<uint32_t> s;
  for (uint32_t u = 1; u <= o.n; ++u) {
    auto it = o.drops.find(u);
    // Dropping at consistency/unmask still counts as a survivor: y_u was summed.
    if (it == o.drops.end() || it->second == DropAt::kConsistency || it->second == DropAt::kUnmask) s.push_back(u);
  }
  return s;
}

void ExpectExactSum(SimulationOptions o) {
  auto sim = SecAggSimulation::Create(o);
  ASSERT_TRUE(sim.ok()) << sim.status().ToString();
  auto out = (*sim)->Run();
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  const auto survivors = SurvivorsOf(o);
  EXPECT_EQ(out->survivors, survivors);
  EXPECT_EQ(out->sum, (*sim)->ExpectedSum(survivors));
  EXPECT_EQ((*sim)->max_both_kinds_held(), 0u);
  // Only the t+1 shares Finish reads are kept per owner, never all k.
  EXPECT_GE((*sim)->max_shares_held(), size_t{(*sim)->server().t()});
  EXPECT_LE((*sim)->max_shares_held(), size_t{(*sim)->server().t()} + 1);
  EXPECT_TRUE((*sim)->client_errors().empty()) << (*sim)->client_errors().begin()->second.ToString();
}

struct SizeCase {
  uint32_t n;
  v1::SecAggProfile profile;
};

class ExactSumTest : public ::testing::TestWithParam<SizeCase> {};

TEST_P(ExactSumTest, DecodedSumEqualsPlaintextSumBitForBit) {
  SimulationOptions o;
  o.n = GetParam().n;
  o.profile = GetParam().profile;
  o.gamma = 0.0;
  o.delta = 0.0;
  if (o.n > kCompleteGraphMaxCohort) {
    o.gamma = 0.05;
    o.delta = 0.05;
  }
  o.vector_length = 97;  // not a multiple of the AES block's 4 words
  o.seed = o.n;
  ExpectExactSum(o);
}

INSTANTIATE_TEST_SUITE_P(Cohorts, ExactSumTest,
                         ::testing::Values(SizeCase{2, v1::SEC_AGG_PROFILE_CURIOUS},
                                           SizeCase{3, v1::SEC_AGG_PROFILE_CURIOUS},
                                           SizeCase{5, v1::SEC_AGG_PROFILE_HARDENED},
                                           SizeCase{10, v1::SEC_AGG_PROFILE_CURIOUS},
                                           SizeCase{10, v1::SEC_AGG_PROFILE_HARDENED},
                                           SizeCase{100, v1::SEC_AGG_PROFILE_CURIOUS},
                                           SizeCase{kLargeN, v1::SEC_AGG_PROFILE_CURIOUS}));

TEST(SecAggTest, HararyGraphAtOneThousandWithDropoutsIsExact) {
  SimulationOptions o;
  o.n = kLargeN;
  o.profile = v1::SEC_AGG_PROFILE_CURIOUS;
  o.gamma = 0.05;
  o.delta = 0.05;
  o.vector_length = 128;
  o.server_threads = 2;
  for (uint32_t u = 5; u <= o.n; u += 17) o.drops[u] = DropAt::kMaskedInput;  // ~6% after ShareKeys
  for (uint32_t u = 7; u <= o.n; u += 41) o.drops[u] = DropAt::kShareKeys;
  ExpectExactSum(o);
}

TEST(SecAggTest, HardenedHararyGraphWithRealEcdsaIdentities) {
  SimulationOptions o;
  o.n = 40;
  o.k = 8;
  o.t = 5;  // the semi-malicious floor for k = 8 at gamma = delta = 0
  o.profile = v1::SEC_AGG_PROFILE_HARDENED;
  o.real_identities = true;
  o.drops[3] = DropAt::kMaskedInput;
  o.drops[50] = DropAt::kUnmask;
  ExpectExactSum(o);
}

TEST(SecAggTest, ExtremeInputsAtFullMagnitudeStayExact) {
  // Reference test 11: n_max clients all at +max (then all at -max) still decode exactly.
  for (int sign : {1, -1}) {
    SimulationOptions o;
    o.n = 64;
    o.profile = v1::SEC_AGG_PROFILE_CURIOUS;
    o.bit_width = 16;
    o.quant_bits = QuantBitsFor(16, 64);  // 10 bits: 64 * 2^9 * 2 = 2^16
    o.vector_length = 8;
    auto sim = SecAggSimulation::Create(o);
    ASSERT_TRUE(sim.ok()) << sim.status().ToString();
    const FixedPointConfig fp{o.bit_width, o.quant_bits, 1.0};
    flotilla::testing::SeededRandom rng(3);
    std::vector<double> x(o.vector_length, sign * 5.0);  // clipped to +-c
    for (uint32_t u = 1; u <= o.n; ++u) (*sim)->SetInput(u, EncodeFixedPoint(x, fp, rng).value());
    auto out = (*sim)->Run();
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    const auto decoded = DecodeFixedPointSum(out->sum, fp);
    for (double d : decoded) EXPECT_DOUBLE_EQ(d, sign * 64.0);
  }
}

TEST(SecAggTest, OverflowingConfigurationIsRefused) {
  SimulationOptions o;
  o.n = 65;  // one more than 2^(b-q) allows
  o.profile = v1::SEC_AGG_PROFILE_CURIOUS;
  o.bit_width = 16;
  o.quant_bits = 10;
  auto sim = SecAggSimulation::Create(o);
  ASSERT_FALSE(sim.ok());
  EXPECT_NE(sim.status().message().find("overflow"), std::string::npos) << sim.status().ToString();
}

TEST(SecAggTest, FloatSumIsWithinQuantizationErrorOfPlaintext) {
  SimulationOptions o;
  o.n = 10;
  o.profile = v1::SEC_AGG_PROFILE_CURIOUS;
  o.vector_length = 50;
  auto sim = SecAggSimulation::Create(o);
  ASSERT_TRUE(sim.ok());
  const FixedPointConfig fp{32, QuantBitsFor(32, 10), 1.0};
  flotilla::testing::SeededRandom rng(9);
  std::vector<double> truth(o.vector_length, 0.0);
  for (uint32_t u = 1; u <= o.n; ++u) {
    std::vector<double> x(o.vector_length);
    for (double& v : x) v = rng.UniformDouble() * 2 - 1;
    for (size_t i = 0; i < x.size(); ++i) truth[i] += x[i];
    (*sim)->SetInput(u, EncodeFixedPoint(x, fp, rng).value());
  }
  auto out = (*sim)->Run();
  ASSERT_TRUE(out.ok());
  const auto decoded = DecodeFixedPointSum(out->sum, fp);
  for (size_t i = 0; i < truth.size(); ++i) EXPECT_NEAR(decoded[i], truth[i], o.n / FixedPointScale(fp));
}

// ---- dropout recovery at every stage (reference test 2)

struct DropCase {
  const char* name;
  DropAt at;
  v1::SecAggProfile profile;
};

class DropoutTest : public ::testing::TestWithParam<DropCase> {};

TEST_P(DropoutTest, RecoversExactSumOfSurvivors) {
  SimulationOptions o;
  o.n = 30;
  o.k = 10;
  o.t = 6;
  o.profile = GetParam().profile;
  o.gamma = 0.0;
  o.delta = 0.0;
  // Drop up to k - t = 4 in one neighbourhood: 4 clients, plus a far one.
  for (uint32_t u : {2u, 3u, 4u, 5u, 20u}) o.drops[u] = GetParam().at;
  ExpectExactSum(o);
}

INSTANTIATE_TEST_SUITE_P(
    Stages, DropoutTest,
    ::testing::Values(DropCase{"BeforeShareKeys", DropAt::kAdvertise, v1::SEC_AGG_PROFILE_CURIOUS},
                      DropCase{"AfterAdvertBeforeShares", DropAt::kShareKeys, v1::SEC_AGG_PROFILE_CURIOUS},
                      DropCase{"BetweenShareKeysAndMaskedInput", DropAt::kMaskedInput, v1::SEC_AGG_PROFILE_CURIOUS},
                      DropCase{"BetweenShareKeysAndMaskedInputHardened", DropAt::kMaskedInput,
                               v1::SEC_AGG_PROFILE_HARDENED},
                      DropCase{"AfterMaskedInputAtConsistency", DropAt::kConsistency, v1::SEC_AGG_PROFILE_HARDENED},
                      DropCase{"DuringUnmasking", DropAt::kUnmask, v1::SEC_AGG_PROFILE_CURIOUS},
                      DropCase{"DuringUnmaskingHardened", DropAt::kUnmask, v1::SEC_AGG_PROFILE_HARDENED}),
    [](const ::testing::TestParamInfo<DropCase>& param) { return std::string(param.param.name); });

TEST(SecAggTest, MixedDropoutsAtEveryStage) {
  SimulationOptions o;
  o.n = 40;
  o.k = 12;
  o.t = 7;
  o.profile = v1::SEC_AGG_PROFILE_HARDENED;
  o.drops = {{1, DropAt::kAdvertise}, {9, DropAt::kShareKeys}, {17, DropAt::kMaskedInput},
             {25, DropAt::kConsistency}, {33, DropAt::kUnmask}};
  ExpectExactSum(o);
}

// ---- threshold boundary (reference test 3)

// Complete graph of n = 8 (k = 7), t = 4: the first `dropped` clients drop after
// ShareKeys; 3 leave every survivor exactly t live neighbours, 4 leave t - 1.
SimulationOptions CompleteGraphOfEight(uint32_t dropped) {
  SimulationOptions o;
  o.n = 8;
  o.k = 7;
  o.t = 4;
  o.profile = v1::SEC_AGG_PROFILE_CURIOUS;
  for (uint32_t u = 1; u <= dropped; ++u) o.drops[u] = DropAt::kMaskedInput;
  return o;
}

TEST(SecAggTest, ExactlyTLiveNeighboursSucceeds) { ExpectExactSum(CompleteGraphOfEight(3)); }

TEST(SecAggTest, TMinusOneLiveNeighboursAbortsWithNothingReleased) {
  const SimulationOptions o = CompleteGraphOfEight(4);
  auto sim = SecAggSimulation::Create(o);
  ASSERT_TRUE(sim.ok());
  auto out = (*sim)->Run();
  ASSERT_FALSE(out.ok());
  EXPECT_EQ((*sim)->server().state(), ServerState::kAborted);
  EXPECT_NE(out.status().message().find("fewer than t"), std::string::npos) << out.status().ToString();
  EXPECT_EQ((*sim)->server().AbortMessage().reason(), v1::ABORT_REASON_TOO_FEW_SURVIVORS);
  // No unmask request went out, so no client released anything.
  for (uint32_t u = 5; u <= 8; ++u) EXPECT_EQ((*sim)->client(u).state(), ClientState::kMaskedInputSent);
  for (uint32_t u = 1; u <= 8; ++u) {
    EXPECT_EQ((*sim)->server().SharesHeldFor(u).self_mask, 0u);
    EXPECT_EQ((*sim)->server().SharesHeldFor(u).mask_key, 0u);
  }
}

TEST(SecAggTest, ClientRefusesUnmaskWithTMinusOneAliveNeighbours) {
  auto sim = SecAggSimulation::Create(CompleteGraphOfEight(3));
  ASSERT_TRUE(sim.ok());
  SimulationHooks hooks;
  hooks.unmask = [](uint32_t, v1::UnmaskRequest& req) {
    // A lying server claims one more neighbour died: t - 1 alive remain.
    const uint32_t v = req.alive(0);
    req.mutable_alive()->erase(req.mutable_alive()->begin());
    req.add_dead(v);
  };
  auto out = (*sim)->Run(hooks);
  EXPECT_FALSE(out.ok());
  for (uint32_t u = 4; u <= 8; ++u) {
    EXPECT_EQ((*sim)->client(u).state(), ClientState::kAborted);
    EXPECT_NE((*sim)->client(u).abort_status().message().find("fewer than t"), std::string::npos);
  }
}

// ---- the server never learns an individual input (reference test 4)

TEST(SecAggTest, ServerNeverHoldsBothSharesOfAnyClient) {
  SimulationOptions o;
  o.n = 30;
  o.k = 10;
  o.t = 6;
  o.profile = v1::SEC_AGG_PROFILE_CURIOUS;
  o.drops = {{4, DropAt::kMaskedInput}, {11, DropAt::kMaskedInput}, {19, DropAt::kUnmask}};
  auto sim = SecAggSimulation::Create(o);
  ASSERT_TRUE(sim.ok());
  SimulationHooks hooks;
  // A curious server also asks for b shares of the dead: clients must refuse to mix.
  hooks.unmask = [](uint32_t, v1::UnmaskRequest& req) {
    for (uint32_t d : req.dead()) req.add_alive(d);
  };
  auto out = (*sim)->Run(hooks);
  EXPECT_FALSE(out.ok());
  EXPECT_EQ((*sim)->max_both_kinds_held(), 0u);
  for (uint32_t u = 1; u <= o.n; ++u) {
    const HeldShares h = (*sim)->server().SharesHeldFor(u);
    EXPECT_FALSE(h.self_mask > 0 && h.mask_key > 0) << u;
  }
}

// Chi-square over the 256 values of each byte position of the words: uniform data gives
// ~255 with sd ~22.6; 400 is far beyond anything uniform data produces at these sizes.
double MaxByteChiSquare(const std::vector<uint32_t>& words) {
  double worst = 0;
  for (int byte = 0; byte < 4; ++byte) {
    std::vector<double> counts(256, 0);
    for (uint32_t w : words) counts[(w >> (8 * byte)) & 0xff] += 1;
    const double expected = static_cast<double>(words.size()) / 256;
    double chi = 0;
    for (double c : counts) chi += (c - expected) * (c - expected) / expected;
    worst = std::max(worst, chi);
  }
  return worst;
}

std::vector<uint32_t> MaskedInputOfClientOne(uint32_t fill, uint64_t seed) {
  SimulationOptions o;
  o.n = 4;
  o.profile = v1::SEC_AGG_PROFILE_CURIOUS;
  o.vector_length = 16384;
  o.seed = seed;
  auto sim = SecAggSimulation::Create(o).value();
  for (uint32_t u = 1; u <= o.n; ++u) sim->SetInput(u, std::vector<uint32_t>(o.vector_length, fill));
  std::string captured;
  SimulationHooks hooks;
  hooks.transcript = [&](std::string_view type, uint32_t client, const std::string& bytes) {
    if (type == "masked_input" && client == 1) captured = bytes;
  };
  EXPECT_TRUE(sim->Run(hooks).ok());
  // Open the box as the coordinator does: this is everything it ever sees of y_1.
  v1::MaskedInput mi;
  EXPECT_TRUE(mi.ParseFromString(captured));
  auto plain = OpenBox(mi.inline_box(), sim->box_key(), sim->config().round_id(), 1, CoordinatorCryptoSuite());
  EXPECT_TRUE(plain.ok());
  v1::MaskedVector mv;
  EXPECT_TRUE(mv.ParseFromArray(plain->data(), static_cast<int>(plain->size())));
  std::vector<uint32_t> y(o.vector_length);
  EXPECT_TRUE(UnpackRing(AsBytes(mv.packed()), 32, y).ok());
  return y;
}

TEST(SecAggTest, SingleMaskedInputIsUniformAndIndependentOfPlaintext) {
  const auto y_zero = MaskedInputOfClientOne(0, 5);
  const auto y_max = MaskedInputOfClientOne(0x7fffffff, 6);
  EXPECT_LT(MaxByteChiSquare(y_zero), 400.0);
  EXPECT_LT(MaxByteChiSquare(y_max), 400.0);
  // Means of uniform 32-bit words: 2^31 +- a few standard errors (2^32/sqrt(12*16384)).
  for (const auto* y : {&y_zero, &y_max}) {
    double mean = 0;
    for (uint32_t w : *y) mean += w;
    mean /= static_cast<double>(y->size());
    EXPECT_NEAR(mean, 2147483648.0, 5 * 4294967296.0 / std::sqrt(12.0 * 16384));
  }
  // The sanity check of the test itself: the plaintext (all equal words) fails it badly.
  EXPECT_GT(MaxByteChiSquare(std::vector<uint32_t>(16384, 0x7fffffff)), 1e5);
}

// ---- freshness (reference test 10) and golden transcript (reference test 13)

std::string TranscriptHash(uint64_t seed) {
  SimulationOptions o;
  o.n = 6;
  o.profile = v1::SEC_AGG_PROFILE_HARDENED;
  o.seed = seed;
  o.drops[2] = DropAt::kMaskedInput;
  auto sim = SecAggSimulation::Create(o).value();
  security::Sha256Hasher h;
  SimulationHooks hooks;
  hooks.transcript = [&](std::string_view type, uint32_t client, const std::string& bytes) {
    h.Update(AsBytes(type));
    const uint8_t c[4] = {static_cast<uint8_t>(client), 0, 0, 0};
    h.Update(c);
    h.Update(AsBytes(bytes));
  };
  EXPECT_TRUE(sim->Run(hooks).ok());
  const auto d = h.Finish();
  return ToHex(d);
}

TEST(SecAggTest, FixedSeedsGiveAByteIdenticalTranscript) {
  const std::string a = TranscriptHash(11);
  const std::string b = TranscriptHash(11);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, TranscriptHash(12));
}

TEST(SecAggTest, KeysSeedsAndSessionIdAreFreshEveryRound) {
  std::set<std::string> keys;
  std::set<std::string> graph_seeds;
  for (uint64_t seed : {21, 22, 23}) {
    SimulationOptions o;
    o.n = 5;
    o.profile = v1::SEC_AGG_PROFILE_CURIOUS;
    o.seed = seed;
    auto sim = SecAggSimulation::Create(o).value();
    SimulationHooks hooks;
    hooks.transcript = [&](std::string_view type, uint32_t, const std::string& bytes) {
      if (type != "advertise_keys") return;
      v1::AdvertiseKeys ad;
      ASSERT_TRUE(ad.ParseFromString(bytes));
      EXPECT_TRUE(keys.insert(ad.pk_c()).second);
      EXPECT_TRUE(keys.insert(ad.pk_s()).second);
    };
    ASSERT_TRUE(sim->Run(hooks).ok());
    EXPECT_TRUE(graph_seeds.insert(sim->config().graph_seed()).second);
  }
  EXPECT_EQ(keys.size(), 3u * 5u * 2u);
}

TEST(SecAggTest, LateMaskedInputAfterCloseIsRejected) {
  SimulationOptions o;
  o.n = 6;
  o.profile = v1::SEC_AGG_PROFILE_CURIOUS;
  o.drops[3] = DropAt::kMaskedInput;
  auto sim = SecAggSimulation::Create(o).value();
  Status late;
  SimulationHooks hooks;
  hooks.after_masked_input_closed = [&] {
    // Client 3's real, valid y_3 arrives after the stage closed: discarded (reference 7.2).
    late = sim->server().HandleMaskedInput(sim->withheld_masked_inputs().at(3));
  };
  auto out = sim->Run(hooks);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(late.code(), StatusCode::kFailedPrecondition) << late.ToString();
  EXPECT_NE(late.message().find("late"), std::string::npos);
  EXPECT_EQ(out->sum, sim->ExpectedSum({1, 2, 4, 5, 6}));
}

TEST(SecAggTest, StageMessagesAreBuiltOnlyInTheirStageForTheirRecipients) {
  SimulationOptions o;
  o.n = 6;
  o.profile = v1::SEC_AGG_PROFILE_CURIOUS;
  o.drops[3] = DropAt::kMaskedInput;  // in U2, not in U3
  o.drops[5] = DropAt::kShareKeys;    // in U1, not in U2
  auto sim = SecAggSimulation::Create(o).value();
  SimulationHooks hooks;
  Status early_forward, wrong_stage_keys, not_in_u2, early_unmask;
  size_t forwarded_to_2 = 0;
  hooks.forwarded_shares = [&](uint32_t to, v1::ForwardedShares& msg) {
    if (to != 2) return;
    forwarded_to_2 = static_cast<size_t>(msg.shares_size());
    for (const auto& e : msg.shares()) EXPECT_EQ(e.to(), 2u);
    wrong_stage_keys = sim->server().NeighbourKeysFor(2).status();
    not_in_u2 = sim->server().ForwardedSharesFor(5).status();
    early_unmask = sim->server().UnmaskRequestFor(2).status();
  };
  hooks.neighbour_keys = [&](uint32_t to, v1::NeighbourKeys&) {
    if (to == 1) early_forward = sim->server().ForwardedSharesFor(1).status();
  };
  Status after_close_forward, dropped_unmask;
  std::optional<v1::UnmaskRequest> unmask_1;
  hooks.after_masked_input_closed = [&] {
    after_close_forward = sim->server().ForwardedSharesFor(1).status();
    dropped_unmask = sim->server().UnmaskRequestFor(3).status();
    auto r = sim->server().UnmaskRequestFor(1);
    if (r.ok()) unmask_1 = *r;
  };
  auto out = sim->Run(hooks);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(out->sum, sim->ExpectedSum({1, 2, 4, 6}));
  EXPECT_EQ(early_forward.code(), StatusCode::kFailedPrecondition) << early_forward.ToString();
  EXPECT_EQ(wrong_stage_keys.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(not_in_u2.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(early_unmask.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(after_close_forward.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(dropped_unmask.code(), StatusCode::kFailedPrecondition) << dropped_unmask.ToString();
  // Complete graph of 6: client 2 gets a share from each other member of U2 (1, 3, 4, 6).
  EXPECT_EQ(forwarded_to_2, 4u);
  ASSERT_TRUE(unmask_1.has_value());
  EXPECT_EQ(unmask_1->dead_size(), 1);  // 3 shared keys but sent no masked input
  EXPECT_EQ(unmask_1->dead(0), 3u);
  EXPECT_EQ(sim->server().NeighbourKeysFor(0).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace flotilla::aggregation
