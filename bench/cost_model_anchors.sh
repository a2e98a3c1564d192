#!/usr/bin/env bash
# The cost model against published TPU v3 step times (issues 13 and 26): `openmoe plan --json` on
# every job in launch/configs/anchors/: the calibration set (GShard, Lepikhin et al. 2020, Table 3;
# the constants are fitted on it) and the small-model check (Switch Transformer, Fedus et al. 2021,
# Table 1: T5-Base-class models on 32 cores; not fitted). Writes
#   bench/results/cost_model_anchors.csv   job, published and predicted steps/s and step time,
#                                          residual (predicted step time / published - 1), parts
#   bench/results/cost_model_anchors.png   predicted vs published step time, with the +-20% band
#   parallel/cost/calibration_residuals.h  the residual ranges `openmoe plan` prints (rebuild after)
# and prints the README's table. Env: OPENMOE_BIN (build/launch/openmoe), PLOT (1).
# gnuplot-nox is installed first if gnuplot is missing, as bench/scaling_v3.sh does.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${OPENMOE_BIN:-$root/build/launch/openmoe}
out=$root/bench/results
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Every anchor: its set (calibration: the constants are fitted on these; check: not fitted, the
# small-model check of issue 26), the published figure, its unit, and for examples/s the tokens of
# one example in the job's token-layers (launch/configs/anchors/t5_base.pbtxt: 313), and the source.
anchors="
gshard_2048e_36l calibration 0.72 steps/s - GShard_Table_3
gshard_2048e_12l calibration 2.15 steps/s - GShard_Table_3
gshard_512e_36l calibration 1.05 steps/s - GShard_Table_3
gshard_512e_12l calibration 3.28 steps/s - GShard_Table_3
t5_base check 1600 examples/s 313 Switch_Transformer_Table_1
t5_large check 470 examples/s 313 Switch_Transformer_Table_1
switch_base_cf1 check 1000 examples/s 313 Switch_Transformer_Table_1
switch_base_cf125 check 910 examples/s 313 Switch_Transformer_Table_1
switch_base_cf2 check 860 examples/s 313 Switch_Transformer_Table_1
moe_base_cf1 check 860 examples/s 313 Switch_Transformer_Table_1
moe_base_cf125 check 790 examples/s 313 Switch_Transformer_Table_1
moe_base_cf2 check 840 examples/s 313 Switch_Transformer_Table_1"
while read -r name set value unit tokens source; do
  [ -n "$name" ] || continue
  "$bin" plan --json --job "$root/launch/configs/anchors/$name.pbtxt" > "$tmp/$name.json"
  echo "$name $set $value $unit $tokens $source" >> "$tmp/list"
done <<< "$anchors"
python3 - "$tmp" "$out/cost_model_anchors.csv" "$root/parallel/cost/calibration_residuals.h" <<'PY'
import csv, json, re, sys
tmp, csv_path, header_path = sys.argv[1:]
rows = []
for line in open(f"{tmp}/list"):
    name, set_, value, unit, tokens, source = line.split()
    plan = json.load(open(f"{tmp}/{name}.json"))
    c = plan["cost_model"]
    b = c["breakdown"]
    if unit == "steps/s":
        pub_s = 1 / float(value)
    else:  # examples/s: the step's examples are its tokens / tokens per example
        pub_s = plan["batch"]["tokens_per_step"] / float(tokens) / float(value)
    pred = c["step_seconds"]
    rows.append({"job": name, "published_steps_per_s": f"{1 / pub_s:.4f}",
                 "published_step_s": f"{pub_s:.4f}", "predicted_step_s": f"{pred:.4f}",
                 "predicted_steps_per_s": f"{1 / pred:.3f}",
                 "residual": f"{pred / pub_s - 1:+.4f}",
                 "compute_s": f'{b["compute"]:.4f}', "memory_s": f'{b["memory"]:.4f}',
                 "all_to_all_s": f'{b["all_to_all"]:.4f}', "all_reduce_s": f'{b["all_reduce"]:.4f}',
                 "matmul_efficiency": c["config"]["matmul_efficiency"],
                 "all_to_all_efficiency": c["config"]["all_to_all_efficiency"],
                 "set": set_, "published": f"{value} {unit}", "source": source.replace("_", " ")})
with open(csv_path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
src = open(header_path).read()
for prefix, set_ in (("k", "calibration"), ("kCheck", "check")):
    res = [float(r["residual"]) for r in rows if r["set"] == set_]
    if not res:
        res = [0.0]
    n = sum(1 for r in rows if r["set"] == set_)
    src = re.sub(rf"\b{prefix}Rows = [^;]*;", f"{prefix}Rows = {n};", src)
    src = re.sub(rf"\b{prefix}MinResidual = [^;]*;", f"{prefix}MinResidual = {min(res):.4f};", src)
    src = re.sub(rf"\b{prefix}MaxResidual = [^;]*;", f"{prefix}MaxResidual = {max(res):.4f};", src)
open(header_path, "w").write(src)
print("| anchor | set | source | published | predicted step | published step | residual (step time) | compute | memory | all-to-all | all-reduce |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for r in rows:
    print(f'| {r["job"]} | {r["set"]} | {r["source"]} | {r["published"]} | {r["predicted_step_s"]} s | '
          f'{r["published_step_s"]} s | {100 * float(r["residual"]):+.1f}% | {r["compute_s"]} s | '
          f'{r["memory_s"]} s | {r["all_to_all_s"]} s | {r["all_reduce_s"]} s |')
for set_ in ("calibration", "check"):
    res = [float(r["residual"]) for r in rows if r["set"] == set_]
    if res:
        print(f"{set_}: residuals {100 * min(res):+.1f}%..{100 * max(res):+.1f}%")
PY
if [ "${PLOT:-1}" = 1 ]; then
  command -v gnuplot >/dev/null || "$root/launch/install_deps.sh" gnuplot-nox
  gnuplot <<GP
set terminal pngcairo size 800,600 noenhanced
set output '$out/cost_model_anchors.png'
set datafile separator ','
set title 'TPU v3 cost model vs GShard Table 3 and Switch Transformer Table 1 (step time)'
set xlabel 'published step time (s)'
set ylabel 'predicted step time (s)'
set logscale xy
set xrange [0.2:6]
set yrange [0.2:6]
set key top left
plot x title 'predicted = published' lc rgb 'black', \
     1.2*x title '+20%' dt 2 lc rgb 'gray', 0.8*x title '-20%' dt 2 lc rgb 'gray', \
     '$out/cost_model_anchors.csv' skip 1 using 3:4:1 with labels point pt 7 offset 1,0.5 font ',8' title 'anchors'
GP
fi
