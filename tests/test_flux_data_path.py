"""Arrays through real Flux blocks: out of band both ways, writable at both ends,
the arguments as they were at submit, on each kind of task server (AF_UNIX and
TCP with per-task credentials) and in packing mode."""

import sys

import cloudpickle
import numpy
import pytest

pytestmark = pytest.mark.flux

cloudpickle.register_pickle_by_value(sys.modules[__name__])

MIB = 1 << 20


def bump_and_split(arr, scale):
    """Works on its argument in place (as HTEX allows), returns two arrays and a scalar."""
    arr += 1
    return {"scaled": arr * scale, "tail": arr[-4:].copy(), "sum": float(arr.sum())}


def _check(ex, sizes):
    originals = [numpy.full(n // 8, float(i), dtype=numpy.float64) for i, n in enumerate(sizes)]
    futures = [ex.submit(bump_and_split, {}, arr, 3.0) for arr in originals]
    for arr in originals:
        arr -= 100  # the script goes on with its arrays; the tasks keep what was submitted
    for i, (fut, n) in enumerate(zip(futures, sizes)):
        out = fut.result(timeout=180)
        assert out["scaled"].nbytes == n and (out["scaled"] == 3.0 * (i + 1)).all()
        assert (out["tail"] == i + 1).all() and out["sum"] == (i + 1) * (n // 8)
        out["scaled"] *= 2  # a result's array is the user's to change
        assert out["scaled"][0] == 6.0 * (i + 1)


@pytest.mark.parametrize("packing", [False, True], ids=["per-job", "packing"])
def test_arrays_round_trip_on_a_local_block(make_executor, packing):
    _check(make_executor(packing=packing), [1 * MIB, 9 * MIB, 8])


def test_arrays_round_trip_over_tcp_with_task_credentials(make_executor):
    """Two brokers: the task server listens on TCP and every part is MAC'd with the task's credential."""
    ex = make_executor(launch_cmd="{flux} start --test-size=2 {flux} env {python} -m parsl_flux.allocation.manager "
                                  "--url {url} --block-id {block_id} --workdir {workdir}")
    assert ex.blocks["0"].resources.nodes == 2
    _check(ex, [9 * MIB, 2 * MIB])
