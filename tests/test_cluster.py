"""The Slurm site config with Apptainer on a real 2-node cluster (virtual:
network namespaces on this machine, started by ``make cluster-up``).

A block goes SlurmProvider -> sbatch -> ``srun --ntasks 2 --ntasks-per-node=1
--mpi=pmi2`` -> ``apptainer exec parsl-flux.sif flux start`` on each node ->
two brokers bootstrapped by PMI -> the manager (rank 0) dials the driver.
Then: an MPI app across both nodes, python, bash and failing apps, a
connection reset the block survives, and the loss of one node's broker
(BlockLost, then a new block serves).

Needs: the cluster (``make cluster-up``: .ci/cluster/up.sh), Apptainer
(``make apptainer-tool``) and the SIF (``make image sif``, or
``PARSL_FLUX_CLUSTER_SIF``). Skipped, naming what is missing, otherwise.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Dict, Iterator, List

import parsl
import pytest
from parsl import bash_app, python_app

from conftest import wait_for
from parsl_flux.allocation import rundir_guard
from parsl_flux import sites
from parsl_flux.driver import relaunch
from parsl_flux.errors import BlockLost
from parsl_flux.providers import SlurmProvider

pytestmark = [pytest.mark.slurm, pytest.mark.cluster]

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_DIR = Path(os.environ.get("PARSL_FLUX_CLUSTER_DIR", "/var/lib/parsl-flux-cluster"))
CLUSTER_CONF = CLUSTER_DIR / "slurm.conf"
NODES = ("pfnode1", "pfnode2")
DRIVER_ADDRESS = os.environ.get("PARSL_FLUX_CLUSTER_DRIVER", "10.213.77.1")  # .ci/cluster/env.sh
SIF = Path(os.environ.get("PARSL_FLUX_CLUSTER_SIF", ROOT / "parsl-flux.sif"))
START_S = 240  # a block: sbatch, srun on 2 nodes, apptainer, flux start, manager


class _FastPollSlurmProvider(SlurmProvider):
    """squeue every 2 s instead of 60 s, so a lost block is noticed quickly."""

    status_polling_interval = 2  # type: ignore[assignment]


def _cluster_problem() -> str | None:
    """Why the 2-node cluster cannot be used here, or None."""
    if not shutil.which("sbatch"):
        return "sbatch is not on PATH"
    if not CLUSTER_CONF.exists():
        return f"the 2-node virtual cluster is not up: no {CLUSTER_CONF} (start it: make cluster-up)"
    env = {**os.environ, "SLURM_CONF": str(CLUSTER_CONF)}
    try:
        done = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], capture_output=True, text=True, timeout=20,
                              env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the 2-node virtual cluster is not up: sinfo failed: {exc} (start it: make cluster-up)"
    states = dict(line.split() for line in done.stdout.splitlines() if len(line.split()) == 2)
    up = [n for n in NODES if states.get(n, "").rstrip("*~#!%$@^-") in ("idle", "mix", "alloc", "comp")]
    if done.returncode != 0 or len(up) != len(NODES):
        return (f"the 2-node virtual cluster is not up: nodes {states or '(none)'}"
                f"{': ' + done.stderr.strip() if done.stderr.strip() else ''} (start it: make cluster-up)")
    if not shutil.which("apptainer"):
        return "apptainer is not on PATH (make apptainer-tool)"
    if not SIF.exists():
        return f"no image {SIF} (make image sif, or set PARSL_FLUX_CLUSTER_SIF)"
    return None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[parsl.DataFlowKernel]:
    """One DFK for the module: the slurm site with Apptainer, 2 nodes per block."""
    problem = _cluster_problem()
    if problem:
        pytest.skip(problem)
    run_dir = tmp_path_factory.mktemp("cluster") / "runinfo"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLURM_CONF", str(CLUSTER_CONF))  # sbatch/squeue here, srun in the job (--export=ALL)
        config = sites.make_config("slurm", image=str(SIF), runtime="apptainer", nodes=2, address=DRIVER_ADDRESS,
                                   walltime="00:15:00", run_dir=str(run_dir), heartbeat_threshold=10)
        executor = sites.flux_executor(config)
        executor.provider.__class__ = _FastPollSlurmProvider
        dfk = parsl.load(config)
        try:
            yield dfk
        finally:
            try:
                dfk.cleanup()
            finally:
                parsl.clear()


@python_app
def mpi_ranks(parsl_resource_specification={}):
    import socket

    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    hosts = comm.allgather(socket.gethostname())
    total = comm.allreduce(comm.Get_rank() + 1, op=MPI.SUM)
    return comm.Get_size(), hosts, total


@python_app
def where_am_i():
    import os
    import socket

    return socket.gethostname(), os.path.isdir("/opt/parsl-flux"), os.environ.get("FLUX_URI", "")


@python_app
def doubled(arr):
    import numpy

    return arr * 2, numpy.__file__


@bash_app
def hello(stdout=None, stderr=None):
    return 'echo "hello from $(hostname) in $(flux getattr size)-broker instance"'


@bash_app
def modules(stdout=None, stderr=None):
    return "flux exec -r 0 flux module list"  # the scheduler runs on rank 0; the app may be on rank 1


@bash_app
def parsl_style_mpi(stdout=None, stderr=None, parsl_resource_specification={}):
    """Written for Parsl's MPIExecutor: runs once, starts its ranks with $PARSL_MPI_PREFIX."""
    return ('echo "nodelist $PARSL_MPI_NODELIST ranks $PARSL_NUM_RANKS"; '
            "$PARSL_MPI_PREFIX sh -c 'echo rank $FLUX_TASK_RANK on $(hostname)'")


@bash_app
def parsl_style_mpi4py(stdout=None, stderr=None, parsl_resource_specification={}):
    return ("$PARSL_MPI_PREFIX python3 -c 'import socket; from mpi4py import MPI; c = MPI.COMM_WORLD; "
            'print("mpi4py", c.Get_rank(), c.Get_size(), c.allreduce(c.Get_rank()), socket.gethostname())\'')


@python_app
def fails():
    raise ValueError("this app fails on purpose")


@bash_app
def exits_3():
    return "exit 3"


@python_app
def sleeps(marker, seconds, parsl_resource_specification={}):
    import socket
    import time

    with open(marker, "a") as f:
        f.write(socket.gethostname() + "\n")
    time.sleep(seconds)
    return "slept"


def test_mpi_app_spans_both_nodes(cluster):
    """num_nodes=2, num_tasks=2: one rank per node, MPI_Allreduce over TCP between them."""
    future = mpi_ranks(parsl_resource_specification={"num_nodes": 2, "num_tasks": 2})
    size, hosts, total = future.result(timeout=START_S)
    assert size == 2
    assert sorted(hosts) == sorted(NODES), f"ranks ran on {hosts}, not one per node"
    assert total == 1 + 2


def test_python_app_runs_in_the_image(cluster):
    host, in_image, uri = where_am_i().result(timeout=START_S)
    assert host in NODES
    assert in_image, "the app did not run inside the image (/opt/parsl-flux missing)"
    assert uri, "the app did not run as a Flux job"


def test_a_numpy_array_goes_to_a_block_in_the_image_and_back(cluster):
    """An 8 MiB array in and one out, rebuilt on a node by the image's own numpy
    (NumPy 2 from PyPI in the image's venv: this driver's NumPy 2 pickles name
    ``numpy._core``, which Debian bookworm's numpy 1.24 does not have)."""
    import numpy

    arr = numpy.arange(2 ** 20, dtype=numpy.float64)
    out, where = doubled(arr).result(timeout=START_S)
    assert numpy.array_equal(out, arr * 2)
    assert where.startswith("/opt/venv/"), f"numpy came from {where}, not the image's venv"


def test_bash_app_sees_a_two_broker_instance(cluster, tmp_path):
    out = tmp_path / "hello.out"
    assert hello(stdout=str(out), stderr=str(tmp_path / "hello.err")).result(timeout=START_S) == 0
    text = out.read_text()
    assert "hello from pfnode" in text and "in 2-broker instance" in text, text


def test_block_runs_fluxion(cluster, tmp_path):
    """The SIF's base runs Fluxion, as the published fluxrm/flux-sched image does."""
    out = tmp_path / "modules.out"
    assert modules(stdout=str(out), stderr=str(tmp_path / "modules.err")).result(timeout=START_S) == 0
    names = [line.split()[0] for line in out.read_text().splitlines()[1:] if line.strip()]
    assert "sched-fluxion-qmanager" in names and "sched-simple" not in names, names


def test_blocks_stderr_has_no_squeue_error(cluster):
    """The image has no ``squeue``: ``flux start`` runs without ``SLURM_JOB_ID``,
    so flux-core's ``slurm-expiration-sync`` does not fail on every block."""
    assert where_am_i().result(timeout=START_S)[1]
    stderrs = list(Path(cluster.run_dir).glob("**/submit_scripts/*.stderr"))
    assert stderrs, f"no block stderr under {cluster.run_dir}"
    for path in stderrs:
        assert "squeue" not in path.read_text(), f"{path}:\n{path.read_text()[-2000:]}"


def test_parsl_style_mpi_app_spans_both_nodes(cluster, tmp_path):
    """Issue 23's app, unchanged from an MPIExecutor workflow: {"num_nodes": 2, "ranks_per_node": 2}."""
    out, err = tmp_path / "mpi.out", tmp_path / "mpi.err"
    spec = {"num_nodes": 2, "ranks_per_node": 2}
    assert parsl_style_mpi(stdout=str(out), stderr=str(err), parsl_resource_specification=spec).result(
        timeout=START_S) == 0, err.read_text()
    lines = out.read_text().splitlines()
    header = [ln for ln in lines if ln.startswith("nodelist")]
    assert len(header) == 1, f"the app must run once: {lines}"
    assert sorted(header[0].split()[1].split(",")) == sorted(NODES) and header[0].split()[3] == "4", header
    ranks = sorted(ln.split()[1:] for ln in lines if ln.startswith("rank"))
    assert [r[0] for r in ranks] == ["0", "1", "2", "3"], lines
    assert sorted(r[2] for r in ranks) == sorted(NODES * 2), f"ranks not two per node: {lines}"


def test_parsl_style_mpi4py_app_spans_both_nodes(cluster, tmp_path):
    out, err = tmp_path / "mpi4py.out", tmp_path / "mpi4py.err"
    spec = {"num_nodes": 2, "num_ranks": 2}
    assert parsl_style_mpi4py(stdout=str(out), stderr=str(err), parsl_resource_specification=spec).result(
        timeout=START_S) == 0, err.read_text()
    rows = sorted(ln.split()[1:] for ln in out.read_text().splitlines() if ln.startswith("mpi4py"))
    assert [r[:3] for r in rows] == [["0", "2", "1"], ["1", "2", "1"]], rows  # one 2-rank world
    assert sorted(r[3] for r in rows) == sorted(NODES), rows


def test_failing_apps_fail_their_futures(cluster):
    error = fails().exception(timeout=START_S)
    assert isinstance(error, ValueError) and "on purpose" in str(error)
    error = exits_3().exception(timeout=START_S)
    assert error is not None and "3" in str(error), repr(error)


def _sleeping_on_both_nodes(marker: Path, seconds: float):
    """A 2-node app sleeping ``seconds``, once both its ranks have started (each writes its host to ``marker``)."""
    app = sleeps(str(marker), seconds, parsl_resource_specification={"num_nodes": 2, "num_tasks": 2})
    deadline = time.monotonic() + START_S
    while not (marker.exists() and len(marker.read_text().split()) == 2) and time.monotonic() < deadline:
        assert not app.done(), f"the app ended early: {app.exception()!r}"
        time.sleep(0.5)
    assert marker.exists() and len(marker.read_text().split()) == 2, "the app did not start on both nodes"
    return app


def _in_node(node: str, *argv: str) -> List[str]:
    return ["ip", "netns", "exec", f"pf-{node}", *argv]


def _refuse_driver_port(port: str, op: str) -> None:
    """Insert (``-I``) or delete (``-D``) on both nodes a rule that answers every
    packet to the driver's port with a TCP reset."""
    for node in NODES:
        subprocess.run(_in_node(node, "iptables", op, "OUTPUT", "-d", DRIVER_ADDRESS, "-p", "tcp", "--dport", port,
                                "-j", "REJECT", "--reject-with", "tcp-reset"), check=True, capture_output=True,
                       timeout=10)


@contextlib.contextmanager
def _cut_off_from_driver(executor, reset_on_driver: bool = False) -> Iterator[None]:
    """While inside: the connections to the driver are reset and every new one
    from the nodes is answered with a TCP reset (the rules are removed on the
    way out). The reset destroys the managers' sockets (their RST then meets
    the rule, so the driver learns nothing), or with ``reset_on_driver`` the
    driver's own, so that the driver knows the route is gone."""
    port = executor.url.rsplit(":", 1)[1]
    _refuse_driver_port(port, "-I")
    try:
        if reset_on_driver:
            subprocess.run(["ss", "-K", "src", DRIVER_ADDRESS, "sport", "=", f":{port}"], capture_output=True,
                           timeout=10)
        else:
            for node in NODES:
                subprocess.run(_in_node(node, "ss", "-K", "dst", DRIVER_ADDRESS, "dport", "=", f":{port}"),
                               capture_output=True, timeout=10)
        yield
    finally:
        _refuse_driver_port(port, "-D")


def _sessions_resumed(run_dir: str) -> int:
    """Sessions the run's managers resumed after a reconnect, from their logs."""
    return sum(log.read_text().count("session of block") for log in Path(run_dir).rglob("manager.log"))


def test_a_one_second_connection_reset_costs_nothing(cluster, tmp_path):
    """Issue 20, item 1: the manager's connection to the driver is reset, and
    for 1 s every new one is answered with a TCP reset. The manager reconnects,
    proves its key again and resumes its session: the running 2-node app ends
    with its value, having run once, and the block is not replaced."""
    executor = cluster.executors["flux"]
    marker = tmp_path / "started"
    app = _sleeping_on_both_nodes(marker, 20)
    blocks_before = dict(executor.blocks_to_job_id)
    resumed_before = _sessions_resumed(cluster.run_dir)
    with _cut_off_from_driver(executor):
        time.sleep(1)
    assert app.result(timeout=120) == "slept"
    assert len(marker.read_text().split()) == 2, "the app ran again"
    assert dict(executor.blocks_to_job_id) == blocks_before, "the block was replaced"
    assert _sessions_resumed(cluster.run_dir) > resumed_before, "no session was resumed: the reset did not happen"


def _broker_pids(node: str) -> List[int]:
    """flux-broker processes in the node's network namespace (the block's broker there)."""
    out = subprocess.run(["ip", "netns", "pids", f"pf-{node}"], capture_output=True, text=True, timeout=20).stdout
    pids = []
    for pid in out.split():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"flux-broker"):
            pids.append(int(pid))
    return pids


def _rank1_rundir(executor, flux_path: str) -> Path:
    """The run directory of the rank-1 broker (pfnode2) of the block that runs a task."""
    (block,) = [b for b in executor.blocks.values() if b.in_flight and not b.closed]
    done = subprocess.run([flux_path, "exec", "-r", "1", "flux", "getattr", "rundir"], capture_output=True, text=True,
                          timeout=30, env={**os.environ, "FLUX_URI": block.info["flux_uri"]})
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip())


def test_losing_a_node_fails_the_block_and_a_new_block_serves(cluster, tmp_path, flux_path):
    """Kill pfnode2's broker: srun (--kill-on-bad-exit) ends the block, its
    futures fail with BlockLost, and the driver carries on with a new block.
    The killed broker's run directory goes with it (issue 20, item 5: it was
    left in /tmp, one per lost block), and so does the app's rank on that node
    (it outlived its broker, reparented to init, until its sleep ended)."""
    executor = cluster.executors["flux"]
    long = _sleeping_on_both_nodes(tmp_path / "started", 600)
    blocks_before = set(executor.blocks_to_job_id)
    rundir = _rank1_rundir(executor, flux_path)
    assert rundir.is_dir(), f"pfnode2's broker has no run directory {rundir} on the shared /tmp"
    assert rundir_guard.jobs_left(str(rundir)), "the app's rank on pfnode2 is not seen as a job of its broker"
    pids = _broker_pids("pfnode2")
    assert pids, "no flux-broker found in pfnode2's namespace"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    lost_at = time.monotonic()
    try:
        error = long.exception(timeout=120)
    except FutureTimeout:
        pytest.fail("the app on the lost block did not fail within 120 s")
    assert isinstance(error, BlockLost), repr(error)
    assert time.monotonic() - lost_at < 120
    wait_for(lambda: not rundir.exists(), 15, f"the killed rank-1 broker's run directory {rundir} to go")
    wait_for(lambda: not rundir_guard.jobs_left(str(rundir)), 15, "the app's rank on pfnode2 to end with its broker")

    host, in_image, _ = where_am_i().result(timeout=START_S)
    assert host in NODES and in_image
    assert set(executor.blocks_to_job_id) - blocks_before, "no new block was started"


CUT_OFF_S = 200.0  # the longest the nodes stay cut off: three failed launches take about 2 minutes


def _launches_while_cut_off(executor, before: set, wanted: int, deadline: float) -> Dict[str, float]:
    """Blocks launched after ``before``, each with when it was first seen
    (monotonic), watched until ``wanted`` were launched or ``deadline``."""
    seen: Dict[str, float] = {}
    while len(seen) < wanted and time.monotonic() < deadline:
        for block_id in set(executor.blocks_to_job_id) - before - set(seen):
            seen[block_id] = time.monotonic()
        time.sleep(0.5)
    return seen


@pytest.mark.timeout(720)
def test_a_block_cut_off_from_the_driver_is_lost_at_once_and_its_replacements_back_off(cluster, tmp_path):
    """Issue 20, items 3 and 4: the driver's connections to the nodes are reset
    and every new one from the nodes refused. The driver knows at once that the
    route is gone and loses the block within the reconnect grace (3 s), not the
    10 s heartbeat threshold. An app waiting meanwhile wants a block, so the
    strategy launches replacements that cannot reach the driver either: after
    the second failed launch in a row the third waits the back-off
    (``relaunch.FIRST_DELAY``) instead of following at the next strategy tick,
    nothing ends the workflow, and once healed the waiting app gets its value."""
    executor = cluster.executors["flux"]
    app = _sleeping_on_both_nodes(tmp_path / "started", 600)
    blocks_before = set(executor.blocks_to_job_id)
    with _cut_off_from_driver(executor, reset_on_driver=True):
        cut_at = time.monotonic()
        try:
            error = app.exception(timeout=30)
        except FutureTimeout:
            pytest.fail("the app on the cut-off block did not fail within 30 s")
        lost_after = time.monotonic() - cut_at
        assert isinstance(error, BlockLost) and "unreachable" in str(error), repr(error)
        assert lost_after < 8, f"lost after {lost_after:.1f}s: the driver waited for the heartbeat threshold"
        waiting = where_am_i()
        launched = _launches_while_cut_off(executor, blocks_before, 3, cut_at + CUT_OFF_S)
        failed = dict(executor._failed_launches)
    assert len(launched) == 3, f"{len(launched)} replacement(s) launched in {CUT_OFF_S:.0f}s of cut-off: {launched}"
    first, second, third = sorted(launched, key=int)
    assert first in failed and second in failed, f"the first two replacements did not fail to launch: {failed}"
    assert launched[second] >= failed[first] - 1, "the second replacement did not wait for the first to fail"
    waited = launched[third] - failed[second]
    assert waited >= relaunch.FIRST_DELAY - 1, (
        f"the third replacement came {waited:.1f}s after the second failed launch in a row, "
        f"not after the back-off of {relaunch.FIRST_DELAY:.0f}s")
    assert not executor.bad_state_is_set, f"the failed launches ended the workflow: {executor.executor_exception!r}"
    host, in_image, _ = waiting.result(timeout=START_S + relaunch.MAX_DELAY)
    assert host in NODES and in_image
