#include "flotilla/aggregation/secagg_client.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <set>
#include <string>

#include "flotilla/aggregation/masked_vector.h"
#include "flotilla/security/aead.h"
#include "flotilla/security/csprng.h"
#include "secagg_session.h"

namespace flotilla::aggregation {

using internal::SessionParams;
using security::ShamirShare;
using security::X25519Key;

namespace {

struct Transition {
  ClientState from;
  ClientEvent event;
  ClientState to;
};

// The client's whole lifecycle, top to bottom (kAbort/kFailure are handled generically).
constexpr Transition kClientTable[] = {
    {ClientState::kConfigured, ClientEvent::kStart, ClientState::kKeysAdvertised},
    {ClientState::kKeysAdvertised, ClientEvent::kNeighbourKeys, ClientState::kSharesSent},
    {ClientState::kSharesSent, ClientEvent::kForwardedShares, ClientState::kMaskedInputSent},
    {ClientState::kMaskedInputSent, ClientEvent::kConsistencyCheck, ClientState::kConsistencySigned},
    {ClientState::kMaskedInputSent, ClientEvent::kUnmaskRequest, ClientState::kCompleted},
    {ClientState::kConsistencySigned, ClientEvent::kUnmaskRequest, ClientState::kCompleted},
    {ClientState::kCompleted, ClientEvent::kUnmaskRequest, ClientState::kAborted},
};

// What this client knows about one neighbour. The per-neighbour rule "never release both
// shares" is enforced by moving kSharedKeys to exactly one of the two kReleased states.
enum class Peer : uint8_t {
  kSilent,          // no advert reached us: dead before ShareKeys
  kAdvertised,      // we sent it shares, none came back (yet)
  kSharedKeys,      // it sent us its shares: in U2 from our point of view
  kReleasedSelfMask,
  kReleasedMaskKey,
};

struct Neighbour {
  uint32_t index = 0;
  std::string device_id;
  Peer state = Peer::kSilent;
  std::string pk_c, pk_s;
  X25519Key share_secret{};  // X25519(c_u, pk_c_v): both share-key directions derive from it
  ShamirShare b_share, s_share;  // v's secrets, our x
};

// out[i] = X25519(private_key, peers[i]) with one private-key import for all (AgreeMany);
// on failure, the first failing peer is named as `what` + its index.
Status AgreeWithEach(const CryptoSuite& crypto, const X25519Key& private_key, const std::vector<uint32_t>& index,
                     const std::vector<X25519Key>& peers, std::span<X25519Key> out, const std::string& what) {
  if (crypto.AgreeMany(private_key, peers, out).ok()) return Status::Ok();
  for (size_t i = 0; i < peers.size(); ++i) {
    auto one = crypto.Agree(private_key, peers[i]);
    if (!one.ok()) return one.status().WithContext(what + std::to_string(index[i]));
  }
  return InternalError("x25519: batched agreement failed where single agreements succeed");
}

}  // namespace

std::string_view ToString(ClientState state) {
  switch (state) {
    case ClientState::kConfigured: return "configured";
    case ClientState::kKeysAdvertised: return "keys_advertised";
    case ClientState::kSharesSent: return "shares_sent";
    case ClientState::kMaskedInputSent: return "masked_input_sent";
    case ClientState::kConsistencySigned: return "consistency_signed";
    case ClientState::kCompleted: return "completed";
    case ClientState::kAborted: return "aborted";
  }
  return "unknown";
}

std::string_view ToString(ClientEvent event) {
  switch (event) {
    case ClientEvent::kStart: return "start";
    case ClientEvent::kNeighbourKeys: return "neighbour_keys";
    case ClientEvent::kForwardedShares: return "forwarded_shares";
    case ClientEvent::kConsistencyCheck: return "consistency_check";
    case ClientEvent::kUnmaskRequest: return "unmask_request";
    case ClientEvent::kAbort: return "abort";
    case ClientEvent::kFailure: return "failure";
  }
  return "unknown";
}

bool ClientTransition(ClientState from, ClientEvent event, ClientState* to) {
  if (from == ClientState::kAborted) return false;
  if (event == ClientEvent::kAbort || event == ClientEvent::kFailure) {
    *to = ClientState::kAborted;
    return true;
  }
  for (const Transition& t : kClientTable) {
    if (t.from == from && t.event == event) {
      *to = t.to;
      return true;
    }
  }
  return false;
}

struct SecAggClient::Impl {
  SessionParams params;
  uint32_t self = 0;
  std::string self_device_id;
  SecAggClientOptions options;
  Random* rng = nullptr;
  const CryptoSuite* crypto = nullptr;
  std::vector<Neighbour> neighbours;  // sorted by index
  security::X25519KeyPair c_key{}, s_key{};
  std::array<uint8_t, internal::kSecretSize> b{};
  ShamirShare own_b_share;
  std::vector<bool> survivors;  // U3 we signed (hardened)
  Bytes consistency_transcript;

  Neighbour* Find(uint32_t index) {
    auto it = std::lower_bound(neighbours.begin(), neighbours.end(), index,
                               [](const Neighbour& n, uint32_t i) { return n.index < i; });
    return it != neighbours.end() && it->index == index ? &*it : nullptr;
  }

  void WipeSecrets() {
    internal::Wipe(c_key.private_key);
    internal::Wipe(s_key.private_key);
    internal::Wipe(b);
    for (Neighbour& n : neighbours) {
      internal::Wipe(n.share_secret);
      std::fill(n.b_share.y.begin(), n.b_share.y.end(), 0);
      std::fill(n.s_share.y.begin(), n.s_share.y.end(), 0);
    }
    std::fill(own_b_share.y.begin(), own_b_share.y.end(), 0);
  }

  Status CheckRound(std::string_view round_id, std::string_view what) const {
    if (round_id != params.round_id) {
      return InvalidArgumentError(std::string(what) + ": round id '" + std::string(round_id) +
                                  "' is not this round's");
    }
    return Status::Ok();
  }
};

SecAggClient::SecAggClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SecAggClient::~SecAggClient() {
  if (impl_) impl_->WipeSecrets();
}

uint32_t SecAggClient::index() const { return impl_->self; }

Result<std::unique_ptr<SecAggClient>> SecAggClient::Open(const v1::SecAggConfig& config,
                                                         SecAggClientOptions options) {
  FLT_ASSIGN_OR_RETURN(SessionParams params, internal::ValidateSessionConfig(config));
  auto impl = std::make_unique<Impl>();
  impl->self = config.self_index();
  if (impl->self < 1 || impl->self > params.n) {
    return InvalidArgumentError("secagg config: self index " + std::to_string(impl->self) + " not in [1, n]");
  }
  const std::vector<uint32_t> expected = params.graph->Neighbours(impl->self);
  if (static_cast<size_t>(config.neighbours_size()) != expected.size()) {
    return InvalidArgumentError("secagg config: " + std::to_string(config.neighbours_size()) +
                                " neighbours listed, the graph gives " + std::to_string(expected.size()));
  }
  std::set<std::string> ids;
  for (const auto& nb : config.neighbours()) {
    if (!std::binary_search(expected.begin(), expected.end(), nb.index())) {
      return InvalidArgumentError("secagg config: neighbour " + std::to_string(nb.index()) +
                                  " is not a neighbour in the round's graph");
    }
    if (nb.device_id().size() > internal::kMaxDeviceIdBytes) {
      return InvalidArgumentError("secagg config: neighbour device id too long");
    }
    if (params.hardened && (nb.device_id().empty() || !ids.insert(nb.device_id()).second)) {
      return InvalidArgumentError("secagg config: hardened profile needs a distinct device id per neighbour");
    }
    Neighbour n;
    n.index = nb.index();
    n.device_id = nb.device_id();
    impl->neighbours.push_back(std::move(n));
  }
  std::sort(impl->neighbours.begin(), impl->neighbours.end(),
            [](const Neighbour& a, const Neighbour& b) { return a.index < b.index; });
  for (size_t i = 1; i < impl->neighbours.size(); ++i) {
    if (impl->neighbours[i].index == impl->neighbours[i - 1].index) {
      return InvalidArgumentError("secagg config: neighbour listed twice");
    }
  }
  if (params.hardened) {
    if (!options.signer || !options.verifier) {
      return FailedPreconditionError("secagg client: the hardened profile needs a signer and a verifier");
    }
    if (ids.count(options.signer->identity()) != 0) {
      return InvalidArgumentError("secagg config: our own device id is listed as a neighbour");
    }
    impl->self_device_id = options.signer->identity();
  }
  impl->rng = options.rng != nullptr ? options.rng : &security::SystemCsprng();
  impl->crypto = options.crypto != nullptr ? options.crypto : &DeviceCryptoSuite();
  impl->options = std::move(options);
  impl->params = std::move(params);
  return std::unique_ptr<SecAggClient>(new SecAggClient(std::move(impl)));
}

Status SecAggClient::NotExpected(ClientEvent event) const {
  return FailedPreconditionError("secagg client: " + std::string(ToString(event)) + " not expected in state " +
                                 std::string(ToString(state_)));
}

Status SecAggClient::Fail(Status status) {
  if (state_ != ClientState::kAborted) {
    state_ = ClientState::kAborted;
    abort_status_ = status;
    impl_->WipeSecrets();
  }
  return status;
}

v1::RoundAbort SecAggClient::AbortMessage() const {
  v1::RoundAbort msg;
  msg.set_round_id(impl_->params.round_id);
  const bool too_few = abort_status_.message().find("fewer than t") != std::string::npos;
  msg.set_reason(too_few ? v1::ABORT_REASON_TOO_FEW_SURVIVORS : v1::ABORT_REASON_PROTOCOL_VIOLATION);
  msg.set_detail(abort_status_.message());
  return msg;
}

void SecAggClient::HandleAbort(const v1::RoundAbort& msg) {
  if (msg.round_id() != impl_->params.round_id || state_ == ClientState::kAborted) return;
  Fail(AbortedError("secagg client: coordinator aborted the round: " + msg.detail())).IgnoreError();
}

Result<v1::AdvertiseKeys> SecAggClient::Start() {
  Impl& s = *impl_;
  ClientState next;
  if (!ClientTransition(state_, ClientEvent::kStart, &next)) return NotExpected(ClientEvent::kStart);
  auto c_key = s.crypto->GenerateKeyPair(*s.rng);
  auto s_key = s.crypto->GenerateKeyPair(*s.rng);
  if (!c_key.ok() || !s_key.ok()) return Fail(InternalError("secagg client: key generation failed"));
  s.c_key = *c_key;
  s.s_key = *s_key;
  v1::AdvertiseKeys msg;
  msg.set_round_id(s.params.round_id);
  msg.set_index(s.self);
  msg.set_pk_c(s.c_key.public_key.data(), s.c_key.public_key.size());
  msg.set_pk_s(s.s_key.public_key.data(), s.s_key.public_key.size());
  if (s.params.hardened) {
    msg.set_device_id(s.self_device_id);
    auto sig = s.options.signer->Sign(
        internal::AdvertTranscript(s.params.sid, s.self, s.self_device_id, s.c_key.public_key, s.s_key.public_key));
    if (!sig.ok()) return Fail(sig.status().WithContext("signing the key advert"));
    msg.set_signature(sig->data(), sig->size());
  }
  state_ = next;
  return msg;
}

Result<v1::ShareKeys> SecAggClient::HandleNeighbourKeys(const v1::NeighbourKeys& msg) {
  Impl& s = *impl_;
  FLT_RETURN_IF_ERROR(s.CheckRound(msg.round_id(), "neighbour keys"));
  ClientState next;
  if (!ClientTransition(state_, ClientEvent::kNeighbourKeys, &next)) return NotExpected(ClientEvent::kNeighbourKeys);

  // Validate every advert before keeping anything.
  std::set<std::string> keys = {std::string(s.c_key.public_key.begin(), s.c_key.public_key.end()),
                                std::string(s.s_key.public_key.begin(), s.s_key.public_key.end())};
  std::map<uint32_t, const v1::AdvertiseKeys*> adverts;
  for (const v1::AdvertiseKeys& a : msg.adverts()) {
    const std::string where = "advert of " + std::to_string(a.index());
    if (a.round_id() != s.params.round_id) return Fail(InvalidArgumentError(where + ": wrong round id"));
    if (a.index() == s.self) return Fail(InvalidArgumentError(where + ": our own index"));
    Neighbour* nb = s.Find(a.index());
    if (nb == nullptr) return Fail(InvalidArgumentError(where + ": not a neighbour"));
    if (!adverts.emplace(a.index(), &a).second) return Fail(InvalidArgumentError(where + ": listed twice"));
    if (a.pk_c().size() != security::kX25519KeySize || a.pk_s().size() != security::kX25519KeySize) {
      return Fail(InvalidArgumentError(where + ": public keys must be 32 bytes"));
    }
    if (!keys.insert(a.pk_c()).second || !keys.insert(a.pk_s()).second) {
      return Fail(InvalidArgumentError(where + ": duplicate public key"));
    }
    if (s.params.hardened) {
      if (a.device_id() != nb->device_id) return Fail(InvalidArgumentError(where + ": signed by the wrong device"));
      const Bytes transcript =
          internal::AdvertTranscript(s.params.sid, a.index(), a.device_id(), AsBytes(a.pk_c()), AsBytes(a.pk_s()));
      Status v = s.options.verifier->Verify(nb->device_id, transcript, AsBytes(a.signature()));
      if (!v.ok()) {
        return Fail(UnauthenticatedError(where + ": signature does not verify (substituted key, other session "
                                                 "or model hash)"));
      }
    }
  }
  if (adverts.size() < s.params.t) {
    return Fail(AbortedError("neighbour keys: " + std::to_string(adverts.size()) +
                             " neighbours advertised, fewer than t=" + std::to_string(s.params.t)));
  }

  // Share b_u and s_u's key over {self} + advertised neighbours.
  s.rng->Fill(s.b);
  std::vector<uint64_t> xs = {s.self};
  for (const auto& [index, a] : adverts) xs.push_back(index);
  auto b_shares = security::ShamirSplit(s.b, s.params.t, xs, *s.rng);
  auto s_shares = security::ShamirSplit(s.s_key.private_key, s.params.t, xs, *s.rng);
  if (!b_shares.ok() || !s_shares.ok()) return Fail(InternalError("neighbour keys: Shamir split failed"));
  s.own_b_share = (*b_shares)[0];

  v1::ShareKeys out;
  out.set_round_id(s.params.round_id);
  out.set_from(s.self);
  std::vector<uint32_t> peer_index;
  std::vector<security::X25519Key> peer_keys;
  for (const auto& [index, a] : adverts) {
    peer_index.push_back(index);
    peer_keys.push_back(internal::KeyFromBytes(a->pk_c()));
  }
  std::vector<security::X25519Key> secrets(peer_keys.size());
  if (Status st = AgreeWithEach(*s.crypto, s.c_key.private_key, peer_index, peer_keys, secrets, "advert of ");
      !st.ok())
    return Fail(st);
  size_t i = 1;
  for (const auto& [index, a] : adverts) {
    Neighbour& nb = *s.Find(index);
    nb.state = Peer::kAdvertised;
    nb.pk_c = a->pk_c();
    nb.pk_s = a->pk_s();
    nb.share_secret = secrets[i - 1];
    internal::Wipe(secrets[i - 1]);
    auto key = internal::ShareKey(nb.share_secret, s.params.sid, s.self, index);
    if (!key.ok()) return Fail(key.status());
    Bytes plain;
    plain.reserve(internal::kSharePlaintextBytes);
    for (uint32_t v : {s.self, index}) {
      for (int k = 0; k < 4; ++k) plain.push_back(static_cast<uint8_t>(v >> (8 * k)));
    }
    const Bytes eb = internal::EncodeShare((*b_shares)[i]);
    const Bytes es = internal::EncodeShare((*s_shares)[i]);
    plain.insert(plain.end(), eb.begin(), eb.end());
    plain.insert(plain.end(), es.begin(), es.end());
    auto ct = security::AesGcmSeal(*key, internal::kShareNonce, plain,
                                   internal::ShareAad(s.params.sid, s.self, index));
    internal::Wipe(plain);
    if (!ct.ok()) return Fail(ct.status());
    v1::EncryptedShare* e = out.add_shares();
    e->set_from(s.self);
    e->set_to(index);
    e->set_ciphertext(ct->data(), ct->size());
    ++i;
  }
  for (auto& sh : *b_shares) std::fill(sh.y.begin(), sh.y.end(), 0);
  for (auto& sh : *s_shares) std::fill(sh.y.begin(), sh.y.end(), 0);
  state_ = next;
  return out;
}

Result<v1::MaskedInput> SecAggClient::HandleForwardedShares(const v1::ForwardedShares& msg,
                                                           std::span<const uint32_t> input) {
  Impl& s = *impl_;
  FLT_RETURN_IF_ERROR(s.CheckRound(msg.round_id(), "forwarded shares"));
  ClientState next;
  if (!ClientTransition(state_, ClientEvent::kForwardedShares, &next)) {
    return NotExpected(ClientEvent::kForwardedShares);
  }
  const uint32_t mask = RingMask(s.params.fixed_point.bit_width);
  if (input.empty()) return InvalidArgumentError("masked input: empty input vector");
  for (size_t i = 0; i < input.size(); ++i) {
    if ((input[i] & ~mask) != 0) {
      return InvalidArgumentError("masked input: element " + std::to_string(i) + " is not below 2^b");
    }
  }
  if (msg.to() != s.self) return Fail(InvalidArgumentError("forwarded shares: addressed to another client"));

  // Decrypt and check everything first; commit the per-neighbour states only if all pass.
  std::map<uint32_t, std::pair<ShamirShare, ShamirShare>> received;
  for (const v1::EncryptedShare& e : msg.shares()) {
    const std::string where = "share from " + std::to_string(e.from());
    Neighbour* nb = s.Find(e.from());
    if (nb == nullptr || nb->state != Peer::kAdvertised) {
      return Fail(InvalidArgumentError(where + ": not a neighbour that advertised keys"));
    }
    if (e.to() != s.self) return Fail(InvalidArgumentError(where + ": addressed to another client"));
    if (received.count(e.from()) != 0) return Fail(InvalidArgumentError(where + ": listed twice"));
    if (e.ciphertext().size() != internal::kShareCiphertextBytes) {
      return Fail(InvalidArgumentError(where + ": ciphertext size"));
    }
    auto key = internal::ShareKey(nb->share_secret, s.params.sid, e.from(), s.self);
    if (!key.ok()) return Fail(key.status());
    auto plain = security::AesGcmOpen(*key, internal::kShareNonce, AsBytes(e.ciphertext()),
                                      internal::ShareAad(s.params.sid, e.from(), s.self));
    if (!plain.ok()) return Fail(UnauthenticatedError(where + ": does not decrypt (other session or tampered)"));
    auto u32 = [&](size_t at) {
      uint32_t v = 0;
      for (int k = 0; k < 4; ++k) v |= uint32_t{(*plain)[at + k]} << (8 * k);
      return v;
    };
    if (u32(0) != e.from() || u32(4) != s.self) {
      internal::Wipe(*plain);
      return Fail(InvalidArgumentError(where + ": sender/receiver inside the ciphertext do not match"));
    }
    const ByteSpan body(*plain);
    auto b_share = internal::DecodeShare(body.subspan(8, internal::kShareBytes), s.self);
    auto s_share = internal::DecodeShare(body.subspan(8 + internal::kShareBytes, internal::kShareBytes), s.self);
    internal::Wipe(*plain);
    if (!b_share.ok() || !s_share.ok()) return Fail(InvalidArgumentError(where + ": malformed share"));
    received.emplace(e.from(), std::make_pair(std::move(*b_share), std::move(*s_share)));
  }
  if (received.size() < s.params.t) {
    return Fail(AbortedError("forwarded shares: " + std::to_string(received.size()) +
                             " neighbours shared keys, fewer than t=" + std::to_string(s.params.t)));
  }
  for (auto& [index, shares] : received) {
    Neighbour& nb = *s.Find(index);
    nb.state = Peer::kSharedKeys;
    nb.b_share = std::move(shares.first);
    nb.s_share = std::move(shares.second);
  }

  // y = x + PRG(b_u) + sum (+/-) PRG(s_uv) over neighbours in U2.
  std::vector<uint32_t> y(input.begin(), input.end());
  const auto& prg = s.crypto->prg();
  auto self_seed = internal::SelfMaskSeed(s.params.sid, s.self, s.b);
  if (!self_seed.ok()) return Fail(self_seed.status());
  if (Status st = security::AddPrgMask(prg, *self_seed, 0, false, y); !st.ok()) return Fail(st);
  std::vector<uint32_t> peer_index;
  std::vector<security::X25519Key> peer_keys;
  for (const Neighbour& nb : s.neighbours) {
    if (nb.state != Peer::kSharedKeys) continue;
    peer_index.push_back(nb.index);
    peer_keys.push_back(internal::KeyFromBytes(nb.pk_s));
  }
  std::vector<security::X25519Key> secrets(peer_keys.size());
  if (Status st = AgreeWithEach(*s.crypto, s.s_key.private_key, peer_index, peer_keys, secrets,
                                "pairwise mask with ");
      !st.ok())
    return Fail(st);
  size_t next_secret = 0;
  for (Neighbour& nb : s.neighbours) {
    if (nb.state != Peer::kSharedKeys) continue;
    security::X25519Key& shared = secrets[next_secret++];
    auto seed = internal::PairwiseMaskSeed(shared, s.params.sid, s.self, s.s_key.public_key, nb.index,
                                           AsBytes(nb.pk_s));
    internal::Wipe(shared);
    if (!seed.ok()) return Fail(seed.status());
    if (Status st = security::AddPrgMask(prg, *seed, 0, /*subtract=*/s.self > nb.index, y); !st.ok()) return Fail(st);
  }
  // b_u and both private keys have done their job (our own b share stays for unmasking).
  internal::Wipe(s.b);
  internal::Wipe(s.s_key.private_key);
  internal::Wipe(s.c_key.private_key);
  for (Neighbour& nb : s.neighbours) internal::Wipe(nb.share_secret);

  v1::MaskedVector mv;
  mv.set_format_version(kMaskedVectorFormat);
  mv.set_bit_width(s.params.fixed_point.bit_width);
  mv.set_length(y.size());
  const Bytes packed = PackRing(y, s.params.fixed_point.bit_width);
  mv.set_packed(packed.data(), packed.size());
  std::string plain;
  if (!mv.SerializeToString(&plain)) return Fail(InternalError("masked input: serialization failed"));
  auto box = SealBox(AsBytes(plain), s.options.coordinator_box_key, s.params.round_id, s.self, *s.rng, *s.crypto);
  if (!box.ok()) return Fail(box.status());
  v1::MaskedInput out;
  out.set_round_id(s.params.round_id);
  out.set_index(s.self);
  *out.mutable_inline_box() = std::move(*box);
  state_ = next;
  return out;
}

Result<v1::ConsistencyCheckResponse> SecAggClient::HandleConsistencyCheck(const v1::ConsistencyCheckRequest& msg) {
  Impl& s = *impl_;
  FLT_RETURN_IF_ERROR(s.CheckRound(msg.round_id(), "consistency check"));
  ClientState next;
  if (!s.params.hardened) return FailedPreconditionError("consistency check: not used in the curious profile");
  if (!ClientTransition(state_, ClientEvent::kConsistencyCheck, &next)) {
    return NotExpected(ClientEvent::kConsistencyCheck);
  }
  if (msg.n() != s.params.n) return Fail(InvalidArgumentError("consistency check: n does not match the round"));
  auto members = internal::DecodeBitmap(AsBytes(msg.survivors_bitmap()), s.params.n);
  if (!members.ok()) return Fail(members.status());
  if (!(*members)[s.self]) return Fail(AbortedError("consistency check: we are listed as dead"));
  size_t alive = 0;
  for (const Neighbour& nb : s.neighbours) {
    if ((*members)[nb.index]) {
      if (nb.state != Peer::kSharedKeys) {
        return Fail(InvalidArgumentError("consistency check: neighbour " + std::to_string(nb.index) +
                                         " listed as a survivor but never shared keys with us"));
      }
      ++alive;
    }
  }
  if (alive < s.params.t) {
    return Fail(AbortedError("consistency check: " + std::to_string(alive) +
                             " neighbours alive, fewer than t=" + std::to_string(s.params.t)));
  }
  s.survivors = std::move(*members);
  s.consistency_transcript =
      internal::ConsistencyTranscript(s.params.sid, s.params.n, AsBytes(msg.survivors_bitmap()));
  auto sig = s.options.signer->Sign(s.consistency_transcript);
  if (!sig.ok()) return Fail(sig.status().WithContext("signing the consistency check"));
  v1::ConsistencyCheckResponse out;
  out.set_round_id(s.params.round_id);
  out.set_index(s.self);
  out.set_signature(sig->data(), sig->size());
  state_ = next;
  return out;
}

Result<v1::UnmaskResponse> SecAggClient::HandleUnmaskRequest(const v1::UnmaskRequest& msg) {
  Impl& s = *impl_;
  FLT_RETURN_IF_ERROR(s.CheckRound(msg.round_id(), "unmask request"));
  ClientState next;
  if (!ClientTransition(state_, ClientEvent::kUnmaskRequest, &next)) return NotExpected(ClientEvent::kUnmaskRequest);
  if (next == ClientState::kAborted) return Fail(AbortedError("unmask request: repeated request"));
  if (s.params.hardened && state_ != ClientState::kConsistencySigned) {
    return Fail(AbortedError("unmask request: no consistency check was signed first"));
  }

  // Structural checks on the two lists (reference section 2 step 5).
  std::map<uint32_t, bool> listed;  // index -> alive
  auto add = [&](uint32_t v, bool alive) -> Status {
    const std::string where = "unmask request: " + std::string(alive ? "alive " : "dead ") + std::to_string(v);
    if (v == s.self) return AbortedError(where + ": we are listed (dead or alive) by the coordinator");
    if (!listed.emplace(v, alive).second) return AbortedError(where + ": listed twice or in both lists");
    const Neighbour* nb = s.Find(v);
    if (nb == nullptr) return AbortedError(where + ": not a neighbour");
    if (nb->state == Peer::kSilent || nb->state == Peer::kAdvertised) {
      return AbortedError(where + ": already dead before masking (never shared keys with us)");
    }
    if (nb->state != Peer::kSharedKeys) return AbortedError(where + ": its share was already released");
    return Status::Ok();
  };
  for (uint32_t v : msg.alive()) {
    if (Status st = add(v, true); !st.ok()) return Fail(st);
  }
  for (uint32_t v : msg.dead()) {
    if (Status st = add(v, false); !st.ok()) return Fail(st);
  }
  const size_t alive_count = static_cast<size_t>(msg.alive_size());
  if (alive_count < s.params.t) {
    return Fail(AbortedError("unmask request: " + std::to_string(alive_count) +
                             " neighbours alive, fewer than t=" + std::to_string(s.params.t)));
  }

  if (s.params.hardened) {
    // The lists must be exactly what the U3 we signed implies ...
    for (const Neighbour& nb : s.neighbours) {
      if (nb.state != Peer::kSharedKeys) continue;
      auto it = listed.find(nb.index);
      if (it == listed.end() || it->second != static_cast<bool>(s.survivors[nb.index])) {
        return Fail(AbortedError("unmask request: lists disagree with the signed survivor set at neighbour " +
                                 std::to_string(nb.index)));
      }
    }
    // ... and >= t neighbours must have signed that same U3.
    std::set<uint32_t> signers;
    for (const v1::ConsistencySignature& cs : msg.neighbour_signatures()) {
      const Neighbour* nb = s.Find(cs.index());
      if (nb == nullptr || !s.survivors[cs.index()] || !signers.insert(cs.index()).second) {
        return Fail(AbortedError("unmask request: consistency signature of " + std::to_string(cs.index()) +
                                 " is not from a distinct surviving neighbour"));
      }
      if (!s.options.verifier->Verify(nb->device_id, s.consistency_transcript, AsBytes(cs.signature())).ok()) {
        return Fail(AbortedError("unmask request: consistency signature of " + std::to_string(cs.index()) +
                                 " does not verify (different survivor sets were sent)"));
      }
    }
    if (signers.size() < s.params.t) {
      return Fail(AbortedError("unmask request: " + std::to_string(signers.size()) +
                               " consistency signatures, fewer than t=" + std::to_string(s.params.t)));
    }
  }

  // Every check passed: release exactly one share per listed neighbour.
  v1::UnmaskResponse out;
  out.set_round_id(s.params.round_id);
  out.set_index(s.self);
  v1::ShareRelease* own = out.add_self_mask_shares();
  own->set_owner(s.self);
  const Bytes own_bytes = internal::EncodeShare(s.own_b_share);
  own->set_share(own_bytes.data(), own_bytes.size());
  for (const auto& [v, alive] : listed) {
    Neighbour& nb = *s.Find(v);
    const Bytes share = internal::EncodeShare(alive ? nb.b_share : nb.s_share);
    v1::ShareRelease* r = alive ? out.add_self_mask_shares() : out.add_mask_key_shares();
    r->set_owner(v);
    r->set_share(share.data(), share.size());
    nb.state = alive ? Peer::kReleasedSelfMask : Peer::kReleasedMaskKey;
    std::fill(nb.b_share.y.begin(), nb.b_share.y.end(), 0);
    std::fill(nb.s_share.y.begin(), nb.s_share.y.end(), 0);
  }
  state_ = next;
  return out;
}

}  // namespace flotilla::aggregation
