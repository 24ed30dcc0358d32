// Runtime CPU feature detection and the choice of kernel path (scalar, AVX2, AVX-512
// VNNI, NEON, NEON dot-product), with an override for tests and benchmarks.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "flotilla/core/status.h"

namespace flotilla::model {

// What the running CPU and OS support (OS support of the register state included: the
// AVX flags are only set when XGETBV says the OS saves YMM/ZMM state).
struct CpuFeatures {
  // x86-64
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512vnni = false;
  bool avx_vnni = false;
  // aarch64
  bool neon = false;     // HWCAP_ASIMD
  bool dotprod = false;  // HWCAP_ASIMDDP (SDOT/UDOT)
  bool i8mm = false;     // HWCAP2_I8MM (reported only; no kernel uses it yet)
};

// Detected once, then cached. Thread-safe.
const CpuFeatures& GetCpuFeatures();

// Kernel implementations. Append-only (values appear in benchmark output).
enum class CpuPath : uint8_t {
  kScalar = 0,      // portable C++: the reference every other path is tested against
  kAvx2 = 1,        // AVX2 + FMA + F16C
  kAvx512Vnni = 2,  // AVX-512 F/BW/VL + VNNI (also needs AVX2/FMA/F16C)
  kNeon = 3,        // ARMv8-A Advanced SIMD
  kNeonDotprod = 4, // ARMv8.2-A + dot product (SDOT)
};

std::string_view ToString(CpuPath path);  // "scalar", "avx2", "avx512vnni", "neon", "neon-dotprod"
// Accepts the ToString names (and "avx512" / "dotprod" as aliases). InvalidArgument otherwise.
Result<CpuPath> ParseCpuPath(std::string_view name);

// True if this binary contains the path and the running CPU can execute it.
bool IsCpuPathSupported(CpuPath path);
// Every supported path, scalar first, fastest last.
std::vector<CpuPath> SupportedCpuPaths();
// The fastest supported path.
CpuPath BestCpuPath();

// The path kernels use when none is passed explicitly: the override if one is set
// (SetCpuPathOverride, else env FLOTILLA_CPU_PATH read once), else BestCpuPath().
// An env value that names an unknown or unsupported path is ignored with a warning.
// Thread-safe (an atomic read).
CpuPath ActiveCpuPath();
// Forces ActiveCpuPath(). FailedPrecondition if the CPU cannot run `path`. Not meant to
// be called while other threads are running kernels (they may see either path).
Status SetCpuPathOverride(CpuPath path);
// Drops any override (including the env one): ActiveCpuPath() becomes BestCpuPath().
void ClearCpuPathOverride();

}  // namespace flotilla::model
