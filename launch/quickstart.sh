#!/usr/bin/env bash
# The README's first command: install what is missing, build, gather the embedded corpus (Debian
# documentation and sources -> data/corpus/, with a sentencepiece tokenizer and token shards),
# and train the tiny MoE on it over a simulated 64-chip TPU v3 slice hosted by 2 MPI ranks.
# Extra arguments go to `openmoe train` (e.g. --set train.steps=50).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
launch/install_deps.sh
launch/build.sh openmoe
data/gather_corpus.sh
mkdir -p runs/quickstart
# 64 chips x 2 rows of 64 tokens per step; routing groups of one row; 4 experts, one per chip
# of each 4-chip expert group. checkpoint.resume=never: a rerun starts afresh.
exec launch/mpirun_local.sh 2 train \
  --job launch/configs/tiny.pbtxt --job launch/configs/tiny_corpus.pbtxt \
  --job launch/configs/topology/v3-64.pbtxt \
  --set train.batch_rows=128 --set router.group_size=64 --set mesh.expert_parallel=4 \
  --set train.steps=300 --set logging.print_every=25 \
  --set logging.metrics_path=runs/quickstart/metrics.jsonl --set checkpoint.resume=never "$@"
