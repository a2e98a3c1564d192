# Plots bench/expert_exchange_sweep.sh's CSV (expert_exchange_bench --csv): GB/s against the MB a
# rank sends in dispatch + combine, the runner's exchange (filled) beside raw MPI_Alltoallv of the
# same bytes (open), one colour per expert_parallel, circles fp32 and triangles bf16 rows, bars from the first to the third quartile of
# the repetitions; and the exchange / raw time ratio, paired per repetition (median, quartiles).
#   gnuplot -e "in='bench/results/expert_exchange_sweep.csv'; out='bench/results/expert_exchange_sweep.png'; label='2 MPI ranks'; eps='2 4 8'" bench/expert_exchange_plot.gp
# eps: the expert_parallel sizes in the CSV (one colour each).
if (!exists("label")) label = ''
if (!exists("eps")) eps = '2 4 8'
set datafile separator ','
set terminal pngcairo size 1300,520 font ',10'
set output out
set multiplot layout 1,2 title 'expert dispatch + combine (bench\_small MoE layer, 8 experts top-2), '.label
set logscale x 10
set grid
set xlabel 'MB sent per rank (dispatch + combine)'
set key top left
sel(e, t, v) = (column(1) == e && strcol(7) eq t) ? v : 1/0
set ylabel 'GB/s (median, bars: quartiles)'
set yrange [0:*]
set title 'runner exchange (filled) vs raw MPI\_Alltoallv of the same bytes (open); circles fp32, triangles bf16'
plot for [i=1:words(eps)] in using (sel(word(eps,i)+0, 'fp32', $10)):24:25:26 skip 1 \
       with yerrorbars pt 7 ps 0.8 lc i title 'ep '.word(eps,i).' fp32 runner', \
     for [i=1:words(eps)] in using (sel(word(eps,i)+0, 'fp32', $10)*1.04):27:28:29 skip 1 \
       with yerrorbars pt 6 ps 0.8 lc i title 'ep '.word(eps,i).' fp32 raw', \
     for [i=1:words(eps)] in using (sel(word(eps,i)+0, 'bf16', $10)):24:25:26 skip 1 \
       with yerrorbars pt 9 ps 0.8 lc i title 'ep '.word(eps,i).' bf16 runner', \
     for [i=1:words(eps)] in using (sel(word(eps,i)+0, 'bf16', $10)*1.04):27:28:29 skip 1 \
       with yerrorbars pt 8 ps 0.8 lc i title 'ep '.word(eps,i).' bf16 raw'
set ylabel 'runner exchange / raw time, paired per repetition'
set title 'ratio (median, bars: quartiles; 1 = as fast as raw MPI); circles fp32, triangles bf16'
set logscale y 2
set yrange [*:*]
plot for [i=1:words(eps)] in using (sel(word(eps,i)+0, 'fp32', $10)):30:31:32 skip 1 \
       with yerrorbars pt 7 ps 0.8 lc i title 'ep '.word(eps,i).' fp32', \
     for [i=1:words(eps)] in using (sel(word(eps,i)+0, 'bf16', $10)):30:31:32 skip 1 \
       with yerrorbars pt 9 ps 0.8 lc i title 'ep '.word(eps,i).' bf16', \
     1 with lines lc 'grey' dt 2 notitle
unset multiplot
