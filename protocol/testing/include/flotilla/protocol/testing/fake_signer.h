// FakeSigner / FakeVerifier: signing seams for unit tests, with NO cryptography.
//
// THIS IS A FAKE. The "signature" is a keyed toy hash (16 bytes of FNV-1a/SplitMix
// mixing over key || message): deterministic and sensitive to every input bit, so tests
// can tell right from wrong keys and flipped bytes, but trivially forgeable. Never link
// it into production code; flotilla_security provides the ECDSA implementations.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

#include "flotilla/core/bytes.h"
#include "flotilla/core/status.h"
#include "flotilla/protocol/signer.h"

namespace flotilla::protocol::testing {

// The toy keyed hash both fakes use.
inline Bytes FakeSignature(uint64_t key, ByteSpan message) {
  auto mix = [](uint64_t z) {  // SplitMix64 finaliser
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  };
  uint64_t h1 = 0xcbf29ce484222325ULL ^ mix(key);
  uint64_t h2 = mix(key + 0x9e3779b97f4a7c15ULL) ^ message.size();
  for (uint8_t b : message) {
    h1 = (h1 ^ b) * 0x100000001b3ULL;
    h2 = mix(h2 ^ h1);
  }
  Bytes sig(16);
  for (int i = 0; i < 8; ++i) {
    sig[static_cast<size_t>(i)] = static_cast<uint8_t>(mix(h1) >> (8 * i));
    sig[static_cast<size_t>(8 + i)] = static_cast<uint8_t>(h2 >> (8 * i));
  }
  return sig;
}

class FakeSigner final : public Signer {
 public:
  FakeSigner(std::string identity, uint64_t key) : identity_(std::move(identity)), key_(key) {}
  const std::string& identity() const override { return identity_; }
  Result<Bytes> Sign(ByteSpan message) const override { return FakeSignature(key_, message); }

 private:
  std::string identity_;
  uint64_t key_;
};

// Identity → key registry mirroring security::KeyRing's contract. Thread-safe.
class FakeVerifier final : public SignatureVerifier {
 public:
  void Add(std::string identity, uint64_t key) {
    std::lock_guard<std::mutex> lock(mu_);
    keys_[std::move(identity)] = key;
  }
  Status Verify(std::string_view identity, ByteSpan message, ByteSpan signature) const override {
    uint64_t key = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = keys_.find(identity);
      if (it == keys_.end()) return NotFoundError("unknown identity");
      key = it->second;
    }
    if (!ConstantTimeEqual(FakeSignature(key, message), signature)) {
      return UnauthenticatedError("signature does not verify");
    }
    return Status::Ok();
  }

 private:
  mutable std::mutex mu_;
  std::map<std::string, uint64_t, std::less<>> keys_;  // GUARDED_BY(mu_)
};

}  // namespace flotilla::protocol::testing
