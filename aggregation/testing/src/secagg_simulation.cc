#include "flotilla/aggregation/testing/secagg_simulation.h"

#include <algorithm>
#include <chrono>

#include "flotilla/aggregation/fixed_point.h"
#include "flotilla/core/testing/seeded_random.h"
#include "flotilla/protocol/testing/fake_signer.h"
#include "flotilla/security/identity.h"

namespace flotilla::aggregation::testing {

using flotilla::testing::SeededRandom;

struct SecAggSimulation::Identities {
  std::vector<std::string> ids;  // [index - 1]
  std::vector<std::shared_ptr<const protocol::Signer>> signers;
  std::shared_ptr<protocol::SignatureVerifier> verifier;
};

namespace {

// What a transport does to every message: serialize, then parse a fresh copy.
template <typename Msg>
Msg OverTheWire(const Msg& msg, std::string_view type, uint32_t client, const SimulationHooks& hooks) {
  std::string bytes;
  msg.SerializeToString(&bytes);
  if (hooks.transcript) hooks.transcript(type, client, bytes);
  if (hooks.wire) {
    const bool to_server = type == "advertise_keys" || type == "share_keys" || type == "masked_input" ||
                           type == "consistency_check_response" || type == "unmask_response";
    hooks.wire(type, client, to_server, bytes);
  }
  Msg out;
  if (!out.ParseFromString(bytes)) out.Clear();
  return out;
}

}  // namespace

SecAggSimulation::~SecAggSimulation() = default;

Result<std::unique_ptr<SecAggSimulation>> SecAggSimulation::Create(const SimulationOptions& options) {
  std::unique_ptr<SecAggSimulation> sim(new SecAggSimulation());
  sim->options_ = options;
  SeededRandom master(options.seed);
  RoundPlan plan;
  plan.round_id = "round-" + std::to_string(options.seed);
  plan.n = options.n;
  plan.max_colluding_fraction = options.gamma;
  plan.max_dropout_rate = options.delta;
  plan.profile = options.profile;
  plan.bit_width = options.bit_width;
  plan.quant_bits = options.quant_bits;
  plan.clip_bound = 1.0;
  plan.model_sha256 = Bytes(32, 0xab);
  // Tests drop clients freely; the abort rule on t is what they exercise by default.
  plan.min_survivors = options.min_survivors != 0 ? options.min_survivors : 2;
  plan.k = options.k;
  plan.t = options.t;
  FLT_ASSIGN_OR_RETURN(sim->config_, PlanRound(plan, master));

  const CryptoSuite& client_crypto =
      options.client_crypto != nullptr ? *options.client_crypto : CoordinatorCryptoSuite();
  FLT_ASSIGN_OR_RETURN(security::X25519KeyPair box_key, client_crypto.GenerateKeyPair(master));
  sim->box_key_ = box_key;

  const bool hardened = sim->config_.profile() != v1::SEC_AGG_PROFILE_CURIOUS;
  sim->identities_ = std::make_unique<Identities>();
  Identities& ids = *sim->identities_;
  if (hardened) {
    auto fake_verifier = std::make_shared<protocol::testing::FakeVerifier>();
    auto key_ring = std::make_shared<security::KeyRing>();
    for (uint32_t i = 1; i <= options.n; ++i) {
      const std::string id = "dev-" + std::to_string(i);
      ids.ids.push_back(id);
      if (options.real_identities) {
        FLT_ASSIGN_OR_RETURN(security::EcdsaPrivateKey key, security::EcdsaPrivateKey::Generate());
        key_ring->Add(id, key.public_key());
        auto shared_key = std::make_shared<const security::EcdsaPrivateKey>(std::move(key));
        ids.signers.push_back(std::make_shared<security::EcdsaSigner>(id, shared_key));
      } else {
        fake_verifier->Add(id, options.seed * 1000003 + i);
        ids.signers.push_back(std::make_shared<protocol::testing::FakeSigner>(id, options.seed * 1000003 + i));
      }
    }
    if (options.real_identities) {
      ids.verifier = key_ring;
    } else {
      ids.verifier = fake_verifier;
    }
  }

  SecAggServerOptions so;
  so.config = sim->config_;
  so.vector_length = options.vector_length;
  so.device_ids = ids.ids;
  so.verifier = ids.verifier;
  so.box_key = box_key;
  so.threads = options.server_threads;
  FLT_ASSIGN_OR_RETURN(sim->server_, SecAggServer::Open(std::move(so)));

  const uint32_t mask = RingMask(sim->config_.bit_width());
  sim->rngs_.resize(size_t{options.n} + 1);
  sim->clients_.resize(size_t{options.n} + 1);
  sim->inputs_.resize(size_t{options.n} + 1);
  sim->client_seconds_.assign(size_t{options.n} + 1, 0.0);
  for (uint32_t i = 1; i <= options.n; ++i) {
    sim->rngs_[i] = std::make_unique<SeededRandom>(options.seed * 7919 + i);
    SecAggClientOptions co;
    if (hardened) {
      co.signer = ids.signers[i - 1];
      co.verifier = ids.verifier;
    }
    co.coordinator_box_key = box_key.public_key;
    co.rng = sim->rngs_[i].get();
    const bool device = std::find(options.device_suite_clients.begin(), options.device_suite_clients.end(), i) !=
                        options.device_suite_clients.end();
    co.crypto = device ? &DeviceCryptoSuite() : &client_crypto;
    FLT_ASSIGN_OR_RETURN(v1::SecAggConfig cfg, sim->server_->ConfigFor(i));
    FLT_ASSIGN_OR_RETURN(sim->clients_[i], SecAggClient::Open(cfg, std::move(co)));
    std::vector<uint32_t> input(options.vector_length);
    master.Fill(std::span<uint8_t>(reinterpret_cast<uint8_t*>(input.data()), input.size() * sizeof(uint32_t)));
    for (uint32_t& v : input) v &= mask;
    sim->inputs_[i] = std::move(input);
  }
  return sim;
}

void SecAggSimulation::SetInput(uint32_t index, std::vector<uint32_t> input) { inputs_[index] = std::move(input); }

std::vector<uint32_t> SecAggSimulation::ExpectedSum(const std::vector<uint32_t>& members) const {
  std::vector<uint32_t> sum(options_.vector_length, 0);
  for (uint32_t u : members) {
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += inputs_[u][i];
  }
  const uint32_t mask = RingMask(config_.bit_width());
  for (uint32_t& v : sum) v &= mask;
  return sum;
}

bool SecAggSimulation::Drops(uint32_t index, DropAt at) const {
  auto it = options_.drops.find(index);
  return it != options_.drops.end() && it->second == at;
}

void SecAggSimulation::RecordClientError(uint32_t index, const Status& status) {
  if (!status.ok()) client_errors_.emplace(index, status);
}

void SecAggSimulation::TrackHeldShares() {
  for (uint32_t u = 1; u <= n(); ++u) {
    const HeldShares h = server_->SharesHeldFor(u);
    max_both_kinds_held_ = std::max(max_both_kinds_held_, std::min(h.self_mask, h.mask_key));
    max_shares_held_ = std::max({max_shares_held_, h.self_mask, h.mask_key});
  }
}

Result<AggregateOutput> SecAggSimulation::Run(const SimulationHooks& hooks) {
  SecAggServer& server = *server_;
  // Runs one client handler and adds its wall time to that client's total.
  auto timed = [this](uint32_t u, auto&& call) {
    const auto start = std::chrono::steady_clock::now();
    auto result = call();
    client_seconds_[u] += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return result;
  };
  // Stage 1.
  for (uint32_t u = 1; u <= n(); ++u) {
    auto ad = timed(u, [&] { return clients_[u]->Start(); });
    if (!ad.ok()) {
      RecordClientError(u, ad.status());
      continue;
    }
    if (Drops(u, DropAt::kAdvertise)) continue;
    server.HandleAdvertiseKeys(OverTheWire(*ad, "advertise_keys", u, hooks)).IgnoreError();
  }
  FLT_ASSIGN_OR_RETURN(std::vector<uint32_t> u1, server.CloseAdvertiseKeys());
  // Stage 2.
  for (uint32_t to : u1) {
    FLT_ASSIGN_OR_RETURN(v1::NeighbourKeys built, server.NeighbourKeysFor(to));
    v1::NeighbourKeys msg = OverTheWire(built, "neighbour_keys", to, hooks);
    if (hooks.neighbour_keys) hooks.neighbour_keys(to, msg);
    auto sk = timed(to, [&] { return clients_[to]->HandleNeighbourKeys(msg); });
    if (!sk.ok()) {
      RecordClientError(to, sk.status());
      continue;
    }
    if (Drops(to, DropAt::kShareKeys)) continue;
    server.HandleShareKeys(OverTheWire(*sk, "share_keys", to, hooks)).IgnoreError();
  }
  FLT_ASSIGN_OR_RETURN(std::vector<uint32_t> u2, server.CloseShareKeys());
  // Stage 3.
  for (uint32_t to : u2) {
    FLT_ASSIGN_OR_RETURN(v1::ForwardedShares built, server.ForwardedSharesFor(to));
    v1::ForwardedShares msg = OverTheWire(built, "forwarded_shares", to, hooks);
    if (hooks.forwarded_shares) hooks.forwarded_shares(to, msg);
    auto mi = timed(to, [&] { return clients_[to]->HandleForwardedShares(msg, inputs_[to]); });
    if (!mi.ok()) {
      RecordClientError(to, mi.status());
      continue;
    }
    if (Drops(to, DropAt::kMaskedInput)) {
      withheld_[to] = std::move(*mi);
      continue;
    }
    server.HandleMaskedInput(OverTheWire(*mi, "masked_input", to, hooks)).IgnoreError();
  }
  FLT_ASSIGN_OR_RETURN(MaskedInputClosed closed, server.CloseMaskedInput());
  if (hooks.after_masked_input_closed) hooks.after_masked_input_closed();
  std::vector<uint32_t> unmask = closed.consistency ? std::vector<uint32_t>{} : closed.recipients;
  // Stage 4 (hardened).
  if (closed.consistency) {
    for (uint32_t u : closed.recipients) {
      v1::ConsistencyCheckRequest msg = OverTheWire(*closed.consistency, "consistency_check_request", u, hooks);
      if (hooks.consistency) hooks.consistency(u, msg);
      auto resp = timed(u, [&] { return clients_[u]->HandleConsistencyCheck(msg); });
      if (!resp.ok()) {
        RecordClientError(u, resp.status());
        continue;
      }
      if (Drops(u, DropAt::kConsistency)) continue;
      server.HandleConsistencyCheckResponse(OverTheWire(*resp, "consistency_check_response", u, hooks))
          .IgnoreError();
    }
    FLT_ASSIGN_OR_RETURN(unmask, server.CloseConsistencyCheck());
  }
  // Stage 5.
  for (uint32_t to : unmask) {
    FLT_ASSIGN_OR_RETURN(v1::UnmaskRequest built, server.UnmaskRequestFor(to));
    v1::UnmaskRequest msg = OverTheWire(built, "unmask_request", to, hooks);
    if (hooks.unmask) hooks.unmask(to, msg);
    auto resp = timed(to, [&] { return clients_[to]->HandleUnmaskRequest(msg); });
    if (!resp.ok()) {
      RecordClientError(to, resp.status());
      continue;
    }
    if (Drops(to, DropAt::kUnmask)) continue;
    server.HandleUnmaskResponse(OverTheWire(*resp, "unmask_response", to, hooks)).IgnoreError();
    TrackHeldShares();
  }
  return server.Finish();
}

}  // namespace flotilla::aggregation::testing
