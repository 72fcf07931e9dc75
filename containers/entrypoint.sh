#!/bin/sh
# Entrypoint of the parsl-flux image (Docker ENTRYPOINT, Apptainer %runscript).
#
#   IMAGE                  print what the image holds and how to use it
#   IMAGE flux ARGS...     run that flux command as given (a block's launch
#                          line is `flux start ...`; it must not be nested)
#   IMAGE CMD ARGS...      run CMD inside a new single-node Flux instance
#                          (`flux start CMD`), or directly when FLUX_URI says
#                          it already runs inside one; either way a Parsl
#                          driver in CMD finds Flux through FLUX_URI
#
# The Python report (versions) comes from parsl_flux.tools.images, so the CLI
# (`parsl-flux image`) and this script print the same thing.
set -eu

PYTHON=${PARSL_FLUX_PYTHON:-python3}

usage() {
    cat <<'USAGE'

Usage:
  docker run --rm IMAGE python workflow.py        # a new Flux instance runs it
  apptainer run parsl-flux.sif python workflow.py
  apptainer exec parsl-flux.sif flux start ...    # what a Parsl block runs
  IMAGE flux ARGS...                              # any flux command, as is

Inside an existing Flux instance (FLUX_URI set) CMD runs directly in it.
USAGE
}

if [ "$#" -eq 0 ]; then
    echo "parsl-flux image"
    "$PYTHON" -m parsl_flux.tools.images versions || echo "(could not run $PYTHON -m parsl_flux.tools.images)" >&2
    usage
    exit 0
fi

if [ "$1" = "flux" ] || [ -n "${FLUX_URI:-}" ]; then
    exec "$@"
fi
exec flux start "$@"
