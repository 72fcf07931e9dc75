"""FluxExecutor under Parsl's DFK, against a real Flux instance: apps, dependencies, MPI."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cloudpickle
import parsl
import pytest
from parsl import bash_app, python_app
from parsl.config import Config
from parsl.providers import LocalProvider

from parsl_flux import FluxExecutor

pytestmark = pytest.mark.flux
cloudpickle.register_pickle_by_value(sys.modules[__name__])

HELLO_C = Path(__file__).parent / "data" / "mpi_hello.c"


@pytest.fixture(scope="module")
def dfk(flux_path, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runinfo")
    launch = ("{flux} start --test-size=2 {flux} env {python} -m parsl_flux.allocation.manager --url {url} "
              "--block-id {block_id} --workdir {workdir} --heartbeat-period {heartbeat_period} "
              "--driver-timeout {heartbeat_threshold}")
    executor = FluxExecutor(provider=LocalProvider(init_blocks=1, max_blocks=1), flux_path=flux_path,
                            launch_cmd=launch, label="flux")
    dfk = parsl.load(Config(executors=[executor], run_dir=str(run_dir), strategy="simple"))
    yield dfk
    dfk.cleanup()


@pytest.fixture(scope="module")
def mpi_hello(tmp_path_factory):
    mpicc = shutil.which("mpicc")
    if mpicc is None:
        pytest.skip("mpicc not found: install openmpi-bin libopenmpi-dev")
    exe = tmp_path_factory.mktemp("mpi") / "hello"
    subprocess.run([mpicc, "-o", str(exe), str(HELLO_C)], check=True)
    return exe


@python_app
def add(a, b):
    return a + b


@python_app
def rank_info(parsl_resource_specification={}):
    return int(os.environ["FLUX_TASK_RANK"]), int(os.environ["FLUX_JOB_SIZE"])


@python_app
def broken(x):
    return {}[x]


@bash_app
def echo(msg, stdout=None):
    return f"echo {msg}"


@bash_app
def run_mpi(exe, stdout=None, stderr=None, parsl_resource_specification={}):
    return str(exe)


@bash_app
def exit_code(n):
    return f"exit {n}"


def test_python_app_and_dependencies(dfk):
    a = add(1, 2)
    b = add(a, 10)
    c = add(b, a)
    assert c.result(timeout=120) == 16


def test_python_app_exception(dfk):
    with pytest.raises(KeyError, match="nope"):
        broken("nope").result(timeout=120)


def test_bash_app_stdout_and_exit_code(dfk, tmp_path):
    out = tmp_path / "echo.out"
    assert echo("hello-flux", stdout=str(out)).result(timeout=120) == 0
    assert out.read_text().strip() == "hello-flux"
    with pytest.raises(Exception, match="3"):
        exit_code(3).result(timeout=120)


def test_python_app_ranks(dfk):
    assert rank_info(parsl_resource_specification={"num_tasks": 2}).result(timeout=120) == (0, 2)


@pytest.mark.parametrize("ranks,nodes", [(2, 0), (4, 2)])
def test_mpi_program_gets_real_ranks(dfk, mpi_hello, tmp_path, ranks, nodes):
    out = tmp_path / "mpi.out"
    spec = {"num_tasks": ranks, "num_nodes": nodes} if nodes else {"num_tasks": ranks}
    fut = run_mpi(mpi_hello, stdout=(str(out), "a"), stderr=str(tmp_path / "mpi.err"),
                  parsl_resource_specification=spec)
    assert fut.result(timeout=120) == 0
    lines = sorted(out.read_text().splitlines())
    expected_sum = ranks * (ranks - 1) // 2
    assert lines == sorted(f"rank {r} size {ranks} sum {expected_sum}" for r in range(ranks))


def test_bad_specification_fails_the_app(dfk):
    with pytest.raises(Exception, match="cores_per_task"):
        add(1, 1, parsl_resource_specification={"cores_per_task": 0}).result(timeout=60)
    with pytest.raises(Exception, match="num_nodes"):
        add(1, 1, parsl_resource_specification={"num_nodes": 3, "num_tasks": 3}).result(timeout=60)
