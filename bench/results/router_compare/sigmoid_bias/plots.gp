# Drawn by `openmoe analyze`; gnuplot plots.gp (from bench/results/router_compare/sigmoid_bias) redraws.
set terminal pngcairo size 1000,600 noenhanced font ',11'
set datafile separator ','
set grid
set key outside right top
set output 'specialization.png'
set title 'token-id specialisation (top-1 share to the id''s most frequent expert) vs the control'
set xlabel 'checkpoint step'
set ylabel 'count-weighted share'
set yrange [0:1]
plot 'specialization.csv' skip 1 using 2:($3==1?$4:NaN) with linespoints lw 2 title 'layer 1', 'specialization.csv' skip 1 using 2:($3==3?$4:NaN) with linespoints lw 2 title 'layer 3', 'specialization.csv' skip 1 using 2:($3==1?$5:NaN) with linespoints dt 2 title 'layer 1 control', 'specialization.csv' skip 1 using 2:($3==3?$5:NaN) with linespoints dt 2 title 'layer 3 control'
set output 'routing_agreement.png'
set title 'agreement with the last checkpoint'
set ylabel 'fraction agreeing'
plot 'routing_agreement.csv' skip 1 using 2:($3==1?$4:NaN) with linespoints lw 2 title 'layer 1 top-1 per token', 'routing_agreement.csv' skip 1 using 2:($3==3?$4:NaN) with linespoints lw 2 title 'layer 3 top-1 per token', 'routing_agreement.csv' skip 1 using 2:($3==1?$5:NaN) with linespoints dt 2 title 'layer 1 token-id table', 'routing_agreement.csv' skip 1 using 2:($3==3?$5:NaN) with linespoints dt 2 title 'layer 3 token-id table'
set output 'drop_by_position.png'
set title 'dropped fraction by position in the row (last checkpoint)'
set xlabel 'decile of the row (0 = first tenth)'
set ylabel 'dropped / tokens'
set yrange [0:*]
plot 'drop_by_position.csv' skip 1 using 2:($1==1?$3:NaN) with linespoints lw 2 title 'layer 1 first choice', 'drop_by_position.csv' skip 1 using 2:($1==3?$3:NaN) with linespoints lw 2 title 'layer 3 first choice', 'drop_by_position.csv' skip 1 using 2:($1==1?$4:NaN) with linespoints dt 2 title 'layer 1 second choice', 'drop_by_position.csv' skip 1 using 2:($1==3?$4:NaN) with linespoints dt 2 title 'layer 3 second choice'
set output 'domain_expert_share.png'
set yrange [0:*]
set multiplot layout 1,2 title 'top-1 share of each expert by source (last checkpoint)'
set xlabel 'expert'
set ylabel 'share of the source''s tokens'
set key inside top right
set xtics 1
set title 'layer 1'
plot 'domain_expert_share.csv' skip 1 using 4:($1==1 && $2==0 ? $5 : NaN) with linespoints lw 2 title 'text', 'domain_expert_share.csv' skip 1 using 4:($1==1 && $2==1 ? $5 : NaN) with linespoints lw 2 title 'code', 'domain_expert_share.csv' skip 1 using 4:($1==1 && $2==2 ? $5 : NaN) with linespoints lw 2 title 'heldout_text', 'domain_expert_share.csv' skip 1 using 4:($1==1 && $2==3 ? $5 : NaN) with linespoints lw 2 title 'heldout_code'
set title 'layer 3'
plot 'domain_expert_share.csv' skip 1 using 4:($1==3 && $2==0 ? $5 : NaN) with linespoints lw 2 title 'text', 'domain_expert_share.csv' skip 1 using 4:($1==3 && $2==1 ? $5 : NaN) with linespoints lw 2 title 'code', 'domain_expert_share.csv' skip 1 using 4:($1==3 && $2==2 ? $5 : NaN) with linespoints lw 2 title 'heldout_text', 'domain_expert_share.csv' skip 1 using 4:($1==3 && $2==3 ? $5 : NaN) with linespoints lw 2 title 'heldout_code'
unset multiplot
