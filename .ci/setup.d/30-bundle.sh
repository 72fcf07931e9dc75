#!/usr/bin/env bash
# CI set-up for the bundle end to end: podman, Apptainer (Debian sid's, under a
# private prefix), the local stand-in for the base image where the real one
# cannot be pulled, the image and SIF of this checkout, and the 2-node virtual
# Slurm cluster (network namespaces) that tests/test_cluster.py runs on; the
# LAMMPS application image and SIF built FROM the image (tests/test_app_image.py)
# and Debian's docker-registry, which `make release-test` runs on 127.0.0.1.
# Each artifact is reused only while its recipe stamp matches (mk/stamp.sh);
# every step says whether it reused or rebuilt, and why. From scratch the
# chain takes ~20 min on 2 cores (stand-in ~12, image ~4, SIF ~2).
set -euo pipefail
cd "$(dirname "$0")/../.."
step() { local start=$SECONDS; echo "30-bundle: $*"; "$@"; echo "30-bundle: $* ... done in $((SECONDS - start))s"; }
step bash containers/podman-setup.sh
# Apptainer: ours (the sid unpack, stamped), unless the machine has its own.
app=$(command -v apptainer || true)
if [ -z "$app" ] || grep -qs 'Written by containers/apptainer-sid.sh' "$(readlink -f "$app")"; then
    step bash containers/apptainer-sid.sh
else
    echo "30-bundle: apptainer: reuse the machine's own $app ($(apptainer --version))"
fi
step make --no-print-directory base-standin
step make --no-print-directory image
step make --no-print-directory sif
step make --no-print-directory app-image
step make --no-print-directory app-sif
# The registry package only; release-test starts its own on 127.0.0.1 and stops it.
step bash .ci/apt-ensure.sh 30-bundle docker-registry
step bash .ci/cluster/up.sh
