#!/usr/bin/env bash
# The README's first command: install what is missing, build, and train the default job.
# Extra arguments go to `openmoe train` (e.g. --set train.steps=50).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/launch/install_deps.sh"
"$root/launch/build.sh" openmoe
mkdir -p "$root/runs/tiny"
cd "$root"
exec ./build/launch/openmoe train --job launch/configs/tiny.pbtxt \
  --set logging.metrics_path=runs/tiny/metrics.jsonl "$@"
