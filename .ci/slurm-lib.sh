#!/bin/bash
# Sourced by .ci/setup.d/20-slurm.sh (one-node Slurm) and .ci/cluster/up.sh
# (the 2-node virtual cluster): the daemon and node checks both need.
# Clients must already point at the right cluster (SLURM_CONF).

# pid_alive FILE COMM: the pid file names a live COMM daemon. After a reboot a
# stale file's pid may belong to anything, so the pid's comm must match too.
pid_alive() { [ -s "$1" ] && [ "$(cat "/proc/$(cat "$1")/comm" 2>/dev/null)" = "$2" ]; }

# node_state NODE: its state as sinfo prints it (`idle*`: not responding).
node_state() { sinfo -h -N -n "$1" -o %t 2>/dev/null | head -n1 || true; }

# node_up NODE: up, with no suffix.
node_up() { case "$(node_state "$1")" in idle|mix|alloc|comp) return 0;; *) return 1;; esac; }

# wait_nodes_up DEADLINE NODE...: until each node is up, resuming any that
# Slurm marked down or drained; returns 1 naming the first that is not up by
# DEADLINE (a $SECONDS value).
wait_nodes_up() {
    local deadline=$1 node
    shift
    for node in "$@"; do
        until node_up "$node"; do
            case "$(node_state "$node")" in
                down*|drain*|drng*|fail*|unk*) scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true;;
            esac
            if [ "$SECONDS" -ge "$deadline" ]; then
                echo "node $node not up (state '$(node_state "$node")'; sinfo: $(sinfo -N 2>&1 | tr '\n' ' '))"
                return 1
            fi
            sleep 1
        done
    done
}
