# Plots bench/multinode_bench.sh's CSV: per link, each configuration's median step split into the
# part spent waiting for communication (gradient reduction left after the backward, the expert
# exchange) and the rest.
#   gnuplot -e "in='bench/results/multinode_bench.csv'; out='bench/results/multinode_bench.png'" bench/multinode_plot.gp
set datafile separator ','
set terminal pngcairo size 1100,520 font ',10' noenhanced
set output out
set title 'bench_small on two test hosts (1 rank each, TCP): median step and what it waited for'
set style data histograms
set style histogram rowstacked
set style fill solid 0.8 border -1
set boxwidth 0.8
set ylabel 'seconds per step'
set yrange [0:*]
set grid ytics
set key top left
set xtics rotate by -35 font ',9'
plot in skip 1 using ($3 - $5 - $6):xtic(strcol(1).' '.strcol(2)) title 'compute and the rest', \
     '' skip 1 using 6 title 'expert exchange (dispatch + combine)', \
     '' skip 1 using 5 title 'gradient all-reduce waited for'
