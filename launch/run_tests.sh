#!/usr/bin/env bash
# The README's second command: install what is missing, build, and run every test with CTest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/launch/install_deps.sh"
"$root/launch/build.sh"
cd "$root/build"
ctest --output-on-failure -j "$(nproc)"
