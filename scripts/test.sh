#!/usr/bin/env bash
# The whole Flotilla test suite, as CI runs it (.ci/run calls exactly this):
#   1. install dependencies (scripts/setup.sh)
#   2. build everything (RelWithDebInfo) and run every test: unit tests in parallel,
#      integration tests (real Mosquitto, real SQLite, loopback HTTP, mTLS) one at a time
#   3. build with ASan+UBSan and run the unit tests under them
#   4. build the libFuzzer targets with clang and run each for a few seconds
#   5. cross-build the engine for aarch64 and run its tests under qemu-aarch64
# Environment: FLOTILLA_TEST_STAGES (default "main asan fuzz arm"), FLOTILLA_FUZZ_SECONDS
# (default 10), JOBS (default: number of cores).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
JOBS="${JOBS:-$(nproc)}"
STAGES="${FLOTILLA_TEST_STAGES:-main asan fuzz arm}"
FUZZ_SECONDS="${FLOTILLA_FUZZ_SECONDS:-10}"
export CTEST_OUTPUT_ON_FAILURE=1

bash scripts/setup.sh || { echo "test: setup failed" >&2; exit 1; }

passed=0
failed=0
failures=()
start_all=$(date +%s)

note() { echo; echo "==== $* ($(($(date +%s) - start_all)) s)"; }

# run_ctest LABEL_ARGS...: runs ctest, adds its counts to the totals.
run_ctest() {
  local dir="$1"; shift
  local log
  log="$(mktemp)"
  ctest --test-dir "$dir" --output-on-failure "$@" 2>&1 | tee "$log"
  local line
  line="$(grep -E 'tests passed, [0-9]+ tests failed out of [0-9]+' "$log" | tail -1)"
  if [ -n "$line" ]; then
    local f t
    f="$(echo "$line" | sed -E 's/.* ([0-9]+) tests failed out of ([0-9]+).*/\1/')"
    t="$(echo "$line" | sed -E 's/.* ([0-9]+) tests failed out of ([0-9]+).*/\2/')"
    passed=$((passed + t - f))
    failed=$((failed + f))
    [ "$f" -gt 0 ] && failures+=("ctest $dir $*")
  elif grep -q "No tests were found" "$log"; then
    :
  else
    failed=$((failed + 1)); failures+=("ctest $dir $* (no summary)")
  fi
  rm -f "$log"
}

build() {  # build DIR CMAKE_ARGS... -- TARGETS...
  local dir="$1"; shift
  local args=() targets=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do args+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  targets=("$@")
  cmake -S "$ROOT" -B "$dir" -G Ninja "${args[@]}" >/dev/null || return 1
  ninja -C "$dir" -j "$JOBS" "${targets[@]}"
}

step() {  # step NAME: record a non-ctest step result from $?
  if [ "$2" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); failures+=("$1"); fi
}

for stage in $STAGES; do
  case "$stage" in
    main)
      note "build (RelWithDebInfo)"
      if build build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFLOTILLA_BUILD_TESTS=ON -DFLOTILLA_BUILD_BENCH=ON; then
        note "unit tests"
        run_ctest build -L unit -j "$JOBS"
        note "integration tests"
        run_ctest build -L integration -j 1
      else
        step "main build" 1
      fi
      ;;
    asan)
      note "build (ASan+UBSan)"
      if build build-asan -DCMAKE_BUILD_TYPE=Debug "-DCMAKE_CXX_FLAGS_DEBUG=-g -O1" -DFLOTILLA_SANITIZE=address,undefined \
           -DFLOTILLA_BUILD_TESTS=ON -DFLOTILLA_BUILD_BENCH=OFF; then
        note "unit tests under ASan+UBSan"
        ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
          run_ctest build-asan -L unit -j "$JOBS"
      else
        step "asan build" 1
      fi
      ;;
    fuzz)
      if command -v clang++ >/dev/null; then
        note "fuzz targets (clang + libFuzzer, ${FUZZ_SECONDS} s each)"
        if CC=clang CXX=clang++ build build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFLOTILLA_FUZZ=ON \
             -DFLOTILLA_BUILD_TESTS=OFF -DFLOTILLA_BUILD_BENCH=OFF -- flotilla_fuzzers; then
          while read -r fuzzer; do
            [ -z "$fuzzer" ] && continue
            corpus="$(mktemp -d)"
            echo "fuzz: $(basename "$fuzzer")"
            "$fuzzer" -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 -close_fd_mask=3 "$corpus" \
              >"build-fuzz/$(basename "$fuzzer").log" 2>&1
            rc=$?
            tail -3 "build-fuzz/$(basename "$fuzzer").log"
            step "fuzz $(basename "$fuzzer")" "$rc"
            rm -rf "$corpus"
          done < build-fuzz/fuzzers.txt
        else
          step "fuzz build" 1
        fi
      else
        echo "clang not found: fuzz stage needs it (scripts/setup.sh installs it)" >&2
        step "fuzz (clang missing)" 1
      fi
      ;;
    arm)
      if [ -x scripts/test-arm.sh ] || [ -f scripts/test-arm.sh ]; then
        note "aarch64 cross build + qemu"
        bash scripts/test-arm.sh
        step "arm (qemu-aarch64)" $?
      fi
      ;;
    *) echo "unknown stage $stage" >&2; exit 2 ;;
  esac
done

note "summary"
for f in "${failures[@]}"; do echo "FAILED: $f"; done
echo "tests: ${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ]
