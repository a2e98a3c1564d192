#!/bin/sh
# Open MPI's remote agent for launch/test_hosts.sh (--mca plm_rsh_agent): mpirun calls it the way
# it calls ssh, `AGENT [ssh options] HOST COMMAND...`, and it runs COMMAND with `sh -c` (as sshd
# would hand it to a shell) inside the network namespace of HOST.
#
# HOST -> namespace comes from OPENMOE_TEST_HOSTS, "ADDR=NAMESPACE ADDR=NAMESPACE", which
# test_hosts.sh exports to mpirun (whose environment this inherits).
#
# `AGENT --rank PROGRAM ARGS...` is the other half: test_hosts.sh starts every rank through it, so
# the rank's shared-memory files go to a directory of its own host ($OPENMOE_TEST_HOSTS_SHM/<ns>):
# the namespaces share the hostname and /dev/shm, and Open MPI names its vader segment files by
# hostname, job and local rank, so two hosts' rank 0s would otherwise open the same file.
set -eu
if [ "${1:-}" = "--rank" ]; then
  shift
  ns="$(ip netns identify $$)"
  [ -n "$ns" ] && [ -n "${OPENMOE_TEST_HOSTS_SHM:-}" ] || {
    echo "$0: --rank outside a test host (namespace '$ns', OPENMOE_TEST_HOSTS_SHM '${OPENMOE_TEST_HOSTS_SHM:-}')" >&2
    exit 1
  }
  mkdir -p "$OPENMOE_TEST_HOSTS_SHM/$ns"
  export OMPI_MCA_btl_vader_backing_directory="$OPENMOE_TEST_HOSTS_SHM/$ns"
  exec "$@"
fi
while [ $# -gt 0 ]; do
  case "$1" in
    -*) shift ;;  # ssh options such as -x: nothing to forward
    *) break ;;
  esac
done
[ $# -ge 2 ] || { echo "$0: usage: $0 HOST COMMAND..." >&2; exit 255; }
host="$1"
shift
ns=""
for pair in ${OPENMOE_TEST_HOSTS:-}; do
  [ "${pair%%=*}" = "$host" ] && ns="${pair#*=}"
done
[ -n "$ns" ] || { echo "$0: host $host is not one of the test hosts (${OPENMOE_TEST_HOSTS:-unset})" >&2; exit 255; }
exec ip netns exec "$ns" sh -c "$*"
