# Plots of bench/plan_sweep.sh's CSVs (gnuplot; run by that script, which sets the variables):
#   csv, png1   plan_sweep_8b.csv -> OpenMoE-8B/32E predicted tokens/s, MFU, all-to-all and
#               all-reduce time per step against chips, one line per expert_parallel size (the
#               CSV is grouped by expert_parallel)
#   fixed, png2 fixed_bytes_scaling.csv -> all-reduce and all-to-all time per call against chips
#               at fixed bytes per chip: absolute, and relative to 64 chips with sqrt(chips)
#   eps         the expert_parallel sizes swept ("1 2 4 8 16 32")
set datafile separator ","
set key autotitle columnhead
set logscale x 2
set xtics (64, 128, 256, 512)
set xrange [50:650]
set grid
set key top left font ",9"

set terminal pngcairo size 1200,900 font ",10"
set output png1
set multiplot layout 2,2 title "OpenMoE-8B/32E on TPU v3 slices (predicted; batch 1024 x 2048 tokens)"
set xlabel "chips"
set ylabel "tokens/s (millions)"
plot for [ep in eps] csv using ($3 == ep + 0 ? $1 : 1/0):($12 / 1e6) with linespoints \
  title "ep ".ep
set ylabel "MFU (%)"
set key bottom left
plot for [ep in eps] csv using ($3 == ep + 0 ? $1 : 1/0):($13 * 100) with linespoints \
  title "ep ".ep
set ylabel "all-to-all per step (ms)"
set key top right
plot for [ep in eps] csv using ($3 == ep + 0 && ep + 0 > 1 ? $1 : 1/0):($8 * 1e3) \
  with linespoints title "ep ".ep
set ylabel "gradient all-reduce per step (ms)"
plot for [ep in eps] csv using ($3 == ep + 0 ? $1 : 1/0):($9 * 1e3) with linespoints \
  title "ep ".ep
unset multiplot

set terminal pngcairo size 1200,520 font ",10"
set output png2
set multiplot layout 1,2 title "Fixed bytes per chip, predicted time per call (8B/32E dims, one 2048-token row per chip)"
set xlabel "chips (v3 torus 8x8, 8x16, 16x16, 16x32)"
set ylabel "ms per call"
set logscale y 10
set key top left font ",9"
plot fixed using 1:($4 * 1e3) with linespoints title "all-reduce, shared grads, 12.2 GiB/chip", \
     fixed using 1:($7 * 1e3) with linespoints title "all-to-all over the slice, 10 MiB/chip", \
     fixed using 1:($9 * 1e3) with linespoints title "all-to-all over groups of 32, 10 MiB/chip"
stats fixed using 4 nooutput
ar64 = STATS_min
stats fixed using 7 nooutput
a2a64 = STATS_min
stats fixed using 9 nooutput
g64 = STATS_min
set ylabel "time / time on 64 chips"
set logscale y 2
set yrange [0.8:5]
plot fixed using 1:($4 / ar64) with linespoints title "all-reduce", \
     fixed using 1:($7 / a2a64) with linespoints title "all-to-all over the slice", \
     fixed using 1:($9 / g64) with linespoints title "all-to-all over groups of 32", \
     fixed using 1:(sqrt($1 / 64.0)) with lines dashtype 2 title "sqrt(chips / 64)"
unset multiplot
