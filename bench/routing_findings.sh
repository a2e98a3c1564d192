#!/usr/bin/env bash
# The OpenMoE paper's three routing findings (arXiv 2402.01739, sections 4-5), measured on the
# quickstart model: trains the tiny MoE on the gathered text + code corpus exactly as
# launch/quickstart.sh does (64 simulated v3 chips on 2 MPI ranks, 300 steps, eval on the
# held-out text and code every 100 steps), with a checkpoint every 25 steps, then runs
# `openmoe analyze` on every checkpoint and prints:
#   1. context-independent specialisation: token-id specialisation vs its control;
#   2. early routing learning: top-1 agreement (per token and of the token-id -> expert table) of
#      the early checkpoints with the last;
#   3. drop towards the end: dropped fraction in the first and last tenth of the row, at the eval
#      capacity factor (2.0) and at the training one (1.25).
# Writes bench/results/routing_findings/ (analysis.json, CSVs, PNGs of analyze; findings.txt with
# the numbers; train_cf/ the analysis at the training capacity factor; eval.csv the validation
# losses during training). About 3 minutes on a quiet 2-core machine (the committed run took 23
# minutes on one shared with other builds, load ~9).
#
#   bash bench/routing_findings.sh [extra `openmoe train` args]
#
# OPENMOE_BIN=path/to/openmoe uses that binary (default: launch/build.sh builds build/). The run
# itself goes to runs/routing_findings/ (removed first); REUSE_RUN=1 skips training and analyses
# the checkpoints a previous run left there.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source launch/openmoe_bin.sh  # bin, OPENMOE_BIN
# The corpus, its tokenizer and shards (idempotent; re-prepares shards of an older format).
data/gather_corpus.sh "$bin"

run=runs/routing_findings
out=bench/results/routing_findings
jobs=(--job launch/configs/tiny.pbtxt --job launch/configs/tiny_corpus.pbtxt
      --job launch/configs/topology/v3-64.pbtxt)
# The quickstart's mesh and batch; analyze needs the same spec (routing groups of one row).
sets=(--set train.batch_rows=128 --set router.group_size=64 --set mesh.expert_parallel=4)
rm -rf "$out"
mkdir -p "$out"
start=$(date +%s)
if [[ "${REUSE_RUN:-0}" != 1 ]]; then
rm -rf "$run"
mkdir -p "$run"
launch/mpirun_local.sh 2 train "${jobs[@]}" "${sets[@]}" \
  --set train.steps=300 --set logging.print_every=50 \
  --set logging.metrics_path="$run/metrics.jsonl" \
  --set checkpoint.dir="$run/ckpt" --set checkpoint.every_steps=25 --set checkpoint.keep_last=100 \
  --set checkpoint.resume=never "$@" | tee "$run/train.log"
fi
trained=$(date +%s)
[[ "${REUSE_RUN:-0}" != 1 ]] || trained=$start

mapfile -t ckpts < <(find "$run/ckpt" -mindepth 1 -maxdepth 1 -type d -name 'step_*' ! -name '*.tmp' | sort)
[[ ${#ckpts[@]} -ge 2 ]] || { echo "$0: training left fewer than 2 checkpoints" >&2; exit 1; }
args=()
for c in "${ckpts[@]}"; do args+=(--checkpoint "$c"); done
"$bin" analyze "${args[@]}" "${jobs[@]}" "${sets[@]}" --rows 64 --out "$out" \
  | tee "$out/analyze.txt"
mkdir -p "$out/train_cf"
"$bin" analyze "${args[@]}" "${jobs[@]}" "${sets[@]}" \
  --set router.eval_capacity_factor=1.25 --rows 64 --out "$out/train_cf" --no_plots \
  >"$out/train_cf/analyze.txt" 2>&1 || { cat "$out/train_cf/analyze.txt" >&2; exit 1; }
# Keep only what the README cites from the second analysis.
find "$out/train_cf" -type f ! -name analysis.json ! -name drop_by_position.csv ! -name analyze.txt -delete

python3 - "$out" "$run/metrics.jsonl" "$(( trained - start ))" <<'EOF' | tee "$out/findings.txt"
import json, sys
out, metrics, train_seconds = sys.argv[1], sys.argv[2], int(sys.argv[3])
a = json.load(open(f"{out}/analysis.json"))
t = json.load(open(f"{out}/train_cf/analysis.json"))
steps = [c["step"] for c in a["checkpoints"]]
mean = lambda xs: sum(xs) / len(xs)
print(f"routing findings: tiny MoE (4 experts, top-2, MoE layers 1 and 3), {len(steps)} checkpoints "
      f"(steps {steps[0]}..{steps[-1]}), {len(a['sources'])} sources x {a['sources'][0]['rows']} rows "
      f"x {a['seq_len']} tokens ({', '.join(s['name'] for s in a['sources'])}); "
      + (f"training took {train_seconds} s" if train_seconds > 0 else "training: the earlier run (REUSE_RUN=1)"))
print("1. context-independent specialisation (share of an id's occurrences on its most frequent "
      f"expert, ids seen >= {a['min_count']} times; control: experts drawn from the layer's distribution)")
for s, c in zip(a["token_specialization"], a["specialization_control"]):
    print(f"   layer {s['layer']}: {s['value']:.3f} vs control {c['value']:.3f} "
          f"({s['ids']} ids, {s['occurrences']} tokens); at step {steps[0]}: "
          f"{s['by_checkpoint'][0]:.3f} vs {c['by_checkpoint'][0]:.3f}")
for d in a["domain_expert_share"]:
    js = ", ".join(f"{j['a']}/{j['b']} {j['js_bits']:.3f}" for j in d["jensen_shannon"])
    print(f"   layer {d['layer']}: Jensen-Shannon between sources' expert shares (bits): {js}")
print("2. early routing learning (agreement with the last checkpoint, step %d)" % steps[-1])
for g in a["routing_agreement"]:
    row = "  ".join(f"{st}:{x:.2f}/{y:.2f}" for st, x, y in
                    zip(steps, g["token_top1"], g["token_id_table"]))
    print(f"   layer {g['layer']} (step: per-token top-1 / token-id table): {row}")
print("3. drop towards the end (dropped fraction of the first / second choice, first and last "
      "tenth of the row)")
for name, r in (("eval capacity factor %.2g" % a["capacity_factor"], a),
                ("training capacity factor %.3g" % t["capacity_factor"], t)):
    for d in r["drop_by_position"]:
        c1, c2 = d["by_choice"][0], d["by_choice"][1]
        print(f"   {name}, layer {d['layer']}: first tenth {c1[0]:.3f} / {c2[0]:.3f}, "
              f"last tenth {c1[-1]:.3f} / {c2[-1]:.3f}")
evals = []
for line in open(metrics):
    r = json.loads(line)
    if r.get("record") == "step" and "eval" in r:
        evals.append((r["step"], {k: v["cross_entropy"] for k, v in r["eval"].items()}))
with open(f"{out}/eval.csv", "w") as f:
    names = list(evals[0][1]) if evals else []
    f.write(",".join(["step"] + names) + "\n")
    for step, ce in evals:
        f.write(",".join([str(step)] + [f"{ce[n]:.6f}" for n in names]) + "\n")
for step, ce in evals:
    print(f"   eval after step {step}: " + ", ".join(f"{k} ce {v:.3f}" for k, v in ce.items()))
EOF
# The run that made these numbers: its summary and eval lines.
grep -E "^run summary|^  data:|^eval after" "$run/train.log" >"$out/train_summary.txt" || true
echo "routing_findings: wrote $out/ (findings.txt, analysis.json, CSVs, PNGs)"
