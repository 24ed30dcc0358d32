#include "flotilla/model/cpu_features.h"

#include <atomic>
#include <cstdlib>
#include <string>

#include "flotilla/core/log.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define FLT_X86 1
#elif defined(__aarch64__)
#include <sys/auxv.h>
#define FLT_ARM64 1
#endif

namespace flotilla::model {
namespace {

#if defined(FLT_X86)
uint64_t ReadXcr0() {
  uint32_t eax = 0;
  uint32_t edx = 0;
  // xgetbv with ecx = 0; encoded as bytes so no -mxsave is needed.
  __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

CpuFeatures DetectX86() {
  CpuFeatures f;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = (c >> 27) & 1u;
  const bool avx = (c >> 28) & 1u;
  const bool fma = (c >> 12) & 1u;
  const bool f16c = (c >> 29) & 1u;
  if (!osxsave || !avx) return f;
  const uint64_t xcr0 = ReadXcr0();
  const bool ymm_os = (xcr0 & 0x6u) == 0x6u;     // SSE + AVX state
  const bool zmm_os = (xcr0 & 0xe6u) == 0xe6u;   // + opmask, ZMM_Hi256, Hi16_ZMM
  if (!ymm_os) return f;
  if (__get_cpuid_max(0, nullptr) < 7) return f;
  __cpuid_count(7, 0, a, b, c, d);
  f.avx2 = (b >> 5) & 1u;
  f.fma = fma;
  f.f16c = f16c;
  if (zmm_os) {
    f.avx512f = (b >> 16) & 1u;
    f.avx512bw = (b >> 30) & 1u;
    f.avx512vl = (b >> 31) & 1u;
    f.avx512vnni = (c >> 11) & 1u;
  }
  __cpuid_count(7, 1, a, b, c, d);
  f.avx_vnni = (a >> 4) & 1u;
  return f;
}
#endif

#if defined(FLT_ARM64)
CpuFeatures DetectArm64() {
  CpuFeatures f;
  const unsigned long hwcap = getauxval(AT_HWCAP);
  const unsigned long hwcap2 = getauxval(AT_HWCAP2);
  f.neon = (hwcap & (1ul << 1)) != 0;      // HWCAP_ASIMD
  f.dotprod = (hwcap & (1ul << 20)) != 0;  // HWCAP_ASIMDDP
  f.i8mm = (hwcap2 & (1ul << 13)) != 0;    // HWCAP2_I8MM
  return f;
}
#endif

CpuFeatures Detect() {
#if defined(FLT_X86)
  return DetectX86();
#elif defined(FLT_ARM64)
  return DetectArm64();
#else
  return CpuFeatures{};
#endif
}

constexpr int kNoOverride = -1;
constexpr int kEnvNotRead = -2;
std::atomic<int> g_override{kEnvNotRead};

int ReadEnvOverride() {
  const char* env = std::getenv("FLOTILLA_CPU_PATH");
  if (env == nullptr || *env == '\0') return kNoOverride;
  Result<CpuPath> parsed = ParseCpuPath(env);
  if (!parsed.ok()) {
    FLT_LOG(kWarn, "kernels") << "ignoring FLOTILLA_CPU_PATH: " << parsed.status().ToString();
    return kNoOverride;
  }
  if (!IsCpuPathSupported(*parsed)) {
    FLT_LOG(kWarn, "kernels") << "ignoring FLOTILLA_CPU_PATH=" << env << ": not supported by this CPU/build";
    return kNoOverride;
  }
  return static_cast<int>(*parsed);
}

}  // namespace

const CpuFeatures& GetCpuFeatures() {
  static const CpuFeatures features = Detect();
  return features;
}

std::string_view ToString(CpuPath path) {
  switch (path) {
    case CpuPath::kScalar: return "scalar";
    case CpuPath::kAvx2: return "avx2";
    case CpuPath::kAvx512Vnni: return "avx512vnni";
    case CpuPath::kNeon: return "neon";
    case CpuPath::kNeonDotprod: return "neon-dotprod";
  }
  return "unknown";
}

Result<CpuPath> ParseCpuPath(std::string_view name) {
  if (name == "scalar") return CpuPath::kScalar;
  if (name == "avx2") return CpuPath::kAvx2;
  if (name == "avx512vnni" || name == "avx512") return CpuPath::kAvx512Vnni;
  if (name == "neon") return CpuPath::kNeon;
  if (name == "neon-dotprod" || name == "dotprod") return CpuPath::kNeonDotprod;
  return InvalidArgumentError("unknown CPU path '" + std::string(name) +
                              "' (expected scalar|avx2|avx512vnni|neon|neon-dotprod)");
}

bool IsCpuPathSupported(CpuPath path) {
  const CpuFeatures& f = GetCpuFeatures();
  switch (path) {
    case CpuPath::kScalar: return true;
#if defined(FLT_X86)
    case CpuPath::kAvx2: return f.avx2 && f.fma && f.f16c;
    case CpuPath::kAvx512Vnni:
      return f.avx2 && f.fma && f.f16c && f.avx512f && f.avx512bw && f.avx512vl && f.avx512vnni;
#elif defined(FLT_ARM64)
    case CpuPath::kNeon: return f.neon;
    case CpuPath::kNeonDotprod: return f.neon && f.dotprod;
#endif
    default: return false;
  }
}

std::vector<CpuPath> SupportedCpuPaths() {
  std::vector<CpuPath> out;
  for (CpuPath p : {CpuPath::kScalar, CpuPath::kNeon, CpuPath::kNeonDotprod, CpuPath::kAvx2, CpuPath::kAvx512Vnni}) {
    if (IsCpuPathSupported(p)) out.push_back(p);
  }
  return out;
}

CpuPath BestCpuPath() {
  static const CpuPath best = SupportedCpuPaths().back();
  return best;
}

CpuPath ActiveCpuPath() {
  int v = g_override.load(std::memory_order_acquire);
  if (v == kEnvNotRead) {
    int expected = kEnvNotRead;
    g_override.compare_exchange_strong(expected, ReadEnvOverride(), std::memory_order_acq_rel);
    v = g_override.load(std::memory_order_acquire);
  }
  return v >= 0 ? static_cast<CpuPath>(v) : BestCpuPath();
}

Status SetCpuPathOverride(CpuPath path) {
  if (!IsCpuPathSupported(path)) {
    return FailedPreconditionError("CPU path " + std::string(ToString(path)) + " is not supported by this CPU/build");
  }
  g_override.store(static_cast<int>(path), std::memory_order_release);
  return Status::Ok();
}

void ClearCpuPathOverride() { g_override.store(kNoOverride, std::memory_order_release); }

}  // namespace flotilla::model
