# Plots bench/scaling_v3.sh's CSVs: measured tokens/s here and the cost model's v3 tokens/s, strong
# and weak scaling, against chips.
#   gnuplot -e "strong='bench/results/scaling_v3_strong.csv'; weak='bench/results/scaling_v3_weak.csv'; out='bench/results/scaling_v3.png'" bench/scaling_v3_plot.gp
set datafile separator ','
set terminal pngcairo size 1200,480 font ',10'
set output out
set multiplot layout 1,2 title 'tiny MoE on simulated TPU v3 slices, 2 MPI ranks on 2 cores'
set logscale xy 2
set xtics (64, 128, 256, 512)
set xrange [48:700]
set xlabel 'chips'
set key top left
set ylabel 'tokens/s'
set title 'measured here (whole mesh on this machine)'
plot strong using 3:11 skip 1 with linespoints title 'strong (512 rows)', \
     weak using 3:11 skip 1 with linespoints title 'weak (2 rows per chip)'
set title 'predicted on a real v3 slice'
plot strong using 3:18 skip 1 with linespoints title 'strong (512 rows)', \
     weak using 3:18 skip 1 with linespoints title 'weak (2 rows per chip)'
unset multiplot
