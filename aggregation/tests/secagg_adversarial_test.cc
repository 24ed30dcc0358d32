// A malicious coordinator against the client (reference section 8, tests 5 and 6): every
// client-side abort condition of section 2 step 5, and the hardened profile's checks.
#include <gtest/gtest.h>

#include <set>

#include "flotilla/aggregation/secagg_client.h"
#include "flotilla/aggregation/testing/secagg_simulation.h"
#include "flotilla/protocol/testing/fake_signer.h"

namespace flotilla::aggregation {
namespace {

using testing::DropAt;
using testing::SecAggSimulation;
using testing::SimulationHooks;
using testing::SimulationOptions;

SimulationOptions Small(v1::SecAggProfile profile) {
  SimulationOptions o;
  o.n = 12;
  o.k = 6;
  o.t = 4;  // the semi-malicious floor for k = 6 (gamma = delta = 0); fine for curious too
  o.profile = profile;
  o.drops[4] = DropAt::kMaskedInput;  // a neighbour somewhere is dead at unmasking
  return o;
}

// Runs with `hooks`; expects client `victim` to abort with a message containing `why`,
// having released nothing (it never reached kCompleted).
void ExpectVictimAborts(const SimulationOptions& o, const SimulationHooks& hooks, uint32_t victim,
                        const std::string& why) {
  auto sim = SecAggSimulation::Create(o);
  ASSERT_TRUE(sim.ok()) << sim.status().ToString();
  (void)(*sim)->Run(hooks);
  SecAggClient& c = (*sim)->client(victim);
  EXPECT_EQ(c.state(), ClientState::kAborted);
  EXPECT_NE(c.abort_status().message().find(why), std::string::npos) << c.abort_status().ToString();
  EXPECT_EQ(c.AbortMessage().round_id(), (*sim)->config().round_id());
}

TEST(SecAggAdversarialTest, ClientInBothListsAborts) {
  for (auto profile : {v1::SEC_AGG_PROFILE_CURIOUS, v1::SEC_AGG_PROFILE_HARDENED}) {
    uint32_t victim = 0;
    SimulationHooks hooks;
    hooks.unmask = [&](uint32_t to, v1::UnmaskRequest& req) {
      if (victim != 0 || req.alive_size() == 0) return;
      victim = to;
      req.add_dead(req.alive(0));
    };
    auto o = Small(profile);
    auto sim = SecAggSimulation::Create(o).value();
    (void)sim->Run(hooks);  // the round may still succeed without the victim's shares
    ASSERT_NE(victim, 0u);
    EXPECT_EQ(sim->client(victim).state(), ClientState::kAborted);
    EXPECT_NE(sim->client(victim).abort_status().message().find("listed twice or in both lists"), std::string::npos)
        << sim->client(victim).abort_status().ToString();
  }
}

TEST(SecAggAdversarialTest, ClientListedDeadTwiceAborts) {
  uint32_t victim = 0;
  SimulationHooks hooks;
  hooks.unmask = [&](uint32_t to, v1::UnmaskRequest& req) {
    if (victim != 0 || req.dead_size() == 0) return;
    victim = to;
    req.add_dead(req.dead(0));
  };
  auto sim = SecAggSimulation::Create(Small(v1::SEC_AGG_PROFILE_CURIOUS)).value();
  (void)sim->Run(hooks);
  ASSERT_NE(victim, 0u);
  EXPECT_EQ(sim->client(victim).state(), ClientState::kAborted);
  EXPECT_NE(sim->client(victim).abort_status().message().find("listed twice"), std::string::npos);
}

TEST(SecAggAdversarialTest, ClientListedDeadItselfAborts) {
  SimulationHooks hooks;
  hooks.unmask = [&](uint32_t to, v1::UnmaskRequest& req) {
    if (to == 1) req.add_dead(1);
  };
  ExpectVictimAborts(Small(v1::SEC_AGG_PROFILE_CURIOUS), hooks, 1, "we are listed");
}

TEST(SecAggAdversarialTest, NeighbourDeadBeforeShareKeysListedAgainAborts) {
  // Client 7 never advertised; a lying server lists it as dead to get s_7 shares.
  auto o = Small(v1::SEC_AGG_PROFILE_CURIOUS);
  o.drops[7] = DropAt::kAdvertise;
  uint32_t victim = 0;
  SimulationHooks hooks;
  auto sim = SecAggSimulation::Create(o).value();
  hooks.unmask = [&](uint32_t to, v1::UnmaskRequest& req) {
    if (victim != 0) return;
    auto cfg = sim->server().ConfigFor(to).value();
    for (const auto& nb : cfg.neighbours()) {
      if (nb.index() == 7) {
        victim = to;
        req.add_dead(7);
      }
    }
  };
  (void)sim->Run(hooks);
  ASSERT_NE(victim, 0u);
  EXPECT_EQ(sim->client(victim).state(), ClientState::kAborted);
  EXPECT_NE(sim->client(victim).abort_status().message().find("already dead"), std::string::npos)
      << sim->client(victim).abort_status().ToString();
}

TEST(SecAggAdversarialTest, RepeatedUnmaskRequestAbortsAndReleasesNothingMore) {
  auto o = Small(v1::SEC_AGG_PROFILE_CURIOUS);
  auto sim = SecAggSimulation::Create(o).value();
  v1::UnmaskRequest first;
  SimulationHooks hooks;
  hooks.unmask = [&](uint32_t to, v1::UnmaskRequest& req) {
    if (to == 2) first = req;
  };
  ASSERT_TRUE(sim->Run(hooks).ok());
  SecAggClient& c = sim->client(2);
  ASSERT_EQ(c.state(), ClientState::kCompleted);
  // The same request again, and one that now swaps an alive neighbour into the dead list.
  v1::UnmaskRequest swapped = first;
  swapped.add_dead(swapped.alive(0));
  swapped.mutable_alive()->erase(swapped.mutable_alive()->begin());
  auto again = c.HandleUnmaskRequest(swapped);
  EXPECT_FALSE(again.ok());
  EXPECT_EQ(c.state(), ClientState::kAborted);
  EXPECT_NE(c.abort_status().message().find("repeated"), std::string::npos);
  EXPECT_FALSE(c.HandleUnmaskRequest(first).ok());
}

TEST(SecAggAdversarialTest, WrongRoundIdIsRefusedWithoutStateChange) {
  auto sim = SecAggSimulation::Create(Small(v1::SEC_AGG_PROFILE_CURIOUS)).value();
  SecAggClient& c = sim->client(1);
  ASSERT_TRUE(c.Start().ok());
  v1::NeighbourKeys stale;
  stale.set_round_id("some-other-round");
  EXPECT_EQ(c.HandleNeighbourKeys(stale).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c.state(), ClientState::kKeysAdvertised);
  // Out-of-order message: refused, state unchanged.
  v1::UnmaskRequest early;
  early.set_round_id(sim->config().round_id());
  EXPECT_EQ(c.HandleUnmaskRequest(early).status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(c.state(), ClientState::kKeysAdvertised);
}

// ---- hardened profile (reference test 6)

TEST(SecAggAdversarialTest, DifferentSurvivorSetsToDifferentClientsAbort) {
  // The server tells client 2 that client 5 is dead too (so it could ask 2's side for s_5
  // shares while asking others for b_5 shares), and shows 2's signature to a neighbour of
  // 2 that was told the true U3. That neighbour must refuse to release anything.
  auto o = Small(v1::SEC_AGG_PROFILE_HARDENED);
  auto sim = SecAggSimulation::Create(o).value();
  std::string signature_of_2;
  uint32_t victim = 0;
  SimulationHooks hooks;
  hooks.consistency = [](uint32_t to, v1::ConsistencyCheckRequest& req) {
    if (to != 2) return;
    std::string bm = req.survivors_bitmap();
    bm[0] = static_cast<char>(bm[0] & ~(1 << 4));  // index 5 = bit 4
    req.set_survivors_bitmap(bm);
  };
  hooks.transcript = [&](std::string_view type, uint32_t client, const std::string& bytes) {
    if (type != "consistency_check_response" || client != 2) return;
    v1::ConsistencyCheckResponse r;
    ASSERT_TRUE(r.ParseFromString(bytes));
    signature_of_2 = r.signature();
  };
  hooks.unmask = [&](uint32_t to, v1::UnmaskRequest& req) {
    if (victim != 0 || signature_of_2.empty()) return;
    bool neighbour_of_2 = false;
    for (uint32_t v : req.alive()) neighbour_of_2 |= v == 2;
    if (!neighbour_of_2) return;
    victim = to;
    auto* sig = req.mutable_neighbour_signatures(0);
    sig->set_index(2);
    sig->set_signature(signature_of_2);
  };
  (void)sim->Run(hooks);
  ASSERT_FALSE(signature_of_2.empty());
  ASSERT_NE(victim, 0u);
  EXPECT_EQ(sim->client(victim).state(), ClientState::kAborted);
  EXPECT_NE(sim->client(victim).abort_status().message().find("different survivor sets"), std::string::npos)
      << sim->client(victim).abort_status().ToString();
}

TEST(SecAggAdversarialTest, BadAdvertSignatureAborts) {
  SimulationHooks hooks;
  hooks.neighbour_keys = [](uint32_t to, v1::NeighbourKeys& msg) {
    if (to != 3) return;
    std::string sig = msg.adverts(0).signature();
    sig[0] = static_cast<char>(sig[0] ^ 1);
    msg.mutable_adverts(0)->set_signature(sig);
  };
  ExpectVictimAborts(Small(v1::SEC_AGG_PROFILE_HARDENED), hooks, 3, "signature does not verify");
}

TEST(SecAggAdversarialTest, SubstitutedKeyAborts) {
  SimulationHooks hooks;
  hooks.neighbour_keys = [](uint32_t to, v1::NeighbourKeys& msg) {
    if (to != 3) return;
    // The server swaps in a mask key it knows (keeps the neighbour's signature).
    msg.mutable_adverts(0)->set_pk_s(std::string(32, '\x42'));
  };
  ExpectVictimAborts(Small(v1::SEC_AGG_PROFILE_HARDENED), hooks, 3, "signature does not verify");
}

TEST(SecAggAdversarialTest, DuplicatePublicKeyAborts) {
  for (auto profile : {v1::SEC_AGG_PROFILE_CURIOUS, v1::SEC_AGG_PROFILE_HARDENED}) {
    SimulationHooks hooks;
    hooks.neighbour_keys = [](uint32_t to, v1::NeighbourKeys& msg) {
      if (to != 3) return;
      msg.mutable_adverts(1)->set_pk_s(msg.adverts(0).pk_s());
    };
    ExpectVictimAborts(Small(profile), hooks, 3, "duplicate public key");
  }
}

TEST(SecAggAdversarialTest, MismatchedModelHashAborts) {
  // Client 3 was given a different model than its neighbours: its session id differs, so
  // no neighbour's advert signature verifies for it (reference section 7.4).
  auto o = Small(v1::SEC_AGG_PROFILE_HARDENED);
  auto sim = SecAggSimulation::Create(o).value();
  v1::SecAggConfig cfg = sim->server().ConfigFor(3).value();
  std::string h = cfg.model_sha256();
  h[0] = static_cast<char>(h[0] ^ 0x80);
  cfg.set_model_sha256(h);
  auto fake_signer = std::make_shared<protocol::testing::FakeSigner>("dev-3", 0);
  SecAggClientOptions co;
  co.signer = fake_signer;
  auto verifier = std::make_shared<protocol::testing::FakeVerifier>();
  co.verifier = verifier;
  co.crypto = &CoordinatorCryptoSuite();
  auto other = SecAggClient::Open(cfg, co).value();
  ASSERT_TRUE(other->Start().ok());
  // Feed it the genuine neighbour adverts of the round.
  v1::NeighbourKeys captured;
  SimulationHooks hooks;
  hooks.neighbour_keys = [&](uint32_t to, v1::NeighbourKeys& msg) {
    if (to == 3) captured = msg;
  };
  (void)sim->Run(hooks);
  for (uint32_t i = 1; i <= o.n; ++i) verifier->Add("dev-" + std::to_string(i), o.seed * 1000003 + i);
  auto r = other->HandleNeighbourKeys(captured);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(other->state(), ClientState::kAborted);
  EXPECT_NE(other->abort_status().message().find("model hash"), std::string::npos) << r.status().ToString();
}

TEST(SecAggAdversarialTest, CuriousModelHashMismatchFailsShareDecryption) {
  // Without signatures, a different H(M) still changes sid, so shares do not decrypt.
  auto o = Small(v1::SEC_AGG_PROFILE_CURIOUS);
  auto sim = SecAggSimulation::Create(o).value();
  SimulationHooks hooks;
  hooks.forwarded_shares = [](uint32_t to, v1::ForwardedShares& msg) {
    if (to != 5) return;
    std::string ct = msg.shares(0).ciphertext();
    ct[3] = static_cast<char>(ct[3] ^ 1);
    msg.mutable_shares(0)->set_ciphertext(ct);
  };
  (void)sim->Run(hooks);
  EXPECT_EQ(sim->client(5).state(), ClientState::kAborted);
  EXPECT_NE(sim->client(5).abort_status().message().find("does not decrypt"), std::string::npos);
}

TEST(SecAggAdversarialTest, ForgedConsistencySignatureAborts) {
  SimulationHooks hooks;
  hooks.unmask = [](uint32_t to, v1::UnmaskRequest& req) {
    if (to != 6 || req.neighbour_signatures_size() == 0) return;
    std::string sig = req.neighbour_signatures(0).signature();
    sig[1] = static_cast<char>(sig[1] ^ 4);
    req.mutable_neighbour_signatures(0)->set_signature(sig);
  };
  ExpectVictimAborts(Small(v1::SEC_AGG_PROFILE_HARDENED), hooks, 6, "does not verify");
}

TEST(SecAggAdversarialTest, TooFewConsistencySignaturesAborts) {
  SimulationHooks hooks;
  hooks.unmask = [](uint32_t to, v1::UnmaskRequest& req) {
    if (to == 6) req.mutable_neighbour_signatures()->RemoveLast();
  };
  ExpectVictimAborts(Small(v1::SEC_AGG_PROFILE_HARDENED), hooks, 6, "consistency signatures, fewer than t");
}

TEST(SecAggAdversarialTest, HardenedListsMustMatchSignedSurvivorSet) {
  SimulationHooks hooks;
  hooks.unmask = [](uint32_t to, v1::UnmaskRequest& req) {
    if (to != 6 || req.alive_size() < 2) return;
    // Move an alive neighbour to the dead list (still >= t alive, lists disjoint).
    const uint32_t v = req.alive(0);
    req.mutable_alive()->erase(req.mutable_alive()->begin());
    req.add_dead(v);
  };
  auto o = Small(v1::SEC_AGG_PROFILE_HARDENED);
  o.k = 8;
  o.t = 5;
  ExpectVictimAborts(o, hooks, 6, "disagree with the signed survivor set");
}

TEST(SecAggAdversarialTest, ClientListedDeadInConsistencyCheckAborts) {
  SimulationHooks hooks;
  hooks.consistency = [](uint32_t to, v1::ConsistencyCheckRequest& req) {
    if (to != 2) return;
    std::string bm = req.survivors_bitmap();
    bm[0] = static_cast<char>(bm[0] & ~(1 << 1));  // index 2 = bit 1
    req.set_survivors_bitmap(bm);
  };
  ExpectVictimAborts(Small(v1::SEC_AGG_PROFILE_HARDENED), hooks, 2, "listed as dead");
}

TEST(SecAggAdversarialTest, ClientRefusesConfigBelowTheFloor) {
  auto sim = SecAggSimulation::Create(Small(v1::SEC_AGG_PROFILE_CURIOUS)).value();
  v1::SecAggConfig cfg = sim->server().ConfigFor(1).value();
  cfg.set_n(1000);
  cfg.set_quant_bits(22);
  cfg.set_max_colluding_fraction(0.05);
  cfg.set_max_dropout_rate(0.05);
  cfg.set_k(28);  // the finder says 30
  cfg.set_t(17);
  SecAggClientOptions co;
  auto r = SecAggClient::Open(cfg, co);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("below the floor"), std::string::npos) << r.status().ToString();
  cfg.set_k(30);
  cfg.set_t(16);  // finder's t is 17
  r = SecAggClient::Open(cfg, co);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("threshold t=16 below the floor 17"), std::string::npos)
      << r.status().ToString();
}

TEST(SecAggAdversarialTest, ClientRefusesNeighbourhoodNotFromTheGraph) {
  auto sim = SecAggSimulation::Create(Small(v1::SEC_AGG_PROFILE_CURIOUS)).value();
  v1::SecAggConfig cfg = sim->server().ConfigFor(1).value();
  // The server swaps one neighbour for a non-neighbour (e.g. a colluder of its choice).
  std::set<uint32_t> nbs;
  for (const auto& nb : cfg.neighbours()) nbs.insert(nb.index());
  for (uint32_t v = 2; v <= cfg.n(); ++v) {
    if (!nbs.count(v)) {
      cfg.mutable_neighbours(0)->set_index(v);
      break;
    }
  }
  auto r = SecAggClient::Open(cfg, SecAggClientOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("not a neighbour in the round's graph"), std::string::npos);
}

}  // namespace
}  // namespace flotilla::aggregation
