#!/usr/bin/env bash
# CI set-up for the bundle end to end: podman, Apptainer (Debian sid's, under a
# private prefix), the local stand-in for the base image where the real one
# cannot be pulled, the image and SIF of this checkout, and the 2-node virtual
# Slurm cluster (network namespaces) that tests/test_cluster.py runs on.
# Each step is idempotent and reuses what this machine already has; from
# scratch the chain takes ~15 min on 2 cores (stand-in ~7, image ~3, SIF ~2).
set -euo pipefail
cd "$(dirname "$0")/../.."
step() { local start=$SECONDS; echo "30-bundle: $*"; "$@"; echo "30-bundle: $1 ... done in $((SECONDS - start))s"; }
step bash containers/podman-setup.sh
command -v apptainer >/dev/null 2>&1 || step bash containers/apptainer-sid.sh
step make --no-print-directory base-standin
step make --no-print-directory image
step make --no-print-directory sif
step bash .ci/cluster/up.sh
