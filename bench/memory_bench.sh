#!/usr/bin/env bash
# The memory bench: peak resident memory per token of a training step against seq_len, d_model
# and chips per rank, each beside the estimate `openmoe plan` and the trainer's memory check make
# (launch/memory_check.h, on the decoder's own activation model), as CSV and PNG.
#
#   bench/memory_bench.sh [OUT_PREFIX]       default: bench/results/memory_bench -> .csv, .png
#
# Every point is one `openmoe train` process of STEPS steps (default 2, one thread), so its peak
# RSS (VmHWM) is that configuration's alone, the binary, MPI and OpenBLAS included; the figures
# come from the metrics' "memory" record of the first step (launch/memory_account.h). Sweeps:
#   seq_len    tiny, 8192 tokens per step, seq_len 64..1024, train.remat NONE and FULL
#   d_model    bench_small at 2048 tokens per step, d_model 128..1024 (d_ff 2 d, heads of 64)
#   chips      bench_small with one 256-token row per chip on 4, 16 and 64 chips (v3 slices
#              from 64 chips), all on one rank, train.remat NONE and FULL
# ~6 minutes here. Environment: OPENMOE_BIN (build/launch/openmoe), STEPS.
# It installs gnuplot-nox through launch/install_deps.sh when gnuplot is missing.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix="${1:-$root/bench/results/memory_bench}"
bin="${OPENMOE_BIN:-$root/build/launch/openmoe}"
steps="${STEPS:-2}"
[[ -x "$bin" ]] || { echo "$0: $bin is not built (launch/build.sh openmoe)" >&2; exit 1; }
mkdir -p "$(dirname "$prefix")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
configs="$root/launch/configs"

csv="$prefix.csv"
echo "sweep,seq_len,d_model,chips,chips_per_rank,remat,tokens_per_rank,peak_rss_bytes,estimate_bytes,estimate_over_measured,peak_bytes_per_token,estimate_bytes_per_token,saved_bytes_per_token,tokens_per_second" >"$csv"

# point SWEEP SEQ_LEN D_MODEL CHIPS REMAT JOB_FILES... -- SETS...  (the first five: CSV labels)
point() {
  local labels=("$1" "$2" "$3" "$4" "$5"); shift 5
  local jobs=() sets=()
  while [[ "$1" != "--" ]]; do jobs+=(--job "$1"); shift; done
  shift
  for s in "$@"; do sets+=(--set "$s"); done
  local metrics="$work/metrics.jsonl"
  rm -f "$metrics"
  if ! OPENBLAS_NUM_THREADS=1 "$bin" train "${jobs[@]}" "${sets[@]}" --set train.remat="${labels[4]}" \
      --set train.steps="$steps" --set logging.print_every=1000 \
      --set logging.metrics_path="$metrics" >"$work/log" 2>&1; then
    echo "$0: a point failed (${labels[*]}: ${sets[*]}):" >&2
    tail -3 "$work/log" >&2
    return 1
  fi
  python3 - "$metrics" "${labels[@]}" >>"$csv" <<'PY'
import json, sys
records = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
steps = [r for r in records if r.get("record") == "step"]
m = next(r["memory"] for r in steps if "memory" in r)
sweep, seq_len, d_model, chips, remat = sys.argv[2:7]
rates = sorted(r["tokens_per_second"] for r in steps)
tokens = m["tokens_per_microbatch"]
saved = sum(m["activations"].values())
print(",".join(str(x) for x in [
    sweep, seq_len, d_model, chips, m["chips_per_rank"], remat, tokens, m["peak_rss"],
    int(m["estimate"]), "%.3f" % (m["estimate"] / m["peak_rss"]),
    "%.0f" % (m["peak_rss"] / tokens), "%.0f" % (m["estimate"] / tokens),
    "%.0f" % (saved / tokens), "%.0f" % rates[len(rates) // 2]]))
PY
  tail -1 "$csv"
}

for remat in REMAT_NONE REMAT_FULL; do
  for seq in 64 128 256 512 1024; do
    point seq_len $seq 64 4 $remat "$configs/tiny.pbtxt" -- train.seq_len=$seq \
      train.batch_rows=$((8192 / seq))
  done
done
for d in 128 256 512 1024; do
  point d_model 256 $d 4 REMAT_NONE "$configs/bench_small.pbtxt" -- model.d_model=$d model.num_heads=$((d / 64)) \
    model.d_ff=$((2 * d)) train.batch_rows=8 router.group_size=512
done
for remat in REMAT_NONE REMAT_FULL; do
  point chips 256 512 4 $remat "$configs/bench_small.pbtxt" -- train.batch_rows=4 \
    router.group_size=256 mesh.expert_parallel=4
  point chips 256 512 16 $remat "$configs/bench_small.pbtxt" -- topology.num_chips=16 topology.torus_x=4 \
    topology.torus_y=4 topology.chips_per_host=4 train.batch_rows=16 router.group_size=256 \
    mesh.expert_parallel=8
  point chips 256 512 64 $remat "$configs/bench_small.pbtxt" "$configs/topology/v3-64.pbtxt" -- \
    train.batch_rows=64 router.group_size=256 mesh.expert_parallel=8
done

command -v gnuplot >/dev/null 2>&1 || "$root/launch/install_deps.sh" gnuplot-nox
gnuplot -e "in='$csv'; out='$prefix.png'" "$root/bench/memory_bench_plot.gp"
echo "wrote $csv and $prefix.png"
