// CtrDrbg on mbedtls_ctr_drbg + mbedtls_entropy.
#include "flotilla/security/csprng.h"

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>

#include "flotilla/core/check.h"
#include "platform/mbedtls/mbedtls_util.h"

namespace flotilla::security {

struct CtrDrbg::Impl {
  std::mutex mu;
  internal::Scoped<mbedtls_entropy_context, mbedtls_entropy_init, mbedtls_entropy_free> entropy;  // GUARDED_BY(mu)
  internal::Scoped<mbedtls_ctr_drbg_context, mbedtls_ctr_drbg_init, mbedtls_ctr_drbg_free> drbg;  // GUARDED_BY(mu)
  pid_t pid = 0;  // GUARDED_BY(mu): process that last (re)seeded; a forked child reseeds

  // REQUIRES: mu held.
  int ReseedLocked() {
    pid = getpid();
    return mbedtls_ctr_drbg_reseed(drbg.get(), nullptr, 0);
  }
};

CtrDrbg::CtrDrbg(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CtrDrbg::~CtrDrbg() = default;

Result<std::unique_ptr<CtrDrbg>> CtrDrbg::Open(std::string_view personalization) {
  auto impl = std::make_unique<Impl>();
  int ret = mbedtls_ctr_drbg_seed(impl->drbg.get(), mbedtls_entropy_func, impl->entropy.get(),
                                  reinterpret_cast<const unsigned char*>(personalization.data()),
                                  personalization.size());
  if (ret != 0) return internal::MbedTlsStatus(StatusCode::kUnavailable, "ctr_drbg seed", ret);
  mbedtls_ctr_drbg_set_reseed_interval(impl->drbg.get(), kReseedIntervalRequests);
  impl->pid = getpid();
  return std::unique_ptr<CtrDrbg>(new CtrDrbg(std::move(impl)));
}

void CtrDrbg::Fill(std::span<uint8_t> out) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (impl_->pid != getpid()) {
    int ret = impl_->ReseedLocked();
    FLT_CHECK_MSG(ret == 0, "CTR_DRBG reseed after fork failed: entropy source unavailable");
  }
  size_t done = 0;
  while (done < out.size()) {
    const size_t n = std::min<size_t>(out.size() - done, MBEDTLS_CTR_DRBG_MAX_REQUEST);
    int ret = mbedtls_ctr_drbg_random(impl_->drbg.get(), out.data() + done, n);
    FLT_CHECK_MSG(ret == 0, "CTR_DRBG generate failed: entropy source unavailable");
    done += n;
  }
}

Status CtrDrbg::Reseed() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  int ret = impl_->ReseedLocked();
  if (ret != 0) return internal::MbedTlsStatus(StatusCode::kUnavailable, "ctr_drbg reseed", ret);
  return Status::Ok();
}

Random& SystemCsprng() {
  // Leaked on purpose: threads still running during static destruction may need it.
  static CtrDrbg* const drbg = [] {
    auto r = CtrDrbg::Open("flotilla system csprng");
    FLT_CHECK_OK(r.status());
    return std::move(r).value().release();
  }();
  return *drbg;
}

}  // namespace flotilla::security
