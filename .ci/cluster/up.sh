#!/bin/bash
# Start a 2-node virtual Slurm cluster on this machine, as root (`make cluster-up`):
#   * a bridge pfbr0 (10.213.77.1/24) in the root network namespace; per node a
#     network namespace pf-pfnodeN with a veth on the bridge (10.213.77.1N) and
#     a default route through the bridge, so Flux brokers pick that address;
#   * one munged (shared with the one-node Slurm of .ci/setup.d/20-slurm.sh
#     when that runs; one key), one slurmctld (port 6917) in the root namespace,
#     and one slurmd per node (`slurmd -N pfnodeN`) inside its namespace and its
#     own UTS namespace (hostname pfnodeN);
#   * its own configuration $CLUSTER_DIR/slurm.conf (clients use it through
#     SLURM_CONF=...; /etc/slurm/slurm.conf is not touched), and /etc/hosts lines
#     for the node names.
# Idempotent: what runs and answers is left alone. Waits (bounded) until both
# nodes are idle. Prints `export SLURM_CONF=...` for the clients.
# Time: ~10 s (plus apt-get install of slurm-wlm/munge the first time).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=.ci/cluster/env.sh
. "$here/env.sh"
# shellcheck source=.ci/slurm-lib.sh
. "$here/../slurm-lib.sh"
WAIT_S=${CLUSTER_WAIT_S:-90}
export SLURM_CONF=$CLUSTER_CONF

log() { echo "cluster-up: $*"; }
fail() {
    echo "cluster-up: ERROR: $*" >&2
    for f in "$CLUSTER_DIR"/log/*.log; do [ -f "$f" ] && { echo "--- tail $f" >&2; tail -n 15 "$f" >&2; }; done
    exit 1
}
[ "$(id -u)" = 0 ] || fail "must run as root (network namespaces, daemons)"

bash "$here/../apt-ensure.sh" cluster-up slurm-wlm munge iproute2

# --- network: bridge in the root namespace, one namespace + veth per node
if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    log "creating bridge $BRIDGE ($HOST_ADDR/24)"
    ip link add "$BRIDGE" type bridge
fi
# Output captured, not piped into `grep -q`: under pipefail, grep's early exit can
# SIGPIPE `ip` and send an existing address to `ip addr add` ("already assigned").
[[ $(ip addr show dev "$BRIDGE") == *"inet $HOST_ADDR/"* ]] || ip addr add "$HOST_ADDR/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
for node in "${NODES[@]}"; do
    ns=$(node_netns "$node")
    addr=$(node_addr "$node")
    host_if=veth-$node          # <= 15 characters
    [ -e "/run/netns/$ns" ] || { log "creating network namespace $ns"; ip netns add "$ns"; }
    if ! ip link show "$host_if" >/dev/null 2>&1; then
        ip link add "$host_if" type veth peer name eth0 netns "$ns"
    fi
    ip link set "$host_if" master "$BRIDGE"
    ip link set "$host_if" up
    ip -n "$ns" link set lo up
    [[ $(ip -n "$ns" addr show dev eth0) == *"inet $addr/"* ]] || ip -n "$ns" addr add "$addr/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route replace default via "$HOST_ADDR" dev eth0
done
# Node names resolve everywhere (one file system), marked for cluster-down.
for node in "${NODES[@]}"; do
    line="$(node_addr "$node") $node # parsl-flux-cluster"
    grep -qxF "$line" /etc/hosts || echo "$line" >> /etc/hosts
done

# --- munge (one key for the whole machine)
bash "$(dirname "$0")/../munge-up.sh"

# --- slurm.conf of this cluster
mkdir -p "$CLUSTER_DIR/ctld" "$CLUSTER_DIR/log" "$CLUSTER_DIR/run"
for node in "${NODES[@]}"; do mkdir -p "$CLUSTER_DIR/spool/$node"; done
ctl_host=$(hostname -s)
new_conf=$(mktemp)
{
    echo "# Written by .ci/cluster/up.sh: 2-node virtual test cluster (network namespaces) on $ctl_host."
    cat <<CONF
ClusterName=$CLUSTER_NAME
SlurmctldHost=$ctl_host($HOST_ADDR)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmdUser=root
CONF
    grep -v '^#' "$here/../slurm-common.conf"
    cat <<CONF
StateSaveLocation=$CLUSTER_DIR/ctld
SlurmdSpoolDir=$CLUSTER_DIR/spool/%n
SlurmctldPidFile=$CLUSTER_DIR/run/slurmctld.pid
SlurmdPidFile=$CLUSTER_DIR/run/slurmd-%n.pid
SlurmctldLogFile=$CLUSTER_DIR/log/slurmctld.log
SlurmdLogFile=$CLUSTER_DIR/log/slurmd-%n.log
SlurmdTimeout=30
KillWait=5
CONF
    for node in "${NODES[@]}"; do
        echo "NodeName=$node NodeAddr=$(node_addr "$node") CPUs=2 RealMemory=1000 State=UNKNOWN"
    done
    echo "PartitionName=cluster Nodes=$(IFS=,; echo "${NODES[*]}") Default=YES MaxTime=INFINITE State=UP"
} > "$new_conf"
if ! cmp -s "$new_conf" "$CLUSTER_CONF"; then
    log "writing $CLUSTER_CONF"
    install -m 0644 "$new_conf" "$CLUSTER_CONF"
    conf_changed=1
else
    conf_changed=0
fi
rm -f "$new_conf"

# A pid file names a live daemon only if that pid still runs the daemon:
# after a reboot, a stale file's pid may belong to anything.

if pid_alive "$CLUSTER_DIR/run/slurmctld.pid" slurmctld && [ "$conf_changed" = 1 ]; then
    log "configuration changed: restarting the cluster's daemons"
    bash "$here/down.sh" --keep-network
fi
if ! pid_alive "$CLUSTER_DIR/run/slurmctld.pid" slurmctld; then
    log "starting slurmctld (port $CTLD_PORT)"
    slurmctld -f "$CLUSTER_CONF" || fail "slurmctld did not start"
fi
for node in "${NODES[@]}"; do
    if ! pid_alive "$CLUSTER_DIR/run/slurmd-$node.pid" slurmd; then
        log "starting slurmd -N $node in $(node_netns "$node") (hostname $node)"
        # nsenter, not `ip netns exec`: that remounts /sys, hiding /sys/fs/cgroup from slurmd.
        nsenter --net="/run/netns/$(node_netns "$node")" unshare --uts /bin/sh -c \
            "hostname $node && SLURM_CONF=$CLUSTER_CONF exec slurmd -N $node -f $CLUSTER_CONF" \
            || fail "slurmd -N $node did not start"
    fi
done

problem=$(wait_nodes_up $((SECONDS + WAIT_S)) "${NODES[@]}") || fail "$problem after ${WAIT_S}s"
log "up: $(sinfo -h -N -o '%N %t' | tr '\n' ' ')"
echo "export SLURM_CONF=$CLUSTER_CONF"
