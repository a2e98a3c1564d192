#!/usr/bin/env bash
# Configures and builds everything (Release) into ./build. Usage: launch/build.sh [make targets]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$root/build" -j "$(nproc)" ${1:+--target "$@"}
