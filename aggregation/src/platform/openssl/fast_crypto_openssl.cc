// CryptoSuite implementations: mbedTLS through flotilla_security (devices) and OpenSSL 3
// libcrypto (coordinator). OpenSSL types stay in this file.
#include <openssl/err.h>
#include <openssl/evp.h>

#include <climits>
#include <cstring>
#include <memory>

#include "flotilla/aggregation/crypto_suite.h"
#include "flotilla/security/aead.h"

namespace flotilla::aggregation {
namespace {

using security::X25519Key;

class DeviceSuite final : public CryptoSuite {
 public:
  std::string_view name() const override { return "mbedtls"; }
  const security::AesCtrBackend& prg() const override { return security::MbedTlsAesCtr(); }
  Result<X25519Key> Agree(const X25519Key& private_key, const X25519Key& peer_public) const override {
    return security::X25519Agree(private_key, peer_public);
  }
  Result<X25519Key> PublicFromPrivate(const X25519Key& private_key) const override {
    return security::X25519PublicFromPrivate(private_key);
  }
  Status GcmOpen(ByteSpan key, ByteSpan nonce, ByteSpan ciphertext_and_tag, ByteSpan aad,
                 std::span<uint8_t> out) const override {
    if (ciphertext_and_tag.size() < security::kAesGcmTagSize ||
        out.size() != ciphertext_and_tag.size() - security::kAesGcmTagSize) {
      return InvalidArgumentError("aes-gcm open: output size does not match the ciphertext");
    }
    FLT_ASSIGN_OR_RETURN(Bytes plain, security::AesGcmOpen(key, nonce, ciphertext_and_tag, aad));
    std::memcpy(out.data(), plain.data(), plain.size());
    return Status::Ok();
  }
};

struct PkeyDeleter {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct PkeyCtxDeleter {
  void operator()(EVP_PKEY_CTX* p) const { EVP_PKEY_CTX_free(p); }
};
struct CipherCtxDeleter {
  void operator()(EVP_CIPHER_CTX* p) const { EVP_CIPHER_CTX_free(p); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyDeleter>;
using PkeyCtx = std::unique_ptr<EVP_PKEY_CTX, PkeyCtxDeleter>;
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxDeleter>;

Status OpenSslError(std::string_view what) {
  ERR_clear_error();
  return InternalError("openssl: " + std::string(what) + " failed");
}

class CoordinatorSuite final : public CryptoSuite {
 public:
  std::string_view name() const override { return "openssl"; }
  const security::AesCtrBackend& prg() const override { return security::OpenSslAesCtr(); }

  Result<X25519Key> Agree(const X25519Key& private_key, const X25519Key& peer_public) const override {
    Pkey priv(EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nullptr, private_key.data(), private_key.size()));
    if (!priv) return OpenSslError("x25519 key import");
    return Derive(priv.get(), peer_public);
  }

  Status AgreeMany(const X25519Key& private_key, std::span<const X25519Key> peers,
                   std::span<X25519Key> out) const override {
    if (out.size() != peers.size()) return InvalidArgumentError("x25519: output count does not match the peers");
    Pkey priv(EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nullptr, private_key.data(), private_key.size()));
    if (!priv) return OpenSslError("x25519 key import");
    for (size_t i = 0; i < peers.size(); ++i) {
      FLT_ASSIGN_OR_RETURN(out[i], Derive(priv.get(), peers[i]));
    }
    return Status::Ok();
  }

 private:
  static Result<X25519Key> Derive(EVP_PKEY* priv, const X25519Key& peer_public) {
    // RFC 7748: the top bit of the peer's u-coordinate is ignored (mbedTLS path does the same).
    X25519Key peer = peer_public;
    peer[31] &= 0x7f;
    Pkey pub(EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, nullptr, peer.data(), peer.size()));
    if (!pub) return OpenSslError("x25519 key import");
    PkeyCtx ctx(EVP_PKEY_CTX_new(priv, nullptr));
    if (!ctx || EVP_PKEY_derive_init(ctx.get()) != 1) return OpenSslError("x25519 derive init");
    if (EVP_PKEY_derive_set_peer(ctx.get(), pub.get()) != 1) {
      ERR_clear_error();
      return InvalidArgumentError("x25519: peer public key rejected");
    }
    X25519Key out{};
    size_t len = out.size();
    if (EVP_PKEY_derive(ctx.get(), out.data(), &len) != 1 || len != out.size()) {
      // OpenSSL refuses an all-zero result (low-order peer point).
      ERR_clear_error();
      return InvalidArgumentError("x25519: low-order peer public key");
    }
    uint8_t acc = 0;
    for (uint8_t b : out) acc |= b;
    if (acc == 0) return InvalidArgumentError("x25519: low-order peer public key");
    return out;
  }

 public:
  Result<X25519Key> PublicFromPrivate(const X25519Key& private_key) const override {
    Pkey priv(EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nullptr, private_key.data(), private_key.size()));
    if (!priv) return OpenSslError("x25519 key import");
    X25519Key out{};
    size_t len = out.size();
    if (EVP_PKEY_get_raw_public_key(priv.get(), out.data(), &len) != 1 || len != out.size()) {
      return OpenSslError("x25519 public key");
    }
    return out;
  }

  Status GcmOpen(ByteSpan key, ByteSpan nonce, ByteSpan ciphertext_and_tag, ByteSpan aad,
                 std::span<uint8_t> out) const override {
    if (key.size() != 16 && key.size() != 32) return InvalidArgumentError("aes-gcm open: key must be 16 or 32 bytes");
    if (nonce.size() != 12) return InvalidArgumentError("aes-gcm open: nonce must be 12 bytes");
    if (ciphertext_and_tag.size() < 16 || out.size() != ciphertext_and_tag.size() - 16) {
      return InvalidArgumentError("aes-gcm open: output size does not match the ciphertext");
    }
    if (ciphertext_and_tag.size() > static_cast<size_t>(INT_MAX) || aad.size() > static_cast<size_t>(INT_MAX)) {
      return InvalidArgumentError("aes-gcm open: input over 2 GiB");
    }
    static EVP_CIPHER* const aes128 = EVP_CIPHER_fetch(nullptr, "AES-128-GCM", nullptr);
    static EVP_CIPHER* const aes256 = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
    const size_t body = ciphertext_and_tag.size() - 16;
    CipherCtx ctx(EVP_CIPHER_CTX_new());
    int len = 0;
    if (!ctx || EVP_DecryptInit_ex2(ctx.get(), key.size() == 16 ? aes128 : aes256, key.data(), nonce.data(),
                                    nullptr) != 1) {
      return OpenSslError("aes-gcm init");
    }
    if (!aad.empty() && EVP_DecryptUpdate(ctx.get(), nullptr, &len, aad.data(), static_cast<int>(aad.size())) != 1) {
      return OpenSslError("aes-gcm aad");
    }
    if (body > 0 && EVP_DecryptUpdate(ctx.get(), out.data(), &len, ciphertext_and_tag.data(),
                                      static_cast<int>(body)) != 1) {
      return OpenSslError("aes-gcm decrypt");
    }
    uint8_t tag[16];
    std::memcpy(tag, ciphertext_and_tag.data() + body, 16);
    if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, 16, tag) != 1) return OpenSslError("aes-gcm tag");
    uint8_t final_block[16];
    if (EVP_DecryptFinal_ex(ctx.get(), final_block, &len) != 1) {
      ERR_clear_error();
      std::memset(out.data(), 0, out.size());
      return UnauthenticatedError("aes-gcm: authentication failed");
    }
    return Status::Ok();
  }
};

}  // namespace

Status CryptoSuite::AgreeMany(const X25519Key& private_key, std::span<const X25519Key> peers,
                              std::span<X25519Key> out) const {
  if (out.size() != peers.size()) return InvalidArgumentError("x25519: output count does not match the peers");
  for (size_t i = 0; i < peers.size(); ++i) {
    FLT_ASSIGN_OR_RETURN(out[i], Agree(private_key, peers[i]));
  }
  return Status::Ok();
}

Result<security::X25519KeyPair> CryptoSuite::GenerateKeyPair(Random& rng) const {
  security::X25519KeyPair pair;
  rng.Fill(pair.private_key);
  auto pub = PublicFromPrivate(pair.private_key);
  if (!pub.ok()) {
    std::memset(pair.private_key.data(), 0, pair.private_key.size());
    return pub.status();
  }
  pair.public_key = *pub;
  return pair;
}

const CryptoSuite& DeviceCryptoSuite() {
  static const DeviceSuite suite;
  return suite;
}

const CryptoSuite& CoordinatorCryptoSuite() {
  static const CoordinatorSuite suite;
  return suite;
}

}  // namespace flotilla::aggregation
