// An in-process SecAgg+ cohort for tests, fuzzing and benchmarks: n real SecAggClients and
// one real SecAggServer exchanging the real protobuf messages (serialized and re-parsed
// at every hop, as a transport would), with scheduled dropouts and hooks through which a
// test plays a malicious coordinator. Deterministic for a fixed seed (SeededRandom per
// client): TEST CODE ONLY, never a production path.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "flotilla/aggregation/crypto_suite.h"
#include "flotilla/aggregation/secagg_client.h"
#include "flotilla/aggregation/secagg_server.h"
#include "flotilla/core/bytes.h"
#include "flotilla/core/status.h"

namespace flotilla::aggregation::testing {

// The message a client fails to send (it drops out just before sending it).
enum class DropAt : uint8_t { kAdvertise, kShareKeys, kMaskedInput, kConsistency, kUnmask };

struct SimulationOptions {
  uint32_t n = 10;
  double gamma = 0.0;
  double delta = 0.0;
  v1::SecAggProfile profile = v1::SEC_AGG_PROFILE_HARDENED;
  uint32_t k = 0, t = 0;   // 0 = from the parameter finder (PlanRound)
  uint32_t bit_width = 32;
  uint32_t quant_bits = 0;
  uint32_t min_survivors = 0;
  uint64_t vector_length = 64;
  uint64_t seed = 1;
  std::map<uint32_t, DropAt> drops;
  // Identity keys for the hardened profile: ECDSA P-256 (security::EcdsaPrivateKey) when
  // true, protocol/testing's FakeSigner otherwise (much faster for large cohorts).
  bool real_identities = false;
  // Clients use the coordinator suite (OpenSSL) by default to keep large cohorts fast;
  // fast_crypto_test proves it bit-identical to the device suite.
  const CryptoSuite* client_crypto = nullptr;
  unsigned server_threads = 1;
  // These clients use the device suite (mbedTLS), e.g. the one whose time a benchmark reports.
  std::vector<uint32_t> device_suite_clients;
};

// Message hooks: called on each message on its way to a client (mutate to attack).
struct SimulationHooks {
  std::function<void(uint32_t to, v1::NeighbourKeys&)> neighbour_keys;
  std::function<void(uint32_t to, v1::ForwardedShares&)> forwarded_shares;
  std::function<void(uint32_t to, v1::ConsistencyCheckRequest&)> consistency;
  std::function<void(uint32_t to, v1::UnmaskRequest&)> unmask;
  // Called right after the server closed the masked-input stage.
  std::function<void()> after_masked_input_closed;
  // The serialized bytes of every message on the wire, mutable (fuzzing): `to_server`
  // says which way it travels. The receiver parses whatever is left (a message that does
  // not parse arrives as an empty message).
  std::function<void(std::string_view type, uint32_t client, bool to_server, std::string& bytes)> wire;
  // Every message either way, serialized, in order (for transcripts).
  std::function<void(std::string_view type, uint32_t client, const std::string& bytes)> transcript;
};

class SecAggSimulation {
 public:
  static Result<std::unique_ptr<SecAggSimulation>> Create(const SimulationOptions& options);
  ~SecAggSimulation();

  // Replaces client `index`'s input (default: uniform in Z_2^b from the seed).
  void SetInput(uint32_t index, std::vector<uint32_t> input);
  const std::vector<uint32_t>& input(uint32_t index) const { return inputs_[index]; }
  // Sum of the inputs of `members` mod 2^b: what the server must output.
  std::vector<uint32_t> ExpectedSum(const std::vector<uint32_t>& members) const;

  // Runs every stage. Returns the server's output, or the status that ended the round
  // (server abort, or a client abort that starved the server).
  Result<AggregateOutput> Run(const SimulationHooks& hooks = {});

  SecAggServer& server() { return *server_; }
  // The coordinator's box key pair (tests open a captured box with it).
  const security::X25519KeyPair& box_key() const { return box_key_; }
  // Masked inputs computed by clients scheduled to drop at kMaskedInput (never sent).
  const std::map<uint32_t, v1::MaskedInput>& withheld_masked_inputs() const { return withheld_; }
  SecAggClient& client(uint32_t index) { return *clients_[index]; }
  const v1::SecAggConfig& config() const { return config_; }
  uint32_t n() const { return config_.n(); }
  // Statuses clients returned while handling messages (index -> first error).
  const std::map<uint32_t, Status>& client_errors() const { return client_errors_; }
  // Max over the run of min(server b shares, server key shares) for any owner: 0 means
  // the server never held both kinds for one client.
  size_t max_both_kinds_held() const { return max_both_kinds_held_; }
  // Most shares of one kind the server held for any one owner during the unmask stage.
  size_t max_shares_held() const { return max_shares_held_; }
  // Wall time client `index` spent in its own handlers (all stages), seconds.
  double client_seconds(uint32_t index) const { return client_seconds_[index]; }

 private:
  SecAggSimulation() = default;
  struct Identities;
  bool Drops(uint32_t index, DropAt at) const;
  void RecordClientError(uint32_t index, const Status& status);
  void TrackHeldShares();

  SimulationOptions options_;
  v1::SecAggConfig config_;
  std::unique_ptr<Identities> identities_;
  std::unique_ptr<SecAggServer> server_;
  std::vector<std::unique_ptr<Random>> rngs_;            // [index]
  std::vector<std::unique_ptr<SecAggClient>> clients_;   // [index], [0] null
  std::vector<std::vector<uint32_t>> inputs_;            // [index]
  std::map<uint32_t, Status> client_errors_;
  std::map<uint32_t, v1::MaskedInput> withheld_;
  security::X25519KeyPair box_key_{};
  size_t max_both_kinds_held_ = 0;
  size_t max_shares_held_ = 0;
  std::vector<double> client_seconds_;
};

}  // namespace flotilla::aggregation::testing
