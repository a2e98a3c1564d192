#!/usr/bin/env bash
# The README's first command: install what is missing, build, gather the embedded corpus (Debian
# documentation and sources -> data/corpus/, with a sentencepiece tokenizer, token shards and
# held-out text), train the tiny MoE on it over a simulated 64-chip TPU v3 slice hosted by 2 MPI
# ranks, then use what training left:
#
#   runs/quickstart/metrics.jsonl         one JSON record per step (and a run header and summary)
#   runs/quickstart/ckpt/step_<N>/        the final checkpoint (saved at the end of training)
#   runs/quickstart/model.safetensors     its weights, from `openmoe export`
#   runs/quickstart/heldout.npy           64 prefix-LM rows of 64 held-out tokens (`openmoe prep
#                                         --npy --form prefix_lm`: [S2S] prefix EOS continuation)
#   runs/quickstart/score.txt, score.json `openmoe score --form prefix_lm` of model.safetensors on
#                                         heldout.npy: the loss on the continuations
#   runs/quickstart/plots/*.png           launch/plot_metrics.sh of the metrics
#
# Extra arguments go to `openmoe train` (e.g. --set train.steps=50). A rerun starts afresh: the
# previous run's runs/quickstart/ is removed first. OPENMOE_BIN=PATH uses that binary and skips
# the build (default: launch/build.sh builds build/launch/openmoe).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
run=runs/quickstart
launch/install_deps.sh
source launch/openmoe_bin.sh  # bin, OPENMOE_BIN
data/gather_corpus.sh "$bin"
heldout=data/corpus/heldout.jsonl
[[ -s "$heldout" ]] || { echo "$0: $heldout is missing (data/gather_corpus.sh writes it)" >&2; exit 1; }

if [[ -e "$run" ]]; then
  echo "quickstart: removing the previous run's outputs in $run/"
  rm -rf "$run"
fi
mkdir -p "$run"
# 64 chips x 2 rows of 64 tokens per step; routing groups of one row; 4 experts, one per chip
# of each 4-chip expert group. checkpoint.resume=never: a rerun starts afresh; with
# checkpoint.dir set, training saves a checkpoint when it ends.
launch/mpirun_local.sh 2 train \
  --job launch/configs/tiny.pbtxt --job launch/configs/tiny_corpus.pbtxt \
  --job launch/configs/topology/v3-64.pbtxt \
  --set train.batch_rows=128 --set router.group_size=64 --set mesh.expert_parallel=4 \
  --set train.steps=300 --set logging.print_every=25 \
  --set logging.metrics_path="$run/metrics.jsonl" \
  --set checkpoint.dir="$run/ckpt" --set checkpoint.resume=never "$@"

# The newest checkpoint is the final one (step_<8 digits> sorts by step).
ckpt="$(find "$run/ckpt" -mindepth 1 -maxdepth 1 -type d -name 'step_*' ! -name '*.tmp' | sort | tail -1)"
[[ -n "$ckpt" ]] || { echo "$0: training left no checkpoint under $run/ckpt" >&2; exit 1; }
echo "quickstart: exporting $ckpt to $run/model.safetensors"
"$bin" export --checkpoint "$ckpt" --out "$run/model.safetensors"
# The model trains on UL2 alone, so it is scored in the form it trains on: held-out chunks as
# prefix-LM examples ([S2S] prefix EOS continuation, loss on the continuation), as the eval
# during training does (README "Eval during training" says why the causal form misleads here).
echo "quickstart: held-out prefix-LM rows $run/heldout.npy from $heldout"
"$bin" prep --input "$heldout" --tokenizer data/corpus/spm.model --npy "$run/heldout.npy" \
  --rows 64 --seq_len 64 --form prefix_lm
echo "quickstart: scoring $run/model.safetensors on $run/heldout.npy"
"$bin" score --checkpoint "$run/model.safetensors" --tokens "$run/heldout.npy" --form prefix_lm |
  tee "$run/score.txt"
"$bin" score --checkpoint "$run/model.safetensors" --tokens "$run/heldout.npy" --form prefix_lm \
  --json >"$run/score.json"
launch/plot_metrics.sh "$run/metrics.jsonl" "$run/plots"
echo "quickstart: done; outputs in $run/ (metrics.jsonl, ckpt/, model.safetensors, heldout.npy," \
  "score.txt, score.json, plots/)"
