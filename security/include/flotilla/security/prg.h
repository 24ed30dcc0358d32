// AES-CTR engines and the SecAgg mask PRG.
//
// The mask PRG, exactly (every device and the coordinator must agree bit for bit):
//   key      = the 16-byte seed (AES-128). Seeds come out of HKDF, never raw DH output.
//   counter  = a 128-bit big-endian block counter starting at 0 (IV = 16 zero bytes),
//              incremented by one per 16-byte block (NIST SP 800-38A CTR, full 128-bit
//              increment, as mbedtls_aes_crypt_ctr and OpenSSL EVP_aes_128_ctr do).
//   stream   = AES-128(key, 0) || AES-128(key, 1) || ...
//   word i   = stream bytes [4i, 4i+4) read as a little-endian uint32.
// So block b holds words 4b..4b+3. A seed may produce at most kPrgMaxWords words
// (2^36 bytes, fcp's per-seed limit) and must be used for one stream only.
//
// Two backends produce identical streams (tested): mbedTLS (devices) and OpenSSL
// libcrypto EVP with AES-NI multi-block code (the coordinator's bulk expansion).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "flotilla/core/bytes.h"
#include "flotilla/core/status.h"

namespace flotilla::security {

inline constexpr size_t kAesBlockSize = 16;
using AesCtrCounterBlock = std::array<uint8_t, kAesBlockSize>;

// One AES-CTR implementation. Stateless and thread-safe: every call starts a fresh
// keystream at `counter` (the initial 128-bit big-endian counter block).
class AesCtrBackend {
 public:
  virtual ~AesCtrBackend() = default;
  virtual std::string_view name() const = 0;
  // out = in XOR keystream. `key` is 16 or 32 bytes (else InvalidArgument); in and out
  // must have the same size and may be the same buffer (but not partially overlap).
  virtual Status Xor(ByteSpan key, const AesCtrCounterBlock& counter, ByteSpan in,
                     std::span<uint8_t> out) const = 0;
  // out = keystream (the encryption of zeros).
  virtual Status Keystream(ByteSpan key, const AesCtrCounterBlock& counter, std::span<uint8_t> out) const = 0;
};

// mbedTLS (mbedtls_aes_crypt_ctr; AES-NI one block at a time, ~1 GB/s on x86).
const AesCtrBackend& MbedTlsAesCtr();
// OpenSSL libcrypto EVP (pipelined AES-NI/VAES, ~10 GB/s on x86).
const AesCtrBackend& OpenSslAesCtr();

inline constexpr size_t kPrgSeedSize = 16;
using PrgSeed = std::array<uint8_t, kPrgSeedSize>;
inline constexpr uint64_t kPrgMaxWords = uint64_t{1} << 34;

// Writes words [word_offset, word_offset + out.size()) of the mask stream of `seed`, so
// threads can expand disjoint ranges of one stream in parallel. OutOfRange if the range
// passes kPrgMaxWords. Thread-safe.
Status ExpandPrg(const AesCtrBackend& backend, const PrgSeed& seed, uint64_t word_offset,
                 std::span<uint32_t> out);

// acc[i] += word (word_offset + i) of the stream, mod 2^32 (or -= when `subtract`): the
// SecAgg masking/unmasking step, fused so the stream is expanded a cache-sized chunk at a
// time instead of being materialized (a materialized 64 MiB stream is memory-bound at
// about half of OpenSSL's in-cache speed). Masks mod 2^b for b <= 32 are this result
// reduced mod 2^b. Same range rules and thread safety as ExpandPrg.
Status AddPrgMask(const AesCtrBackend& backend, const PrgSeed& seed, uint64_t word_offset, bool subtract,
                  std::span<uint32_t> acc);

// The counter block of block number `block` (big-endian, high 64 bits zero).
AesCtrCounterBlock PrgCounterBlock(uint64_t block);

}  // namespace flotilla::security
