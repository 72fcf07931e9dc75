#!/usr/bin/env bash
# Start a one-node Slurm on this host, as root, for tests/test_slurm.py.
#
# Installs slurm-wlm and munge with apt-get (only if missing), writes
# /etc/slurm/slurm.conf for this host (its real CPUs and memory from
# `slurmd -C`; no cgroups: proctrack/linuxproc, task/none; no accounting, so
# Parsl's SlurmProvider reads job states from squeue), starts munged,
# slurmctld and slurmd, and waits (bounded) until sinfo shows the node up.
# Safe to re-run: a running, healthy Slurm is left alone.
set -euo pipefail

WAIT_S=${SLURM_SETUP_WAIT_S:-90}
HOST=$(hostname -s)
CONF=/etc/slurm/slurm.conf

log() { echo "20-slurm: $*"; }
fail() { echo "20-slurm: ERROR: $*" >&2; for f in /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log; do
           [ -f "$f" ] && { echo "--- tail $f" >&2; tail -n 20 "$f" >&2; }; done; exit 1; }

# shellcheck source=.ci/slurm-lib.sh
. "$(dirname "$0")/../slurm-lib.sh"

[ "$(id -u)" = 0 ] || fail "must run as root (it installs packages and starts daemons)"

bash "$(dirname "$0")/../apt-ensure.sh" 20-slurm slurm-wlm munge

if scontrol ping >/dev/null 2>&1 && node_up "$HOST"; then
    log "Slurm already running; node $HOST is $(node_state "$HOST")"
    exit 0
fi

# munge: shared with the 2-node virtual cluster (.ci/munge-up.sh).
bash "$(dirname "$0")/../munge-up.sh"

mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
node_line=$(slurmd -C | head -n1)
case "$node_line" in NodeName=*) ;; *) fail "slurmd -C printed no NodeName line: $node_line";; esac
new_conf=$(mktemp)
{
cat <<CONF
# Written by .ci/setup.d/20-slurm.sh: one-node test cluster on $HOST.
ClusterName=parslflux
SlurmctldHost=$HOST
CONF
grep -v '^#' "$(dirname "$0")/../slurm-common.conf"
cat <<CONF
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmdTimeout=60
$node_line State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
} > "$new_conf"
if ! cmp -s "$new_conf" "$CONF"; then
    log "writing $CONF"
    install -m 0644 "$new_conf" "$CONF"
fi
rm -f "$new_conf"

if ! scontrol ping >/dev/null 2>&1; then
    log "starting slurmctld"
    slurmctld || fail "slurmctld did not start"
fi
# By its pid file: `pgrep slurmd` would also find the virtual cluster's slurmds.
if ! pid_alive /run/slurmd.pid slurmd; then
    log "starting slurmd"
    slurmd || fail "slurmd did not start"
fi

problem=$(wait_nodes_up $((SECONDS + WAIT_S)) "$HOST") || fail "$problem after ${WAIT_S}s"
log "Slurm is up: $(sinfo -h -N -o '%N %t %c CPUs %m MB' | head -n1)"
