#!/usr/bin/env bash
# ensure-flux.sh PYTHON TARGET: make sure a Flux and OpenMPI are there for
# `make TARGET` (run, conformance). Flux is looked up by the package's one rule
# (parsl_flux.fluxpath: FLUX_PATH, then PATH, then the prefix `make flux`
# builds), through PYTHON, the interpreter that will use it; when none is
# found, flux-core is built (mk/build-flux.sh, ~3 min on 2 cores), and
# Debian's OpenMPI installed when mpicc is missing.
set -euo pipefail
python=${1:?usage: ensure-flux.sh PYTHON TARGET}
target=${2:-run}
here=$(cd "$(dirname "$0")" && pwd)
if [ -z "$("$python" -c 'from parsl_flux import fluxpath; print(fluxpath.find_flux() or "")')" ]; then
    echo "make $target: no Flux found (FLUX_PATH, then PATH, then make flux's prefix): building flux-core now (~3 min on 2 cores)"
    bash "$here/build-flux.sh" --with-mpi
elif ! command -v mpicc >/dev/null; then
    bash "$here/build-flux.sh" --mpi-only
fi
