#!/usr/bin/env bash
# Scaling on this machine: the tiny job for a few steps on each v3 topology (64, 128, 256, 512
# simulated chips) with NP MPI ranks, one line per topology: chips, ranks, tokens/s, peak memory.
#
#   bench/scaling_v3.sh [OUT.csv]        (default bench/results/scaling_v3_$SCALING.csv; SCALING=strong or weak)
#
# Every topology trains the same global batch (512 rows x 64 tokens, routing groups of one
# 64-token row, expert_parallel 4), so the routing and the losses are the same everywhere and only
# the number of chips each rank simulates changes (32 to 256 with 2 ranks); the data shard per rank
# stays the same, so peak memory per rank should too. tokens/s is measured over the steps after
# the first (which allocates every buffer): tokens of those steps / their summed step_seconds,
# from the metrics JSON lines. Peak memory per rank is the trainer's own `peak_rss_mib rank R`
# report, or, if the binary does not print it, /usr/bin/time's maximum RSS of the largest process.
#
# Environment: NP (2), STEPS (3), BATCH_ROWS (512), GROUP_SIZE (64), EXPERT_PARALLEL (4),
# OPENMOE_BIN (build/launch/openmoe), TOPOLOGIES ("64 128 256 512"), PLOT (1: plot when both
# bench/results/scaling_v3_{strong,weak}.csv exist; 0: never).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/bench/results/scaling_v3_${SCALING:-strong}.csv}"
np="${NP:-2}" steps="${STEPS:-3}"
group_size="${GROUP_SIZE:-64}" ep="${EXPERT_PARALLEL:-4}"
# strong: one global batch (BATCH_ROWS) on every slice; weak: ROWS_PER_CHIP rows on every chip.
scaling="${SCALING:-strong}" rows_per_chip="${ROWS_PER_CHIP:-1}"
(( steps >= 2 )) || { echo "$0: STEPS must be >= 2 (the first step is not timed)" >&2; exit 2; }
mkdir -p "$(dirname "$out")"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "scaling,topology,chips,ranks,chips_per_rank,expert_parallel,batch_rows,seq_len,group_size,steps_timed,tokens_per_s,mean_step_s,final_loss,v3_step_s,v3_compute_s,v3_all_to_all_s,v3_all_reduce_s,v3_tokens_per_s,v3_mfu,drop_fraction,load_balance_loss,peak_rss_mib_max,peak_rss_mib_per_rank,rss_source" >"$out"
printf '%-8s %6s %5s %10s %12s %9s %14s\n' topology chips ranks chips/rank tokens/s step_s peak_MiB/rank
for n in ${TOPOLOGIES:-64 128 256 512}; do
  log="$tmp/v3-$n.log" metrics="$tmp/v3-$n.jsonl"
  if [[ "$scaling" == weak ]]; then batch_rows=$(( rows_per_chip * n )); else batch_rows="${BATCH_ROWS:-512}"; fi
  # /usr/bin/time -v reports the largest RSS among mpirun's children: the fallback for binaries
  # without the peak_rss_mib report.
  /usr/bin/time -v -o "$tmp/time-$n.txt" "$root/launch/mpirun_local.sh" "$np" train \
    --job "$root/launch/configs/tiny.pbtxt" --job "$root/launch/configs/topology/v3-$n.pbtxt" \
    --set train.steps="$steps" --set train.batch_rows="$batch_rows" \
    --set router.group_size="$group_size" --set mesh.expert_parallel="$ep" \
    --set logging.print_every=1 --set logging.metrics_path="$metrics" >"$log" 2>&1 ||
    { echo "$0: v3-$n failed; its output:" >&2; cat "$log" >&2; exit 1; }

  chips_per_rank=$(( n / np ))
  seq_len="$(sed -n 's/^ *seq_len: *\([0-9]*\).*/\1/p' "$root/launch/configs/tiny.pbtxt" | head -1)"
  # Steps 2..STEPS from the metrics' step records (the file also holds a run header and summary).
  steps_only="$tmp/v3-$n.steps.jsonl"
  grep '"record":"step"' "$metrics" >"$steps_only"
  read -r timed tps mean_s loss < <(awk -v RS='\n' '
      { match($0, /"tokens":[0-9]+/); tok = substr($0, RSTART + 9, RLENGTH - 9)
        match($0, /"step_seconds":[0-9.eE+-]+/); sec = substr($0, RSTART + 15, RLENGTH - 15)
        match($0, /"loss":[0-9.eE+-]+/); loss = substr($0, RSTART + 7, RLENGTH - 7)
        if (NR > 1) { t += tok; s += sec; k++ } }
      END { printf "%d %.0f %.4f %s\n", k, (s > 0 ? t / s : 0), (k > 0 ? s / k : 0), loss }' "$steps_only")
  # The cost model's v3 prediction and the routing health of the last step.
  last="$(tail -1 "$steps_only")"
  field() { grep -o "\"$1\":[0-9.eE+-]*" <<<"$2" | head -1 | cut -d: -f2; }
  v3="$(grep -o '"v3_predicted":{[^}]*}' <<<"$last")"
  drop="$(grep -o '"drop_fraction":[0-9.eE+-]*' <<<"$last" | cut -d: -f2 | awk '{ s += $1; k++ } END { printf "%.4f", k ? s / k : 0 }')"
  v3_cols="$(field step_seconds "$v3"),$(field compute_seconds "$v3"),$(field all_to_all_seconds "$v3"),$(field all_reduce_seconds "$v3"),$(field tokens_per_second "$v3"),$(field mfu "$v3")"
  lb="$(field load_balance_loss "$last")"
  per_rank="$(sed -n 's/^peak_rss_mib rank [0-9]*: *\([0-9.]*\).*/\1/p' "$log" | paste -sd';' -)"
  if [[ -n "$per_rank" ]]; then
    source_="openmoe"
    peak="$(tr ';' '\n' <<<"$per_rank" | sort -g | tail -1)"
  else
    source_="time-v"
    peak="$(awk -F': ' '/Maximum resident set size/ { printf "%.1f", $2 / 1024 }' "$tmp/time-$n.txt")"
    per_rank=""
  fi
  echo "$scaling,v3-$n,$n,$np,$chips_per_rank,$ep,$batch_rows,$seq_len,$group_size,$timed,$tps,$mean_s,$loss,$v3_cols,$drop,$lb,$peak,$per_rank,$source_" >>"$out"
  printf '%-8s %6d %5d %10d %12s %9s %14s\n' "v3-$n" "$n" "$np" "$chips_per_rank" "$tps" "$mean_s" "${per_rank:-$peak (max)}"
done
echo "wrote $out"
# Once both sweeps are in bench/results, plot them (bench/scaling_v3_plot.gp) into
# bench/results/scaling_v3.png; gnuplot-nox is installed first if gnuplot is missing (a fresh
# machine has none). PLOT=0 skips this.
strong_csv="$root/bench/results/scaling_v3_strong.csv" weak_csv="$root/bench/results/scaling_v3_weak.csv"
if [[ "${PLOT:-1}" != 0 && -s "$strong_csv" && -s "$weak_csv" ]]; then
  command -v gnuplot >/dev/null || "$root/launch/install_deps.sh" gnuplot-nox
  gnuplot -e "strong='$strong_csv'; weak='$weak_csv'; out='$root/bench/results/scaling_v3.png'" \
    "$root/bench/scaling_v3_plot.gp"
  echo "wrote $root/bench/results/scaling_v3.png"
fi
