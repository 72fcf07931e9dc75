"""The soak's short mode (issue 20): ~2 minutes of mixed apps under every local fault kind.

``tests/soak/soak.py`` runs the workflow ``tests/soak/wf_soak.py`` against a
local block while it injects, with a fixed seed, runner, manager and broker
SIGKILL, broker SIGSTOP then SIGCONT or SIGKILL, connection resets, and the
driver killed and started again from Parsl's checkpoints; the verdict checks
that no future is left unresolved, no result is wrong, doubled or stale, no
finished app runs again after a restart, every failure is explained, nothing
is left running and the driver's resources stay flat. ``make soak
MINUTES=30`` runs it longer.
"""

import os
import random
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "soak"))
import soak  # noqa: E402

pytestmark = [pytest.mark.flux,
              pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ss") is None,
                                 reason="needs root and ss(8) to reset the manager's connection (ss -K)")]

SEED = 20
MINUTES = 2.0
GAP = 12.0  # mean seconds between faults: the 7 kinds fit in the first 1.5 minutes on average


def _assert_passed_with_every_kind(verdict: "soak.Verdict", out: Path, kinds) -> None:
    """Every check of the verdict holds and every fault kind of ``kinds`` was injected."""
    table = soak.report(verdict, out)
    failed = [(name, value) for name, value, ok in verdict.checks if not ok]
    assert not failed, f"soak checks failed: {failed}\n{table}"
    injected = {row[0] for row in verdict.per_fault if row[1] > 0}
    assert injected == set(kinds), f"fault kinds not injected: {set(kinds) - injected}\n{table}"


def test_a_kind_that_found_nothing_to_hit_is_drawn_again_until_injected():
    """After the seeded first pass, a kind skipped so far (no runner while a
    replacement block starts) is drawn before any other until it is injected."""
    kinds = ["a", "b", "c"]
    faults = []
    order = soak.fault_order(kinds, random.Random(1), faults)
    first = [next(order) for _ in kinds]
    assert sorted(first) == kinds
    faults += [soak.Fault(0.0, skipped="nothing to hit" if k == "b" else "", kind=k) for k in first]
    assert [next(order) for _ in range(5)] == ["b"] * 5
    faults.append(soak.Fault(0.0, "b's target", kind="b"))
    assert {next(order) for _ in range(60)} == set(kinds)


def test_short_soak_loses_nothing_under_every_local_fault_kind(flux_path, tmp_path, monkeypatch):
    monkeypatch.setenv("FLUX_PATH", flux_path)
    verdict = soak.soak(MINUTES, SEED, tmp_path / "out", GAP, keep=False)
    _assert_passed_with_every_kind(verdict, tmp_path / "out", soak.LOCAL_FAULTS)


CLUSTER_MINUTES = 5.0
CLUSTER_GAP = 9.0  # the 12 kinds fit in 5 minutes with this seed


@pytest.mark.slurm
@pytest.mark.cluster
@pytest.mark.timeout(900)  # 5 minutes of faults, then the last apps, the blocks' end and the verdict
def test_short_soak_on_the_two_node_cluster_loses_nothing(flux_path, tmp_path, monkeypatch):
    """The same on the virtual cluster (blocks of 2 nodes, the SIF), with a node
    cut off from the driver for 3 s and 30 s, a node's processes killed, the
    nodes cut from each other, slurmd restarted and the driver killed and
    restarted; every kind is injected at least once, and no Slurm job and no
    drop rule may be left."""
    from test_cluster import SIF, _cluster_problem

    problem = _cluster_problem()
    if problem:
        pytest.skip(problem)
    monkeypatch.setenv("FLUX_PATH", flux_path)
    verdict = soak.soak(CLUSTER_MINUTES, SEED, tmp_path / "out", CLUSTER_GAP, keep=False, sif=str(SIF.resolve()))
    _assert_passed_with_every_kind(verdict, tmp_path / "out", soak.CLUSTER_FAULTS)
