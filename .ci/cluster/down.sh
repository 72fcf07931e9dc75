#!/bin/bash
# Stop the 2-node virtual cluster of .ci/cluster/up.sh (`make cluster-down`):
# its slurmds, its slurmctld and every process left in the node namespaces,
# then the namespaces, veths, bridge and /etc/hosts lines. munged stays (the
# one-node Slurm may use it). --keep-network stops only the daemons.
# Idempotent; ~5 s.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=.ci/cluster/env.sh
. "$here/env.sh"
keep_network=0
[ "${1:-}" = "--keep-network" ] && keep_network=1

stop_pidfile() {  # stop_pidfile FILE NAME: TERM, wait up to 5 s, KILL
    local pid
    [ -s "$1" ] || return 0
    pid=$(cat "$1")
    # Only if the pid still runs NAME: a stale file's pid may now be anything.
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]; then
        kill "$pid" 2>/dev/null
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null
    fi
    rm -f "$1"
}

for node in "${NODES[@]}"; do
    stop_pidfile "$CLUSTER_DIR/run/slurmd-$node.pid" slurmd
    ns=$(node_netns "$node")
    if [ -e "/run/netns/$ns" ]; then
        # Whatever jobs left behind in the node (slurmstepd, brokers, tasks): these
        # pids are exactly the processes in this namespace, all started by the cluster.
        pids=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
        # shellcheck disable=SC2086  # one pid a word
        [ -n "$pids" ] && { echo "cluster-down: killing what is left in $ns: $pids"; kill -9 $pids 2>/dev/null; }
    fi
done
stop_pidfile "$CLUSTER_DIR/run/slurmctld.pid" slurmctld
[ "$keep_network" = 1 ] && exit 0

for node in "${NODES[@]}"; do
    ip link del "veth-$node" 2>/dev/null
    ns=$(node_netns "$node")
    [ -e "/run/netns/$ns" ] && ip netns del "$ns"
done
ip link del "$BRIDGE" 2>/dev/null
if grep -q "# parsl-flux-cluster$" /etc/hosts; then
    # /etc/hosts may be a bind mount: rewrite in place, do not replace the file.
    kept=$(grep -v "# parsl-flux-cluster$" /etc/hosts)
    printf '%s\n' "$kept" > /etc/hosts
fi
echo "cluster-down: stopped"
exit 0
