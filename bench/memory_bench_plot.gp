# Plots bench/memory_bench.sh's CSV: peak resident bytes per token of a training step (filled)
# beside the memory check's estimate (open), against seq_len (tiny), d_model (bench_small) and
# chips per rank (bench_small, one 256-token row per chip), for train.remat NONE and FULL.
#   gnuplot -e "in='bench/results/memory_bench.csv'; out='bench/results/memory_bench.png'" bench/memory_bench_plot.gp
set datafile separator ','
set terminal pngcairo size 1500,480 font ',10'
set output out
set multiplot layout 1,3 title 'peak RSS per token of a training step (one process, 1 thread): measured (filled) and estimated (open)'
set grid
set key bottom right
set logscale x 2
set ylabel 'bytes per token'
set yrange [0:*]
sel(s, r, v) = (strcol(1) eq s && strcol(6) eq r) ? v : 1/0
set title 'tiny, 8192 tokens per step'
set xlabel 'seq\_len'
plot in using (sel('seq_len', 'REMAT_NONE', $2)):11 skip 1 with linespoints pt 7 lc 1 title 'REMAT\_NONE', \
     in using (sel('seq_len', 'REMAT_NONE', $2)):12 skip 1 with linespoints pt 6 dt 2 lc 1 title 'estimate', \
     in using (sel('seq_len', 'REMAT_FULL', $2)):11 skip 1 with linespoints pt 7 lc 2 title 'REMAT\_FULL', \
     in using (sel('seq_len', 'REMAT_FULL', $2)):12 skip 1 with linespoints pt 6 dt 2 lc 2 title 'estimate'
set title 'bench\_small, 2048 tokens per step, d\_ff = 2 d\_model'
set xlabel 'd\_model'
plot in using (sel('d_model', 'REMAT_NONE', $3)):11 skip 1 with linespoints pt 7 lc 1 title 'REMAT\_NONE', \
     in using (sel('d_model', 'REMAT_NONE', $3)):12 skip 1 with linespoints pt 6 dt 2 lc 1 title 'estimate'
set title 'bench\_small, one 256-token row per chip, all chips on one rank'
set xlabel 'chips per rank'
plot in using (sel('chips', 'REMAT_NONE', $5)):11 skip 1 with linespoints pt 7 lc 1 title 'REMAT\_NONE', \
     in using (sel('chips', 'REMAT_NONE', $5)):12 skip 1 with linespoints pt 6 dt 2 lc 1 title 'estimate', \
     in using (sel('chips', 'REMAT_FULL', $5)):11 skip 1 with linespoints pt 7 lc 2 title 'REMAT\_FULL', \
     in using (sel('chips', 'REMAT_FULL', $5)):12 skip 1 with linespoints pt 6 dt 2 lc 2 title 'estimate'
unset multiplot
