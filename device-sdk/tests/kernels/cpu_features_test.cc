#include "flotilla/model/cpu_features.h"

#include <gtest/gtest.h>

#include <fstream>
#include <string>

namespace flotilla::model {
namespace {

TEST(CpuFeaturesTest, PathNamesRoundTrip) {
  for (CpuPath p : {CpuPath::kScalar, CpuPath::kAvx2, CpuPath::kAvx512Vnni, CpuPath::kNeon, CpuPath::kNeonDotprod}) {
    Result<CpuPath> parsed = ParseCpuPath(ToString(p));
    ASSERT_TRUE(parsed.ok()) << ToString(p);
    EXPECT_EQ(*parsed, p);
  }
  EXPECT_EQ(*ParseCpuPath("avx512"), CpuPath::kAvx512Vnni);
  EXPECT_EQ(*ParseCpuPath("dotprod"), CpuPath::kNeonDotprod);
  Result<CpuPath> bad = ParseCpuPath("sse9");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().ToString().find("sse9"), std::string::npos);
}

TEST(CpuFeaturesTest, SupportedPathsStartWithScalarAndEndWithBest) {
  const std::vector<CpuPath> paths = SupportedCpuPaths();
  ASSERT_FALSE(paths.empty());
  EXPECT_EQ(paths.front(), CpuPath::kScalar);
  EXPECT_EQ(paths.back(), BestCpuPath());
  for (CpuPath p : paths) EXPECT_TRUE(IsCpuPathSupported(p));
}

// Cross-checks cpuid/getauxval against the kernel's view in /proc/cpuinfo.
TEST(CpuFeaturesTest, AgreesWithProcCpuinfo) {
  std::ifstream in("/proc/cpuinfo");
  std::string line, flags;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) == 0 || line.rfind("Features", 0) == 0) {
      flags = " " + line.substr(line.find(':') + 1) + " ";
      break;
    }
  }
  if (flags.empty()) GTEST_SKIP() << "no /proc/cpuinfo flags line (qemu-user shows the host's)";
  auto has = [&](const char* f) { return flags.find(std::string(" ") + f + " ") != std::string::npos; };
  const CpuFeatures& f = GetCpuFeatures();
#if defined(__x86_64__)
  EXPECT_EQ(f.avx2, has("avx2"));
  EXPECT_EQ(f.fma, has("fma"));
  EXPECT_EQ(f.f16c, has("f16c"));
  EXPECT_EQ(f.avx512f, has("avx512f"));
  EXPECT_EQ(f.avx512vnni, has("avx512_vnni"));
  EXPECT_EQ(f.avx_vnni, has("avx_vnni"));
  EXPECT_EQ(IsCpuPathSupported(CpuPath::kAvx2), has("avx2") && has("fma") && has("f16c"));
  EXPECT_FALSE(IsCpuPathSupported(CpuPath::kNeon));
#else
  (void)f;
  (void)has;
#endif
}

TEST(CpuFeaturesTest, OverrideSelectsEverySupportedPath) {
  for (CpuPath p : SupportedCpuPaths()) {
    ASSERT_TRUE(SetCpuPathOverride(p).ok());
    EXPECT_EQ(ActiveCpuPath(), p);
  }
#if defined(__x86_64__)
  Status s = SetCpuPathOverride(CpuPath::kNeon);
  EXPECT_FALSE(s.ok());
#endif
  ClearCpuPathOverride();
  EXPECT_EQ(ActiveCpuPath(), BestCpuPath());
}

}  // namespace
}  // namespace flotilla::model
