#!/usr/bin/env bash
# Cross-compiles the model engine (core + device-sdk) for aarch64 with Debian's
# g++-aarch64-linux-gnu and runs its unit tests under qemu-aarch64 with a CPU that has
# the dot-product extension (-cpu max), so the NEON and NEON-dotprod kernels are
# checked against the scalar ones. Exits non-zero on any build or test failure.
#
#   scripts/test-arm.sh [build-dir]      (default: build-arm next to this repo's root)
#   JOBS=2 scripts/test-arm.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-${root}/build-arm}"
jobs="${JOBS:-2}"
sysroot=/usr/aarch64-linux-gnu

for tool in aarch64-linux-gnu-g++ qemu-aarch64 cmake ninja; do
  command -v "${tool}" >/dev/null || { echo "test-arm: missing ${tool} (run scripts/setup.sh)" >&2; exit 1; }
done

cmake -S "${root}" -B "${build}" -G Ninja \
  -DCMAKE_TOOLCHAIN_FILE="${root}/cmake/toolchains/aarch64-linux-gnu.cmake" \
  -DCMAKE_BUILD_TYPE=Release \
  -DFLOTILLA_ENGINE_ONLY=ON -DFLOTILLA_BUILD_BENCH=OFF -DFLOTILLA_BUILD_TESTS=ON >/dev/null

targets=(kernels_test)
for optional in model_test c_api_test; do
  if ninja -C "${build}" -t targets all 2>/dev/null | grep -q "^${optional}:"; then
    targets+=("${optional}")
  fi
done
ninja -C "${build}" -j "${jobs}" "${targets[@]}"

export QEMU_LD_PREFIX="${sysroot}"
status=0
for t in "${targets[@]}"; do
  exe="$(find "${build}/device-sdk" -maxdepth 2 -type f -name "${t}" | head -1)"
  echo "== ${t} (qemu-aarch64 -cpu max)"
  # -cpu max: ARMv8.x with ASIMD dot product (and i8mm), so every NEON path runs.
  if ! qemu-aarch64 -L "${sysroot}" -cpu max "${exe}" --gtest_brief=1; then
    echo "test-arm: ${t} FAILED" >&2
    status=1
  fi
done
# The plain-NEON CPU model (Cortex-A72 class: no dot product) must still pass and must
# not select the dotprod path.
echo "== kernels_test (qemu-aarch64 -cpu cortex-a72, no dotprod)"
if ! qemu-aarch64 -L "${sysroot}" -cpu cortex-a72 "${build}/device-sdk/kernels_test" --gtest_brief=1; then
  echo "test-arm: kernels_test on cortex-a72 FAILED" >&2
  status=1
fi
exit "${status}"
