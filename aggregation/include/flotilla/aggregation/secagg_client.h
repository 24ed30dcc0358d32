// The device side of SecAgg+ (shared/reference/secure-aggregation.md section 2): a
// transport-agnostic state machine. Each Handle* call takes one coordinator message and
// returns the message to send back; nothing here does I/O or keeps time (the agent owns
// deadlines and calls HandleAbort when the coordinator gives up).
//
// Transition table (anything else is FailedPrecondition and changes nothing):
//
//   state               event              next                returns
//   kConfigured         kStart             kKeysAdvertised     AdvertiseKeys
//   kKeysAdvertised     kNeighbourKeys     kSharesSent         ShareKeys
//   kSharesSent         kForwardedShares   kMaskedInputSent    MaskedInput
//   kMaskedInputSent    kConsistencyCheck  kConsistencySigned  ConsistencyCheckResponse (hardened)
//   kMaskedInputSent    kUnmaskRequest     kCompleted          UnmaskResponse (curious)
//   kConsistencySigned  kUnmaskRequest     kCompleted          UnmaskResponse (hardened)
//   kCompleted          kUnmaskRequest     kAborted            error: repeated unmask request
//   any but kAborted    kAbort / kFailure  kAborted            -
//
// A message that fails any check (bad signature, duplicate or substituted key, share that
// does not decrypt, malicious unmask lists, fewer than t live neighbours, ...) aborts the
// client: it wipes its secrets, releases nothing more, and returns the reason (send
// AbortMessage() to the coordinator). A message for another round id is refused without
// a state change (a stale redelivery). Not thread-safe: one agent thread drives it.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "flotilla/aggregation/crypto_suite.h"
#include "flotilla/core/random.h"
#include "flotilla/core/status.h"
#include "flotilla/protocol/signer.h"
#include "flotilla/security/x25519.h"
#include "flotilla/v1/round.pb.h"

namespace flotilla::aggregation {

enum class ClientState : uint8_t {
  kConfigured,
  kKeysAdvertised,
  kSharesSent,
  kMaskedInputSent,
  kConsistencySigned,
  kCompleted,
  kAborted,
};

enum class ClientEvent : uint8_t {
  kStart,
  kNeighbourKeys,
  kForwardedShares,
  kConsistencyCheck,
  kUnmaskRequest,
  kAbort,    // the coordinator's RoundAbort
  kFailure,  // a check failed on our side
};

std::string_view ToString(ClientState state);
std::string_view ToString(ClientEvent event);
// Looks up the table above: true and *to set if (from, event) has a row. kAborted is final.
bool ClientTransition(ClientState from, ClientEvent event, ClientState* to);

struct SecAggClientOptions {
  // Hardened profile: signs adverts and consistency checks with the device identity
  // (signer->identity() must equal this device's id in the invitation), and verifies
  // neighbours' signatures by their device ids. Both required when hardened.
  std::shared_ptr<const protocol::Signer> signer;
  std::shared_ptr<const protocol::SignatureVerifier> verifier;
  // RoundInvitation.coordinator_box_public_key: masked inputs are sealed to it.
  security::X25519Key coordinator_box_key{};
  // Key, seed, share-polynomial and nonce randomness; nullptr = SystemCsprng(). Tests
  // pass a seeded generator for reproducible transcripts. Not owned; must outlive us.
  Random* rng = nullptr;
  // nullptr = DeviceCryptoSuite() (mbedTLS).
  const CryptoSuite* crypto = nullptr;
};

class SecAggClient {
 public:
  // Validates the invitation's SecAggConfig: ring and overflow, PRG, the (k, t) floor for
  // its (n, gamma, delta, profile), that N(self) is exactly this client's neighbourhood in
  // the graph of (n, k, graph_seed), hardened options present. FailedPrecondition or
  // InvalidArgument means "decline with DECLINE_REASON_PARAMETERS_REFUSED".
  static Result<std::unique_ptr<SecAggClient>> Open(const v1::SecAggConfig& config, SecAggClientOptions options);
  ~SecAggClient();
  SecAggClient(const SecAggClient&) = delete;
  SecAggClient& operator=(const SecAggClient&) = delete;

  // Stage 1: fresh X25519 pairs (c_u for shares, s_u for masks), signed when hardened.
  Result<v1::AdvertiseKeys> Start();
  // Stage 2: checks the neighbours' adverts, Shamir-shares b_u and s_u's key (threshold t)
  // over the neighbours that advertised plus itself, encrypts each neighbour's pair.
  Result<v1::ShareKeys> HandleNeighbourKeys(const v1::NeighbourKeys& msg);
  // Stage 3: decrypts the shares addressed to us, then y = input + PRG(b_u)
  // + sum over neighbours that shared keys of (+/-)PRG(s_uv) mod 2^b, sealed to the
  // coordinator. `input` is the fixed-point encoding (values < 2^b, length m >= 1); an
  // invalid input is InvalidArgument without a state change.
  Result<v1::MaskedInput> HandleForwardedShares(const v1::ForwardedShares& msg, std::span<const uint32_t> input);
  // Stage 4 (hardened): signs H(sid || U3) if we are in U3 and keep >= t live neighbours.
  Result<v1::ConsistencyCheckResponse> HandleConsistencyCheck(const v1::ConsistencyCheckRequest& msg);
  // Stage 5: exactly one share per listed neighbour (b_v if alive, s_v's key if dead),
  // plus our own share of b_u, after every check of reference section 2 step 5 (and, when
  // hardened, >= t valid neighbour signatures over the U3 we signed, with lists equal to
  // what that U3 implies).
  Result<v1::UnmaskResponse> HandleUnmaskRequest(const v1::UnmaskRequest& msg);
  // The coordinator aborted: wipe secrets, stop.
  void HandleAbort(const v1::RoundAbort& msg);

  ClientState state() const { return state_; }
  uint32_t index() const;
  // Why we aborted (OK unless state() == kAborted).
  const Status& abort_status() const { return abort_status_; }
  // The RoundAbort to send after an abort on our side.
  v1::RoundAbort AbortMessage() const;

 private:
  struct Impl;
  explicit SecAggClient(std::unique_ptr<Impl> impl);
  // FailedPrecondition for an event the table has no row for (no state change).
  Status NotExpected(ClientEvent event) const;
  // Aborts with `status` (wipes secrets) and returns it.
  Status Fail(Status status);

  std::unique_ptr<Impl> impl_;
  ClientState state_ = ClientState::kConfigured;
  Status abort_status_;
};

}  // namespace flotilla::aggregation
