#!/usr/bin/env bash
# Runs `openmoe` on NP MPI ranks on this machine.
#
#   launch/mpirun_local.sh NP SUBCOMMAND [ARGS...]
#   launch/mpirun_local.sh 2 train --job launch/configs/tiny.pbtxt
#
# Adds --allow-run-as-root when run as root, --oversubscribe when NP exceeds the cores, and
# --bind-to none (ranks share the cores with their OpenBLAS threads), and exports
# OMP_NUM_THREADS = max(1, cores / NP). `openmoe train` divides the cores over the ranks itself
# (one thread for small models) unless the job sets train.threads or the caller sets
# OPENBLAS_NUM_THREADS.
#
# Environment: OPENMOE_BIN (default build/launch/openmoe), MPIRUN (default mpirun),
# MPIRUN_ARGS (extra mpirun flags, split on spaces).
#
# The simulated chips divide over the ranks: NP must divide topology.num_chips, and the chips per
# rank and mesh.expert_parallel must divide one another. Working settings of tiny.pbtxt
# (4 experts, seq_len 64) on the v3 topologies, one global batch of 512 rows x 64 tokens for all
# four, so the routing groups (64 tokens, one row) and the losses are the same on every topology:
#
#   T="--set train.batch_rows=512 --set router.group_size=64 --set mesh.expert_parallel=4"
#   launch/mpirun_local.sh 2 train --job launch/configs/tiny.pbtxt \
#     --job launch/configs/topology/v3-64.pbtxt $T     # 8 rows/chip, 32 chips/rank
#   ... topology/v3-128.pbtxt $T                         # 4 rows/chip, 64 chips/rank
#   ... topology/v3-256.pbtxt $T                         # 2 rows/chip, 128 chips/rank
#   ... topology/v3-512.pbtxt $T                         # 1 row/chip, 256 chips/rank
#
# The rules behind them: batch_rows is a multiple of num_chips x train.microbatches; the tokens
# per chip per microbatch (batch_rows / (num_chips x microbatches) x seq_len) are a multiple of
# router.group_size; model.num_experts is a multiple of mesh.expert_parallel (1, 2 or 4 here).
# Keeping tiny's group_size 128 instead needs two rows per chip: batch_rows = 2 x num_chips
# (128, 256, 512, 1024), a global batch that grows with the slice.
set -euo pipefail

if [[ $# -lt 2 || ! "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 NP SUBCOMMAND [ARGS...]   (e.g. $0 2 train --job launch/configs/tiny.pbtxt)" >&2
  exit 2
fi
np="$1"
shift

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${OPENMOE_BIN:-$root/build/launch/openmoe}"
if [[ ! -x "$bin" ]]; then
  echo "$0: $bin is not built (run launch/build.sh openmoe, or set OPENMOE_BIN)" >&2
  exit 1
fi

cores="$(nproc)"
threads=$(( cores / np ))
(( threads >= 1 )) || threads=1
export OMP_NUM_THREADS="$threads"
flags=(-np "$np" --bind-to none -x OMP_NUM_THREADS)
# OPENBLAS_NUM_THREADS is passed on only when the caller set it: it overrides `openmoe train`'s own
# choice, which gives small models one thread (launch/thread_default.h).
[[ -n "${OPENBLAS_NUM_THREADS:-}" ]] && flags+=(-x OPENBLAS_NUM_THREADS)
[[ "$(id -u)" -eq 0 ]] && flags+=(--allow-run-as-root)
(( np > cores )) && flags+=(--oversubscribe)
# shellcheck disable=SC2206  # MPIRUN_ARGS is meant to split on spaces
[[ -n "${MPIRUN_ARGS:-}" ]] && flags+=(${MPIRUN_ARGS})

exec "${MPIRUN:-mpirun}" "${flags[@]}" "$bin" "$@"
