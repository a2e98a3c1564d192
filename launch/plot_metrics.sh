#!/usr/bin/env bash
# Plots an `openmoe train` metrics file (logging.metrics_path, JSON lines) as PNGs with gnuplot.
#
#   launch/plot_metrics.sh METRICS.jsonl [OUT_DIR]      (default OUT_DIR: METRICS's folder/plots)
#
# Writes into OUT_DIR:
#   loss.png                       total loss and cross-entropy vs step
#   learning_rate.png              learning rate vs step
#   drop_fraction.png              dropped fraction of expert assignments vs step, one line per
#                                  MoE layer and their mean
#   drop_by_position.png           the same by position bucket in the row, mean over MoE layers
#   tokens_per_expert_layer<l>.png heatmap of tokens kept per expert (expert x step), MoE layer l
# Only step records are plotted (run headers and summaries are skipped); when a resumed run
# repeated steps, the last record of each step counts; nulls (non-finite values) are gaps.
# Installs gnuplot-nox (through launch/install_deps.sh) if gnuplot is missing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ $# -lt 1 || $# -gt 2 ]]; then
  echo "usage: $0 METRICS.jsonl [OUT_DIR]" >&2
  exit 2
fi
metrics="$1"
out="${2:-$(dirname "$metrics")/plots}"
[[ -r "$metrics" ]] || { echo "$0: $metrics: no such metrics file" >&2; exit 1; }
command -v gnuplot >/dev/null || "$here/install_deps.sh" gnuplot-nox
command -v gnuplot >/dev/null || { echo "$0: gnuplot is not installed (apt-get install gnuplot-nox)" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 "$here/metrics_to_csv.py" "$metrics" "$tmp"
mkdir -p "$out"
# gnuplot's strings are single-quoted: a quote in a path would end them.
for s in "$tmp" "$out" "$metrics"; do
  [[ "$s" != *"'"* ]] || { echo "$0: $s: paths with a single quote are not supported" >&2; exit 2; }
done
gnuplot -e "data='$tmp'; out='$out'; run='$(basename "$metrics")'" "$here/plot_metrics.gp"
echo "plot_metrics: wrote $(cd "$out" && echo ./*.png | sed 's|\./||g') in $out"
