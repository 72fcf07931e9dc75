#!/bin/bash
# Sourced by .ci/cluster/*.sh: names and addresses of the 2-node test cluster.
# Everything lives on this machine: a bridge in the root network namespace and
# one network namespace per node, on a private subnet made here and nowhere else.
# shellcheck disable=SC2034  # the variables are for the scripts that source this
CLUSTER_DIR=${PARSL_FLUX_CLUSTER_DIR:-/var/lib/parsl-flux-cluster}
CLUSTER_CONF=$CLUSTER_DIR/slurm.conf
CLUSTER_NAME=pfcluster
BRIDGE=pfbr0
SUBNET_PREFIX=${PARSL_FLUX_CLUSTER_SUBNET:-10.213.77}
HOST_ADDR=$SUBNET_PREFIX.1               # the driver's and slurmctld's address on the bridge
NODES=(pfnode1 pfnode2)
node_addr() { echo "$SUBNET_PREFIX.$((10 + ${1#pfnode}))"; }
node_netns() { echo "pf-$1"; }
CTLD_PORT=6917                            # not 6817/6818: the one-node Slurm of .ci/setup.d may run too
SLURMD_PORT=6918
