// The three primitives whose speed decides SecAgg's cost, behind one seam so devices run
// mbedTLS (what they ship) and the coordinator runs OpenSSL libcrypto (AES-NI/VAES
// pipelined CTR and GCM, ~20x faster X25519). Both suites produce bit-identical results
// (aggregation/tests/fast_crypto_test.cc): the same mask streams, the same X25519 shared
// secrets (low-order peers rejected by both), the same AES-GCM accept/reject decisions.
// Suites are stateless singletons; every method is thread-safe.
#pragma once

#include <span>
#include <string_view>

#include "flotilla/core/bytes.h"
#include "flotilla/core/random.h"
#include "flotilla/core/status.h"
#include "flotilla/security/prg.h"
#include "flotilla/security/x25519.h"

namespace flotilla::aggregation {

class CryptoSuite {
 public:
  virtual ~CryptoSuite() = default;
  virtual std::string_view name() const = 0;
  virtual const security::AesCtrBackend& prg() const = 0;
  // X25519(private, peer); InvalidArgument for a low-order peer (all-zero secret).
  virtual Result<security::X25519Key> Agree(const security::X25519Key& private_key,
                                            const security::X25519Key& peer_public) const = 0;
  virtual Result<security::X25519Key> PublicFromPrivate(const security::X25519Key& private_key) const = 0;
  // out[i] = X25519(private, peers[i]) (out.size() == peers.size()); the first failing
  // peer's error is returned. Batched because importing a private key costs OpenSSL a
  // scalar multiplication of its own: the coordinator redoes k agreements per dropout.
  virtual Status AgreeMany(const security::X25519Key& private_key, std::span<const security::X25519Key> peers,
                           std::span<security::X25519Key> out) const;
  // A fresh pair: 32 private bytes from `rng`, public = X25519(private, 9).
  Result<security::X25519KeyPair> GenerateKeyPair(Random& rng) const;
  // AES-GCM open (12-byte nonce, 16-byte tag appended) into `out` (ciphertext size - 16
  // bytes). Unauthenticated on any mismatch, and then `out` is zeroed.
  virtual Status GcmOpen(ByteSpan key, ByteSpan nonce, ByteSpan ciphertext_and_tag, ByteSpan aad,
                         std::span<uint8_t> out) const = 0;
};

// mbedTLS (security module): what devices run.
const CryptoSuite& DeviceCryptoSuite();
// OpenSSL libcrypto: the coordinator's fast path.
const CryptoSuite& CoordinatorCryptoSuite();

}  // namespace flotilla::aggregation
