#!/usr/bin/env bash
# CI set-up: a real Flux for the tests. Builds flux-core from ../shared/vendor
# into the per-user cache (mk/build-flux.sh; ~3 min on 2 cores the first time,
# reused afterwards) and installs Debian's OpenMPI, which MPI apps and the
# Flux MPI tests launch through Flux's PMI. The tests find this Flux through
# parsl_flux.fluxpath (no PATH change needed).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash mk/build-flux.sh --with-mpi
# mpi4py for the system Python: tests/test_mpi_parsl_model.py launches an
# mpi4py program through $PARSL_MPI_PREFIX with /usr/bin/python3.
bash .ci/apt-ensure.sh 05-flux python3-mpi4py
