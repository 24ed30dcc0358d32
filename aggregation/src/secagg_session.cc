#include "secagg_session.h"

#include <bit>
#include <cmath>
#include <cstring>

namespace flotilla::aggregation::internal {
namespace {

void PutU32(Bytes& out, uint32_t v) {
  for (int i = 3; i >= 0; --i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void PutU64(Bytes& out, uint64_t v) {
  for (int i = 7; i >= 0; --i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void PutBytes(Bytes& out, ByteSpan b) {
  PutU32(out, static_cast<uint32_t>(b.size()));
  out.insert(out.end(), b.begin(), b.end());
}

// One length-prefixed field of the sid transcript.
class SidWriter {
 public:
  SidWriter() { out_ = ToBytes("flotilla/v1/secagg/sid"); }
  void U64(uint32_t field, uint64_t v) {
    Bytes b;
    PutU64(b, v);
    Field(field, b);
  }
  void Double(uint32_t field, double v) { U64(field, std::bit_cast<uint64_t>(v)); }
  void Field(uint32_t field, ByteSpan value) {
    PutU32(out_, field);
    PutBytes(out_, value);
  }
  const Bytes& bytes() const { return out_; }

 private:
  Bytes out_;
};

Result<security::PrgSeed> SeedFromHkdf(ByteSpan salt, ByteSpan ikm, ByteSpan info) {
  FLT_ASSIGN_OR_RETURN(Bytes okm, security::Hkdf(salt, ikm, info, security::kPrgSeedSize));
  security::PrgSeed seed;
  std::memcpy(seed.data(), okm.data(), seed.size());
  Wipe(okm);
  return seed;
}

}  // namespace

AdversaryModel ModelFor(bool hardened) {
  return hardened ? AdversaryModel::kSemiMalicious : AdversaryModel::kSemiHonest;
}

bool IsHardened(v1::SecAggProfile profile) { return profile != v1::SEC_AGG_PROFILE_CURIOUS; }

SessionId ComputeSessionId(const v1::SecAggConfig& c) {
  SidWriter w;
  w.Field(1, AsBytes(c.round_id()));
  w.U64(2, c.n());
  w.U64(3, c.k());
  w.U64(4, c.t());
  w.U64(5, c.bit_width());
  w.U64(6, c.quant_bits());
  w.Double(7, c.clip_bound());
  w.U64(8, static_cast<uint64_t>(c.prg()));
  w.Field(9, AsBytes(c.model_sha256()));
  w.Field(10, AsBytes(c.graph_seed()));
  w.U64(11, static_cast<uint64_t>(c.profile()));
  const auto& d = c.deadlines();
  for (int64_t ms : {d.advertise_keys_ms(), d.share_keys_ms(), d.masked_input_ms(), d.consistency_check_ms(),
                     d.unmask_ms()}) {
    w.U64(12, static_cast<uint64_t>(ms));
  }
  w.Double(13, c.max_colluding_fraction());
  w.Double(14, c.max_dropout_rate());
  w.U64(15, c.min_survivors());
  w.U64(16, static_cast<uint64_t>(c.dp().mechanism()));
  w.Double(16, c.dp().l2_clip());
  w.Double(16, c.dp().central_stddev());
  return security::Sha256(w.bytes());
}

Result<SessionParams> ValidateSessionConfig(const v1::SecAggConfig& c) {
  SessionParams p;
  if (c.round_id().empty() || c.round_id().size() > kMaxRoundIdBytes) {
    return InvalidArgumentError("secagg config: round id must be 1..128 bytes");
  }
  if (c.n() < 2 || c.n() > kMaxCohort) {
    return InvalidArgumentError("secagg config: n=" + std::to_string(c.n()) + " not in [2, 10^6]");
  }
  if (c.prg() != v1::PRG_ALGORITHM_AES128_CTR) {
    return InvalidArgumentError("secagg config: PRG " + std::to_string(c.prg()) + " unsupported (AES128_CTR only)");
  }
  if (c.model_sha256().size() != 32) return InvalidArgumentError("secagg config: model hash must be 32 bytes");
  if (c.profile() != v1::SEC_AGG_PROFILE_CURIOUS && c.profile() != v1::SEC_AGG_PROFILE_HARDENED &&
      c.profile() != v1::SEC_AGG_PROFILE_UNSPECIFIED) {
    return InvalidArgumentError("secagg config: unknown profile");
  }
  p.round_id = c.round_id();
  p.n = c.n();
  p.k = c.k();
  p.t = c.t();
  p.hardened = IsHardened(c.profile());
  p.model = ModelFor(p.hardened);
  p.fixed_point = {c.bit_width(), c.quant_bits(), c.clip_bound()};
  FLT_RETURN_IF_ERROR(ValidateFixedPoint(p.fixed_point, p.n));
  const double gamma = c.max_colluding_fraction(), delta = c.max_dropout_rate();
  FLT_RETURN_IF_ERROR(CheckGraphParametersFloor(p.n, p.k, p.t, gamma, delta, p.model));
  if (c.min_survivors() < 1 || c.min_survivors() > p.n) {
    return InvalidArgumentError("secagg config: min_survivors not in [1, n]");
  }
  p.min_survivors = c.min_survivors();
  if (p.k + 1 != p.n && c.graph_seed().size() < 16) {
    return InvalidArgumentError("secagg config: graph seed must be at least 16 bytes");
  }
  FLT_ASSIGN_OR_RETURN(SecAggGraph graph, SecAggGraph::Create(p.n, p.k, AsBytes(c.graph_seed())));
  p.graph.emplace(std::move(graph));
  const auto& dp = c.dp();
  if (dp.mechanism() != v1::NOISE_MECHANISM_UNSPECIFIED) {
    if (dp.mechanism() != v1::NOISE_MECHANISM_DISCRETE_GAUSSIAN && dp.mechanism() != v1::NOISE_MECHANISM_SKELLAM) {
      return InvalidArgumentError("secagg config: unknown noise mechanism");
    }
    if (!(std::isfinite(dp.l2_clip()) && dp.l2_clip() > 0) ||
        !(std::isfinite(dp.central_stddev()) && dp.central_stddev() >= 0)) {
      return InvalidArgumentError("secagg config: DP clip must be > 0 and stddev >= 0, both finite");
    }
  }
  p.sid = ComputeSessionId(c);
  return p;
}

Bytes AdvertTranscript(const SessionId& sid, uint32_t index, std::string_view device_id, ByteSpan pk_c,
                       ByteSpan pk_s) {
  Bytes out = ToBytes(std::string_view("flotilla/v1/secagg/advert\0", 26));
  out.insert(out.end(), sid.begin(), sid.end());
  PutU32(out, index);
  PutBytes(out, AsBytes(device_id));
  PutBytes(out, pk_c);
  PutBytes(out, pk_s);
  return out;
}

Bytes ConsistencyTranscript(const SessionId& sid, uint32_t n, ByteSpan bitmap) {
  Bytes inner(sid.begin(), sid.end());
  PutU32(inner, n);
  inner.insert(inner.end(), bitmap.begin(), bitmap.end());
  const auto h = security::Sha256(inner);
  Bytes out = ToBytes(std::string_view("flotilla/v1/secagg/consistency\0", 31));
  out.insert(out.end(), h.begin(), h.end());
  return out;
}

Result<Bytes> ShareKey(const security::X25519Key& shared, const SessionId& sid, uint32_t from, uint32_t to) {
  Bytes info = ToBytes("flotilla/v1/secagg/share");
  PutU32(info, from);
  PutU32(info, to);
  return security::Hkdf(sid, shared, info, 16);
}

Bytes ShareAad(const SessionId& sid, uint32_t from, uint32_t to) {
  Bytes aad(sid.begin(), sid.end());
  PutU32(aad, from);
  PutU32(aad, to);
  return aad;
}

Bytes EncodeShare(const security::ShamirShare& share) {
  Bytes out(8 + 8 * share.y.size());
  auto put = [&](size_t at, uint64_t v) {
    for (int i = 0; i < 8; ++i) out[at + i] = static_cast<uint8_t>(v >> (8 * i));
  };
  put(0, share.x);
  for (size_t j = 0; j < share.y.size(); ++j) put(8 + 8 * j, share.y[j]);
  return out;
}

Result<security::ShamirShare> DecodeShare(ByteSpan bytes, uint64_t expected_x) {
  if (bytes.size() != kShareBytes) {
    return InvalidArgumentError("share: " + std::to_string(bytes.size()) + " bytes, expected " +
                                std::to_string(kShareBytes));
  }
  auto get = [&](size_t at) {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= uint64_t{bytes[at + i]} << (8 * i);
    return v;
  };
  security::ShamirShare s;
  s.x = get(0);
  if (s.x != expected_x) {
    return InvalidArgumentError("share: x=" + std::to_string(s.x) + " but the holder is " + std::to_string(expected_x));
  }
  s.y.resize(kShareElements);
  for (size_t j = 0; j < kShareElements; ++j) {
    s.y[j] = get(8 + 8 * j);
    if (s.y[j] >= security::kShamirPrime) return InvalidArgumentError("share: y value not below the field prime");
  }
  return s;
}

Result<security::PrgSeed> SelfMaskSeed(const SessionId& sid, uint32_t index, ByteSpan b) {
  Bytes info = ToBytes("flotilla/v1/secagg/self-mask");
  PutU32(info, index);
  return SeedFromHkdf(sid, b, info);
}

Result<security::PrgSeed> PairwiseMaskSeed(const security::X25519Key& shared, const SessionId& sid, uint32_t u,
                                           ByteSpan pk_s_u, uint32_t v, ByteSpan pk_s_v) {
  const bool u_first = u < v;
  Bytes info = ToBytes("flotilla/v1/secagg/mask");
  PutU32(info, u_first ? u : v);
  PutU32(info, u_first ? v : u);
  const ByteSpan first = u_first ? pk_s_u : pk_s_v, second = u_first ? pk_s_v : pk_s_u;
  info.insert(info.end(), first.begin(), first.end());
  info.insert(info.end(), second.begin(), second.end());
  return SeedFromHkdf(sid, shared, info);
}

Bytes EncodeBitmap(const std::vector<bool>& members) {
  const size_t n = members.empty() ? 0 : members.size() - 1;
  Bytes out((n + 7) / 8, 0);
  for (size_t i = 1; i <= n; ++i) {
    if (members[i]) out[(i - 1) / 8] |= static_cast<uint8_t>(1u << ((i - 1) % 8));
  }
  return out;
}

Result<std::vector<bool>> DecodeBitmap(ByteSpan bitmap, uint32_t n) {
  if (bitmap.size() != (size_t{n} + 7) / 8) {
    return InvalidArgumentError("survivor bitmap: " + std::to_string(bitmap.size()) + " bytes for n=" +
                                std::to_string(n));
  }
  std::vector<bool> members(size_t{n} + 1, false);
  for (size_t i = 0; i < size_t{bitmap.size()} * 8; ++i) {
    const bool bit = (bitmap[i / 8] >> (i % 8)) & 1;
    if (i >= n) {
      if (bit) return InvalidArgumentError("survivor bitmap: bit set past n");
    } else {
      members[i + 1] = bit;
    }
  }
  return members;
}

security::X25519Key KeyFromBytes(std::string_view bytes) {
  security::X25519Key k{};
  std::memcpy(k.data(), bytes.data(), std::min(bytes.size(), k.size()));
  return k;
}

void Wipe(std::span<uint8_t> secret) {
  volatile uint8_t* p = secret.data();
  for (size_t i = 0; i < secret.size(); ++i) p[i] = 0;
}

}  // namespace flotilla::aggregation::internal
