#!/usr/bin/env bash
# Installs every Debian package Flotilla needs to build, test, benchmark and run the demo.
# Idempotent: quiet when everything is present. Fails loudly naming the missing package.
set -euo pipefail

PACKAGES=(
  # toolchain
  g++ cmake ninja-build pkg-config git
  # required libraries
  libpaho-mqttpp-dev libpaho-mqtt-dev
  libmbedtls-dev libssl-dev
  libprotobuf-dev protobuf-compiler
  libsqlite3-dev
  libcpp-httplib-dev
  libgtest-dev libgmock-dev
  # helper libraries
  nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev libbenchmark-dev libzstd-dev
  # broker for tests and the demo
  mosquitto
  # fuzzing (libFuzzer ships in clang's runtime package)
  clang libclang-rt-14-dev
  # ARM cross-build of the engine, run under qemu-user
  g++-aarch64-linux-gnu qemu-user
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: missing packages: ${missing[*]}" >&2
  echo "setup: run as root (or install them with apt-get) and retry" >&2
  exit 1
fi

echo "setup: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
if ! apt-get update -qq >/dev/null; then
  echo "setup: apt-get update failed" >&2
  exit 1
fi
if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/flotilla-setup.log 2>&1; then
  tail -20 /tmp/flotilla-setup.log >&2
  for p in "${missing[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      echo "setup: FAILED to install package: $p" >&2
    fi
  done
  exit 1
fi
for p in "${missing[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    echo "setup: FAILED to install package: $p" >&2
    exit 1
  fi
done
echo "setup: all packages present" >&2
