#include "flotilla/aggregation/masked_vector.h"

#include <bit>
#include <cstring>
#include <string>

#include "flotilla/aggregation/fixed_point.h"
#include "flotilla/security/aead.h"
#include "flotilla/security/hash.h"

namespace flotilla::aggregation {
namespace {

uint64_t PackedSize(uint64_t n, uint32_t bit_width) { return (n * bit_width + 7) / 8; }

void AppendU32Be(Bytes& out, uint32_t v) {
  for (int i = 3; i >= 0; --i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

Bytes BoxInfo(std::string_view round_id, uint32_t index) {
  Bytes info = ToBytes("flotilla/v1/secagg/box");
  AppendU32Be(info, static_cast<uint32_t>(round_id.size()));
  info.insert(info.end(), round_id.begin(), round_id.end());
  AppendU32Be(info, index);
  return info;
}

Result<Bytes> BoxKey(const security::X25519Key& shared, const security::X25519Key& ephemeral_public,
                     const security::X25519Key& coordinator_public, ByteSpan info) {
  Bytes salt(ephemeral_public.begin(), ephemeral_public.end());
  salt.insert(salt.end(), coordinator_public.begin(), coordinator_public.end());
  return security::Hkdf(salt, shared, info, 16);
}

// Generic b-bit reader: calls f(i, value) for every element.
template <typename F>
Status ForEachPacked(ByteSpan packed, uint32_t bit_width, size_t count, F&& f) {
  if (bit_width < 1 || bit_width > 32) return InvalidArgumentError("masked vector: bit width not in [1, 32]");
  if (packed.size() != PackedSize(count, bit_width)) {
    return InvalidArgumentError("masked vector: packed size " + std::to_string(packed.size()) + " != expected " +
                                std::to_string(PackedSize(count, bit_width)));
  }
  if (bit_width == 32 && std::endian::native == std::endian::little) {
    for (size_t i = 0; i < count; ++i) {
      uint32_t v;
      std::memcpy(&v, packed.data() + 4 * i, 4);
      f(i, v);
    }
    return Status::Ok();
  }
  const uint32_t mask = RingMask(bit_width);
  uint64_t bitbuf = 0;
  uint32_t bits = 0;
  size_t pos = 0;
  for (size_t i = 0; i < count; ++i) {
    while (bits < bit_width) {
      bitbuf |= uint64_t{packed[pos++]} << bits;
      bits += 8;
    }
    f(i, static_cast<uint32_t>(bitbuf) & mask);
    bitbuf >>= bit_width;
    bits -= bit_width;
  }
  if (bitbuf != 0) return InvalidArgumentError("masked vector: non-zero padding bits");
  return Status::Ok();
}

}  // namespace

Bytes PackRing(std::span<const uint32_t> values, uint32_t bit_width) {
  Bytes out(PackedSize(values.size(), bit_width), 0);
  const uint32_t mask = RingMask(bit_width);
  uint64_t bitbuf = 0;
  uint32_t bits = 0;
  size_t pos = 0;
  for (uint32_t v : values) {
    bitbuf |= uint64_t{v & mask} << bits;
    bits += bit_width;
    while (bits >= 8) {
      out[pos++] = static_cast<uint8_t>(bitbuf);
      bitbuf >>= 8;
      bits -= 8;
    }
  }
  if (bits > 0) out[pos++] = static_cast<uint8_t>(bitbuf);
  return out;
}

Status UnpackRing(ByteSpan packed, uint32_t bit_width, std::span<uint32_t> out) {
  return ForEachPacked(packed, bit_width, out.size(), [&](size_t i, uint32_t v) { out[i] = v; });
}

Status AddPackedRing(ByteSpan packed, uint32_t bit_width, std::span<uint32_t> acc) {
  // Validate first (padding), then add: the running sum must never see half an input.
  FLT_RETURN_IF_ERROR(ForEachPacked(packed, bit_width, acc.size(), [](size_t, uint32_t) {}));
  return ForEachPacked(packed, bit_width, acc.size(), [&](size_t i, uint32_t v) { acc[i] += v; });
}

Status CheckMaskedVector(const v1::MaskedVector& mv, uint32_t bit_width, uint64_t length) {
  if (mv.format_version() != kMaskedVectorFormat) {
    return InvalidArgumentError("masked vector: format version " + std::to_string(mv.format_version()) + " != 1");
  }
  if (mv.bit_width() != bit_width) {
    return InvalidArgumentError("masked vector: bit width " + std::to_string(mv.bit_width()) + " != round's " +
                                std::to_string(bit_width));
  }
  if (mv.length() != length) {
    return InvalidArgumentError("masked vector: length " + std::to_string(mv.length()) + " != round's " +
                                std::to_string(length));
  }
  if (mv.packed().size() != PackedSize(length, bit_width)) {
    return InvalidArgumentError("masked vector: packed size does not match length");
  }
  return Status::Ok();
}

Result<v1::SealedBox> SealBox(ByteSpan plaintext, const security::X25519Key& coordinator_public,
                              std::string_view round_id, uint32_t index, Random& rng, const CryptoSuite& suite) {
  FLT_ASSIGN_OR_RETURN(security::X25519KeyPair eph, suite.GenerateKeyPair(rng));
  auto shared = suite.Agree(eph.private_key, coordinator_public);
  std::memset(eph.private_key.data(), 0, eph.private_key.size());
  if (!shared.ok()) return shared.status().WithContext("sealing masked input");
  const Bytes info = BoxInfo(round_id, index);
  FLT_ASSIGN_OR_RETURN(Bytes key, BoxKey(*shared, eph.public_key, coordinator_public, info));
  Bytes nonce(security::kAesGcmNonceSize);
  rng.Fill(nonce);
  FLT_ASSIGN_OR_RETURN(Bytes ct, security::AesGcmSeal(key, nonce, plaintext, info));
  v1::SealedBox box;
  box.set_ephemeral_public_key(eph.public_key.data(), eph.public_key.size());
  box.set_nonce(nonce.data(), nonce.size());
  box.set_ciphertext(ct.data(), ct.size());
  return box;
}

Result<Bytes> OpenBox(const v1::SealedBox& box, const security::X25519KeyPair& coordinator_key,
                      std::string_view round_id, uint32_t index, const CryptoSuite& suite) {
  if (box.ephemeral_public_key().size() != security::kX25519KeySize) {
    return InvalidArgumentError("sealed box: ephemeral key must be 32 bytes");
  }
  if (box.nonce().size() != security::kAesGcmNonceSize) return InvalidArgumentError("sealed box: nonce must be 12 bytes");
  if (box.ciphertext().size() < security::kAesGcmTagSize) return InvalidArgumentError("sealed box: ciphertext too short");
  security::X25519Key eph;
  std::memcpy(eph.data(), box.ephemeral_public_key().data(), eph.size());
  FLT_ASSIGN_OR_RETURN(security::X25519Key shared, suite.Agree(coordinator_key.private_key, eph));
  const Bytes info = BoxInfo(round_id, index);
  FLT_ASSIGN_OR_RETURN(Bytes key, BoxKey(shared, eph, coordinator_key.public_key, info));
  Bytes plain(box.ciphertext().size() - security::kAesGcmTagSize);
  FLT_RETURN_IF_ERROR(suite.GcmOpen(key, AsBytes(box.nonce()), AsBytes(box.ciphertext()), info, plain));
  return plain;
}

}  // namespace flotilla::aggregation
