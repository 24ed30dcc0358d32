// AES-CTR on OpenSSL 3 libcrypto EVP (pipelined AES-NI / VAES code paths).
#include <openssl/err.h>
#include <openssl/evp.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <memory>

#include "flotilla/security/prg.h"
#include "prg_internal.h"

namespace flotilla::security {
namespace {

struct CtxDeleter {
  void operator()(EVP_CIPHER_CTX* ctx) const { EVP_CIPHER_CTX_free(ctx); }
};
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, CtxDeleter>;

Status OpenSslError(std::string_view what) {
  char text[256] = "unknown error";
  if (unsigned long e = ERR_get_error(); e != 0) ERR_error_string_n(e, text, sizeof(text));
  ERR_clear_error();
  return InternalError("openssl aes-ctr: " + std::string(what) + ": " + text);
}

// Explicit fetches once per process: implicit fetching on every init is slow in OpenSSL 3.
const EVP_CIPHER* Cipher(size_t key_size) {
  static EVP_CIPHER* const aes128 = EVP_CIPHER_fetch(nullptr, "AES-128-CTR", nullptr);
  static EVP_CIPHER* const aes256 = EVP_CIPHER_fetch(nullptr, "AES-256-CTR", nullptr);
  return key_size == 16 ? aes128 : aes256;
}

class OpenSslCtr final : public AesCtrBackend {
 public:
  std::string_view name() const override { return "openssl"; }

  Status Xor(ByteSpan key, const AesCtrCounterBlock& counter, ByteSpan in, std::span<uint8_t> out) const override {
    FLT_RETURN_IF_ERROR(internal::CheckCtrArgs(name(), key.size(), in.size(), out.size()));
    FLT_ASSIGN_OR_RETURN(CipherCtx ctx, Init(key, counter));
    for (size_t pos = 0; pos < in.size();) {
      const size_t n = std::min<size_t>(in.size() - pos, INT_MAX / 2);
      FLT_RETURN_IF_ERROR(Update(ctx.get(), in.data() + pos, out.data() + pos, n));
      pos += n;
    }
    return Status::Ok();
  }

  Status Keystream(ByteSpan key, const AesCtrCounterBlock& counter, std::span<uint8_t> out) const override {
    FLT_RETURN_IF_ERROR(internal::CheckCtrArgs(name(), key.size(), out.size(), out.size()));
    FLT_ASSIGN_OR_RETURN(CipherCtx ctx, Init(key, counter));
    for (size_t pos = 0; pos < out.size();) {
      const size_t n = std::min(out.size() - pos, internal::kKeystreamChunk);
      std::memset(out.data() + pos, 0, n);
      FLT_RETURN_IF_ERROR(Update(ctx.get(), out.data() + pos, out.data() + pos, n));
      pos += n;
    }
    return Status::Ok();
  }

 private:
  static Result<CipherCtx> Init(ByteSpan key, const AesCtrCounterBlock& counter) {
    const EVP_CIPHER* cipher = Cipher(key.size());
    if (cipher == nullptr) return OpenSslError("cipher fetch");
    CipherCtx ctx(EVP_CIPHER_CTX_new());
    if (!ctx) return OpenSslError("context allocation");
    if (EVP_EncryptInit_ex2(ctx.get(), cipher, key.data(), counter.data(), nullptr) != 1) return OpenSslError("init");
    return ctx;
  }

  static Status Update(EVP_CIPHER_CTX* ctx, const uint8_t* in, uint8_t* out, size_t n) {
    int outl = 0;
    if (EVP_EncryptUpdate(ctx, out, &outl, in, static_cast<int>(n)) != 1 || static_cast<size_t>(outl) != n) {
      return OpenSslError("update");
    }
    return Status::Ok();
  }
};

}  // namespace

const AesCtrBackend& OpenSslAesCtr() {
  static const OpenSslCtr backend;
  return backend;
}

}  // namespace flotilla::security
