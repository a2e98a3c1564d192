#!/usr/bin/env bash
# Sweeps of the TPU v3 cost model (`openmoe plan --json`, parallel/cost/cost_model.h); runs nothing.
#
#   bench/plan_sweep.sh [OUT_DIR]          (default bench/results)
#
# Writes, under OUT_DIR:
#   plan_sweep_8b.csv        OpenMoE-8B/32E (launch/configs/openmoe_8b_32e.pbtxt) on v3 slices of
#                            64, 128, 256 and 512 chips x expert_parallel 1..32: predicted step
#                            time and its parts, tokens/s, MFU, placements, HBM per chip. The
#                            global batch stays 1024 x 2048 tokens, one row per chip per
#                            microbatch (microbatches = 1024 / chips).
#   fixed_bytes_scaling.csv  weak scaling at fixed bytes per chip (8B/32E dims, one 2048-token row
#                            per chip per step): per call, the shared-gradient all-reduce over every
#                            chip (12.2 GiB fp32 per chip, E = 32) and the all-to-all over (a) the
#                            whole slice (E = ep = chips, so the buffer stays 2560 rows x 2048 x
#                            bf16 = 10 MiB per chip) and (b) fixed groups of 32 chips (ep = 32).
#   plan_sweep_8b.png, fixed_bytes_scaling.png   plots of both (gnuplot).
#   layout_search_{8b,34b}.{txt,json}  `openmoe plan --search` of OpenMoE-8B/32E on v3-256 and
#                            34B/32E on v3-512: every valid (data, expert, model) layout, ranked.
# Needs python3 (JSON to CSV) and gnuplot; installs the Debian packages if missing (apt-get, as
# root or through sudo).
#
# Environment: OPENMOE_BIN (build/launch/openmoe), CHIPS ("64 128 256 512"), EPS ("1 2 4 8 16 32").
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/bench/results}"
bin="${OPENMOE_BIN:-$root/build/launch/openmoe}"
chips_list="${CHIPS:-64 128 256 512}"
eps="${EPS:-1 2 4 8 16 32}"
job="$root/launch/configs/openmoe_8b_32e.pbtxt"
# The proto defaults are the constants fitted on GShard Table 3 (bench/cost_model_anchors.sh);
# CALIBRATED="--set cost_model.matmul_efficiency=... ..." overrides them.
read -r -a calibrated <<<"${CALIBRATED-}"
[[ -x "$bin" ]] || { echo "$0: $bin not built (cmake --build build --target openmoe)" >&2; exit 2; }

need=()
command -v python3 >/dev/null || need+=(python3)
command -v gnuplot >/dev/null || need+=(gnuplot-nox)
if ((${#need[@]})); then
  sudo_=""; [[ $(id -u) -eq 0 ]] || sudo_="sudo"
  $sudo_ apt-get update -qq && $sudo_ apt-get install -y -qq "${need[@]}" >/dev/null
fi
mkdir -p "$out"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

torus() {  # chips -> "X Y" (DESIGN section 7)
  case "$1" in 64) echo "8 8" ;; 128) echo "8 16" ;; 256) echo "16 16" ;; 512) echo "16 32" ;;
    *) echo "$0: no v3 torus for $1 chips" >&2; exit 2 ;; esac
}

plan() {  # chips, then --set arguments -> JSON file path on stdout
  local n="$1"; shift
  read -r x y < <(torus "$n")
  local f
  f="$(mktemp "$tmp/plan-XXXXXX.json")"
  "$bin" plan --json --job "$job" --set topology.num_chips="$n" --set topology.torus_x="$x" \
    --set topology.torus_y="$y" "${calibrated[@]}" "$@" >"$f"
  echo "$f"
}

# 1. OpenMoE-8B/32E over chips x expert_parallel.
list="$tmp/sweep.txt"
: >"$list"
for n in $chips_list; do
  for ep in $eps; do
    (( ep <= n )) || continue
    f="$(plan "$n" --set mesh.expert_parallel="$ep" --set train.microbatches=$((1024 / n)))"
    echo "$n $ep $f" >>"$list"
  done
done
python3 - "$list" "$out/plan_sweep_8b.csv" <<'EOF'
import csv, json, sys
rows = []
for line in open(sys.argv[1]):
    chips, ep, path = line.split()
    p = json.load(open(path)); c = p["cost_model"]; b = c["breakdown"]
    col = {x["kind"]: x for x in c["collectives"]}
    gib = 2.0 ** 30
    rows.append({
        "chips": p["mesh"]["num_chips"], "torus": f'{p["mesh"]["torus_x"]}x{p["mesh"]["torus_y"]}',
        "expert_parallel": p["mesh"]["expert_parallel"], "microbatches": p["batch"]["microbatches"],
        "step_s": f'{c["step_seconds"]:.6g}', "compute_s": f'{b["compute"]:.6g}',
        "memory_s": f'{b["memory"]:.6g}', "all_to_all_s": f'{b["all_to_all"]:.6g}',
        "all_reduce_s": f'{b["all_reduce"]:.6g}',
        "all_reduce_shared_s": f'{col["all_reduce_shared"]["seconds"]:.6g}',
        "all_reduce_experts_s": f'{col["all_reduce_experts"]["seconds"]:.6g}',
        "tokens_per_s": f'{c["tokens_per_second"]:.0f}', "mfu": f'{c["mfu"]:.4f}',
        "a2a_placement": col["all_to_all"]["placement"],
        "replica_placement": col["all_reduce_experts"]["placement"],
        "a2a_mib_per_chip_call": f'{col["all_to_all"]["bytes_per_chip"] / 2**20:.4g}',
        "state_gib": f'{c["memory_per_core"]["state_bytes"] / gib:.2f}',
        "activation_gib": f'{c["memory_per_core"]["activation_bytes"] / gib:.2f}',
        "fits_32gib": str(c["memory_per_core"]["fits"]).lower(),
    })
# Grouped by expert_parallel, so each size's points are consecutive (one line per size in the plot).
rows.sort(key=lambda r: (r["expert_parallel"], r["chips"]))
with open(sys.argv[2], "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader(); w.writerows(rows)
EOF

# 2. Fixed bytes per chip: weak scaling, one row per chip per step.
list2="$tmp/fixed.txt"
: >"$list2"
for n in $chips_list; do
  common=(--set train.batch_rows="$n" --set train.microbatches=1)
  whole="$(plan "$n" "${common[@]}" --set model.num_experts="$n" --set mesh.expert_parallel="$n")"
  fixed="$(plan "$n" "${common[@]}" --set mesh.expert_parallel=32)"
  echo "$n $whole $fixed" >>"$list2"
done
python3 - "$list2" "$out/fixed_bytes_scaling.csv" <<'EOF'
import csv, json, sys
rows = []
for line in open(sys.argv[1]):
    chips, whole, fixed = line.split()
    w = {x["kind"]: x for x in json.load(open(whole))["cost_model"]["collectives"]}
    p = json.load(open(fixed))
    g = {x["kind"]: x for x in p["cost_model"]["collectives"]}
    rows.append({
        "chips": chips, "torus": f'{p["mesh"]["torus_x"]}x{p["mesh"]["torus_y"]}',
        "all_reduce_bytes_per_chip": f'{g["all_reduce_shared"]["bytes_per_chip"]:.0f}',
        "all_reduce_s": f'{g["all_reduce_shared"]["seconds_per_call"]:.6g}',
        "all_reduce_placement": g["all_reduce_shared"]["placement"],
        "a2a_bytes_per_chip": f'{w["all_to_all"]["bytes_per_chip"]:.0f}',
        "a2a_slice_s": f'{w["all_to_all"]["seconds_per_call"]:.6g}',
        "a2a_slice_placement": w["all_to_all"]["placement"],
        "a2a_ep32_s": f'{g["all_to_all"]["seconds_per_call"]:.6g}',
        "a2a_ep32_placement": g["all_to_all"]["placement"],
    })
with open(sys.argv[2], "w", newline="") as f:
    wr = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
    wr.writeheader(); wr.writerows(rows)
EOF

gnuplot -e "csv='$out/plan_sweep_8b.csv'; fixed='$out/fixed_bytes_scaling.csv'; \
  png1='$out/plan_sweep_8b.png'; png2='$out/fixed_bytes_scaling.png'; eps='$eps'" \
  "$root/bench/scaling_plots.gp"
# 3. Layout search (data x expert x model) of the two large configs on their slices.
for m in "8b 256" "34b 512"; do
  read -r size n <<<"$m"
  for fmt in txt json; do
    flag=(); [[ $fmt == json ]] && flag=(--json)
    "$bin" plan --search "${flag[@]}" --job "$root/launch/configs/openmoe_${size}_32e.pbtxt" \
      --job "$root/launch/configs/topology/v3-$n.pbtxt" "${calibrated[@]}" \
      >"$out/layout_search_$size.$fmt"
  done
done
echo "wrote $out/plan_sweep_8b.csv $out/fixed_bytes_scaling.csv, their PNGs and layout_search_*"
