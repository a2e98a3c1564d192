#!/usr/bin/env bash
# Runs `openmoe` on several machines with Open MPI and a hostfile.
#
#   launch/mpirun_hosts.sh HOSTFILE NP RANKS_PER_HOST SUBCOMMAND [ARGS...]
#   launch/mpirun_hosts.sh launch/hostfile.example 4 2 train --job launch/configs/tiny.pbtxt
#
# Starts NP ranks, RANKS_PER_HOST on each host in HOSTFILE order (--map-by ppr:K:node), so
# consecutive ranks, and hence consecutive simulated chips and expert groups, share a host.
#
# What must be identical on every host:
#   - the binary: same absolute path ($OPENMOE_BIN, default <this repo>/build/launch/openmoe),
#     built from the same commit against the same Open MPI / OpenBLAS / protobuf versions;
#   - the repository path: mpirun starts every rank in this directory (--wdir), so relative
#     paths in the job (metrics, checkpoints, data) resolve the same way everywhere;
#   - the job files: rank 0 reads them and broadcasts the spec, but keep them at the same paths
#     anyway (a shared filesystem or the same checkout);
#   - the data: each rank reads its own data-parallel shard of the corpus from the path named in
#     the job (the synthetic source reads nothing), and checkpoint.dir is written by the ranks, so
#     both belong on a shared filesystem.
# Also: passwordless ssh from this machine to every host, and the same OPENBLAS_NUM_THREADS
# policy (exported here as THREADS, default: this machine's cores / RANKS_PER_HOST).
#
# Environment: OPENMOE_BIN, MPIRUN (default mpirun), MPIRUN_ARGS (extra flags, e.g.
# "--mca btl_tcp_if_include eth0" to pick the network interface), THREADS.
set -euo pipefail

if [[ $# -lt 4 ]]; then
  echo "usage: $0 HOSTFILE NP RANKS_PER_HOST SUBCOMMAND [ARGS...]" >&2
  exit 2
fi
hostfile="$1" np="$2" per_host="$3"
shift 3
[[ -r "$hostfile" ]] || { echo "$0: cannot read hostfile $hostfile" >&2; exit 1; }

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${OPENMOE_BIN:-$root/build/launch/openmoe}"
threads="${THREADS:-$(( $(nproc) / per_host ))}"
(( threads >= 1 )) || threads=1
export OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads"

flags=(--hostfile "$hostfile" -np "$np" --map-by "ppr:${per_host}:node" --bind-to none
       --wdir "$root" -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS -x LD_LIBRARY_PATH)
[[ "$(id -u)" -eq 0 ]] && flags+=(--allow-run-as-root)
# shellcheck disable=SC2206  # MPIRUN_ARGS is meant to split on spaces
[[ -n "${MPIRUN_ARGS:-}" ]] && flags+=(${MPIRUN_ARGS})

exec "${MPIRUN:-mpirun}" "${flags[@]}" "$bin" "$@"
