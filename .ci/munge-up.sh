#!/usr/bin/env bash
# Start munged (Slurm's authentication) as root, once for the whole machine:
# shared by the one-node Slurm (.ci/setup.d/20-slurm.sh) and the 2-node virtual
# cluster (.ci/cluster/up.sh), which use the same key. Makes the key if the
# package did not; idempotent; waits (bounded) until munge answers.
set -euo pipefail
if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
        || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /etc/munge /etc/munge/munge.key /run/munge /var/log/munge /var/lib/munge
chmod 0700 /etc/munge /var/log/munge /var/lib/munge
chmod 0400 /etc/munge/munge.key
chmod 0755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    echo "munge-up: starting munged"
    runuser -u munge -- /usr/sbin/munged --force
    for _ in $(seq 1 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
    munge -n | unmunge >/dev/null || { echo "munge-up: ERROR: munged does not answer" >&2; exit 1; }
fi
