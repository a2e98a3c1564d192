# Plots the tables launch/metrics_to_csv.py writes; run by launch/plot_metrics.sh:
#
#   gnuplot -e "data='DIR'; out='OUT_DIR'; run='NAME'" launch/plot_metrics.gp
#
# DIR holds scalars.dat, drop_layers.dat, drop_position.dat, experts_L<l>.dat and meta.gp;
# PNGs go to OUT_DIR: loss.png, learning_rate.png, drop_fraction.png, drop_by_position.png,
# tokens_per_expert_layer<l>.png (one per MoE layer: routed and kept per expert). `run` names
# the run in every title.
load data.'/meta.gp'
set terminal pngcairo size 1000,600 noenhanced font ',11'
set datafile missing '?'
set grid
set key outside right top
set xlabel 'step'
# Runs of one step still get a visible axis.
if (first_step == last_step) { set xrange [first_step - 1:last_step + 1] }

set output out.'/loss.png'
set title run.': training loss'
set ylabel 'loss (nats per target token)'
plot data.'/scalars.dat' using 1:2 with lines lw 2 title 'total loss', \
     '' using 1:3 with lines lw 2 title 'cross-entropy'

set output out.'/learning_rate.png'
set title run.': learning rate'
set ylabel 'learning rate'
set format y '%.1e'
set yrange [0:*]
set offsets 0, 0, graph 0.05, 0  # a flat rate stays off the top border
plot data.'/scalars.dat' using 1:4 with lines lw 2 title 'learning rate'
set format y '% h'
set autoscale y
set offsets 0, 0, 0, 0

if (num_layers > 0) {
  set output out.'/drop_fraction.png'
  set title run.': fraction of expert assignments dropped (over capacity)'
  set ylabel 'dropped / routed assignments'
  set yrange [0:*]
  plot for [i=1:num_layers] data.'/drop_layers.dat' using 1:(column(i + 1)) with lines \
         title 'MoE layer '.word(moe_layers, i), \
       data.'/scalars.dat' using 1:5 with lines lw 3 dt 2 lc 'black' title 'mean of MoE layers'
}

if (num_buckets > 0) {
  set output out.'/drop_by_position.png'
  set title run.': dropped fraction by position in the row (mean over MoE layers)'
  set ylabel 'dropped / routed assignments'
  set yrange [0:*]
  plot for [b=1:num_buckets] data.'/drop_position.dat' using 1:(column(b + 1)) with lines lw 2 \
         title sprintf('row positions %.0f-%.0f%%', 100.0 * (b - 1) / num_buckets, 100.0 * b / num_buckets)
}

if (num_layers > 0 && num_experts > 0) {
  # Two panels: what the router asked of each expert, and what capacity let through.
  set terminal pngcairo size 1000,800 noenhanced font ',11'
  set autoscale
  set key off
  set ylabel 'expert'
  set palette rgb 33,13,10
  set cbrange [0:*]
  set xrange [first_step - 0.5 * heatmap_step_width:last_step + 0.5 * heatmap_step_width]
  set yrange [-0.5:num_experts - 0.5]
  set ytics 1
  if (num_experts > 16) { set ytics num_experts / 8 }
  do for [i=1:num_layers] {
    l = word(moe_layers, i)
    f = data.'/experts_L'.l.'.dat'
    set output out.'/tokens_per_expert_layer'.l.'.png'
    set multiplot layout 2,1 title run.': MoE layer '.l.', tokens per expert per step'. \
      (heatmap_step_width > 1 ? sprintf(' (mean over %d steps per column)', heatmap_step_width) : '')
    set title 'routed to the expert (routed_per_expert, before capacity)'
    set cblabel 'tokens routed'
    plot f using 1:2:4 with image
    set title 'kept by the expert (tokens_per_expert, after capacity)'
    set cblabel 'tokens kept'
    plot f using 1:2:3 with image
    unset multiplot
  }
}
set output
