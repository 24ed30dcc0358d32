#!/usr/bin/env bash
# The main job: installs dependencies, builds the `flotilla` executable and runs the demo.
# Today the demo is the foundation smoke demo (`flotilla demo`): a Mosquitto broker on a
# free loopback port with mTLS, a fleet CA, a coordinator and a device exchanging signed
# envelopes. Extra arguments go to `flotilla demo` (see `flotilla demo --help`).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C build -j "$(nproc)" flotilla
exec ./build/cli/flotilla demo "$@"
