// Signing seams for envelopes. Protocol code signs and verifies through these
// interfaces; flotilla_security provides the ECDSA P-256 implementations
// (security/identity.h). Fakes for unit tests live in protocol/testing.
#pragma once

#include <string>
#include <string_view>

#include "flotilla/core/bytes.h"
#include "flotilla/core/status.h"

namespace flotilla::protocol {

// Signs with one identity (a device or the coordinator). Thread-safe.
class Signer {
 public:
  virtual ~Signer() = default;
  // Identity the signature is for (the envelope's sender id, = certificate CN).
  virtual const std::string& identity() const = 0;
  // Returns a signature over `message` (DER for ECDSA), or an error.
  virtual Result<Bytes> Sign(ByteSpan message) const = 0;
};

// Verifies signatures of known identities. Thread-safe.
class SignatureVerifier {
 public:
  virtual ~SignatureVerifier() = default;
  // OK if `signature` over `message` is valid for `identity`'s registered key;
  // NotFound for an unknown identity, Unauthenticated for a bad signature.
  virtual Status Verify(std::string_view identity, ByteSpan message, ByteSpan signature) const = 0;
};

}  // namespace flotilla::protocol
