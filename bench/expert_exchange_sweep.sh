#!/usr/bin/env bash
# The expert-exchange sweep: build/bench/expert_exchange_bench on NP ranks over its default grid
# (expert_parallel 2/4/8 x tokens per chip 256/1024/4096 x capacity factor 1.25/2 x d_model
# 256/512 x rows in fp32/bf16: 72 points, ~2 minutes on 2 ranks here), its CSV, and a PNG of GB/s
# against the bytes a rank sends, the runner's exchange beside raw MPI_Alltoallv of the same bytes.
#
#   bench/expert_exchange_sweep.sh [OUT_PREFIX] [BENCH ARGS...]
#     default OUT_PREFIX: bench/results/expert_exchange_sweep -> .csv, .png
#     e.g. bench/expert_exchange_sweep.sh /tmp/quick --ep=4 --tokens_per_chip=1024
#
# Environment: NP (2), BENCH (build/bench/expert_exchange_bench), RUN (how to start it, default
# "mpirun --allow-run-as-root --oversubscribe --bind-to none --mca mpi_yield_when_idle 1 -np NP";
# for the two network-namespace test hosts: RUN=launch/test_hosts.sh), TITLE (the plot's).
# It installs gnuplot-nox through launch/install_deps.sh when gnuplot is missing.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix="${1:-$root/bench/results/expert_exchange_sweep}"
[[ $# -gt 0 ]] && shift
np="${NP:-2}"
bench="${BENCH:-$root/build/bench/expert_exchange_bench}"
[[ -x "$bench" ]] || { echo "$0: $bench is not built (cmake --build build --target expert_exchange_bench)" >&2; exit 1; }
mkdir -p "$(dirname "$prefix")"
# shellcheck disable=SC2206  # RUN is a command line, meant to split on spaces
run=(${RUN:-mpirun --allow-run-as-root --oversubscribe --bind-to none --mca mpi_yield_when_idle 1 -np $np})

"${run[@]}" "$bench" --csv="$prefix.csv" "$@"
command -v gnuplot >/dev/null 2>&1 || "$root/launch/install_deps.sh" gnuplot-nox
eps="$(awk -F, 'NR > 1 && !seen[$1]++ { printf "%s%s", sep, $1; sep = " " }' "$prefix.csv")"
[[ -n "$eps" ]] || { echo "$0: no point of the sweep had an exchange (see above)" >&2; exit 1; }
gnuplot -e "in='$prefix.csv'; out='$prefix.png'; eps='$eps'; label='${TITLE:-$np MPI ranks on this machine}'" \
  "$root/bench/expert_exchange_plot.gp"
echo "wrote $prefix.csv and $prefix.png"
