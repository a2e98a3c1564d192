#!/usr/bin/env bash
# Installs the Debian packages the project builds and runs with (skips apt when all are present).
#
#   launch/install_deps.sh [EXTRA_PACKAGE ...]
#
# Extra Debian packages named on the command line (e.g. gnuplot-nox for launch/plot_metrics.sh)
# are installed too when missing; they are not part of the build, so only the scripts that need
# them ask for them.
set -euo pipefail
packages=(
  g++ cmake make pkg-config
  libopenmpi-dev openmpi-bin
  libopenblas-dev libdnnl-dev
  libprotobuf-dev protobuf-compiler
  libabsl-dev
  libsentencepiece-dev sentencepiece
  libzstd-dev zstd
  libgtest-dev libgmock-dev libbenchmark-dev
  iproute2  # `ip`: launch/test_hosts.sh's network-namespace test hosts (and their CTest test)
  "$@"
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing: ${missing[*]}"
sudo_cmd=""
if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
$sudo_cmd apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
