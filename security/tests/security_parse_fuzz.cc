// libFuzzer target for the security module's decoders of untrusted bytes: public keys
// (DER/PEM), DER signatures, certificates (PEM, and peers' DER advert certificates), AES-GCM open and Shamir share sets.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "flotilla/security/aead.h"
#include "flotilla/security/identity.h"
#include "flotilla/security/shamir.h"
#include "flotilla/security/x509.h"

using namespace flotilla;
using namespace flotilla::security;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const ByteSpan in(data, size);
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (size == 0) return 0;
  switch (data[0] % 5) {
    case 0: {
      Result<EcdsaPublicKey> k = EcdsaPublicKey::FromDer(in.subspan(1));
      if (k.ok()) k->Verify(in, in.subspan(1)).IgnoreError();
      break;
    }
    case 1:
      EcdsaPublicKey::FromPem(text).status().IgnoreError();
      EcdsaPrivateKey::FromPem(text).status().IgnoreError();
      break;
    case 2:
      CertificateCommonName(text).status().IgnoreError();
      VerifyCertificate(text, text).IgnoreError();
      CertificateDer(text).status().IgnoreError();
      {
        // A neighbour's advert certificate (DER) checked against a fixed fleet CA.
        static const std::string* const kCa = [] {
          Result<CertificateAndKey> ca = CreateCertificateAuthority("fuzz CA");
          return new std::string(ca.ok() ? ca->cert_pem : std::string());
        }();
        VerifiedCertificateKey(*kCa, in.subspan(1), "dev-0001").status().IgnoreError();
      }
      break;
    case 3: {
      static const uint8_t kKey[16] = {1, 2, 3};
      static const uint8_t kNonce[12] = {4, 5, 6};
      AesGcmOpen(kKey, kNonce, in.subspan(1), {}).status().IgnoreError();
      break;
    }
    case 4: {
      // Shares: [t][x][y...] groups of 8-byte little-endian words.
      std::vector<ShamirShare> shares;
      const size_t threshold = (data[0] >> 4) + 1;
      for (size_t pos = 1; pos + 16 <= size; pos += 16) {
        uint64_t x = 0, y = 0;
        for (int b = 0; b < 8; ++b) {
          x |= static_cast<uint64_t>(data[pos + b]) << (8 * b);
          y |= static_cast<uint64_t>(data[pos + 8 + b]) << (8 * b);
        }
        shares.push_back({x, {y}});
      }
      ShamirReconstruct(shares, threshold, 7).status().IgnoreError();
      break;
    }
  }
  return 0;
}
