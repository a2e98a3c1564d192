#!/usr/bin/env bash
# CTest test_hosts_two_hosts_losses: tiny trained across the two network-namespace test hosts of
# launch/test_hosts.sh (one rank per host, ranks talking TCP over a veth pair) has exactly the
# losses of the same 2-rank job on one host (shared memory), step by step.
#
#   tests/launch/test_hosts_test.sh OPENMOE_BIN SOURCE_DIR [RATE]
#
# With RATE (e.g. 300mbit) the link between the test hosts is shaped to it (test_hosts.sh
# --rate), the two-host run reduces its gradients overlapped with the backward in small buckets
# (train.overlap_grad_reduce, the default) and the one-host run blocking
# (train.overlap_grad_reduce=false): still exactly the same losses.
#
# Exact equality, not a tolerance: both runs have the same world size, layout and job, so every
# rank does the same arithmetic in the same order; what differs is only the transport, which
# moves bytes unchanged, and with 2 ranks every sum over ranks is one commutative addition. Any
# difference is a lost or garbled message, not rounding. tiny's 4 chips over 2 ranks with
# expert_parallel 4 send half of the routed rows to the other host.
# Exit 77 (CTest SKIP_RETURN_CODE) with a message where namespaces cannot be made here.
set -euo pipefail
bin="$1" src="$2" rate="${3:-}"
steps=6
one_host_sets=() two_host_args=()
if [[ -n "$rate" ]]; then
  one_host_sets=(--set train.overlap_grad_reduce=false)
  two_host_args=(--rate "$rate")
fi

check="$("$src/launch/test_hosts.sh" --check 2>&1)" && rc=0 || rc=$?
echo "$check"
if (( rc == 77 )); then
  echo "SKIP: no network-namespace test hosts on this machine"
  exit 77
fi
(( rc == 0 )) || exit "$rc"

tmp="$(mktemp -d /tmp/openmoe_test_hosts_test.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT
job=(train --job "$src/launch/configs/tiny.pbtxt" --set "train.steps=$steps"
     --set logging.print_every=1 --resume never)

# One host: both ranks in this namespace, ob1 over shared memory (the baseline transport).
"${MPIRUN:-mpirun}" --allow-run-as-root --oversubscribe --bind-to none -np 2 --mca pml ob1 \
  --mca btl self,vader -x OPENBLAS_NUM_THREADS=1 \
  "$bin" "${job[@]}" ${one_host_sets[@]+"${one_host_sets[@]}"} \
  --set "logging.metrics_path=$tmp/one.jsonl" >"$tmp/one.log" 2>&1 ||
  { cat "$tmp/one.log"; echo "FAIL: the one-host run failed"; exit 1; }
# Two hosts: one rank per namespace, TCP only.
OPENBLAS_NUM_THREADS=1 OPENMOE_BIN="$bin" "$src/launch/test_hosts.sh" \
  ${two_host_args[@]+"${two_host_args[@]}"} "${job[@]}" ${rate:+--set train.grad_bucket_mb=0.01} \
  --set "logging.metrics_path=$tmp/two.jsonl" >"$tmp/two.log" 2>&1 ||
  { cat "$tmp/two.log"; echo "FAIL: the two-host run failed"; exit 1; }

# Per step record: its step and every loss term (keys loss, cross_entropy, *_loss), as printed.
losses() {
  grep '"record":"step"' "$1" |
    grep -o '"step":[0-9]*\|"[a-z_]*loss":[^,}]*\|"cross_entropy":[^,}]*' |
    awk -F: '$1 == "\"step\"" && NR > 1 { print line; line = "" } { line = line $0 " " } END { print line }'
}
losses "$tmp/one.jsonl" >"$tmp/one.txt"
losses "$tmp/two.jsonl" >"$tmp/two.txt"
n="$(grep -c '"loss":' "$tmp/one.txt" || true)"
if (( n != steps )) || [[ "$(wc -l <"$tmp/two.txt")" -ne "$steps" ]]; then
  echo "FAIL: expected $steps step records with a loss in each run; one host:"; cat "$tmp/one.txt"
  echo "two hosts:"; cat "$tmp/two.txt"
  exit 1
fi
# The two-host run really ran on two hosts (the run header's world size, mpirun saw two nodes).
grep -q '"world_size":2' "$tmp/two.jsonl" ||
  { echo "FAIL: the two-host run's header does not say world_size 2"; exit 1; }
if ! diff "$tmp/one.txt" "$tmp/two.txt"; then
  echo "FAIL: losses differ between one host (<) and two test hosts over TCP (>)"
  exit 1
fi
echo "PASS: $steps steps, every loss term equal on one host and on two test hosts over TCP${rate:+ shaped to $rate (overlapped gradient reduction vs blocking)}"
head -2 "$tmp/two.txt"
