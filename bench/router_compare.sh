#!/usr/bin/env bash
# The routers after OpenMoE's, compared on the quickstart model (tiny MoE, 4 experts, on the
# gathered text + code corpus, UL2, 128 rows x 64 tokens per step, routing groups of one row) on
# 4 simulated v3 chips over 2 MPI ranks, one expert per chip (so half of every token's experts
# sit on the other rank and the exchange counters see real traffic). Same data, seed and steps
# for every router:
#   openmoe         top-2 softmax, load-balance loss 0.01 (OpenMoE)
#   experts_choose  each expert takes its top-C tokens of the group, C at capacity factor 2
#   sigmoid_bias    sigmoid scores, top-2 renormalised, bias balancing (rate 0.001), no
#                   load-balance loss (DeepSeek-V3's auxiliary-loss-free balancing)
#   shared_fine     8 routed experts of half the FFN, top-3, plus 1 shared expert of the same size
#                   (the same activated FFN width as top-2 of 4)
#   group_limited   2 expert groups (one per rank), each token keeps 1: both its experts on one rank
# Per router: held-out cross-entropy per domain (the eval of tiny_corpus.pbtxt after the last
# step), drop fraction, max/mean expert load (mesh-wide choices, mean over steps), rows and bytes
# exchanged across ranks, and `openmoe analyze` of its checkpoints (token-id specialisation,
# top-1 agreement of the first checkpoint with the last, drop in the first / last tenth of rows).
# Writes bench/results/router_compare/ (results.csv, results.md, one analyze folder per router).
#
#   bash bench/router_compare.sh [steps]      (default 300; ~4 min a router on a quiet machine)
#   ROUTERS="openmoe experts_choose" bash bench/router_compare.sh 30     (a subset)
#
# OPENMOE_BIN=path/to/openmoe uses that binary (default: launch/build.sh builds build/).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
steps="${1:-300}"
source launch/openmoe_bin.sh  # bin, OPENMOE_BIN
data/gather_corpus.sh "$bin"

out=bench/results/router_compare
runs=runs/router_compare
rm -rf "$out" "$runs"
mkdir -p "$out" "$runs"
jobs=(--job launch/configs/tiny.pbtxt --job launch/configs/tiny_corpus.pbtxt)
common=(--set train.batch_rows=128 --set router.group_size=64 --set train.steps="$steps"
        --set eval.every_steps=$(( steps / 3 )) --set logging.print_every=50)
declare -A router=(
  [openmoe]=""
  [experts_choose]="--set router.selection=EXPERTS_CHOOSE --set router.capacity_factor=2"
  [sigmoid_bias]="--set router.score_function=SIGMOID --set router.normalize_top_k=true --set router.bias_update_rate=0.001 --set router.aux_loss_weight=0"
  [shared_fine]="--set model.num_experts=8 --set model.expert_d_ff=64 --set model.num_shared_experts=1 --set router.top_k=3"
  [group_limited]="--set router.num_expert_groups=2 --set router.groups_per_token=1"
)
# ROUTERS="openmoe group_limited" runs a subset.
read -r -a order <<<"${ROUTERS:-openmoe experts_choose sigmoid_bias shared_fine group_limited}"
for name in "${order[@]}"; do
  # shellcheck disable=SC2206
  extra=(${router[$name]})
  echo "router_compare: $name ${extra[*]}"
  mkdir -p "$runs/$name"
  launch/mpirun_local.sh 2 train "${jobs[@]}" "${common[@]}" "${extra[@]}" \
    --set logging.metrics_path="$runs/$name/metrics.jsonl" \
    --set checkpoint.dir="$runs/$name/ckpt" --set checkpoint.every_steps=$(( steps / 3 )) \
    --set checkpoint.keep_last=10 --set checkpoint.resume=never >"$runs/$name/train.log" 2>&1 ||
    { tail -20 "$runs/$name/train.log" >&2; exit 1; }
  mapfile -t ckpts < <(find "$runs/$name/ckpt" -mindepth 1 -maxdepth 1 -type d -name 'step_*' ! -name '*.tmp' | sort)
  args=()
  for c in "${ckpts[@]}"; do args+=(--checkpoint "$c"); done
  "$bin" analyze "${args[@]}" "${jobs[@]}" "${common[@]}" "${extra[@]}" --rows 64 \
    --out "$out/$name" --no_plots >"$out/$name.analyze.txt" 2>&1 ||
    { cat "$out/$name.analyze.txt" >&2; exit 1; }
done

python3 - "$out" "$runs" "${order[@]}" <<'PY'
import json, sys
out, runs, names = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = []
for name in names:
    steps, evals, exchange = [], {}, {}
    for line in open(f"{runs}/{name}/metrics.jsonl"):
        r = json.loads(line)
        if r.get("record") != "step":
            continue
        steps.append(r)
        if "eval" in r:
            evals = {k: v["cross_entropy"] for k, v in r["eval"].items()}
        exchange = r.get("exchange", exchange)
    def mean(xs):
        return sum(xs) / len(xs) if xs else float("nan")
    imbalance, drop, unrouted = [], [], []
    for r in steps:
        for l in r["moe_layers"]:
            load = l["routed_per_expert"]
            imbalance.append(max(load) * len(load) / sum(load))
            drop.append(l["drop_fraction"])
            unrouted.append(l["fully_dropped_tokens"])
    a = json.load(open(f"{out}/{name}/analysis.json"))
    spec = mean([s["value"] for s in a["token_specialization"]])
    control = mean([c["value"] for c in a["specialization_control"]])
    agree = mean([g["token_top1"][0] for g in a["routing_agreement"]])
    # The first choice's dropped fraction in the first and last tenth of the rows (experts
    # choosing: the token's most probable expert did not take it).
    first = mean([d["by_choice"][0][0] for d in a["drop_by_position"]])
    last = mean([d["by_choice"][0][-1] for d in a["drop_by_position"]])
    rows.append(dict(router=name, heldout_text=evals.get("heldout_text"), heldout_code=evals.get("heldout_code"),
                     final_train_ce=steps[-1]["cross_entropy"], drop_fraction=mean(drop),
                     tokens_without_expert=mean(unrouted), max_over_mean_load=mean(imbalance),
                     exchange_rows_remote=exchange.get("rows_remote"), exchange_mib_remote=(exchange.get("bytes_remote") or 0) / 2**20,
                     specialisation=spec, specialisation_control=control, first_vs_last_top1=agree,
                     drop_first_tenth=first, drop_last_tenth=last))
keys = list(rows[0])
with open(f"{out}/results.csv", "w") as f:
    f.write(",".join(keys) + "\n")
    for r in rows:
        f.write(",".join("" if r[k] is None else (f"{r[k]:.4f}" if isinstance(r[k], float) else str(r[k])) for k in keys) + "\n")
def fmt(v):
    return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))
with open(f"{out}/results.md", "w") as f:
    f.write("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys) + "\n")
    for r in rows:
        f.write("| " + " | ".join(fmt(r[k]) for k in keys) + " |\n")
print(open(f"{out}/results.md").read())
PY
echo "router_compare: wrote $out/ (results.csv, results.md, analyze per router)"
