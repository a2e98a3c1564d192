#!/usr/bin/env python3
"""Turns an `openmoe train` metrics file (JSON lines) into whitespace-separated tables for gnuplot.

    launch/metrics_to_csv.py METRICS.jsonl OUT_DIR

Reads every line; keeps the step records (`"record": "step"`, or no "record" key as written
before run headers existed) and skips the others (`run_header`, `summary`, ...). A resumed run
appends to the same file, so a step can appear more than once: the LAST record of each step wins.
Non-finite numbers are written by the trainer as null; they become "?" (gnuplot's missing value).
A line that is not JSON (e.g. cut short by a crash) is skipped with a warning naming its line.

Writes into OUT_DIR (created if needed):
  scalars.dat         step loss cross_entropy learning_rate drop_mean
                      (drop_mean: the mean over MoE layers of each layer's drop_fraction; every
                      layer routes the same tokens, so it is also the pooled fraction)
  drop_layers.dat     step, then drop_fraction of each MoE layer (in layer order)
  drop_position.dat   step, then per position bucket the mean over MoE layers of
                      drop_fraction_by_position (bucket b = positions [b*S/B, (b+1)*S/B) of a row)
  experts_L<l>.dat    for MoE layer l: rows "step expert tokens_kept tokens_routed"
                      (tokens_per_expert, routed_per_expert), one block per step column, for
                      `plot ... with image`; at most 1000 columns (longer runs are averaged over
                      equal runs of steps)
  meta.gp             gnuplot variables: moe_layers ("1 3"), num_layers, num_buckets,
                      num_experts, num_steps, first_step, last_step
Exit status 1 with one line on stderr if the file cannot be read or holds no step record.
"""

import json
import math
import os
import sys

MAX_HEATMAP_COLUMNS = 1000


def number(v):
    """A finite float, or None for null / non-numbers / NaN / inf."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def fmt(v):
    return "?" if v is None else "%.8g" % v


def mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def read_steps(path):
    """{step: record} keeping the last record of each step."""
    steps = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line_no, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                print("%s:%d: not a JSON object, skipped" % (path, line_no), file=sys.stderr)
                continue
            if not isinstance(rec, dict) or rec.get("record", "step") != "step":
                continue
            step = rec.get("step")
            if isinstance(step, bool) or not isinstance(step, int):
                continue
            steps[step] = rec
    return steps


def layer_list(rec):
    layers = rec.get("moe_layers")
    return [l for l in layers if isinstance(l, dict)] if isinstance(layers, list) else []


def main(argv):
    if len(argv) != 3:
        print("usage: %s METRICS.jsonl OUT_DIR" % argv[0], file=sys.stderr)
        return 2
    path, out = argv[1], argv[2]
    try:
        steps = read_steps(path)
    except OSError as e:
        print("%s: cannot read metrics file (%s)" % (path, e.strerror), file=sys.stderr)
        return 1
    if not steps:
        print("%s: no step records" % path, file=sys.stderr)
        return 1
    os.makedirs(out, exist_ok=True)
    order = sorted(steps)

    # MoE layers, buckets and experts: the largest seen (a record may lack a layer if it was cut).
    layer_ids, num_buckets, num_experts = set(), 0, 0
    for s in order:
        for l in layer_list(steps[s]):
            if isinstance(l.get("layer"), int):
                layer_ids.add(l["layer"])
            num_buckets = max(num_buckets, len(l.get("drop_fraction_by_position") or []))
            num_experts = max(num_experts, len(l.get("tokens_per_expert") or []))
    layer_ids = sorted(layer_ids)

    def by_layer(rec):
        return {l.get("layer"): l for l in layer_list(rec)}

    def vec(layer, key, n):
        v = layer.get(key) if layer else None
        v = v if isinstance(v, list) else []
        return [number(x) for x in v] + [None] * (n - len(v))

    with open(os.path.join(out, "scalars.dat"), "w") as sc, \
         open(os.path.join(out, "drop_layers.dat"), "w") as dl, \
         open(os.path.join(out, "drop_position.dat"), "w") as dp:
        sc.write("# step loss cross_entropy learning_rate drop_mean\n")
        dl.write("# step " + " ".join("layer_%d" % l for l in layer_ids) + "\n")
        dp.write("# step " + " ".join("bucket_%d" % b for b in range(num_buckets)) + "\n")
        for s in order:
            rec, layers = steps[s], by_layer(steps[s])
            drops = [number(layers.get(l, {}).get("drop_fraction")) for l in layer_ids]
            sc.write(" ".join([str(s)] + [fmt(number(rec.get(k)))
                                          for k in ("loss", "cross_entropy", "learning_rate")]
                              + [fmt(mean(drops))]) + "\n")
            dl.write(" ".join([str(s)] + [fmt(d) for d in drops]) + "\n")
            per_layer = [vec(layers.get(l), "drop_fraction_by_position", num_buckets)
                         for l in layer_ids]
            dp.write(" ".join([str(s)] + [fmt(mean([p[b] for p in per_layer]))
                                          for b in range(num_buckets)]) + "\n")

    # Heatmap columns: consecutive runs of `per` records averaged, keyed by their first step.
    per = max(1, math.ceil(len(order) / MAX_HEATMAP_COLUMNS))
    columns = [order[i:i + per] for i in range(0, len(order), per)]
    for l in layer_ids:
        with open(os.path.join(out, "experts_L%d.dat" % l), "w") as f:
            f.write("# step expert tokens_kept tokens_routed (layer %d; mean over %d step(s)"
                    " per column)\n" % (l, per))
            for col in columns:
                kept = [vec(by_layer(steps[s]).get(l), "tokens_per_expert", num_experts) for s in col]
                routed = [vec(by_layer(steps[s]).get(l), "routed_per_expert", num_experts)
                          for s in col]
                for e in range(num_experts):
                    f.write("%d %d %s %s\n" % (col[0], e, fmt(mean([r[e] for r in kept])),
                                                fmt(mean([r[e] for r in routed]))))
                f.write("\n")

    with open(os.path.join(out, "meta.gp"), "w") as f:
        f.write('moe_layers = "%s"\n' % " ".join(str(l) for l in layer_ids))
        f.write("num_layers = %d\nnum_buckets = %d\nnum_experts = %d\n"
                % (len(layer_ids), num_buckets, num_experts))
        f.write("num_steps = %d\nfirst_step = %d\nlast_step = %d\nheatmap_step_width = %d\n"
                % (len(order), order[0], order[-1], per))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
