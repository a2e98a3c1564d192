#!/usr/bin/env bash
# The cost model against its calibration set (issue 13): `openmoe plan --json` on every job in
# launch/configs/anchors/ (GShard, Lepikhin et al. 2020, Table 3), predicted against published
# step times. Writes
#   bench/results/cost_model_anchors.csv   job, published and predicted steps/s and step time,
#                                          residual (predicted step time / published - 1), parts
#   bench/results/cost_model_anchors.png   predicted vs published step time, with the +-20% band
#   parallel/cost/calibration_residuals.h  the residual range `openmoe plan` prints (rebuild after)
# and prints the README's table. Env: OPENMOE_BIN (build/launch/openmoe), PLOT (1).
# gnuplot-nox is installed first if gnuplot is missing, as bench/scaling_v3.sh does.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${OPENMOE_BIN:-$root/build/launch/openmoe}
out=$root/bench/results
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Published steps/s of each anchor (GShard Table 3).
declare -A published=([gshard_2048e_36l]=0.72 [gshard_2048e_12l]=2.15 [gshard_512e_36l]=1.05
                      [gshard_512e_12l]=3.28)
for job in "$root"/launch/configs/anchors/*.pbtxt; do
  name=$(basename "$job" .pbtxt)
  "$bin" plan --json --job "$job" > "$tmp/$name.json"
  echo "$name ${published[$name]}" >> "$tmp/list"
done
python3 - "$tmp" "$out/cost_model_anchors.csv" "$root/parallel/cost/calibration_residuals.h" <<'PY'
import csv, json, sys
tmp, csv_path, header_path = sys.argv[1:]
rows = []
for line in open(f"{tmp}/list"):
    name, sps = line.split()
    c = json.load(open(f"{tmp}/{name}.json"))["cost_model"]
    b = c["breakdown"]
    pub_s = 1 / float(sps)
    pred = c["step_seconds"]
    rows.append({"job": name, "published_steps_per_s": sps,
                 "published_step_s": f"{pub_s:.4f}", "predicted_step_s": f"{pred:.4f}",
                 "predicted_steps_per_s": f"{1 / pred:.3f}",
                 "residual": f"{pred / pub_s - 1:+.4f}",
                 "compute_s": f'{b["compute"]:.4f}', "memory_s": f'{b["memory"]:.4f}',
                 "all_to_all_s": f'{b["all_to_all"]:.4f}', "all_reduce_s": f'{b["all_reduce"]:.4f}',
                 "matmul_efficiency": c["config"]["matmul_efficiency"],
                 "all_to_all_efficiency": c["config"]["all_to_all_efficiency"]})
with open(csv_path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
res = [float(r["residual"]) for r in rows]
src = open(header_path).read()
import re
src = re.sub(r"kRows = [^;]*;", f"kRows = {len(rows)};", src)
src = re.sub(r"kMinResidual = [^;]*;", f"kMinResidual = {min(res):.4f};", src)
src = re.sub(r"kMaxResidual = [^;]*;", f"kMaxResidual = {max(res):.4f};", src)
open(header_path, "w").write(src)
print("| anchor (GShard Table 3) | published steps/s | predicted steps/s | residual (step time) | compute | memory | all-to-all | all-reduce |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for r in rows:
    print(f'| {r["job"]} | {r["published_steps_per_s"]} | {r["predicted_steps_per_s"]} | '
          f'{100 * float(r["residual"]):+.1f}% | {r["compute_s"]} s | {r["memory_s"]} s | '
          f'{r["all_to_all_s"]} s | {r["all_reduce_s"]} s |')
print(f"residuals {100 * min(res):+.1f}%..{100 * max(res):+.1f}%")
PY
if [ "${PLOT:-1}" = 1 ]; then
  command -v gnuplot >/dev/null || "$root/launch/install_deps.sh" gnuplot-nox
  gnuplot <<GP
set terminal pngcairo size 800,600 noenhanced
set output '$out/cost_model_anchors.png'
set datafile separator ','
set title 'TPU v3 cost model vs GShard Table 3 (step time)'
set xlabel 'published step time (s)'
set ylabel 'predicted step time (s)'
set logscale xy
set xrange [0.2:2]
set yrange [0.2:2]
set key top left
plot x title 'predicted = published' lc rgb 'black', \
     1.2*x title '+20%' dt 2 lc rgb 'gray', 0.8*x title '-20%' dt 2 lc rgb 'gray', \
     '$out/cost_model_anchors.csv' skip 1 using 3:4:1 with labels point pt 7 offset 1,0.5 font ',8' title 'anchors'
GP
fi
