// crypto_bench: throughput / latency of the flotilla_security primitives that dominate
// SecAgg+ and envelope costs. Prints the median of 5 repetitions (and min/max) per row.
//
//   crypto_bench [--reps N]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "flotilla/core/check.h"
#include "flotilla/security/aead.h"
#include "flotilla/security/hash.h"
#include "flotilla/security/identity.h"
#include "flotilla/security/prg.h"
#include "flotilla/security/x25519.h"

namespace {

using namespace flotilla;
using namespace flotilla::security;
using Clock = std::chrono::steady_clock;

int g_reps = 5;

// Runs `body` g_reps times; returns sorted per-rep seconds.
std::vector<double> Time(const std::function<void()>& body) {
  body();  // warm-up (page faults, lazy init)
  std::vector<double> secs;
  for (int r = 0; r < g_reps; ++r) {
    const auto t0 = Clock::now();
    body();
    secs.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::sort(secs.begin(), secs.end());
  return secs;
}

void RowThroughput(const char* name, double bytes, const std::function<void()>& body) {
  const std::vector<double> s = Time(body);
  const double med = s[s.size() / 2];
  std::printf("%-50s %10.3f GB/s   (min %.3f, max %.3f)\n", name, bytes / med / 1e9, bytes / s.back() / 1e9,
              bytes / s.front() / 1e9);
}

void RowLatency(const char* name, int ops, const std::function<void()>& body) {
  const std::vector<double> s = Time(body);
  const double med = s[s.size() / 2];
  std::printf("%-50s %10.1f us/op  (min %.1f, max %.1f)\n", name, med / ops * 1e6, s.front() / ops * 1e6,
              s.back() / ops * 1e6);
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
      g_reps = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: %s [--reps N]\n", argv[0]);
      return 2;
    }
  }
  std::printf("flotilla crypto_bench: median of %d repetitions, single thread\n\n", g_reps);

  constexpr size_t kPrgBytes = 64u << 20;
  std::vector<uint32_t> words(kPrgBytes / 4);
  PrgSeed seed{};
  seed[0] = 1;
  RowThroughput("AES-128-CTR mask PRG, mbedTLS (64 MiB)", kPrgBytes,
                [&] { FLT_CHECK_OK(ExpandPrg(MbedTlsAesCtr(), seed, 0, words)); });
  RowThroughput("AES-128-CTR mask PRG, OpenSSL EVP (64 MiB)", kPrgBytes,
                [&] { FLT_CHECK_OK(ExpandPrg(OpenSslAesCtr(), seed, 0, words)); });
  RowThroughput("AES-128-CTR mask add (fused), mbedTLS (64 MiB)", kPrgBytes,
                [&] { FLT_CHECK_OK(AddPrgMask(MbedTlsAesCtr(), seed, 0, false, words)); });
  RowThroughput("AES-128-CTR mask add (fused), OpenSSL (64 MiB)", kPrgBytes,
                [&] { FLT_CHECK_OK(AddPrgMask(OpenSslAesCtr(), seed, 0, false, words)); });
  {
    std::vector<uint32_t> small(16 * 1024);  // 64 KiB, cache-resident: the cipher alone
    RowThroughput("AES-128-CTR mask PRG, OpenSSL, in cache (64 KiB)", 64.0 * 1024 * 1024, [&] {
      for (int i = 0; i < 1024; ++i) FLT_CHECK_OK(ExpandPrg(OpenSslAesCtr(), seed, 16384ull * i, small));
    });
  }
  {
    std::vector<uint8_t> buf(kPrgBytes, 0);
    RowThroughput("AES-128-CTR XOR, mbedtls_aes_crypt_ctr (64 MiB)", kPrgBytes,
                  [&] { FLT_CHECK_OK(MbedTlsAesCtr().Xor(seed, AesCtrCounterBlock{}, buf, buf)); });
  }
  words.clear();
  words.shrink_to_fit();

  {
    Result<X25519KeyPair> a = X25519GenerateKeyPair();
    Result<X25519KeyPair> b = X25519GenerateKeyPair();
    FLT_CHECK_OK(a.status());
    FLT_CHECK_OK(b.status());
    constexpr int kOps = 40;
    RowLatency("X25519 agreement (mbedTLS)", kOps, [&] {
      for (int i = 0; i < kOps; ++i) FLT_CHECK_OK(X25519Agree(a->private_key, b->public_key).status());
    });
  }
  {
    Result<EcdsaPrivateKey> key = EcdsaPrivateKey::Generate();
    FLT_CHECK_OK(key.status());
    const std::string msg(256, 'm');
    constexpr int kSign = 40, kVerify = 20;
    RowLatency("ECDSA P-256 sign (mbedTLS)", kSign, [&] {
      for (int i = 0; i < kSign; ++i) FLT_CHECK_OK(key->Sign(AsBytes(msg)).status());
    });
    Result<Bytes> sig = key->Sign(AsBytes(msg));
    FLT_CHECK_OK(sig.status());
    RowLatency("ECDSA P-256 verify (mbedTLS)", kVerify, [&] {
      for (int i = 0; i < kVerify; ++i) FLT_CHECK_OK(key->public_key().Verify(AsBytes(msg), *sig));
    });
  }
  {
    constexpr size_t kHashBytes = 64u << 20;
    std::vector<uint8_t> data(kHashBytes, 0x61);
    RowThroughput("SHA-256 (mbedTLS, 64 MiB)", kHashBytes, [&] { (void)Sha256(data); });
  }
  {
    constexpr size_t kGcmBytes = 16u << 20;
    std::vector<uint8_t> pt(kGcmBytes, 0x42);
    const Bytes k128(16, 7), k256(32, 7), nonce(12, 9);
    RowThroughput("AES-128-GCM seal (mbedTLS, 16 MiB)", kGcmBytes,
                  [&] { FLT_CHECK_OK(AesGcmSeal(k128, nonce, pt, {}).status()); });
    RowThroughput("AES-256-GCM seal (mbedTLS, 16 MiB)", kGcmBytes,
                  [&] { FLT_CHECK_OK(AesGcmSeal(k256, nonce, pt, {}).status()); });
  }
  return 0;
}
