// The coordinator side of SecAgg+ (shared/reference/secure-aggregation.md section 2): a
// transport-agnostic state machine. Handle* takes one device message (already
// envelope-verified by the transport); Close* ends a stage (the driver calls it when every
// expected client answered or the stage deadline passed) and returns who gets the next
// stage's message; *For(index) builds that message for one recipient, on demand.
//
// Transition table (anything else is FailedPrecondition and changes nothing):
//
//   state                    event                 next
//   kCollectingAdverts       kCloseAdvertiseKeys   kCollectingShares
//   kCollectingShares        kCloseShareKeys       kCollectingMaskedInputs
//   kCollectingMaskedInputs  kCloseMaskedInput     kCollectingConsistency (hardened)
//   kCollectingMaskedInputs  kCloseMaskedInput     kCollectingUnmask      (curious)
//   kCollectingConsistency   kCloseConsistency     kCollectingUnmask
//   kCollectingUnmask        kFinish               kFinished
//   any but kFinished        kAbort / kFailure     kAborted
//
// Dropouts: U1 (advertised) ⊇ U2 (shared keys) ⊇ U3 (sent y) ⊇ U4 (signed, hardened).
// Every Close checks the abort rule — each client whose secrets matter must keep at least
// t live neighbours, and at least min_survivors clients must remain — and aborts (no
// result, nothing published) otherwise. A bad message from one client is rejected with a
// Status and that client simply counts as dropped; the round goes on.
//
// Memory: the masked inputs are added into one running sum of m words as they arrive
// and never stored. What is n*k in size — the encrypted shares in flight between
// ShareKeys and ForwardedShares, the shares released for unmasking — goes to anonymous
// spool files (the unmask shares sealed with a key that exists only in memory), and the
// stage messages are built one recipient at a time, so memory is O(m + n) plus n*k small
// record numbers (4 bytes each). Thread-safe: handlers may be called concurrently
// (HandleSealedInput decrypts outside the lock).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "flotilla/aggregation/crypto_suite.h"
#include "flotilla/aggregation/fixed_point.h"
#include "flotilla/aggregation/param_finder.h"
#include "flotilla/core/random.h"
#include "flotilla/core/status.h"
#include "flotilla/protocol/signer.h"
#include "flotilla/security/x25519.h"
#include "flotilla/v1/round.pb.h"

namespace flotilla::aggregation {

enum class ServerState : uint8_t {
  kCollectingAdverts,
  kCollectingShares,
  kCollectingMaskedInputs,
  kCollectingConsistency,
  kCollectingUnmask,
  kFinished,
  kAborted,
};

enum class ServerEvent : uint8_t {
  kCloseAdvertiseKeys,
  kCloseShareKeys,
  kCloseMaskedInput,
  kCloseConsistency,
  kFinish,
  kAbort,    // operator or deadline
  kFailure,  // abort rule or unrecoverable secret
};

std::string_view ToString(ServerState state);
std::string_view ToString(ServerEvent event);
// Looks up the table above for the given profile; true and *to set if there is a row.
bool ServerTransition(ServerState from, ServerEvent event, bool hardened, ServerState* to);

// Inputs for planning a round: the server picks (k, t) with the parameter finder, q from
// the cohort size, and a fresh graph seed.
struct RoundPlan {
  std::string round_id;
  uint32_t n = 0;
  double max_colluding_fraction = 0.1;  // gamma
  double max_dropout_rate = 0.2;        // delta
  v1::SecAggProfile profile = v1::SEC_AGG_PROFILE_HARDENED;  // hardened is the default
  uint32_t bit_width = 32;
  uint32_t quant_bits = 0;  // 0 = QuantBitsFor(b, n)
  double clip_bound = 1.0;
  Bytes model_sha256;       // 32 bytes
  uint32_t min_survivors = 0;  // 0 = max(2, n - floor(delta * n))
  uint32_t k = 0, t = 0;       // 0 = from the parameter finder; else checked against its floor
};
// A round-wide SecAggConfig (self_index/neighbours empty). FailedPrecondition if the
// plan is infeasible (finder, overflow). `rng` draws the graph seed (production: CSPRNG).
Result<v1::SecAggConfig> PlanRound(const RoundPlan& plan, Random& rng);

struct SecAggServerOptions {
  v1::SecAggConfig config;     // round-wide fields (self_index/neighbours ignored)
  uint64_t vector_length = 0;  // m, elements of every masked input
  // device_ids[i - 1] is the identity of index i: neighbours' ids in ConfigFor(), and the
  // keys adverts and consistency signatures are verified with (hardened: required).
  std::vector<std::string> device_ids;
  std::shared_ptr<const protocol::SignatureVerifier> verifier;  // hardened: required
  security::X25519KeyPair box_key{};  // the coordinator's box key (masked inputs are sealed to it)
  const CryptoSuite* crypto = nullptr;  // nullptr = CoordinatorCryptoSuite() (OpenSSL)
  unsigned threads = 1;  // unmasking workers (X25519 and mask expansion); 0 = all cores
  std::filesystem::path spool_dir;  // for the spool files (empty: the temporary directory)
  Random* random = nullptr;         // the unmask spool's key; nullptr = OsRandom()
};

// What CloseMaskedInput produces: U3 as `recipients`, and for the hardened profile the
// consistency request every one of them gets (curious: UnmaskRequestFor each of them).
struct MaskedInputClosed {
  std::optional<v1::ConsistencyCheckRequest> consistency;
  std::vector<uint32_t> recipients;
};

struct AggregateOutput {
  std::vector<uint32_t> sum;         // sum of the survivors' inputs mod 2^b
  std::vector<uint32_t> survivors;   // U3, ascending
  std::vector<bool> survivors_bitmap_members;  // [i] for index i
  uint32_t dropped = 0;              // n - |U3|
};

// Test instrumentation: how many shares of each kind the server holds for one owner.
struct HeldShares {
  size_t self_mask = 0;  // shares of b_u
  size_t mask_key = 0;   // shares of s_u's key
};

class SecAggServer {
 public:
  // Validates the config exactly as clients will (same floor), checks the options.
  static Result<std::unique_ptr<SecAggServer>> Open(SecAggServerOptions options);
  ~SecAggServer();
  SecAggServer(const SecAggServer&) = delete;
  SecAggServer& operator=(const SecAggServer&) = delete;

  // The invitation's SecAggConfig for `index` (round-wide fields + self + N(index)).
  Result<v1::SecAggConfig> ConfigFor(uint32_t index) const;

  Status HandleAdvertiseKeys(const v1::AdvertiseKeys& msg);
  // U1 = adverts received; each member of U1 gets NeighbourKeysFor(itself).
  Result<std::vector<uint32_t>> CloseAdvertiseKeys();
  // The adverts of u's neighbours in U1. Only while shares are collected, only for U1.
  Result<v1::NeighbourKeys> NeighbourKeysFor(uint32_t u) const;

  Status HandleShareKeys(const v1::ShareKeys& msg);
  // U2 = ShareKeys received; each member of U2 gets ForwardedSharesFor(itself).
  Result<std::vector<uint32_t>> CloseShareKeys();
  // The shares U2 encrypted to v. Only while masked inputs are collected, only for U2.
  Result<v1::ForwardedShares> ForwardedSharesFor(uint32_t v) const;

  // Opens the inline SealedBox and adds y_u into the running sum. A claim check must be
  // resolved by the caller and passed to HandleSealedInput. FailedPrecondition for an
  // upload after CloseMaskedInput (late uploads are discarded, reference section 7.2).
  Status HandleMaskedInput(const v1::MaskedInput& msg);
  Status HandleSealedInput(uint32_t index, const v1::SealedBox& box);
  Result<MaskedInputClosed> CloseMaskedInput();

  Status HandleConsistencyCheckResponse(const v1::ConsistencyCheckResponse& msg);
  // U4 = signed responses; each member gets UnmaskRequestFor(itself).
  Result<std::vector<uint32_t>> CloseConsistencyCheck();
  // The unmask request for u (alive/dead neighbours, hardened: t signatures). Only while
  // unmask responses are collected, only for the clients asked.
  Result<v1::UnmaskRequest> UnmaskRequestFor(uint32_t u) const;

  Status HandleUnmaskResponse(const v1::UnmaskResponse& msg);
  // Reconstructs every needed secret (b_u for u in U3, s_w for w in U2 \ U3), removes the
  // masks and returns the sum. Aborts (FailedPrecondition/DataLoss; nothing returned) if
  // any secret lacks t consistent shares.
  Result<AggregateOutput> Finish();

  // Ends the round without a result (operator, deadline, shutdown).
  void Abort(v1::AbortReason reason, std::string detail);

  ServerState state() const;
  Status abort_status() const;  // OK unless aborted
  v1::RoundAbort AbortMessage() const;
  // True when every client expected in the current stage has answered.
  bool StageComplete() const;
  HeldShares SharesHeldFor(uint32_t owner) const;
  uint32_t n() const;
  uint32_t t() const;

 private:
  struct Impl;
  explicit SecAggServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace flotilla::aggregation
