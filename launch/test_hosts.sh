#!/usr/bin/env bash
# Two test hosts on this machine, made of network namespaces, and one MPI run across them over TCP:
# the way to try multi-node behaviour (ranks on different hosts talk only through the network)
# without a second machine.
#
#   launch/test_hosts.sh [-n RANKS_PER_HOST] [--rate RATE] SUBCOMMAND|PROGRAM [ARGS...]
#   launch/test_hosts.sh train --job launch/configs/tiny.pbtxt     # openmoe train, 1 rank per host
#   launch/test_hosts.sh -n 2 build/bench/expert_exchange_bench   # 2 hosts x 2 ranks, a bench
#   launch/test_hosts.sh --rate 1gbit train --job ...              # over a 1 Gbit/s link
#   launch/test_hosts.sh --check                                   # can test hosts be made here?
#
# --rate RATE shapes each direction of the link between the hosts with a token bucket (`tc qdisc
# add dev omh0 root tbf rate RATE burst 512kb latency 100ms` on both ends; RATE as tc reads it:
# 300mbit, 1gbit, ...). netem is not available in these namespaces; tbf is.
#
# A first argument containing a '/' is a program (a bench binary); anything else is an `openmoe`
# subcommand ($OPENMOE_BIN, default build/launch/openmoe).
#
# What it makes, and removes on exit (also on failure, Ctrl-C or SIGTERM):
#   - network namespaces omh<pid>a and omh<pid>b, each with loopback up and one end of a veth pair
#     named omh0: 10.77.0.1/24 on host a, 10.77.0.2/24 on host b. Nothing is added to this
#     machine's own namespace (no address, route or interface), so concurrent runs do not collide.
#   - a work directory under /tmp (hostfile, per-host shared-memory directories).
# mpirun runs on host a; ranks there start directly, host b's Open MPI daemon through
# launch/test_hosts_agent.sh (plm_rsh_agent, called like ssh, runs it with `ip netns exec`).
# The Open MPI settings, each needed:
#   --mca pml ob1 --mca btl self,vader,tcp   ranks on two hosts talk TCP (never UCX or shared
#                                            memory across the namespaces)
#   btl_tcp_if_include, oob_tcp_if_include   the namespace interface omh0 only
#   --mca mpi_yield_when_idle 1              ranks waiting in MPI yield the core (busy polling made
#                                            an oversubscribed TCP run 5x slower)
#   btl_vader_backing_directory              one per host, set by the agent's --rank mode (the
#                                            namespaces share the hostname and /dev/shm)
#   --allow-run-as-root --oversubscribe --bind-to none
# Ranks are placed as by mpirun_hosts.sh (--map-by ppr:K:node): consecutive ranks share a host, so
# consecutive simulated chips and expert groups do too.
#
# Exit status: the command's; 77 (CTest's skip code) when namespaces cannot be made here (not
# root, no CAP_NET_ADMIN / CAP_SYS_ADMIN, no `ip`), with one line saying why; 2 on a usage error.
# Environment: OPENMOE_BIN, MPIRUN (default mpirun), MPIRUN_ARGS (extra flags, split on spaces),
# OPENBLAS_NUM_THREADS (passed on when set; otherwise openmoe picks its own thread count).
set -euo pipefail

readonly kSkip=77
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
agent="$root/launch/test_hosts_agent.sh"
usage="usage: $0 [-n RANKS_PER_HOST] [--rate RATE] SUBCOMMAND|PROGRAM [ARGS...]   or   $0 --check"

per_host=1
check_only=0
rate=""
while (( $# > 0 )); do
  case "$1" in
    --check) check_only=1; shift ;;
    -n)
      [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || { echo "$usage" >&2; exit 2; }
      per_host="$2"
      shift 2
      ;;
    --rate)
      [[ "${2:-}" =~ ^[0-9]+(\.[0-9]+)?([kmg]?bit|[kmg]?bps)$ ]] ||
        { echo "$0: --rate wants a tc rate such as 300mbit or 1gbit, not '${2:-}'" >&2; exit 2; }
      rate="$2"
      shift 2
      ;;
    *) break ;;
  esac
done
if (( ! check_only )) && [[ $# -lt 1 ]]; then
  echo "$usage" >&2
  exit 2
fi

skip() {
  echo "test_hosts: cannot make test hosts here: $*" >&2
  exit "$kSkip"
}
command -v ip >/dev/null 2>&1 || skip "no 'ip' command (Debian package iproute2, which launch/install_deps.sh installs)"
command -v "${MPIRUN:-mpirun}" >/dev/null 2>&1 || skip "no ${MPIRUN:-mpirun}"

ns_a="omh$$a"
ns_b="omh$$b"
work=""
made=()

cleanup() {
  local rc=$? ns pids
  set +e  # best effort from here: nothing may turn the command's status into another one
  for ns in "${made[@]}"; do
    # Whatever still runs in our namespaces (a daemon or rank mpirun left behind) was started here.
    pids="$(ip netns pids "$ns" 2>/dev/null || true)"
    if [[ -n "$pids" ]]; then
      kill $pids 2>/dev/null || true
      sleep 1
      pids="$(ip netns pids "$ns" 2>/dev/null || true)"
      [[ -n "$pids" ]] && kill -9 $pids 2>/dev/null || true
    fi
    ip netns delete "$ns" 2>/dev/null || true
  done
  [[ -n "$work" ]] && rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

make_ns() {
  local err
  if ! err="$(ip netns add "$1" 2>&1)"; then
    skip "ip netns add failed (needs root or CAP_NET_ADMIN and CAP_SYS_ADMIN): ${err}"
  fi
  made+=("$1")
  ip -n "$1" link set lo up
}
make_ns "$ns_a"
make_ns "$ns_b"
# Both ends are created inside the namespaces: the host's own namespace never sees the pair.
if ! err="$(ip -n "$ns_a" link add omh0 type veth peer name omh0 netns "$ns_b" 2>&1)"; then
  skip "cannot create a veth pair between the namespaces: ${err}"
fi
ip -n "$ns_a" addr add 10.77.0.1/24 dev omh0
ip -n "$ns_b" addr add 10.77.0.2/24 dev omh0
ip -n "$ns_a" link set omh0 up
ip -n "$ns_b" link set omh0 up
if [[ -n "$rate" ]]; then
  for ns in "$ns_a" "$ns_b"; do
    command -v tc >/dev/null 2>&1 || skip "no 'tc' command (iproute2) to shape the link"
    if ! err="$(ip netns exec "$ns" tc qdisc add dev omh0 root tbf rate "$rate" burst 512kb \
                  latency 100ms 2>&1)"; then
      skip "cannot shape the link to $rate: ${err}"
    fi
  done
fi
if (( check_only )); then
  echo "test_hosts: two test hosts can be made here (10.77.0.1 in $ns_a, 10.77.0.2 in $ns_b)"
  exit 0
fi

if [[ "$1" == */* ]]; then
  bin="$1"
  shift
  [[ -x "$bin" ]] || { echo "$0: $bin is not an executable" >&2; exit 2; }
  bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
else
  bin="${OPENMOE_BIN:-$root/build/launch/openmoe}"
  [[ -x "$bin" ]] || { echo "$0: $bin is not built (set OPENMOE_BIN)" >&2; exit 1; }
fi

work="$(mktemp -d /tmp/openmoe_test_hosts.XXXXXX)"
printf '10.77.0.1 slots=%d\n10.77.0.2 slots=%d\n' "$per_host" "$per_host" >"$work/hostfile"
export OPENMOE_TEST_HOSTS="10.77.0.1=$ns_a 10.77.0.2=$ns_b"
export OPENMOE_TEST_HOSTS_SHM="$work/shm"

flags=(--hostfile "$work/hostfile" -np $(( 2 * per_host )) --map-by "ppr:${per_host}:node"
       --allow-run-as-root --oversubscribe --bind-to none --wdir "$root"
       --mca plm_rsh_agent "$agent"
       --mca pml ob1 --mca btl self,vader,tcp
       --mca btl_tcp_if_include omh0 --mca oob_tcp_if_include omh0
       --mca mpi_yield_when_idle 1
       -x OPENMOE_TEST_HOSTS_SHM -x PATH)
[[ -n "${LD_LIBRARY_PATH:-}" ]] && flags+=(-x LD_LIBRARY_PATH)
[[ -n "${OPENBLAS_NUM_THREADS:-}" ]] && flags+=(-x OPENBLAS_NUM_THREADS)
[[ -n "${OPENMOE_SPM_MODULE:-}" ]] && flags+=(-x OPENMOE_SPM_MODULE)
# shellcheck disable=SC2206  # MPIRUN_ARGS is meant to split on spaces
[[ -n "${MPIRUN_ARGS:-}" ]] && flags+=(${MPIRUN_ARGS})

set +e
ip netns exec "$ns_a" "${MPIRUN:-mpirun}" "${flags[@]}" "$agent" --rank "$bin" "$@"
rc=$?
set -e
exit "$rc"
