// AES-CTR on mbedTLS: mbedtls_aes_crypt_ctr over large buffers (AES-NI one block at a
// time). Measured on x86 with 2.28: ~1.05 GB/s, faster than encrypting counter blocks in
// place with mbedtls_aes_crypt_ecb (~0.86 GB/s), so keystreams encrypt zeroed chunks.
#include <mbedtls/aes.h>

#include <algorithm>
#include <cstring>

#include "flotilla/security/prg.h"
#include "platform/mbedtls/mbedtls_util.h"
#include "prg_internal.h"

namespace flotilla::security {
namespace {

using AesContext = internal::Scoped<mbedtls_aes_context, mbedtls_aes_init, mbedtls_aes_free>;

class MbedTlsCtr final : public AesCtrBackend {
 public:
  std::string_view name() const override { return "mbedtls"; }

  Status Xor(ByteSpan key, const AesCtrCounterBlock& counter, ByteSpan in, std::span<uint8_t> out) const override {
    FLT_RETURN_IF_ERROR(internal::CheckCtrArgs(name(), key.size(), in.size(), out.size()));
    return Run(key, counter, in.data(), out);
  }

  Status Keystream(ByteSpan key, const AesCtrCounterBlock& counter, std::span<uint8_t> out) const override {
    FLT_RETURN_IF_ERROR(internal::CheckCtrArgs(name(), key.size(), out.size(), out.size()));
    return Run(key, counter, nullptr, out);
  }

 private:
  // out = in XOR keystream; in == nullptr means zeros (zeroed chunk by chunk, in cache).
  static Status Run(ByteSpan key, const AesCtrCounterBlock& counter, const uint8_t* in, std::span<uint8_t> out) {
    AesContext aes;
    int ret = mbedtls_aes_setkey_enc(aes.get(), key.data(), static_cast<unsigned>(key.size() * 8));
    if (ret != 0) return internal::MbedTlsStatus(StatusCode::kInternal, "mbedtls aes setkey", ret);
    AesCtrCounterBlock nonce = counter;
    unsigned char stream[kAesBlockSize];
    size_t nc_off = 0;
    for (size_t pos = 0; pos < out.size() && ret == 0;) {
      const size_t n = in != nullptr ? out.size() : std::min(out.size() - pos, internal::kKeystreamChunk);
      if (in == nullptr) std::memset(out.data() + pos, 0, n);
      const uint8_t* src = in != nullptr ? in + pos : out.data() + pos;
      ret = mbedtls_aes_crypt_ctr(aes.get(), n, &nc_off, nonce.data(), stream, src, out.data() + pos);
      pos += n;
    }
    internal::Wipe(stream, sizeof(stream));
    if (ret != 0) return internal::MbedTlsStatus(StatusCode::kInternal, "mbedtls aes-ctr", ret);
    return Status::Ok();
  }
};

}  // namespace

const AesCtrBackend& MbedTlsAesCtr() {
  static const MbedTlsCtr backend;
  return backend;
}

}  // namespace flotilla::security
