#include "flotilla/aggregation/secagg_server.h"

#include <algorithm>
#include <atomic>
#include <functional>
#include <cmath>
#include <cstring>
#include <set>
#include <thread>

#include "flotilla/aggregation/mask_expander.h"
#include "flotilla/aggregation/masked_vector.h"
#include "flotilla/core/log.h"
#include "flotilla/core/spool.h"
#include "flotilla/security/aead.h"
#include "secagg_session.h"

namespace flotilla::aggregation {

using internal::SessionParams;
using security::ShamirShare;

namespace {

struct Transition {
  ServerState from;
  ServerEvent event;
  ServerState to;
  int profile;  // 0 = both, 1 = hardened only, 2 = curious only
};

// The server's whole lifecycle, top to bottom (kAbort/kFailure are handled generically).
constexpr Transition kServerTable[] = {
    {ServerState::kCollectingAdverts, ServerEvent::kCloseAdvertiseKeys, ServerState::kCollectingShares, 0},
    {ServerState::kCollectingShares, ServerEvent::kCloseShareKeys, ServerState::kCollectingMaskedInputs, 0},
    {ServerState::kCollectingMaskedInputs, ServerEvent::kCloseMaskedInput, ServerState::kCollectingConsistency, 1},
    {ServerState::kCollectingMaskedInputs, ServerEvent::kCloseMaskedInput, ServerState::kCollectingUnmask, 2},
    {ServerState::kCollectingConsistency, ServerEvent::kCloseConsistency, ServerState::kCollectingUnmask, 1},
    {ServerState::kCollectingUnmask, ServerEvent::kFinish, ServerState::kFinished, 0},
};

struct ClientRecord {
  bool advertised = false;  // U1
  bool shared = false;      // U2
  bool masked = false;      // U3
  bool signed_check = false;  // U4 (hardened)
  bool unmask_requested = false;
  bool responded = false;
  bool upload_in_flight = false;
  // Its advert, compactly: the keys, plus (hardened only) the signature and the
  // certificate neighbours verify. The forwarded AdvertiseKeys is rebuilt from these, the
  // round id, the index and (hardened) the cohort's device id, which the signature
  // covers and HandleAdvertiseKeys checked.
  security::X25519Key pk_c{};
  security::X25519Key pk_s{};
  Bytes signature;
  Bytes certificate_der;
  Bytes consistency_signature;
  // Its ShareKeys block in the share spool: one record per live neighbour at the time,
  // in ascending neighbour order, from this record number on (only ever if in U2).
  uint32_t first_share_record = 0;
  // Released shares, as record numbers in the unmask spool.
  std::vector<uint32_t> b_shares;  // of this client's b_u (only ever if in U3)
  std::vector<uint32_t> s_shares;  // of this client's mask key (only ever if in U2 \ U3)
};

// A ShareKeys share in the share spool: the sender's index (u32 LE), then the ciphertext.
constexpr size_t kShareRecordBytes = 4 + internal::kShareCiphertextBytes;
// A released share in the unmask spool: AES-256-GCM of the encoded share under the
// round's spool key, the record number as nonce.
constexpr size_t kUnmaskRecordBytes = internal::kShareBytes + 16;

Bytes RecordNonce(uint32_t record) {
  Bytes nonce(12, 0);
  for (int i = 0; i < 4; ++i) nonce[i] = static_cast<uint8_t>(record >> (8 * i));
  return nonce;
}

// Runs fn(i) for i in [0, count) on `threads` workers; first error wins.
Status ParallelFor(size_t count, unsigned threads, const std::function<Status(size_t)>& fn) {
  threads = std::max(1u, std::min<unsigned>(threads, static_cast<unsigned>(std::max<size_t>(count, 1))));
  if (threads == 1) {
    for (size_t i = 0; i < count; ++i) FLT_RETURN_IF_ERROR(fn(i));
    return Status::Ok();
  }
  std::atomic<size_t> next{0};
  std::vector<Status> results(threads);
  std::vector<std::thread> workers;
  for (unsigned w = 0; w < threads; ++w) {
    workers.emplace_back([&, w] {
      for (size_t i = next++; i < count; i = next++) {
        Status s = fn(i);
        if (!s.ok()) {
          results[w] = std::move(s);
          next = count;  // stop everyone early
          return;
        }
      }
    });
  }
  for (auto& t : workers) t.join();
  for (const Status& s : results) FLT_RETURN_IF_ERROR(s);
  return Status::Ok();
}

}  // namespace

std::string_view ToString(ServerState state) {
  switch (state) {
    case ServerState::kCollectingAdverts: return "collecting_adverts";
    case ServerState::kCollectingShares: return "collecting_shares";
    case ServerState::kCollectingMaskedInputs: return "collecting_masked_inputs";
    case ServerState::kCollectingConsistency: return "collecting_consistency";
    case ServerState::kCollectingUnmask: return "collecting_unmask";
    case ServerState::kFinished: return "finished";
    case ServerState::kAborted: return "aborted";
  }
  return "unknown";
}

std::string_view ToString(ServerEvent event) {
  switch (event) {
    case ServerEvent::kCloseAdvertiseKeys: return "close_advertise_keys";
    case ServerEvent::kCloseShareKeys: return "close_share_keys";
    case ServerEvent::kCloseMaskedInput: return "close_masked_input";
    case ServerEvent::kCloseConsistency: return "close_consistency";
    case ServerEvent::kFinish: return "finish";
    case ServerEvent::kAbort: return "abort";
    case ServerEvent::kFailure: return "failure";
  }
  return "unknown";
}

bool ServerTransition(ServerState from, ServerEvent event, bool hardened, ServerState* to) {
  if (from == ServerState::kAborted || from == ServerState::kFinished) return false;
  if (event == ServerEvent::kAbort || event == ServerEvent::kFailure) {
    *to = ServerState::kAborted;
    return true;
  }
  for (const Transition& t : kServerTable) {
    if (t.from == from && t.event == event && (t.profile == 0 || (t.profile == 1) == hardened)) {
      *to = t.to;
      return true;
    }
  }
  return false;
}

Result<v1::SecAggConfig> PlanRound(const RoundPlan& plan, Random& rng) {
  const bool hardened = internal::IsHardened(plan.profile);
  GraphParameters gp{plan.k, plan.t, plan.k + 1 == plan.n};
  if (plan.k == 0) {
    FLT_ASSIGN_OR_RETURN(gp, ChooseGraphParameters(plan.n, plan.max_colluding_fraction, plan.max_dropout_rate,
                                                   internal::ModelFor(hardened)));
  }
  v1::SecAggConfig c;
  c.set_round_id(plan.round_id);
  c.set_n(plan.n);
  c.set_k(gp.k);
  c.set_t(gp.t);
  c.set_bit_width(plan.bit_width);
  c.set_quant_bits(plan.quant_bits != 0 ? plan.quant_bits : QuantBitsFor(plan.bit_width, plan.n));
  c.set_clip_bound(plan.clip_bound);
  c.set_prg(v1::PRG_ALGORITHM_AES128_CTR);
  c.set_model_sha256(plan.model_sha256.data(), plan.model_sha256.size());
  Bytes seed(32);
  rng.Fill(seed);
  c.set_graph_seed(seed.data(), seed.size());
  c.set_profile(hardened ? v1::SEC_AGG_PROFILE_HARDENED : v1::SEC_AGG_PROFILE_CURIOUS);
  c.set_max_colluding_fraction(plan.max_colluding_fraction);
  c.set_max_dropout_rate(plan.max_dropout_rate);
  // Default: accept the round while no more than delta * n clients dropped.
  const auto dropped = static_cast<uint32_t>(std::floor(plan.max_dropout_rate * plan.n));
  c.set_min_survivors(plan.min_survivors != 0 ? plan.min_survivors : std::max<uint32_t>(2, plan.n - dropped));
  FLT_RETURN_IF_ERROR(internal::ValidateSessionConfig(c).status());
  return c;
}

struct SecAggServer::Impl {
  SessionParams params;
  SecAggServerOptions options;
  const CryptoSuite* crypto = nullptr;

  mutable std::mutex mu;
  ServerState state = ServerState::kCollectingAdverts;  // GUARDED_BY(mu)
  Status abort_status;                                  // GUARDED_BY(mu)
  v1::AbortReason abort_reason = v1::ABORT_REASON_UNSPECIFIED;  // GUARDED_BY(mu)
  std::vector<ClientRecord> clients;                    // GUARDED_BY(mu); [0] unused
  std::set<security::X25519Key> seen_keys;              // GUARDED_BY(mu)
  std::unique_ptr<Spool> share_spool;                   // ShareKeys records (kShareRecordBytes)
  std::unique_ptr<Spool> unmask_spool;                  // released shares (kUnmaskRecordBytes)
  uint32_t unmask_records = 0;                          // GUARDED_BY(mu)
  Bytes unmask_key;                                     // 32 bytes, never leaves memory
  std::vector<uint32_t> sum;                            // GUARDED_BY(mu); the running sum
  Bytes survivors_bitmap;                               // GUARDED_BY(mu); U3

  bool hardened() const { return params.hardened; }
  uint32_t n() const { return params.n; }

  // REQUIRES: mu held. Takes the transition or returns FailedPrecondition.
  Status Advance(ServerEvent event) {
    ServerState next;
    if (!ServerTransition(state, event, hardened(), &next)) {
      return FailedPreconditionError("secagg server: " + std::string(ToString(event)) + " not allowed in state " +
                                     std::string(ToString(state)));
    }
    state = next;
    return Status::Ok();
  }

  // REQUIRES: mu held. Aborts the round: drops the sum and every share.
  Status Fail(v1::AbortReason reason, Status status) {
    if (state != ServerState::kAborted && state != ServerState::kFinished) {
      state = ServerState::kAborted;
      abort_status = status;
      abort_reason = reason;
      std::fill(sum.begin(), sum.end(), 0);
      sum.clear();
      for (ClientRecord& c : clients) {
        c.b_shares.clear();
        c.s_shares.clear();
      }
      internal::Wipe(unmask_key);
      FLT_LOG(kWarn, "secagg") << "round " << params.round_id << " aborted: " << status.message();
    }
    return status;
  }

  Status CheckRound(std::string_view round_id, std::string_view what) const {
    if (round_id != params.round_id) return InvalidArgumentError(std::string(what) + ": wrong round id");
    return Status::Ok();
  }

  Status CheckIndex(uint32_t index, std::string_view what) const {
    if (index < 1 || index > n()) {
      return InvalidArgumentError(std::string(what) + ": index " + std::to_string(index) + " not in [1, n]");
    }
    return Status::Ok();
  }

  // REQUIRES: mu held. The abort rule: every `relevant` client keeps >= t `alive`
  // neighbours, and >= min_survivors clients are alive.
  Status CheckLiveNeighbours(const std::function<bool(const ClientRecord&)>& relevant,
                             const std::function<bool(const ClientRecord&)>& alive, std::string_view stage) {
    uint32_t alive_total = 0;
    for (uint32_t u = 1; u <= n(); ++u) alive_total += alive(clients[u]) ? 1 : 0;
    if (alive_total < params.min_survivors) {
      return Fail(v1::ABORT_REASON_TOO_FEW_PARTICIPANTS,
                  FailedPreconditionError(std::string(stage) + ": " + std::to_string(alive_total) +
                                          " clients left, fewer than min_survivors=" +
                                          std::to_string(params.min_survivors)));
    }
    for (uint32_t u = 1; u <= n(); ++u) {
      if (!relevant(clients[u])) continue;
      uint32_t live = 0;
      for (uint32_t v : params.graph->Neighbours(u)) live += alive(clients[v]) ? 1 : 0;
      if (live < params.t) {
        return Fail(v1::ABORT_REASON_TOO_FEW_SURVIVORS,
                    FailedPreconditionError(std::string(stage) + ": client " + std::to_string(u) + " has " +
                                            std::to_string(live) + " live neighbours, fewer than t=" +
                                            std::to_string(params.t)));
      }
    }
    return Status::Ok();
  }

  // REQUIRES: mu held.
  v1::UnmaskRequest BuildUnmaskRequest(uint32_t u) const {
    v1::UnmaskRequest req;
    req.set_round_id(params.round_id);
    uint32_t signatures = 0;
    for (uint32_t v : params.graph->Neighbours(u)) {
      const ClientRecord& c = clients[v];
      if (c.masked) {
        req.add_alive(v);
      } else if (c.shared) {
        req.add_dead(v);
      }
      if (hardened() && c.signed_check && signatures < params.t) {
        v1::ConsistencySignature* s = req.add_neighbour_signatures();
        s->set_index(v);
        s->set_signature(c.consistency_signature.data(), c.consistency_signature.size());
        ++signatures;
      }
    }
    return req;
  }
};

SecAggServer::SecAggServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SecAggServer::~SecAggServer() = default;

Result<std::unique_ptr<SecAggServer>> SecAggServer::Open(SecAggServerOptions options) {
  options.config.clear_self_index();
  options.config.clear_neighbours();
  FLT_ASSIGN_OR_RETURN(SessionParams params, internal::ValidateSessionConfig(options.config));
  if (options.vector_length == 0 || options.vector_length > security::kPrgMaxWords) {
    return InvalidArgumentError("secagg server: vector length must be in [1, 2^34]");
  }
  if (!options.device_ids.empty() && options.device_ids.size() != params.n) {
    return InvalidArgumentError("secagg server: device_ids must name all n clients");
  }
  if (params.hardened && (options.device_ids.empty() || !options.verifier)) {
    return FailedPreconditionError("secagg server: the hardened profile needs device ids and a verifier");
  }
  auto impl = std::make_unique<Impl>();
  impl->crypto = options.crypto != nullptr ? options.crypto : &CoordinatorCryptoSuite();
  if (options.threads == 0) options.threads = std::max(1u, std::thread::hardware_concurrency());
  impl->clients.resize(size_t{params.n} + 1);
  FLT_ASSIGN_OR_RETURN(impl->share_spool, Spool::Create(options.spool_dir));
  FLT_ASSIGN_OR_RETURN(impl->unmask_spool, Spool::Create(options.spool_dir));
  impl->unmask_key.resize(32);
  (options.random != nullptr ? *options.random : OsRandom()).Fill(impl->unmask_key);
  impl->options = std::move(options);
  impl->params = std::move(params);
  return std::unique_ptr<SecAggServer>(new SecAggServer(std::move(impl)));
}

Result<v1::SecAggConfig> SecAggServer::ConfigFor(uint32_t index) const {
  const Impl& s = *impl_;
  FLT_RETURN_IF_ERROR(s.CheckIndex(index, "config"));
  v1::SecAggConfig c = s.options.config;
  c.set_self_index(index);
  for (uint32_t v : s.params.graph->Neighbours(index)) {
    v1::Neighbour* nb = c.add_neighbours();
    nb->set_index(v);
    if (!s.options.device_ids.empty()) nb->set_device_id(s.options.device_ids[v - 1]);
  }
  return c;
}

Status SecAggServer::HandleAdvertiseKeys(const v1::AdvertiseKeys& msg) {
  Impl& s = *impl_;
  FLT_RETURN_IF_ERROR(s.CheckRound(msg.round_id(), "advert"));
  FLT_RETURN_IF_ERROR(s.CheckIndex(msg.index(), "advert"));
  const std::string where = "advert of " + std::to_string(msg.index());
  if (msg.pk_c().size() != security::kX25519KeySize || msg.pk_s().size() != security::kX25519KeySize) {
    return InvalidArgumentError(where + ": public keys must be 32 bytes");
  }
  if (msg.pk_c() == msg.pk_s()) return InvalidArgumentError(where + ": pk_c equals pk_s");
  if (s.hardened()) {
    // Verify outside the lock: signatures are the expensive part of this stage.
    const std::string& id = s.options.device_ids[msg.index() - 1];
    if (msg.device_id() != id) return UnauthenticatedError(where + ": device id does not match the cohort");
    const Bytes transcript = internal::AdvertTranscript(s.params.sid, msg.index(), msg.device_id(),
                                                        AsBytes(msg.pk_c()), AsBytes(msg.pk_s()));
    if (!s.options.verifier->Verify(id, transcript, AsBytes(msg.signature())).ok()) {
      return UnauthenticatedError(where + ": signature does not verify");
    }
  }
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.state != ServerState::kCollectingAdverts) return FailedPreconditionError(where + ": advert stage is closed");
  ClientRecord& c = s.clients[msg.index()];
  if (c.advertised) return AlreadyExistsError(where + ": already advertised");
  const security::X25519Key pk_c = internal::KeyFromBytes(msg.pk_c());
  const security::X25519Key pk_s = internal::KeyFromBytes(msg.pk_s());
  if (s.seen_keys.count(pk_c) != 0 || s.seen_keys.count(pk_s) != 0) {
    return InvalidArgumentError(where + ": public key already used by another client");
  }
  s.seen_keys.insert(pk_c);
  s.seen_keys.insert(pk_s);
  c.advertised = true;
  c.pk_c = pk_c;
  c.pk_s = pk_s;
  if (s.hardened()) {
    c.signature.assign(msg.signature().begin(), msg.signature().end());
    c.certificate_der.assign(msg.certificate_der().begin(), msg.certificate_der().end());
  }
  return Status::Ok();
}

Result<std::vector<uint32_t>> SecAggServer::CloseAdvertiseKeys() {
  Impl& s = *impl_;
  std::lock_guard<std::mutex> lock(s.mu);
  FLT_RETURN_IF_ERROR(s.Advance(ServerEvent::kCloseAdvertiseKeys));
  auto in_u1 = [](const ClientRecord& c) { return c.advertised; };
  FLT_RETURN_IF_ERROR(s.CheckLiveNeighbours(in_u1, in_u1, "advertise keys"));
  std::vector<uint32_t> out;
  for (uint32_t u = 1; u <= s.n(); ++u) {
    if (s.clients[u].advertised) out.push_back(u);
  }
  s.seen_keys.clear();
  return out;
}

Result<v1::NeighbourKeys> SecAggServer::NeighbourKeysFor(uint32_t u) const {
  const Impl& s = *impl_;
  FLT_RETURN_IF_ERROR(s.CheckIndex(u, "neighbour keys"));
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.state != ServerState::kCollectingShares) return FailedPreconditionError("neighbour keys: share stage is not open");
  if (!s.clients[u].advertised) return FailedPreconditionError("neighbour keys: " + std::to_string(u) + " is not in U1");
  v1::NeighbourKeys msg;
  msg.set_round_id(s.params.round_id);
  for (uint32_t v : s.params.graph->Neighbours(u)) {
    const ClientRecord& c = s.clients[v];
    if (!c.advertised) continue;
    v1::AdvertiseKeys* a = msg.add_adverts();
    a->set_round_id(s.params.round_id);
    a->set_index(v);
    a->set_pk_c(c.pk_c.data(), c.pk_c.size());
    a->set_pk_s(c.pk_s.data(), c.pk_s.size());
    if (s.hardened()) {
      a->set_signature(c.signature.data(), c.signature.size());
      a->set_device_id(s.options.device_ids[v - 1]);
      if (!c.certificate_der.empty()) a->set_certificate_der(c.certificate_der.data(), c.certificate_der.size());
    }
  }
  return msg;
}

Status SecAggServer::HandleShareKeys(const v1::ShareKeys& msg) {
  Impl& s = *impl_;
  FLT_RETURN_IF_ERROR(s.CheckRound(msg.round_id(), "share keys"));
  FLT_RETURN_IF_ERROR(s.CheckIndex(msg.from(), "share keys"));
  const std::string where = "share keys of " + std::to_string(msg.from());
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.state != ServerState::kCollectingShares) return FailedPreconditionError(where + ": share stage is not open");
  ClientRecord& c = s.clients[msg.from()];
  if (!c.advertised) return FailedPreconditionError(where + ": did not advertise keys");
  if (c.shared) return AlreadyExistsError(where + ": already shared keys");
  // Exactly one share for every neighbour in U1, each of the fixed ciphertext size.
  std::vector<uint32_t> expected;
  for (uint32_t v : s.params.graph->Neighbours(msg.from())) {
    if (s.clients[v].advertised) expected.push_back(v);
  }
  if (static_cast<size_t>(msg.shares_size()) != expected.size()) {
    return InvalidArgumentError(where + ": " + std::to_string(msg.shares_size()) + " shares for " +
                                std::to_string(expected.size()) + " neighbours");
  }
  std::vector<const v1::EncryptedShare*> by_recipient(expected.size(), nullptr);
  for (const v1::EncryptedShare& e : msg.shares()) {
    auto it = std::lower_bound(expected.begin(), expected.end(), e.to());
    if (e.from() != msg.from() || it == expected.end() || *it != e.to()) {
      return InvalidArgumentError(where + ": share for " + std::to_string(e.to()) + " is not for a live neighbour");
    }
    const size_t i = static_cast<size_t>(it - expected.begin());
    if (by_recipient[i] != nullptr) return InvalidArgumentError(where + ": two shares for " + std::to_string(e.to()));
    by_recipient[i] = &e;
    if (e.ciphertext().size() != internal::kShareCiphertextBytes) {
      return InvalidArgumentError(where + ": share ciphertext of " + std::to_string(e.ciphertext().size()) +
                                  " bytes");
    }
  }
  // One spool write for all of this sender's shares, in ascending recipient order, so the
  // server finds the share for v at v's place among the sender's live neighbours and
  // keeps one record number per sender instead of n·k of them.
  Bytes block;
  block.reserve(kShareRecordBytes * by_recipient.size());
  for (const v1::EncryptedShare* e : by_recipient) {
    for (int k = 0; k < 4; ++k) block.push_back(static_cast<uint8_t>(msg.from() >> (8 * k)));
    block.insert(block.end(), e->ciphertext().begin(), e->ciphertext().end());
  }
  FLT_ASSIGN_OR_RETURN(const uint64_t at, s.share_spool->Append(block));
  if ((at + block.size()) / kShareRecordBytes > UINT32_MAX) return ResourceExhaustedError(where + ": share spool full");
  c.first_share_record = static_cast<uint32_t>(at / kShareRecordBytes);
  c.shared = true;
  return Status::Ok();
}

Result<std::vector<uint32_t>> SecAggServer::CloseShareKeys() {
  Impl& s = *impl_;
  std::lock_guard<std::mutex> lock(s.mu);
  FLT_RETURN_IF_ERROR(s.Advance(ServerEvent::kCloseShareKeys));
  auto in_u2 = [](const ClientRecord& c) { return c.shared; };
  FLT_RETURN_IF_ERROR(s.CheckLiveNeighbours(in_u2, in_u2, "share keys"));
  std::vector<uint32_t> out;
  for (uint32_t v = 1; v <= s.n(); ++v) {
    if (s.clients[v].shared) out.push_back(v);
  }
  s.sum.assign(s.options.vector_length, 0);
  return out;
}

Result<v1::ForwardedShares> SecAggServer::ForwardedSharesFor(uint32_t v) const {
  const Impl& s = *impl_;
  FLT_RETURN_IF_ERROR(s.CheckIndex(v, "forwarded shares"));
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.state != ServerState::kCollectingMaskedInputs) {
    return FailedPreconditionError("forwarded shares: masked-input stage is not open");
  }
  if (!s.clients[v].shared) return FailedPreconditionError("forwarded shares: " + std::to_string(v) + " is not in U2");
  v1::ForwardedShares msg;
  msg.set_round_id(s.params.round_id);
  msg.set_to(v);
  Bytes record(kShareRecordBytes);
  for (uint32_t from : s.params.graph->Neighbours(v)) {
    const ClientRecord& w = s.clients[from];
    if (!w.shared || !s.params.graph->AreNeighbours(from, v)) continue;
    // v's place in the sender's block: its live (advertised) neighbours below v. The set
    // is fixed since the advertise stage closed, so this is the order it wrote.
    uint32_t place = 0;
    for (uint32_t x : s.params.graph->Neighbours(from)) {
      if (x >= v) break;
      if (s.clients[x].advertised) ++place;
    }
    FLT_RETURN_IF_ERROR(s.share_spool->ReadInto(uint64_t{w.first_share_record + place} * kShareRecordBytes, record));
    uint32_t stored_from = 0;
    for (int k = 0; k < 4; ++k) stored_from |= uint32_t{record[k]} << (8 * k);
    if (stored_from != from) return InternalError("forwarded shares: share spool out of step");
    v1::EncryptedShare* e = msg.add_shares();
    e->set_from(from);
    e->set_to(v);
    e->set_ciphertext(record.data() + 4, record.size() - 4);
  }
  return msg;
}

Status SecAggServer::HandleMaskedInput(const v1::MaskedInput& msg) {
  FLT_RETURN_IF_ERROR(impl_->CheckRound(msg.round_id(), "masked input"));
  if (!msg.has_inline_box()) {
    return InvalidArgumentError("masked input: no inline box (resolve the claim check, then HandleSealedInput)");
  }
  return HandleSealedInput(msg.index(), msg.inline_box());
}

Status SecAggServer::HandleSealedInput(uint32_t index, const v1::SealedBox& box) {
  Impl& s = *impl_;
  FLT_RETURN_IF_ERROR(s.CheckIndex(index, "masked input"));
  const std::string where = "masked input of " + std::to_string(index);
  {
    std::lock_guard<std::mutex> lock(s.mu);
    if (s.state != ServerState::kCollectingMaskedInputs) {
      return FailedPreconditionError(where + ": late upload discarded (masked-input stage is closed)");
    }
    ClientRecord& c = s.clients[index];
    if (!c.shared) return FailedPreconditionError(where + ": did not share keys");
    if (c.masked || c.upload_in_flight) return AlreadyExistsError(where + ": already received");
    c.upload_in_flight = true;
  }
  // Decrypt and parse outside the lock (uploads may be handled by several workers).
  auto plain = OpenBox(box, s.options.box_key, s.params.round_id, index, *s.crypto);
  v1::MaskedVector mv;
  Status parsed = plain.status();
  if (parsed.ok()) {
    if (!mv.ParseFromArray(plain->data(), static_cast<int>(plain->size()))) {
      parsed = InvalidArgumentError(where + ": not a MaskedVector");
    } else {
      parsed = CheckMaskedVector(mv, s.params.fixed_point.bit_width, s.options.vector_length);
    }
    internal::Wipe(*plain);
  }
  std::lock_guard<std::mutex> lock(s.mu);
  ClientRecord& c = s.clients[index];
  c.upload_in_flight = false;
  if (!parsed.ok()) return parsed.WithContext(where);
  if (s.state != ServerState::kCollectingMaskedInputs) {
    return FailedPreconditionError(where + ": late upload discarded (masked-input stage closed meanwhile)");
  }
  FLT_RETURN_IF_ERROR(AddPackedRing(AsBytes(mv.packed()), s.params.fixed_point.bit_width, s.sum));
  c.masked = true;
  return Status::Ok();
}

Result<MaskedInputClosed> SecAggServer::CloseMaskedInput() {
  Impl& s = *impl_;
  std::lock_guard<std::mutex> lock(s.mu);
  FLT_RETURN_IF_ERROR(s.Advance(ServerEvent::kCloseMaskedInput));
  FLT_RETURN_IF_ERROR(s.CheckLiveNeighbours([](const ClientRecord& c) { return c.shared; },
                                            [](const ClientRecord& c) { return c.masked; }, "masked input"));
  std::vector<bool> members(size_t{s.n()} + 1, false);
  MaskedInputClosed out;
  for (uint32_t u = 1; u <= s.n(); ++u) {
    if (!s.clients[u].masked) continue;
    members[u] = true;
    out.recipients.push_back(u);
  }
  s.survivors_bitmap = internal::EncodeBitmap(members);
  if (s.hardened()) {
    v1::ConsistencyCheckRequest req;
    req.set_round_id(s.params.round_id);
    req.set_n(s.n());
    req.set_survivors_bitmap(s.survivors_bitmap.data(), s.survivors_bitmap.size());
    out.consistency = std::move(req);
    return out;
  }
  for (uint32_t u : out.recipients) s.clients[u].unmask_requested = true;
  return out;
}

Status SecAggServer::HandleConsistencyCheckResponse(const v1::ConsistencyCheckResponse& msg) {
  Impl& s = *impl_;
  FLT_RETURN_IF_ERROR(s.CheckRound(msg.round_id(), "consistency response"));
  FLT_RETURN_IF_ERROR(s.CheckIndex(msg.index(), "consistency response"));
  const std::string where = "consistency response of " + std::to_string(msg.index());
  Bytes transcript;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    if (s.state != ServerState::kCollectingConsistency) {
      return FailedPreconditionError(where + ": consistency stage is not open");
    }
    const ClientRecord& c = s.clients[msg.index()];
    if (!c.masked) return FailedPreconditionError(where + ": not a survivor");
    if (c.signed_check) return AlreadyExistsError(where + ": already received");
    transcript = internal::ConsistencyTranscript(s.params.sid, s.n(), s.survivors_bitmap);
  }
  if (!s.options.verifier->Verify(s.options.device_ids[msg.index() - 1], transcript, AsBytes(msg.signature())).ok()) {
    return UnauthenticatedError(where + ": signature does not verify");
  }
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.state != ServerState::kCollectingConsistency) return FailedPreconditionError(where + ": stage closed");
  ClientRecord& c = s.clients[msg.index()];
  if (c.signed_check) return AlreadyExistsError(where + ": already received");
  c.signed_check = true;
  c.consistency_signature.assign(msg.signature().begin(), msg.signature().end());
  return Status::Ok();
}

Result<std::vector<uint32_t>> SecAggServer::CloseConsistencyCheck() {
  Impl& s = *impl_;
  std::lock_guard<std::mutex> lock(s.mu);
  FLT_RETURN_IF_ERROR(s.Advance(ServerEvent::kCloseConsistency));
  // Shares come only from clients that signed, so they are the live set from here on.
  FLT_RETURN_IF_ERROR(s.CheckLiveNeighbours([](const ClientRecord& c) { return c.shared; },
                                            [](const ClientRecord& c) { return c.signed_check; }, "consistency"));
  std::vector<uint32_t> out;
  for (uint32_t u = 1; u <= s.n(); ++u) {
    if (!s.clients[u].signed_check) continue;
    s.clients[u].unmask_requested = true;
    out.push_back(u);
  }
  return out;
}

Result<v1::UnmaskRequest> SecAggServer::UnmaskRequestFor(uint32_t u) const {
  const Impl& s = *impl_;
  FLT_RETURN_IF_ERROR(s.CheckIndex(u, "unmask request"));
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.state != ServerState::kCollectingUnmask) return FailedPreconditionError("unmask request: unmask stage is not open");
  if (!s.clients[u].unmask_requested) {
    return FailedPreconditionError("unmask request: " + std::to_string(u) + " is not asked to unmask");
  }
  return s.BuildUnmaskRequest(u);
}

Status SecAggServer::HandleUnmaskResponse(const v1::UnmaskResponse& msg) {
  Impl& s = *impl_;
  FLT_RETURN_IF_ERROR(s.CheckRound(msg.round_id(), "unmask response"));
  FLT_RETURN_IF_ERROR(s.CheckIndex(msg.index(), "unmask response"));
  const uint32_t from = msg.index();
  const std::string where = "unmask response of " + std::to_string(from);
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.state != ServerState::kCollectingUnmask) return FailedPreconditionError(where + ": unmask stage is not open");
  ClientRecord& c = s.clients[from];
  if (!c.unmask_requested) return FailedPreconditionError(where + ": no unmask request was sent to it");
  if (c.responded) return AlreadyExistsError(where + ": already received");
  // Check the whole response before keeping any share: b shares only of survivors
  // (itself included), key shares only of clients in U2 \ U3, one per owner.
  std::set<uint32_t> owners;
  std::vector<std::pair<uint32_t, ShamirShare>> b_shares, s_shares;
  auto take = [&](const v1::ShareRelease& r, bool self_mask) -> Status {
    const uint32_t o = r.owner();
    if (o < 1 || o > s.n() || !owners.insert(o).second) {
      return InvalidArgumentError(where + ": share owner " + std::to_string(o) + " invalid or repeated");
    }
    const bool neighbour = o == from ? self_mask : s.params.graph->AreNeighbours(from, o);
    const ClientRecord& oc = s.clients[o];
    const bool allowed = self_mask ? oc.masked : (oc.shared && !oc.masked);
    if (!neighbour || !allowed) {
      return InvalidArgumentError(where + ": unexpected " + (self_mask ? "self-mask" : "mask-key") +
                                  " share of " + std::to_string(o));
    }
    FLT_ASSIGN_OR_RETURN(ShamirShare sh, internal::DecodeShare(AsBytes(r.share()), from));
    (self_mask ? b_shares : s_shares).emplace_back(o, std::move(sh));
    return Status::Ok();
  };
  for (const auto& r : msg.self_mask_shares()) FLT_RETURN_IF_ERROR(take(r, true));
  for (const auto& r : msg.mask_key_shares()) FLT_RETURN_IF_ERROR(take(r, false));
  // Sealed into the unmask spool (one write for the whole response); each owner keeps the
  // record numbers of its shares — the first t+1 only, all Finish reads (t to reconstruct,
  // one more to expose a corrupted share), so memory is n·(t+1) record numbers, not n·k.
  const size_t keep = size_t{s.params.t} + 1;
  std::vector<std::pair<std::vector<uint32_t>*, const ShamirShare*>> released;
  auto release = [&](std::vector<uint32_t>& records, const ShamirShare& sh) {
    if (records.size() >= keep) return;
    if (records.empty()) records.reserve(keep);
    released.emplace_back(&records, &sh);
  };
  for (const auto& [o, sh] : b_shares) release(s.clients[o].b_shares, sh);
  for (const auto& [o, sh] : s_shares) release(s.clients[o].s_shares, sh);
  if (size_t{s.unmask_records} + released.size() > UINT32_MAX) {
    return ResourceExhaustedError(where + ": unmask spool full");
  }
  Bytes block;
  block.reserve(released.size() * kUnmaskRecordBytes);
  for (size_t j = 0; j < released.size(); ++j) {
    Bytes plain = internal::EncodeShare(*released[j].second);
    auto sealed = security::AesGcmSeal(s.unmask_key, RecordNonce(s.unmask_records + static_cast<uint32_t>(j)), plain, {});
    internal::Wipe(plain);
    if (!sealed.ok()) return sealed.status().WithContext(where);
    block.insert(block.end(), sealed->begin(), sealed->end());
  }
  FLT_ASSIGN_OR_RETURN(const uint64_t at, s.unmask_spool->Append(block));
  if (at != uint64_t{s.unmask_records} * kUnmaskRecordBytes) return InternalError(where + ": unmask spool out of step");
  for (const auto& [owner_records, share] : released) owner_records->push_back(s.unmask_records++);
  c.responded = true;
  return Status::Ok();
}

Result<AggregateOutput> SecAggServer::Finish() {
  Impl& s = *impl_;
  std::lock_guard<std::mutex> lock(s.mu);
  ServerState finished;
  if (!ServerTransition(s.state, ServerEvent::kFinish, s.hardened(), &finished)) {
    return FailedPreconditionError("secagg server: finish not allowed in state " + std::string(ToString(s.state)));
  }
  const uint32_t t = s.params.t;
  std::vector<uint32_t> survivors, dead;
  for (uint32_t u = 1; u <= s.n(); ++u) {
    const ClientRecord& c = s.clients[u];
    if (c.masked) {
      survivors.push_back(u);
    } else if (c.shared) {
      dead.push_back(u);
    }
  }
  auto fail = [&](Status st) -> Status {
    return s.Fail(st.code() == StatusCode::kDataLoss ? v1::ABORT_REASON_PROTOCOL_VIOLATION
                                                     : v1::ABORT_REASON_TOO_FEW_SURVIVORS,
                  std::move(st));
  };
  // One extra share beyond t (when there is one) exposes a single corrupted share.
  auto reconstruct = [&](const std::vector<uint32_t>& records, uint32_t owner, const char* what) -> Result<Bytes> {
    if (records.size() < t) {
      return FailedPreconditionError("finish: " + std::to_string(records.size()) + " " + what + " shares of " +
                                     std::to_string(owner) + ", fewer than t=" + std::to_string(t));
    }
    const size_t use = std::min<size_t>(records.size(), size_t{t} + 1);
    std::vector<ShamirShare> shares;
    shares.reserve(use);
    Bytes sealed(kUnmaskRecordBytes);
    for (size_t j = 0; j < use; ++j) {
      FLT_RETURN_IF_ERROR(s.unmask_spool->ReadInto(uint64_t{records[j]} * kUnmaskRecordBytes, sealed));
      auto plain = security::AesGcmOpen(s.unmask_key, RecordNonce(records[j]), sealed, {});
      if (!plain.ok()) return DataLossError("finish: unmask spool record unreadable: " + plain.status().message());
      uint64_t x = 0;  // the holder's index, checked when the share was released
      for (int k = 0; k < 8; ++k) x |= uint64_t{(*plain)[k]} << (8 * k);
      auto share = internal::DecodeShare(*plain, x);
      internal::Wipe(*plain);
      if (!share.ok()) return share.status();
      shares.push_back(std::move(*share));
    }
    auto secret = security::ShamirReconstruct(shares, t, internal::kSecretSize);
    for (ShamirShare& sh : shares) {
      internal::Wipe(std::span<uint8_t>(reinterpret_cast<uint8_t*>(sh.y.data()), sh.y.size() * sizeof(uint64_t)));
    }
    if (!secret.ok()) return DataLossError("finish: " + std::string(what) + " of " + std::to_string(owner) +
                                           ": inconsistent shares: " + secret.status().message());
    return secret;
  };

  // Streams: one self mask per survivor, one pairwise mask per (dead, surviving neighbour).
  std::vector<MaskStream> self_streams(survivors.size());
  std::vector<std::vector<MaskStream>> pair_streams(dead.size());
  const unsigned threads = s.options.threads;
  Status st = ParallelFor(survivors.size(), threads, [&](size_t i) -> Status {
    const uint32_t u = survivors[i];
    FLT_ASSIGN_OR_RETURN(Bytes b, reconstruct(s.clients[u].b_shares, u, "self-mask"));
    FLT_ASSIGN_OR_RETURN(self_streams[i].seed, internal::SelfMaskSeed(s.params.sid, u, b));
    internal::Wipe(b);
    self_streams[i].subtract = true;
    return Status::Ok();
  });
  if (!st.ok()) return fail(st);
  st = ParallelFor(dead.size(), threads, [&](size_t i) -> Status {
    const uint32_t w = dead[i];
    FLT_ASSIGN_OR_RETURN(Bytes key_bytes, reconstruct(s.clients[w].s_shares, w, "mask-key"));
    security::X25519Key sk;
    std::memcpy(sk.data(), key_bytes.data(), sk.size());
    internal::Wipe(key_bytes);
    const security::X25519Key& pk_s_w = s.clients[w].pk_s;
    FLT_ASSIGN_OR_RETURN(security::X25519Key pk, s.crypto->PublicFromPrivate(sk));
    if (std::memcmp(pk.data(), pk_s_w.data(), pk.size()) != 0) {
      return DataLossError("finish: reconstructed mask key of " + std::to_string(w) + " does not match its advert");
    }
    std::vector<uint32_t> alive;
    std::vector<security::X25519Key> peers;
    for (uint32_t v : s.params.graph->Neighbours(w)) {
      if (!s.clients[v].masked) continue;
      alive.push_back(v);
      peers.push_back(s.clients[v].pk_s);
    }
    std::vector<security::X25519Key> shared(peers.size());
    FLT_RETURN_IF_ERROR(s.crypto->AgreeMany(sk, peers, shared));
    for (size_t j = 0; j < alive.size(); ++j) {
      const uint32_t v = alive[j];
      MaskStream ms;
      FLT_ASSIGN_OR_RETURN(ms.seed, internal::PairwiseMaskSeed(shared[j], s.params.sid, w, pk_s_w, v,
                                                               s.clients[v].pk_s));
      internal::Wipe(shared[j]);
      ms.subtract = v < w;  // v added +PRG(s_vw) iff v < w
      pair_streams[i].push_back(ms);
    }
    internal::Wipe(sk);
    return Status::Ok();
  });
  if (!st.ok()) return fail(st);
  for (auto& ps : pair_streams) self_streams.insert(self_streams.end(), ps.begin(), ps.end());
  st = ApplyMaskStreams(s.crypto->prg(), self_streams, s.sum, threads);
  for (MaskStream& ms : self_streams) internal::Wipe(ms.seed);
  if (!st.ok()) return fail(st);

  s.state = finished;
  AggregateOutput out;
  const uint32_t mask = RingMask(s.params.fixed_point.bit_width);
  out.sum = std::move(s.sum);
  for (uint32_t& v : out.sum) v &= mask;
  out.survivors = survivors;
  out.survivors_bitmap_members.assign(size_t{s.n()} + 1, false);
  for (uint32_t u : survivors) out.survivors_bitmap_members[u] = true;
  out.dropped = s.n() - static_cast<uint32_t>(survivors.size());
  for (ClientRecord& c : s.clients) {
    c.b_shares.clear();
    c.s_shares.clear();
  }
  return out;
}

void SecAggServer::Abort(v1::AbortReason reason, std::string detail) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->Fail(reason, AbortedError("secagg server: " + detail)).IgnoreError();
}

ServerState SecAggServer::state() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->state;
}

Status SecAggServer::abort_status() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->abort_status;
}

v1::RoundAbort SecAggServer::AbortMessage() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  v1::RoundAbort msg;
  msg.set_round_id(impl_->params.round_id);
  msg.set_reason(impl_->abort_reason);
  msg.set_detail(impl_->abort_status.message());
  return msg;
}

bool SecAggServer::StageComplete() const {
  const Impl& s = *impl_;
  std::lock_guard<std::mutex> lock(s.mu);
  for (uint32_t u = 1; u <= s.n(); ++u) {
    const ClientRecord& c = s.clients[u];
    switch (s.state) {
      case ServerState::kCollectingAdverts:
        if (!c.advertised) return false;
        break;
      case ServerState::kCollectingShares:
        if (c.advertised && !c.shared) return false;
        break;
      case ServerState::kCollectingMaskedInputs:
        if (c.shared && !c.masked) return false;
        break;
      case ServerState::kCollectingConsistency:
        if (c.masked && !c.signed_check) return false;
        break;
      case ServerState::kCollectingUnmask:
        if (c.unmask_requested && !c.responded) return false;
        break;
      default:
        return false;
    }
  }
  return true;
}

HeldShares SecAggServer::SharesHeldFor(uint32_t owner) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (owner < 1 || owner > impl_->n()) return {};
  const ClientRecord& c = impl_->clients[owner];
  return {c.b_shares.size(), c.s_shares.size()};
}

uint32_t SecAggServer::n() const { return impl_->params.n; }
uint32_t SecAggServer::t() const { return impl_->params.t; }

}  // namespace flotilla::aggregation
