"""Parsl's MPI model (MPIExecutor's keys, ``$PARSL_MPI_PREFIX``) on this executor.

Parsl's own MPI checks (``parsl/tests/test_htex/mpi/``) are ``local`` tests
written for ``MPIExecutor`` (its class, its node scheduler, its prefix
composer, PBS node files). How each applies here:

* ``test_mpi_mode_enabled.py``: its apps run as they are under a DFK with this
  executor (:func:`test_parsl_mpi_mode_checks`): ``test_only_resource_specs_set``
  and ``test_bash_app_using_resource_spec`` unchanged; ``test_bash_default_prefix_set``
  with its ``startswith("mpiexec")`` read as the Flux launcher; ``test_simulated_load``
  sized for a 2-node block. Not applicable: ``test_bash_multiple_set`` (``num_nodes=3``
  with ``num_ranks=4``, a fractional ``ranks_per_node`` refused here) and
  ``test_missing_resource_spec`` (an empty specification is this executor's
  one-task default, not an error);
* ``test_resource_spec.py::test_mpi_resource_spec``: the same valid and bad
  specifications (:func:`test_parsl_valid_specs`, :func:`test_parsl_bad_specs`);
* ``test_mpiex.py::test_get_env``: ``PARSL_NUM_RANKS`` of 3 nodes x 5 ranks;
* ``test_mpi_prefix.py``: every prefix set, none holds ``None``, and
  ``PARSL_MPI_PREFIX`` equals the launcher's own prefix.

Parsl's tests of the MPIExecutor class itself (``test_bad_mpi_config.py``,
``test_mpiex.py::test_init``/``test_docstring``), of its node scheduler
(``test_mpi_scheduler.py``) and of batch-system node lists have no
counterpart: Flux places the ranks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cloudpickle
import pytest

from parsl_flux.allocation.mpi_allocation import PREFIX_VARS, allocation_env, job_command, launch_prefix
from parsl_flux.driver.resources import InstanceResources, JobShape, check_fits, parse_spec
from parsl_flux.errors import InvalidResourceSpecification
from parsl_flux.job import mpi_launch
from parsl_flux.job.mpi_job import expand_hostlist, nodelist_of

ROOT = Path(__file__).resolve().parents[1]
MPI_HELLO_C = ROOT / "tests" / "data" / "mpi_hello.c"

cloudpickle.register_pickle_by_value(sys.modules[__name__])


# ------------------------------------------------------------------ parsing
@pytest.mark.parametrize("spec,nodes,per_node,ranks", [
    ({"num_nodes": 2, "ranks_per_node": 2}, 2, 2, 4),
    ({"num_nodes": 3, "ranks_per_node": 5}, 3, 5, 15),          # test_mpiex.py::test_get_env
    ({"num_nodes": 2, "num_ranks": 4}, 2, 2, 4),                # ranks_per_node derived, as Parsl does
    ({"num_nodes": 2, "ranks_per_node": 2, "num_ranks": 4}, 2, 2, 4),
    ({"ranks_per_node": 3}, 1, 3, 3),
    ({"num_ranks": 3}, 1, 3, 3),
    ({"launcher_options": "--debug_foo"}, 1, 1, 1),             # test_resource_spec.py: valid
    ({"num_nodes": 2, "ranks_per_node": 1}, 2, 1, 2),           # test_resource_spec.py: valid
])
def test_parsl_valid_specs(spec, nodes, per_node, ranks):
    shape = parse_spec(spec)
    assert shape.allocation and not shape.packable
    assert (shape.num_nodes, shape.ranks_per_node, shape.num_tasks) == (nodes, per_node, ranks)
    assert JobShape.from_wire(shape.to_wire()) == shape


def test_per_rank_sizes_and_options():
    shape = parse_spec({"num_nodes": 2, "ranks_per_node": 2, "cores_per_task": 2, "gpus_per_task": 1,
                        "launcher_options": " -o cpu-affinity=per-task ", "walltime": 60})
    assert (shape.cores_per_task, shape.gpus_per_task, shape.walltime) == (2, 1, 60.0)
    assert shape.launcher_options == "-o cpu-affinity=per-task"


def test_executor_model_unchanged():
    shape = parse_spec({"num_tasks": 4, "num_nodes": 2})
    assert not shape.allocation and shape.ranks_per_node == 0


@pytest.mark.parametrize("spec,key,also", [
    ({"num_tasks": 4, "ranks_per_node": 2}, "ranks_per_node", "num_tasks"),
    ({"num_tasks": 4, "num_ranks": 4}, "num_ranks", "num_tasks"),
    ({"num_tasks": 1, "launcher_options": "-v"}, "launcher_options", "num_tasks"),
    ({"num_nodes": 2, "ranks_per_node": 2, "num_ranks": 3}, "num_ranks", "ranks_per_node"),
    ({"num_nodes": 2, "num_ranks": 5}, "num_ranks", "num_nodes"),
    ({"num_nodes": 2, "ranks_per_node": "2"}, "ranks_per_node", "str"),
    ({"num_nodes": 0, "ranks_per_node": 2}, "num_nodes", ">= 1"),
    ({"ranks_per_node": 0}, "ranks_per_node", ">= 1"),
    ({"num_ranks": 2.0}, "num_ranks", "float"),
    ({"launcher_options": ["-v"]}, "launcher_options", "string"),
    ({"num_nodes": 2, "BAD_OPT": 1}, "BAD_OPT", "unknown key"),   # test_resource_spec.py: bad
])
def test_parsl_bad_specs(spec, key, also):
    with pytest.raises(InvalidResourceSpecification) as info:
        parse_spec(spec)
    assert info.value.key == key
    assert key in str(info.value) and repr(spec[key]) in str(info.value) and also in str(info.value)


def test_allocation_must_fit_the_block():
    two_nodes = InstanceResources(nodes=2, cores_per_node=2)
    check_fits(parse_spec({"num_nodes": 2, "ranks_per_node": 2}), two_nodes)
    for spec, key in (({"num_nodes": 3, "ranks_per_node": 1}, "num_nodes"),
                      ({"num_nodes": 2, "ranks_per_node": 3}, "num_tasks"),
                      ({"num_nodes": 1, "ranks_per_node": 2, "cores_per_task": 2}, "num_tasks")):
        with pytest.raises(InvalidResourceSpecification) as info:
            check_fits(parse_spec(spec), two_nodes)
        assert info.value.key == key


# ------------------------------------------------------------ environment
R_FILE = Path("/w/tasks/7.R")


def test_variables_have_parsl_meanings():
    env = allocation_env(parse_spec({"num_nodes": 2, "ranks_per_node": 2}), "/opt/flux/bin/flux",
                         "/opt/flux/libexec/flux/cmd/flux-job", "/venv/python", R_FILE, 7)
    assert env["PARSL_NUM_NODES"] == "2" and env["PARSL_RANKS_PER_NODE"] == "2" and env["PARSL_NUM_RANKS"] == "4"
    assert env["PARSL_MPI_PREFIX"] == f"/venv/python -S {mpi_launch.__file__}"
    assert {env[name] for name in PREFIX_VARS} == {env["PARSL_MPI_PREFIX"]}  # test_mpi_prefix.py
    assert "PARSL_LAUNCHER_OPTIONS" not in env
    assert not any("None" in value for value in env.values())


def test_ranks_jobspec_is_what_flux_run_writes():
    """``flux run --dry-run -N2 -n4 -c2 -g1 --job-name=parsl-task-7-ranks`` (flux-core 0.88), less rlimits."""
    shape = parse_spec({"num_nodes": 2, "ranks_per_node": 2, "cores_per_task": 2, "gpus_per_task": 1})
    env = allocation_env(shape, "flux", "flux", "/py", R_FILE, 7)
    jobspec = mpi_launch.ranks_jobspec(env[mpi_launch.TEMPLATE_ENV], ["./a.out", "x"], {"A": "1"}, "/w",
                                       '{"version": 1}\n')
    assert json.loads(jobspec) == {
        "version": 1,
        "resources": [{"type": "node", "count": 2, "with": [{"type": "slot", "count": 2, "label": "task", "with": [
            {"type": "core", "count": 2}, {"type": "gpu", "count": 1}]}]}],
        "tasks": [{"command": ["./a.out", "x"], "slot": "task", "count": {"per_slot": 1}}],
        "attributes": {"system": {"duration": 0, "job": {"name": "parsl-task-7-ranks"}, "environment": {"A": "1"},
                                  "cwd": "/w", "alloc-bypass": {"R": {"version": 1}}}},
    }


def test_ranks_jobspec_carries_any_environment_exactly():
    """The launcher writes JSON without ``json``: quotes, backslashes, control
    characters, non-ASCII text and a variable named like a marker survive."""
    template = allocation_env(parse_spec({"num_ranks": 2}), "flux", "flux", "/py", R_FILE, 1)[mpi_launch.TEMPLATE_ENV]
    environ = {"Q": 'say "hi"\\n', "CTRL": "a\x01\tb\nc", "TEXT": "\u00e9\u4e2d\U0001f600",
               mpi_launch.CWD_MARK: mpi_launch.quote(mpi_launch.R_MARK), "EMPTY": ""}
    argv = ["./a out", "--x=\"1\"", mpi_launch.quote(mpi_launch.COMMAND_MARK)]
    jobspec = json.loads(mpi_launch.ranks_jobspec(template, argv, environ, "/w/\u00e9 dir", '{"version": 1}'))
    system = jobspec["attributes"]["system"]
    assert (jobspec["tasks"][0]["command"], system["environment"], system["cwd"]) == (argv, environ, "/w/\u00e9 dir")
    assert system["alloc-bypass"] == {"R": {"version": 1}}


def test_launcher_reads_json_as_json_does():
    R = '{"version": 1, "execution": {"R_lite": [{"rank": "0-1", "children": {"core": "0-1"}}], ' \
        '"nodelist": ["a[0-1]"], "starttime": 1.5e9, "expiration": 0.0}}\n'
    assert mpi_launch.loads(R) == json.loads(R) and mpi_launch.loads(R.encode()) == json.loads(R)
    for bad in ("", "{", '{"a": 1} {"b": 2}', "NaN"):
        with pytest.raises(ValueError):
            mpi_launch.loads(bad)


@pytest.mark.parametrize("argv", [[mpi_launch.__file__], ["-c", "import parsl_flux.job.mpi_job"]])
def test_job_side_of_the_mpi_model_imports_no_json_package(argv):
    """The launcher and the allocation's first program start once per app:
    ``json`` (with ``re`` and ``enum``) would cost 8 ms of CPU each time."""
    out = subprocess.run([sys.executable, "-S", "-X", "importtime", *argv], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(Path(mpi_launch.__file__).parents[2])})
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert "_json" in imported and "os" in imported, out.stderr  # the trace is read right
    assert imported & {"json", "re", "enum", "subprocess", "flux"} == set()


def test_launcher_calls_flux_job_directly_when_it_can(tmp_path):
    assert mpi_launch.job_argv("/opt/flux/libexec/flux/cmd/flux-job") == ["/opt/flux/libexec/flux/cmd/flux-job"]
    assert mpi_launch.job_argv("/opt/flux/bin/flux") == ["/opt/flux/bin/flux", "job"]
    (tmp_path / "flux-job").write_text("#!/bin/sh\n")
    assert job_command("/bin/flux", {"FLUX_EXEC_PATH": f"/nonexistent:{tmp_path}"}) == "/bin/flux"  # not executable
    (tmp_path / "flux-job").chmod(0o755)
    assert job_command("/bin/flux", {"FLUX_EXEC_PATH": f"/nonexistent:{tmp_path}"}) == str(tmp_path / "flux-job")
    assert job_command("/bin/flux", {}) == "/bin/flux"


def test_launcher_options_make_a_flux_run_line():
    shape = parse_spec({"num_nodes": 1, "num_ranks": 2, "cores_per_task": 2, "gpus_per_task": 1,
                        "launcher_options": "-o cpu-affinity=per-task"})
    assert launch_prefix(shape, "flux", "/py", "/w/1.R", 1) == (
        "flux run --setattr=^system.alloc-bypass.R=/w/1.R --job-name=parsl-task-1-ranks "
        "-N 1 -n 2 -c 2 -g 1 -o cpu-affinity=per-task")
    assert allocation_env(shape, "flux", "flux", "/py", R_FILE, 1)["PARSL_LAUNCHER_OPTIONS"] == "-o cpu-affinity=per-task"


def test_prefix_refuses_a_path_that_would_split():
    with pytest.raises(ValueError, match="whitespace"):
        allocation_env(parse_spec({"num_ranks": 2}), "flux", "flux", "/py", Path("/my runs/tasks/1.R"), 1)


@pytest.mark.parametrize("hostlist,hosts", [
    ("vm,vm", ["vm", "vm"]),
    ("node[01-03,7],login1", ["node01", "node02", "node03", "node7", "login1"]),
    ("x[9-10]y", ["x9y", "x10y"]),
    ("a", ["a"]),
])
def test_hostlists_expand_in_order(hostlist, hosts):
    assert expand_hostlist(hostlist) == hosts


def test_launcher_capture_feeds_stdin_and_returns_stdout():
    assert mpi_launch.capture(["/bin/cat"], b"x" * 70000) == (0, b"x" * 70000)
    assert mpi_launch.capture(["/bin/sh", "-c", "exit 3"]) == (3, b"")


def test_nodelist_of_R():
    assert nodelist_of({"execution": {"nodelist": ["a[0-1]", "b"]}}) == ["a0", "a1", "b"]


# ----------------------------------------------------------- against Flux
TWO_BROKERS = ("{flux} start --test-size=2 {flux} env {python} -m parsl_flux.allocation.manager "
               "--url {url} --block-id {block_id} --workdir {workdir}")


def parsl_vars(parsl_resource_specification={}):
    """Parsl's ``get_env_vars`` (test_mpi_mode_enabled.py): the PARSL_* variables the app sees."""
    return {k: v for k, v in os.environ.items() if k.startswith("PARSL_") and not k.startswith("PARSL_FLUX_")}


def run_bash(command, parsl_resource_specification={}):
    """A bash app's command line, run once as the app; its stdout."""
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def mpi_hello(tmp_path_factory):
    if not shutil.which("mpicc"):
        pytest.skip("no mpicc (OpenMPI's libopenmpi-dev)")
    exe = tmp_path_factory.mktemp("mpi") / "mpi_hello"
    subprocess.run(["mpicc", "-o", str(exe), str(MPI_HELLO_C)], check=True)
    return exe


@pytest.mark.flux
def test_parsl_mpi_app_on_two_brokers(make_executor, mpi_hello, tmp_path):
    """{"num_nodes": 2, "ranks_per_node": 2}: the app runs once, sees Parsl's
    variables, and $PARSL_MPI_PREFIX starts 4 MPI ranks spanning both brokers."""
    ex = make_executor(launch_cmd=TWO_BROKERS)
    spec = {"num_nodes": 2, "ranks_per_node": 2}
    env = ex.submit(parsl_vars, spec, parsl_resource_specification=spec).result(timeout=120)
    assert (env["PARSL_NUM_NODES"], env["PARSL_RANKS_PER_NODE"], env["PARSL_NUM_RANKS"]) == ("2", "2", "4")
    assert len(env["PARSL_MPI_NODELIST"].split(",")) == 2
    assert {env[name] for name in PREFIX_VARS} == {env["PARSL_MPI_PREFIX"]}
    assert env["PARSL_MPI_PREFIX"].endswith("mpi_launch.py") and "None" not in env["PARSL_MPI_PREFIX"]

    once = tmp_path / "app-ran"
    command = (f"echo $FLUX_TASK_RANK >> {once}; "
               f"$PARSL_MPI_PREFIX sh -c 'echo broker $(flux getattr rank) host $(hostname); exec {mpi_hello}'")
    out = ex.submit(run_bash, spec, command, parsl_resource_specification=spec).result(timeout=120)
    assert once.read_text() == "0\n", "the app must run once"
    lines = out.splitlines()
    assert sorted(ln for ln in lines if ln.startswith("rank")) == [f"rank {r} size 4 sum 6" for r in range(4)]
    brokers = [ln.split()[1] for ln in lines if ln.startswith("broker")]
    assert sorted(brokers) == ["0", "0", "1", "1"], out
    assert {ln.split()[3] for ln in lines if ln.startswith("broker")} == set(env["PARSL_MPI_NODELIST"].split(","))


@pytest.mark.flux
def test_launcher_options_go_to_flux_run(make_executor, mpi_hello):
    ex = make_executor(launch_cmd=TWO_BROKERS)
    spec = {"num_nodes": 2, "num_ranks": 2, "launcher_options": "--label-io"}
    out = ex.submit(run_bash, spec, f"$PARSL_MPI_PREFIX {mpi_hello}", parsl_resource_specification=spec)
    assert sorted(out.result(timeout=120).splitlines()) == ["0: rank 0 size 2 sum 1", "1: rank 1 size 2 sum 1"]


def mpi4py_ranks(python, script, parsl_resource_specification={}):
    return run_bash(f"$PARSL_MPI_PREFIX {python} {script}")


@pytest.mark.flux
def test_mpi4py_app_through_the_prefix(make_executor, tmp_path):
    python = "/usr/bin/python3"
    if subprocess.run([python, "-c", "import mpi4py"], capture_output=True).returncode:
        pytest.skip("no mpi4py for /usr/bin/python3 (apt-get install python3-mpi4py)")
    script = tmp_path / "ranks.py"
    script.write_text("from mpi4py import MPI\ncomm = MPI.COMM_WORLD\n"
                      "print(comm.Get_rank(), comm.Get_size(), comm.allreduce(comm.Get_rank()))\n")
    ex = make_executor(launch_cmd=TWO_BROKERS)
    spec = {"num_nodes": 2, "num_ranks": 2}
    out = ex.submit(mpi4py_ranks, spec, python, script, parsl_resource_specification=spec).result(timeout=120)
    assert sorted(out.splitlines()) == ["0 2 1", "1 2 1"]


@pytest.mark.flux
def test_mixed_models_refused_at_submit(make_executor):
    ex = make_executor(blocks=0)
    with pytest.raises(InvalidResourceSpecification, match="num_tasks.*ranks_per_node|ranks_per_node.*num_tasks"):
        ex.submit(parsl_vars, {"num_tasks": 2, "ranks_per_node": 2})


@pytest.mark.flux
def test_cancelled_app_leaves_no_ranks_running(make_executor, flux_path, tmp_path):
    """Flux does not end a ranks job with its allocation; the manager cancels it."""
    from conftest import wait_for

    ex = make_executor()
    started = tmp_path / "started"
    spec = {"num_ranks": 1}
    fut = ex.submit(run_bash, spec, f"$PARSL_MPI_PREFIX sh -c 'touch {started}; sleep 300'",
                    parsl_resource_specification=spec)
    wait_for(started.exists, 60, "the ranks to start")
    env = {**os.environ, "FLUX_URI": ex.blocks["0"].info["flux_uri"]}

    def active_names():
        return subprocess.run([flux_path, "jobs", "-n", "--filter=pending,running", "-o", "{name}"], env=env,
                              capture_output=True, text=True, check=True).stdout.split()

    assert any(n.endswith("-ranks") for n in active_names())
    fut.cancel()
    wait_for(lambda: not any(n.endswith("-ranks") for n in active_names()), 60, "the ranks job to be cancelled")


# ------------------------------------- Parsl's own MPI apps, under Parsl's DFK
@pytest.fixture(scope="module")
def parsl_mpi_tests(flux_path, tmp_path_factory):
    """Parsl's ``test_mpi_mode_enabled`` module (its apps run on whichever
    executor the DFK has), with a DFK whose one executor is this one on two brokers."""
    import parsl
    from parsl.config import Config
    from parsl.providers import LocalProvider

    from parsl_flux import FluxExecutor

    module = pytest.importorskip("parsl.tests.test_htex.mpi.test_mpi_mode_enabled")
    executor = FluxExecutor(provider=LocalProvider(init_blocks=1, max_blocks=1), flux_path=flux_path,
                            launch_cmd=TWO_BROKERS, label="flux")
    run_dir = tmp_path_factory.mktemp("runinfo")
    dfk = parsl.load(Config(executors=[executor], run_dir=str(run_dir), strategy="none"))
    yield module
    dfk.cleanup()


@pytest.mark.flux
def test_parsl_mpi_mode_checks(parsl_mpi_tests):
    """Parsl's test_mpi_mode_enabled.py tests that hold for any MPI launcher, run as they are;
    ``test_bash_default_prefix_set`` with its ``mpiexec`` check read as Flux's line."""
    parsl_mpi_tests.test_only_resource_specs_set()
    parsl_mpi_tests.test_bash_app_using_resource_spec()
    future = parsl_mpi_tests.echo_launch_cmd(parsl_resource_specification={"num_nodes": 2, "ranks_per_node": 2})
    assert future.result(timeout=120) == 0
    with open(future.stdout) as f:
        assert f.readline().split()[-2:] == [mpi_launch.__file__, "hostname"]
    # test_simulated_load, sized for a 2-node block (Parsl's asks for up to 4 nodes of a mocked 4-node job)
    futures = {parsl_mpi_tests.mock_app(parsl_resource_specification=spec): spec
               for spec in ({"num_nodes": n, "ranks_per_node": r} for n in (1, 2) for r in (1, 2))}
    for future, spec in futures.items():
        total_ranks, nodes = future.result(timeout=120)
        assert len(nodes) == spec["num_nodes"] and total_ranks == spec["num_nodes"] * spec["ranks_per_node"]
