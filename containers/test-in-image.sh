#!/bin/bash
# Run inside the parsl-flux image (CI: .github/workflows/images.yml):
#   docker run --rm --entrypoint /opt/parsl-flux/containers/test-in-image.sh IMAGE
# 1. the whole test suite, from a writable copy of the source the image was
#    built from, with the image's Flux; fails if Flux tests were skipped;
# 2. an MPI program (mpi4py on the image's OpenMPI) launched by `flux run`;
# 3. the README's example workflow through the entrypoint (new Flux instance).
set -euo pipefail

src=${PARSL_FLUX_SOURCE:-/opt/parsl-flux}
work=$(mktemp -d)
cp -r "$src/." "$work"
cd "$work"

echo "== test suite (make test)"
make test PYTEST_ARGS="-q -rs" 2>&1 | tee test.log
if grep -q "no Flux found" test.log; then
    echo "test-in-image: Flux tests were skipped inside the image" >&2
    exit 1
fi

echo "== MPI under flux run"
flux start flux run -n 2 python3 -c \
    'from mpi4py import MPI; c = MPI.COMM_WORLD; assert c.Get_size() == 2, c.Get_size(); print("rank", c.Get_rank(), "of", c.Get_size())'

echo "== example workflow through the entrypoint"
parsl-flux-entrypoint python3 examples/workflow.py
