#!/bin/bash
# Run inside the parsl-flux image (CI: .github/workflows/images.yml; here:
# `make image-test`):
#   docker run --rm --entrypoint /opt/parsl-flux/containers/test-in-image.sh IMAGE
# Steps, each run whatever happened to the ones before, each reported with its
# result and time; the script fails at the end if any step failed:
# 1. the whole test suite, from a writable copy of the source the image was
#    built from, with the image's Flux; fails if Flux tests were skipped
#    ("no Flux found" in the skip reasons);
# 2. an MPI program (mpi4py on the image's OpenMPI) launched by `flux run`;
# 3. the README's example workflow through the entrypoint (new Flux instance).
# TEST_IN_IMAGE_STEPS (e.g. "mpi example") runs only the steps named.
set -uo pipefail

src=${PARSL_FLUX_SOURCE:-/opt/parsl-flux}
steps=${TEST_IN_IMAGE_STEPS:-suite mpi example}
work=$(mktemp -d)
cp -r "$src/." "$work"
cd "$work" || exit 1

results=()
failed=0

# step NAME DESCRIPTION CMD...: run CMD, record "NAME: ok|FAILED (rc) in Ns".
step() {
    local name=$1 what=$2 start=$SECONDS rc
    shift 2
    case " $steps " in *" $name "*) ;; *) results+=("$name: skipped (not in TEST_IN_IMAGE_STEPS)"); return 0;; esac
    echo "== $name: $what"
    "$@"
    rc=$?
    if [ "$rc" -eq 0 ]; then
        results+=("$name: ok in $((SECONDS - start))s ($what)")
    else
        results+=("$name: FAILED (exit $rc) after $((SECONDS - start))s ($what)")
        failed=$((failed + 1))
    fi
    echo "== $name: $([ "$rc" -eq 0 ] && echo ok || echo "FAILED (exit $rc)")"
}

suite() {
    # The image's base runs Fluxion (tests/test_scheduler.py checks the blocks do).
    PARSL_FLUX_EXPECT_SCHEDULER=${PARSL_FLUX_EXPECT_SCHEDULER:-sched-fluxion-qmanager} \
    make test PYTEST_ARGS="${PYTEST_ARGS:--q -rs}" 2>&1 | tee test.log
    local rc=${PIPESTATUS[0]}
    if grep -q "no Flux found" test.log; then
        echo "test-in-image: Flux tests were skipped inside the image" >&2
        return 1
    fi
    return "$rc"
}

mpi() {
    flux start flux run -n 2 python3 -c \
        'from mpi4py import MPI; c = MPI.COMM_WORLD; assert c.Get_size() == 2, c.Get_size(); print("rank", c.Get_rank(), "of", c.Get_size())'
}

example() {
    parsl-flux-entrypoint python3 examples/workflow.py
}

step suite "test suite (make test) with the image's Flux" suite
step mpi "MPI program under flux run" mpi
step example "example workflow through the entrypoint" example

echo "== summary"
printf '  %s\n' "${results[@]}"
if [ "$failed" -gt 0 ]; then
    echo "test-in-image: $failed step(s) failed" >&2
    exit 1
fi
echo "test-in-image: all steps passed"
