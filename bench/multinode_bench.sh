#!/usr/bin/env bash
# Multi-node step time with and without communication hidden behind compute: bench_small trained
# across the two network-namespace test hosts (launch/test_hosts.sh, one rank per host, TCP), the
# link unshaped, shaped to 1 Gbit/s and to 300 Mbit/s (tbf, each direction), for each of
#   blocking      train.overlap_grad_reduce=false, one exchange per direction (as before)
#   overlap       gradient buckets reduced during the backward (the default), FP32 wire
#   overlap_bf16  the same with train.grad_reduce_dtype=BF16
#   (+ CHUNKS)    each of the overlapped ones with train.expert_exchange_chunks=CHUNKS if set
#   overlap_poll  (only if named in CONFIGS) overlap with OPENMOE_PROGRESS=poll: the collectives
#                 driven from the compute thread, not the progress thread
# and the same two ranks on one host (shared memory) blocking and overlapped. Per run: the median
# step of steps 3..STEPS, and per phase what was waited for (the metrics' `timing`, max over
# ranks, median over the same steps): grad_all_reduce (the reduction left after the backward),
# the expert exchange (dispatch_* + combine_*: rows crossing ranks, waits included).
#
#   bench/multinode_bench.sh [OUT_PREFIX]      default bench/results/multinode_bench -> .csv .png
#
# Environment: STEPS (8), ROUNDS (1: every configuration once per round, rounds interleaved so
# that load drifts hit all alike), RATES ("none 1gbit 300mbit"), CONFIGS ("blocking overlap
# overlap_bf16"), CHUNKS (unset: no chunked runs), BUCKET_MB (unset: the default), OPENMOE_BIN.
# Needs root (network namespaces); ~40 s per run here. Prints the table it writes.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix="${1:-$root/bench/results/multinode_bench}"
steps="${STEPS:-8}"
rounds="${ROUNDS:-1}"
read -r -a rates <<<"${RATES:-none 1gbit 300mbit}"
read -r -a configs <<<"${CONFIGS:-blocking overlap overlap_bf16}"
bin="${OPENMOE_BIN:-$root/build/launch/openmoe}"
[[ -x "$bin" ]] || { echo "$0: $bin is not built (launch/build.sh openmoe)" >&2; exit 1; }
"$root/launch/test_hosts.sh" --check >/dev/null || { echo "$0: no test hosts here" >&2; exit 1; }
mkdir -p "$(dirname "$prefix")"
tmp="$(mktemp -d /tmp/openmoe_multinode.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT

settings() {  # configuration -> --set flags
  local c="$1" sets=()
  case "$c" in
    blocking*) sets+=(--set train.overlap_grad_reduce=false) ;;
    overlap_bf16*) sets+=(--set train.grad_reduce_dtype=BF16) ;;
  esac
  [[ "$c" == *_chunked ]] && sets+=(--set "train.expert_exchange_chunks=$CHUNKS")
  [[ -n "${BUCKET_MB:-}" ]] && sets+=(--set "train.grad_bucket_mb=$BUCKET_MB")
  echo "${sets[@]}"
}

all_configs=("${configs[@]}")
if [[ -n "${CHUNKS:-}" ]]; then
  for c in "${configs[@]}"; do [[ "$c" == blocking ]] || all_configs+=("${c}_chunked"); done
fi

echo "link,config,round,median_step_s,grad_all_reduce_waited_s,exchange_s,exchange_mpi_s,steps" >"$tmp/rows.csv"
for round in $(seq 1 "$rounds"); do
  for link in one_host "${rates[@]}"; do
    for c in "${all_configs[@]}"; do
      [[ "$link" == one_host && "$c" != blocking && "$c" != overlap ]] && continue
      metrics="$tmp/$link.$c.$round.jsonl"
      # shellcheck disable=SC2046  # settings are words
      args=(train --job "$root/launch/configs/bench_small.pbtxt" --set "train.steps=$steps"
            --set logging.print_every=100 --set "logging.metrics_path=$metrics" --resume never
            $(settings "$c"))
      echo "== $link $c (round $round)" >&2
      poll_env=()
      [[ "$c" == overlap_poll* ]] && poll_env=(-x OPENMOE_PROGRESS=poll)
      if [[ "$link" == one_host ]]; then
        mpirun --allow-run-as-root --oversubscribe --bind-to none --mca mpi_yield_when_idle 1 \
          ${poll_env[@]+"${poll_env[@]}"} -np 2 "$bin" "${args[@]}" >"$tmp/log" 2>&1 ||
          { cat "$tmp/log" >&2; exit 1; }
      else
        rate_args=()
        [[ "$link" != none ]] && rate_args=(--rate "$link")
        OPENMOE_BIN="$bin" MPIRUN_ARGS="${MPIRUN_ARGS:-} ${poll_env[*]:-}" \
          "$root/launch/test_hosts.sh" ${rate_args[@]+"${rate_args[@]}"} \
          "${args[@]}" >"$tmp/log" 2>&1 || { cat "$tmp/log" >&2; exit 1; }
      fi
      python3 - "$metrics" "$link" "$c" "$round" >>"$tmp/rows.csv" <<'PY'
import json, statistics, sys
path, link, config, rnd = sys.argv[1:5]
steps = [json.loads(l) for l in open(path) if '"record":"step"' in l]
steps = [s for s in steps if s["step"] >= 3]  # steps count from 1; the first two warm up
def med(f):
    return statistics.median(f(s) for s in steps)
t = lambda s, k: (s.get("timing") or {}).get(k) or 0.0
exchange = lambda s: sum(t(s, k) for k in ("dispatch_forward", "combine_forward",
                                             "dispatch_backward", "combine_backward"))
rows_mpi = lambda s: ((s.get("timing_exchange") or {}).get("rows") or 0.0)
print(f"{link},{config},{rnd},{med(lambda s: s['step_seconds']):.4f},"
      f"{med(lambda s: t(s, 'grad_all_reduce')):.4f},{med(exchange):.4f},{med(rows_mpi):.4f},{len(steps)}")
PY
      tail -1 "$tmp/rows.csv" >&2
    done
  done
done

# One row per (link, configuration): medians over rounds, and the ratio to the unshaped link's
# step of the same configuration.
python3 - "$tmp/rows.csv" "$prefix.csv" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
keys = []
for r in rows:
    if (r["link"], r["config"]) not in keys: keys.append((r["link"], r["config"]))
def med(link, config, col):
    v = [float(r[col]) for r in rows if r["link"] == link and r["config"] == config]
    return statistics.median(v) if v else float("nan")
with open(sys.argv[2], "w") as f:
    f.write("link,config,median_step_s,vs_unshaped,grad_all_reduce_waited_s,exchange_s,exchange_mpi_s,rounds\n")
    for link, config in keys:
        step = med(link, config, "median_step_s")
        base = med("none", config, "median_step_s")
        n = sum(1 for r in rows if r["link"] == link and r["config"] == config)
        f.write(f"{link},{config},{step:.3f},{step / base:.3f},"
                f"{med(link, config, 'grad_all_reduce_waited_s'):.3f},{med(link, config, 'exchange_s'):.3f},"
                f"{med(link, config, 'exchange_mpi_s'):.3f},{n}\n")
PY
column -s, -t "$prefix.csv"
command -v gnuplot >/dev/null 2>&1 || "$root/launch/install_deps.sh" gnuplot-nox
gnuplot -e "in='$prefix.csv'; out='$prefix.png'" "$root/bench/multinode_plot.gp"
echo "wrote $prefix.csv and $prefix.png"
