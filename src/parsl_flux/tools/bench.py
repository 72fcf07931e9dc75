"""Benchmark parsl-flux side by side with bare Flux, Parsl's FluxExecutor, HTEX and MPIExecutor.

``make bench`` (``--suite full``) and ``make bench-quick`` (``--suite quick``,
under 5 minutes on 2 cores) run, on one machine, groups of cases:

* ``python-noop`` / ``python-sleep10ms``: N Python apps through the DFK on
  ``parsl-flux`` (one Flux job per app), ``parsl-flux-packing``,
  ``parsl-FluxExecutor`` (Parsl's own), ``htex``, ``threadpool`` (the DFK's
  own ceiling), and bare Flux (``flux submit --cc=1-N python3 -S -c pass``);
* ``bash-noop``: N bash apps returning ``true`` on parsl-flux per-job and on
  Parsl's FluxExecutor, and bare Flux ``true`` jobs;
* ``mpi-hello``: the 2-rank MPI hello (``tests/data/mpi_hello.c``) as Flux jobs
  (a parsl-flux bash app with ``{"num_tasks": 2}``) and on Parsl's
  ``MPIExecutor`` through ``$PARSL_MPI_PREFIX`` (OpenMPI's ``mpiexec``);
* ``multi-node``: parsl-flux on blocks of 4 brokers (``flux start
  --test-size=4``), 2 blocks at once, under sched-simple and under Fluxion;
* cost growth: the packing-mode ``python-noop`` series at N = 1k, 10k (and
  100k in the full suite): driver peak RSS, bytes per task, latency p50/p99.

Every executor runs in its default ``LocalProvider`` start mode (the executor
starts its own Flux instance or workers); a tuned mode is labelled as such in
the ``mode`` column. The apps are defined here, at the top of the module, and
each measurement runs ``python -m parsl_flux.tools.bench --child``, so in that
process they live in ``__main__`` and travel by value, as a workflow script's
apps do. Each measurement runs in a fresh process (peak RSS is that driver's);
repeats are interleaved (repeat 1 of every case, then repeat 2, ...), and the
report gives medians, a JSON file, a Markdown table and PNG plots.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from parsl_flux import fluxpath
from parsl_flux.tools import checkout

EXECUTORS = ("parsl-flux", "parsl-flux-packing", "parsl-FluxExecutor", "htex", "threadpool", "mpi-executor",
             "bare-flux")
GROUPS = ("python-noop", "python-sleep10ms", "bash-noop", "mpi-hello", "multi-node", "open-loop", "data",
          "parsl-perf")
SUITES = ("quick", "full")
MPI_HELLO_C = "tests/data/mpi_hello.c"  # in the source checkout
FLUXION_PREFIX = fluxpath.default_prefix().parent / "flux-fluxion-0.88.0"


# -------------------------------------------------- the apps (a workflow script's)
# In the child these are ``__main__.*``: cloudpickle (parsl-flux) and dill
# (Parsl) send them by value, as they send a workflow script's apps.
def noop_app(seconds=0.0):
    """Return at once (``seconds`` = 0) or after sleeping ``seconds``."""
    if seconds:
        import time

        time.sleep(seconds)


def true_app():
    """A no-op bash app."""
    return "true"


def array_app(arr):
    """The data path: an array in, an array of the same size out."""
    return arr + 1


def mpi_flux_app(exe, parsl_resource_specification={}):
    """The MPI program as a Flux job of ``num_tasks`` ranks (Flux starts the ranks)."""
    return exe


def mpi_prefix_app(exe, parsl_resource_specification={}):
    """The MPI program through Parsl's MPI launcher prefix (MPIExecutor)."""
    return f"$PARSL_MPI_PREFIX {exe}"


# ------------------------------------------------------------------ the cases
@dataclass
class Case:
    group: str
    executor: str
    n: int
    mode: str = "default"
    """``default`` (LocalProvider start mode), or what differs, e.g. ``4 brokers x 2 blocks, fluxion``."""
    test_size: int = 1
    blocks: int = 1
    scheduler: str = "sched-simple"
    attach: bool = False
    samples: bool = True
    """Keep latency quantiles (for the CDF)."""
    mib: float = 0.0
    """``data`` group: MiB of the array each app gets, and of the one it returns."""

    @property
    def key(self) -> str:
        return f"{self.group}/{self.executor}/{self.mode}/{self.n}" + (f"/{self.mib:g}MiB" if self.mib else "")


def suite_cases(suite: str, groups: Optional[List[str]] = None) -> List[Case]:
    """The cases of a suite, in run order (within one executor, N ascending).

    ``quick`` keeps every group at small N (3 repeats in under 5 minutes on 2
    cores); ``full`` runs the sizes of docs/speed.md's table, N = 100k included.
    The cost growth (driver peak RSS, bytes per task, p50/p99) is read off the
    packing-mode series of ``python-noop``."""
    quick = suite == "quick"
    if quick:
        sizes = {"bare-flux": [20, 50], "parsl-flux": [20, 50], "parsl-flux-packing": [1000, 10000],
                 "parsl-FluxExecutor": [4], "htex": [1000], "threadpool": [1000]}
    else:
        # per job: the speed issue's N=300 and N=3000 beside 100 and 1000
        sizes = {"bare-flux": [100, 300, 1000, 3000], "parsl-flux": [100, 300, 1000, 3000, 10000],
                 "parsl-flux-packing": [100, 1000, 10000, 100000], "parsl-FluxExecutor": [10, 100, 1000],
                 "htex": [100, 1000, 10000], "threadpool": [100, 1000, 10000]}
    cases: List[Case] = []
    for ex, ns in sizes.items():
        cases += [Case("python-noop", ex, n) for n in ns]
    if not quick:
        cases += [Case("python-noop", "parsl-flux", n, mode="tuned: attach to a running instance", attach=True)
                  for n in (100, 1000)]
        for ex, ns in sizes.items():
            if ex != "bare-flux":
                cases += [Case("python-sleep10ms", ex, n) for n in ns if n in (100, 1000, 10000)]
    # Parsl's FluxExecutor imports Parsl in each bash app's job (~1 s of CPU here);
    # parsl-flux runs the command without it (parsl_flux.job.bash)
    for ex in ("bare-flux", "parsl-flux", "parsl-FluxExecutor"):
        cases += [Case("bash-noop", ex, n) for n in ([4 if ex == "parsl-FluxExecutor" else 20] if quick
                                                       else [20, 100])]
    for ex in ("parsl-flux", "mpi-executor"):
        cases += [Case("mpi-hello", ex, n) for n in ([3] if quick else [20, 100])]
    for sched in ("sched-simple", "fluxion"):
        multi = {"parsl-flux": [20] if quick else [100, 1000],
                 "parsl-flux-packing": [] if quick else [1000, 10000]}
        for ex, ns in multi.items():
            cases += [Case("multi-node", ex, n, mode=f"4 brokers x 2 blocks, {sched}", test_size=4, blocks=2,
                           scheduler=sched) for n in ns]
    # latency under load: no-op apps submitted at a fixed rate, half the rate the
    # executor reached in this repeat's largest python-noop case
    if not quick:
        cases += [Case("open-loop", ex, n) for ex, n in (("parsl-flux", 300), ("parsl-flux-packing", 10000),
                                                          ("htex", 10000))]
    # Parsl's own client, parsl-perf (its no-op app, from an installed module), with the DFK's
    # logging on as Parsl's default Config has it, and off
    if not quick:
        cases += [Case("parsl-perf", ex, 20000, mode=mode, samples=False)
                  for ex in ("parsl-flux-packing", "htex", "threadpool")
                  for mode in ("default", "tuned: initialize_logging=False")]
    # the data path: N apps, each an array of MiB in and out (issue: 200 x 1, 20 x 20, 10 x 50)
    for mib, n in ([(20, 6)] if quick else [(1, 200), (20, 20), (50, 10)]):
        cases += [Case("data", ex, n, mib=mib, samples=False)
                  for ex in ("parsl-flux", "parsl-flux-packing", "htex", "threadpool")]
    if groups:
        cases = [c for c in cases if c.group in groups]
    return cases


# --------------------------------------------------------------- child side
def _config(case: Case, ctx: Dict[str, Any], run_dir: str) -> Any:
    from parsl.config import Config
    from parsl.providers import LocalProvider

    kind = case.executor
    flux = ctx["fluxion_flux"] if case.scheduler == "fluxion" else ctx["flux"]
    if kind.startswith("parsl-flux"):
        from parsl_flux import FluxExecutor
        from parsl_flux.wire import launch

        kw: Dict[str, Any] = {}
        if case.attach:
            kw["flux_uri"] = ctx["uri"]
        if case.test_size > 1:
            kw["launch_cmd"] = f"{{flux}} start --test-size={case.test_size} " + launch.MANAGER
        provider = LocalProvider(init_blocks=case.blocks, min_blocks=0, max_blocks=case.blocks)
        ex: Any = FluxExecutor(provider=provider, flux_path=flux, packing=kind.endswith("packing"), label="bench",
                               **kw)
    elif kind == "parsl-FluxExecutor":
        from parsl.executors import FluxExecutor as ParslFluxExecutor

        # Parsl's default launch command less one word: `flux env` puts the
        # bindings of a from-source Flux on the manager's PYTHONPATH.
        ex = ParslFluxExecutor(flux_path=flux, label="bench", working_dir=os.path.join(run_dir, "parsl-fluxex"),
                               launch_cmd="{flux} start {flux} env {python} {manager} {protocol} {hostname} {port}")
    elif kind == "htex":
        from parsl.executors import HighThroughputExecutor

        ex = HighThroughputExecutor(label="bench", max_workers_per_node=os.cpu_count(), provider=LocalProvider())
    elif kind == "mpi-executor":
        from parsl.executors import MPIExecutor

        # No batch scheduler here: a one-line PBS_NODEFILE gives the MPI task
        # scheduler this node; the mpiexec shim translates Parsl's Hydra flags.
        init = (f"export PBS_NODEFILE={ctx['nodefile']} PATH={ctx['shim_dir']}:$PATH "
                "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1")
        from parsl.launchers import SimpleLauncher

        ex = MPIExecutor(label="bench", max_workers_per_block=1,
                         provider=LocalProvider(worker_init=init, launcher=SimpleLauncher()))
    elif kind == "threadpool":
        from parsl.executors import ThreadPoolExecutor

        ex = ThreadPoolExecutor(label="bench", max_threads=os.cpu_count())
    else:
        raise ValueError(f"unknown executor {kind!r}")
    # the DFK's own logging stays off (as it was for every figure so far), but for
    # the parsl-perf cases in Parsl's default mode
    return Config(executors=[ex], run_dir=run_dir, initialize_logging=case.group == "parsl-perf" and
                  case.mode == "default")


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def block_startup(log_text: str) -> List[float]:
    """Seconds from the executor's "listening" line to each "block N registered" line."""
    listening: Optional[float] = None
    out: List[float] = []
    for line in log_text.splitlines():
        m = _LOG_TIME.match(line)
        if not m:
            continue
        t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if listening is None and " listening on " in line:
            listening = t
        elif listening is not None and re.search(r" block \S+ registered", line):
            out.append(t - listening)
    return out


def quantiles(values: List[float], points: int = 101) -> List[float]:
    """``points`` evenly spaced quantiles (0 to 100 %) of ``values`` (nearest rank)."""
    s = sorted(values)
    if not s:
        return []
    return [s[min(len(s) - 1, round(i * (len(s) - 1) / (points - 1)))] for i in range(points)]


def child(case: Case, ctx: Dict[str, Any]) -> Dict[str, Any]:
    """One measurement, in this (fresh) process."""
    import parsl
    from parsl import bash_app, python_app

    run_dir = tempfile.mkdtemp(prefix="parsl-flux-bench-")
    if case.group == "bash-noop":
        app, args = bash_app(true_app, executors=["bench"]), ()
    elif case.group == "mpi-hello" and case.executor == "mpi-executor":
        spec = {"num_nodes": 1, "ranks_per_node": 2, "num_ranks": 2}
        app, args = bash_app(mpi_prefix_app, executors=["bench"]), (ctx["mpi_exe"],)
    elif case.group == "mpi-hello":
        spec = {"num_tasks": 2}
        app, args = bash_app(mpi_flux_app, executors=["bench"]), (ctx["mpi_exe"],)
    elif case.group == "data":
        import numpy

        words = int(case.mib * 2 ** 20) // 8
        app, args = python_app(array_app, executors=["bench"]), (numpy.zeros(words),)
    else:
        app, args = python_app(noop_app, executors=["bench"]), (0.01 if case.group == "python-sleep10ms" else 0.0,)
    kwargs = {"parsl_resource_specification": spec} if case.group == "mpi-hello" else {}
    t0 = time.perf_counter()
    dfk = parsl.load(_config(case, ctx, run_dir))
    app(*args, **kwargs).result()
    first = time.perf_counter() - t0
    if case.group == "data":
        return {**data_path(app, words, case.n), "first_result_s": first, "app_module": array_app.__module__,
                **_stop(dfk, run_dir, case)}
    extra: Dict[str, Any] = {"app_module": noop_app.__module__}  # "__main__": apps travel by value
    if case.test_size > 1:  # check the scheduler the blocks really run (not timed)
        flux = ctx["fluxion_flux"] if case.scheduler == "fluxion" else ctx["flux"]
        extra["sched_modules"] = python_app(_sched_modules, executors=["bench"])(flux).result()
        if case.scheduler == "fluxion" and "sched-fluxion-qmanager" not in extra["sched_modules"]:
            raise RuntimeError(f"asked for Fluxion, the block runs {extra['sched_modules']}")
    done: List[Tuple[int, float]] = []
    submitted: List[float] = []
    futures = []
    pace = ctx.get("open_loop_rate") if case.group == "open-loop" else None
    start = time.perf_counter()
    for i in range(case.n):
        if pace:  # open loop: the i-th app is due at start + i / pace, whatever the results do
            due = start + i / pace
            time.sleep(max(0.0, due - time.perf_counter()))
            submitted.append(due)  # late submissions count against the executor (no coordinated omission)
        else:
            submitted.append(time.perf_counter())
        fut = app(*args, **kwargs)
        fut.add_done_callback(lambda _f, i=i: done.append((i, time.perf_counter())))
        futures.append(fut)
    for fut in futures:
        fut.result()
    end = time.perf_counter()
    if case.test_size > 1 or case.blocks > 1:  # the shape the blocks really had
        blocks = dfk.executors["bench"].blocks.values()
        extra["block_nodes"] = sorted(b.resources.nodes for b in blocks if b.resources)
    stopped = _stop(dfk, run_dir, case)
    latencies = sorted(t - submitted[i] for i, t in done)
    out = {
        "tasks_per_s": case.n / (end - start),
        "latency_p50_s": latencies[len(latencies) // 2],
        "latency_p99_s": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "first_result_s": first,
        **stopped,
        "driver_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "window_monotonic_s": [start, end],  # perf_counter is CLOCK_MONOTONIC: tools.cpu_profile reads it
        **extra,
    }
    if pace:
        out["open_loop_rate"] = pace
    if case.samples:
        out["latency_quantiles_s"] = quantiles(latencies)
    return out


def _rss_mb() -> float:
    """This process's resident set now (MiB)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def data_path(app: Any, words: int, n: int) -> Dict[str, Any]:
    """``n`` apps at once, each with an array of its own (``words`` float64s, made
    here as a script makes them), each answering one of the same size; every
    result is checked. Driver memory: resident before, peak, and after the
    results are dropped, against the bytes in flight (arguments and results)."""
    import gc

    import numpy

    gc.collect()
    base = _rss_mb()
    start = time.perf_counter()
    futures = [app(numpy.full(words, float(i))) for i in range(n)]
    bad = sum(1 for i, fut in enumerate(futures) if not (fut.result()[[0, -1]] == i + 1).all())
    end = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    del futures
    gc.collect()
    moved = 2 * n * words * 8
    if bad:
        raise RuntimeError(f"{bad} of {n} array results were wrong")
    return {"tasks_per_s": n / (end - start), "mb_per_s": moved / (end - start) / 1e6,
            "rss_base_mb": base, "driver_peak_rss_mb": peak, "rss_after_mb": _rss_mb(),
            "in_flight_mb": moved / 2 ** 20, "extra_per_in_flight": (peak - base) / (moved / 2 ** 20),
            "window_monotonic_s": [start, end]}


def _stop(dfk: Any, run_dir: str, case: Case) -> Dict[str, Any]:
    """Clean up a run: how long the DFK took to stop, and the block start-up
    times parsl-flux's executor.log shows."""
    t1 = time.perf_counter()
    dfk.cleanup()
    shutdown = time.perf_counter() - t1
    logs = glob.glob(os.path.join(run_dir, "*", "bench", "executor.log"))
    startup_blocks = block_startup(Path(logs[0]).read_text()) if logs and case.executor.startswith("parsl-flux") \
        else []
    shutil.rmtree(run_dir, ignore_errors=True)
    return {"shutdown_s": shutdown, "block_startup_s": startup_blocks}


def _sched_modules(flux):
    """The scheduler modules loaded in the instance this app runs in."""
    import subprocess

    # the scheduler runs on rank 0, and this job may run on another broker
    out = subprocess.run([flux, "exec", "-r", "0", flux, "module", "list"], capture_output=True, text=True).stdout
    return sorted({line.split()[0] for line in out.splitlines() if line.split() and "sched" in line.split()[0]})


# --------------------------------------------------------------- parent side
class FluxInstance:
    """A Flux instance for the tuned attach-mode cases: the enclosing one, or a fresh ``flux start``."""

    def __init__(self, flux: str) -> None:
        self.flux = flux
        self.proc: Optional[subprocess.Popen] = None
        self.uri = os.environ.get("FLUX_URI", "")

    def __enter__(self) -> "FluxInstance":
        if not self.uri:
            uri_file = Path(tempfile.mkdtemp(prefix="parsl-flux-bench-")) / "uri"
            self.proc = subprocess.Popen([self.flux, "start", "bash", "-c", f'echo "$FLUX_URI" > {uri_file}; '
                                          "exec sleep 100000"], start_new_session=True)
            deadline = time.monotonic() + 60
            while not (uri_file.exists() and uri_file.read_text().strip()):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("could not start a Flux instance for the benchmark")
                time.sleep(0.1)
            self.uri = uri_file.read_text().strip()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)

    def purge(self) -> None:
        """Drop inactive jobs, so that each attach-mode run meets the instance in the same state."""
        subprocess.run([self.flux, "job", "purge", "--force", "--num-limit=0"], check=True,
                       env={**os.environ, "FLUX_URI": self.uri}, stdout=subprocess.DEVNULL)


def has_fluxion(flux: Optional[str]) -> bool:
    """Whether a fresh instance of this flux loads Fluxion (sched-fluxion-qmanager)."""
    if not (flux and os.access(flux, os.X_OK)):
        return False
    out = subprocess.run([flux, "start", flux, "module", "list"], capture_output=True, text=True).stdout
    return "sched-fluxion-qmanager" in out


def flux_version(flux: str) -> str:
    out = subprocess.run([flux, "version"], capture_output=True, text=True).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if "libflux-core" in line), "")


def bare_flux(flux: str, n: int, command: List[str]) -> Dict[str, Any]:
    """``flux submit --cc=1-N COMMAND`` then ``flux queue drain`` in a fresh instance (as
    the per-job executor starts one): jobs/s of that, and the instance's start-up."""
    script = ('t0=$(date +%s.%N); "$0" submit --quiet --cc=1-"$1" "${@:2}" >/dev/null && "$0" queue drain '
              '&& echo "$t0 $(date +%s.%N)"')
    t = time.time()
    out = subprocess.run([flux, "start", "bash", "-c", script, flux, str(n), *command], capture_output=True,
                         text=True, check=True).stdout.split()
    t0, t1 = float(out[-2]), float(out[-1])
    to_monotonic = time.monotonic() - time.time()
    return {"tasks_per_s": n / (t1 - t0), "first_result_s": t0 - t,
            "window_monotonic_s": [t0 + to_monotonic, t1 + to_monotonic]}


MPIEXEC_SHIM = """#!/bin/bash
# Parsl's MPIExecutor composes Hydra/MPICH flags (-ppn N -hosts H); Debian's
# OpenMPI mpiexec spells them --npernode N --host H:N, and needs
# --allow-run-as-root as root and --oversubscribe when ranks > cores.
args=() ppn=1 hosts=localhost
while [ $# -gt 0 ]; do
  case "$1" in
    -ppn) ppn=$2; args+=(--npernode "$2"); shift 2 ;;
    -hosts) hosts=$2; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
hostlist=$(echo "$hosts" | tr ',' '\\n' | sed "s/\\$/:$ppn/" | paste -sd,)
exec {mpiexec} --allow-run-as-root --oversubscribe --host "$hostlist" "${{args[@]}}"
"""


def mpi_context(workdir: Path) -> Dict[str, Any]:
    """Build the MPI hello and the files MPIExecutor needs here; {} without mpicc/mpiexec
    or without the source checkout that holds the program."""
    mpicc, mpiexec = shutil.which("mpicc"), shutil.which("mpiexec")
    if not (mpicc and mpiexec):
        return {}
    try:
        source = checkout.source_root("the mpi-hello benchmark") / MPI_HELLO_C
    except checkout.SourceCheckoutNeeded as exc:
        print(f"mpi-hello: not run: {exc}", flush=True)
        return {}
    exe = workdir / "mpi_hello"
    subprocess.run([mpicc, "-o", str(exe), str(source)], check=True)
    shim_dir = workdir / "shim"
    shim_dir.mkdir()
    (shim_dir / "mpiexec").write_text(MPIEXEC_SHIM.format(mpiexec=os.path.realpath(mpiexec)))
    (shim_dir / "mpiexec").chmod(0o755)
    nodefile = workdir / "nodefile"
    nodefile.write_text(platform.node() + "\n")
    return {"mpi_exe": str(exe), "shim_dir": str(shim_dir), "nodefile": str(nodefile)}


def context(flux: str, fluxion_flux: Optional[str], workdir: Path) -> Dict[str, Any]:
    """What every measurement's child gets: the flux commands, the runners'
    interpreter, and the MPI program built in ``workdir`` (see :func:`mpi_context`)."""
    return {"flux": flux, "python": os.path.realpath(sys.executable), "fluxion_flux": fluxion_flux,
            **mpi_context(workdir)}


PERF_CONFIG = """# written by parsl_flux.tools.bench: the case's config, for parsl-perf
import json
from parsl_flux.tools.bench import Case, _config
config = _config(Case(**json.loads({case!r})), json.loads({ctx!r}), {run_dir!r})
"""
_PERF_RATE = re.compile(r"^Tasks per second: ([0-9.]+)$", re.M)


def parsl_perf(case: Case, ctx: Dict[str, Any], timeout: float, env: Dict[str, str]) -> Dict[str, Any]:
    """Parsl's ``parsl-perf`` on the case's config: a warm-up iteration of
    N/4 apps, then N; the rate of the last iteration."""
    run_dir = tempfile.mkdtemp(prefix="parsl-flux-perf-")
    try:
        config = Path(run_dir, "config.py")
        config.write_text(PERF_CONFIG.format(case=json.dumps(asdict(case)), ctx=json.dumps(ctx), run_dir=run_dir))
        cmd = [sys.executable, "-m", "parsl.benchmark.perf", "--config", str(config), "--time", "1",
               "--iterate", f"{max(1, case.n // 4)},{case.n}"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=run_dir,
                              start_new_session=True)
        wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    rates = _PERF_RATE.findall(proc.stdout)
    if proc.returncode != 0 or len(rates) != 2:
        raise RuntimeError(f"{case.key}: parsl-perf failed:\n{(proc.stdout + proc.stderr)[-2000:]}")
    return {"tasks_per_s": float(rates[-1]), "first_result_s": None, "parsl_perf_wall_s": wall,
            "parsl_perf_rates": [float(r) for r in rates]}


def measure(case: Case, ctx: Dict[str, Any], timeout: float) -> Dict[str, Any]:
    """One measurement: bare Flux here, parsl-perf or anything else in a fresh interpreter."""
    if case.executor == "bare-flux":
        flux = ctx["flux"]
        cmd = ["true"] if case.group == "bash-noop" else [ctx["python"], "-S", "-c", "pass"]
        return bare_flux(flux, case.n, cmd)
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # HTEX's interchange.py
    if case.group == "parsl-perf":
        return parsl_perf(case, ctx, timeout, env)
    cmd = [sys.executable, "-m", "parsl_flux.tools.bench", "--child", json.dumps({"case": asdict(case), "ctx": ctx})]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, start_new_session=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{case.key} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median_of(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Medians of the scalar numbers; the latency quantiles and checks of the median-rate run."""
    med: Dict[str, Any] = {k: statistics.median(r[k] for r in runs) for k in runs[0]
                           if isinstance(runs[0][k], (int, float))}
    middle = sorted(runs, key=lambda r: r["tasks_per_s"])[len(runs) // 2]
    for k, v in middle.items():
        if not isinstance(v, (int, float)) and k != "block_startup_s":
            med[k] = v
    blocks = [s for r in runs for s in r.get("block_startup_s", [])]
    if blocks:
        med["block_startup_s"] = statistics.median(blocks)
        med["block_startup_all_s"] = blocks
    med["tasks_per_s_all"] = [r["tasks_per_s"] for r in runs]
    med["first_result_all_s"] = [r["first_result_s"] for r in runs]
    return med


def run_all(args: argparse.Namespace, flux: str) -> Dict[str, Any]:
    import parsl

    results: Dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine(), "python": platform.python_version(),
                    "parsl": parsl.__version__, "flux_core": flux_version(flux)},
        "suite": args.suite, "repeats": args.repeats, "budget_s": args.budget, "cases": {}, "runs": {}}
    work = Path(tempfile.mkdtemp(prefix="parsl-flux-bench-"))
    ctx = context(flux, args.fluxion_flux, work)
    cases = suite_cases(args.suite, args.groups)
    if args.executors:
        cases = [c for c in cases if c.executor in args.executors]
    if args.sizes:
        cases = [c for c in cases if c.n in args.sizes]
    if args.n:  # every selected case at one N (smoke runs, tests)
        cases = list({c.key: c for c in (Case(**{**asdict(c), "n": args.n}) for c in cases)}.values())
    skipped: Dict[str, str] = {}
    fluxion = any(c.scheduler == "fluxion" for c in cases) and has_fluxion(args.fluxion_flux)
    results["machine"]["fluxion_flux"] = args.fluxion_flux if fluxion else None
    for c in cases:
        if c.scheduler == "fluxion" and not fluxion:
            skipped[c.key] = f"no Fluxion in {args.fluxion_flux or '(none given)'}"
        elif c.group == "mpi-hello" and "mpi_exe" not in ctx:
            skipped[c.key] = "no mpicc/mpiexec"
    raw: Dict[str, List[Dict[str, Any]]] = {c.key: [] for c in cases}
    instance = FluxInstance(flux) if any(c.attach for c in cases) else None
    t_start = time.monotonic()
    try:
        if instance:
            instance.__enter__()
            ctx["uri"] = instance.uri
        for rep in range(args.repeats):
            rates: Dict[Tuple[str, str, str], float] = {}  # the last rate of (group, executor, mode)
            for c in cases:
                if c.key in skipped:
                    continue
                series = (c.group, c.executor, c.mode)
                predicted = c.n / rates[series] if series in rates else 0.0
                if rep == 0 and predicted > args.budget:
                    skipped[c.key] = f"predicted {predicted:.0f}s > budget {args.budget:.0f}s"
                    print(f"{c.key}: skipped ({skipped[c.key]})", flush=True)
                    continue
                if c.attach and instance:
                    instance.purge()
                case_ctx = ctx
                if c.group == "open-loop":
                    peak = rates.get(("python-noop", c.executor, "default"))
                    if peak is None:
                        skipped[c.key] = "no python-noop rate of this executor in this run (--groups)"
                        continue
                    case_ctx = {**ctx, "open_loop_rate": peak / 2}
                r = None
                for attempt in (1, 2):  # one retry: a flake is recorded, not taken for the case's result
                    try:
                        r = measure(c, case_ctx, timeout=max(300.0, 4 * predicted))
                        break
                    except (RuntimeError, subprocess.SubprocessError) as exc:
                        last = str(exc).strip().splitlines()[-1][:160]
                        results.setdefault("failures", []).append({"case": c.key, "repeat": rep + 1,
                                                                   "attempt": attempt, "error": last})
                        print(f"{c.key}: FAILED (attempt {attempt}) {exc}", flush=True)
                if r is None:
                    skipped.setdefault(c.key, f"failed: {last}")
                    continue
                raw[c.key].append(r)
                rates[series] = r["tasks_per_s"]
                print(f"[{time.monotonic() - t_start:5.0f}s] rep {rep + 1} {c.key}: {r['tasks_per_s']:.1f}/s, "
                      f"first result {_fmt(r['first_result_s'], '.2f')}s"
                      + (f", peak {r['driver_peak_rss_mb']:.0f} MB" if "driver_peak_rss_mb" in r else ""),
                      flush=True)
    finally:
        if instance:
            instance.__exit__()
        shutil.rmtree(work, ignore_errors=True)
    for c in cases:
        results["cases"][c.key] = asdict(c)
        if raw[c.key] and c.key not in skipped:
            results["runs"][c.key] = median_of(raw[c.key])
        else:
            results["runs"][c.key] = {"skipped": skipped.get(c.key, "no run")}
    results["wall_s"] = time.monotonic() - t_start
    return results


# ----------------------------------------------------------------- reporting
RATIO_BASES = {
    "parsl-flux": ("bare-flux", "parsl-FluxExecutor", "htex", "threadpool", "mpi-executor", "1 block"),
    "parsl-flux-packing": ("parsl-FluxExecutor", "htex", "threadpool", "1 block"),
    "parsl-FluxExecutor": ("bare-flux",),
    "threadpool": ("htex",),
}
"""Which baselines each executor's rate is divided by: bare Flux is the per-job
reference (one job per app), HTEX the pilot-job one, ThreadPool the DFK's own
ceiling (no serialization, no transport). ``1 block`` is the same executor in
the default one-node mode, for the multi-node cases. ``data`` cases are paired
at the same array size, so their ratio of tasks/s is the ratio of MB/s."""


def ratios(results: Dict[str, Any]) -> Dict[str, Dict[str, float]]:
    """tasks/s of each run divided by each of its baselines in the same group and mode:
    at the same N, else at the nearest N (then the key names that N)."""
    out: Dict[str, Dict[str, float]] = {}
    cases = results["cases"]
    for key, r in results["runs"].items():
        c = cases[key]
        if "tasks_per_s" not in r or c["executor"] not in RATIO_BASES or c["group"] == "open-loop":
            continue  # open loop: the rate is the pace set; its latencies are what compares
        row: Dict[str, float] = {}
        for base in RATIO_BASES[c["executor"]]:
            if base == "threadpool" and c["group"] == "data":  # it moves no bytes: no data-path ceiling
                continue
            if base == "1 block":
                if c["group"] != "multi-node":
                    continue
                want = {"executor": c["executor"], "group": "python-noop", "mode": "default"}
            else:
                want = {"executor": base, "group": c["group"], "mode": c["mode"], "mib": c.get("mib", 0.0)}
            cands = [(abs(cases[k]["n"] - c["n"]), cases[k]["n"], b["tasks_per_s"]) for k, b in results["runs"].items()
                     if all(cases[k].get(f, 0.0) == v for f, v in want.items()) and "tasks_per_s" in b]
            if not cands:
                continue
            _, n, rate = min(cands)
            row[f"vs {base}" + ("" if n == c["n"] else f" (N={n})")] = r["tasks_per_s"] / rate
        out[key] = row
    return out


def cost_growth(results: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Packing-mode cost rows: N, peak RSS, bytes per task against the previous N, p50/p99."""
    rows, prev = [], None
    for key, r in results["runs"].items():
        c = results["cases"][key]
        if (c["group"], c["executor"], c["mode"]) != ("python-noop", "parsl-flux-packing", "default") \
                or "tasks_per_s" not in r:
            continue
        row = {"n": c["n"], "peak_mb": r["driver_peak_rss_mb"], "p50_ms": r["latency_p50_s"] * 1000,
               "p99_ms": r["latency_p99_s"] * 1000, "tasks_per_s": r["tasks_per_s"]}
        if prev:
            row["bytes_per_task"] = (row["peak_mb"] - prev["peak_mb"]) * 2 ** 20 / (row["n"] - prev["n"])
        rows.append(row)
        prev = row
    return rows


def _fmt(v: Any, spec: str) -> str:
    return "" if v is None else format(v, spec)


def table(results: Dict[str, Any]) -> str:
    """Markdown tables: every case with its medians and ratios, then the cost growth."""
    lines = ["| group | executor | mode | N | tasks/s | p50 ms | p99 ms | first result s | block start s | "
             "stop s | peak MB | ratios |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    rat = results.get("ratios", {})
    for key, r in results["runs"].items():
        c = results["cases"][key]
        head = f"| {c['group']} | {c['executor']} | {c['mode']} | {c['n']} |"
        if "tasks_per_s" not in r:
            lines.append(f"{head} skipped: {r['skipped']} | | | | | | | |")
            continue
        ratio = ", ".join(f"{k} {v:.2f}x" for k, v in rat.get(key, {}).items())
        p50 = r.get("latency_p50_s")
        p99 = r.get("latency_p99_s")
        lines.append(f"{head} {r['tasks_per_s']:.1f} | {_fmt(p50 and p50 * 1000, '.0f')} | "
                     f"{_fmt(p99 and p99 * 1000, '.0f')} | {_fmt(r['first_result_s'], '.2f')} | "
                     f"{_fmt(r.get('block_startup_s'), '.2f')} | {_fmt(r.get('shutdown_s'), '.1f')} | "
                     f"{_fmt(r.get('driver_peak_rss_mb'), '.0f')} | {ratio} |")
    if results.get("failures"):
        lines += ["", "Failed attempts (a failed attempt is retried once; the case's numbers come from runs that "
                  "succeeded):", ""]
        lines += [f"* {f['case']}, repeat {f['repeat']}, attempt {f['attempt']}: `{f['error']}`"
                  for f in results["failures"]]
    data = [(key, r) for key, r in results["runs"].items() if results["cases"][key]["group"] == "data"
            and "mb_per_s" in r]
    if data:
        lines += ["", "Data path (an array of MiB in and one out per app; MB/s of both; driver memory: resident "
                  "before submitting, peak, after the results are dropped; extra = (peak - before) / MiB in "
                  "flight, arguments and results):", "",
                  "| MiB | executor | N | MB/s | ratios | before MB | peak MB | extra per MiB in flight | after MB |",
                  "|---:|---|---:|---:|---|---:|---:|---:|---:|"]
        for key, r in data:
            c = results["cases"][key]
            ratio = ", ".join(f"{k} {v:.2f}x" for k, v in rat.get(key, {}).items())
            lines.append(f"| {c['mib']:g} | {c['executor']} | {c['n']} | {r['mb_per_s']:.0f} | {ratio} | "
                         f"{r['rss_base_mb']:.0f} | {r['driver_peak_rss_mb']:.0f} | {r['extra_per_in_flight']:.2f} | "
                         f"{r['rss_after_mb']:.0f} |")
    cost = cost_growth(results)
    if cost:
        lines += ["", "Cost growth, packing mode (driver peak RSS; bytes per task = RSS growth / N growth "
                  "from the previous row):", "",
                  "| N | tasks/s | peak MB | bytes/task | p50 ms | p99 ms |", "|---:|---:|---:|---:|---:|---:|"]
        for row in cost:
            lines.append(f"| {row['n']} | {row['tasks_per_s']:.0f} | {row['peak_mb']:.0f} | "
                         f"{_fmt(row.get('bytes_per_task'), '.0f')} | {row['p50_ms']:.0f} | {row['p99_ms']:.0f} |")
    return "\n".join(lines)


def _label(c: Dict[str, Any]) -> str:
    return c["executor"] + ("" if c["mode"] == "default" else f" [{c['mode']}]")


def _save(plt: Any, fig: Any, path: Path) -> Path:
    """Lay out, write (100 dpi) and close one figure; its path."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot(results: Dict[str, Any], out: Path) -> List[Path]:
    """throughput.png (tasks/s vs N per executor, a panel per group), first_result.png,
    block_startup.png and latency_cdf.png; [] without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    cases, runs = results["cases"], results["runs"]
    ok = {k: r for k, r in runs.items() if "tasks_per_s" in r}
    title = (f"{results['machine']['cpus']} CPUs, flux-core {results['machine']['flux_core']}, "
             f"parsl {results['machine']['parsl']}, {results['suite']} suite, median of {results['repeats']}")
    written = []

    groups = [g for g in GROUPS if g != "data" and any(cases[k]["group"] == g for k in ok)]
    series: Dict[Tuple[str, str], List[Tuple[int, float]]] = {}
    for k, r in ok.items():
        series.setdefault((cases[k]["group"], _label(cases[k])), []).append((cases[k]["n"], r["tasks_per_s"]))
    if groups:
        fig, axes = plt.subplots(1, len(groups), figsize=(4.6 * len(groups), 4.4), squeeze=False)
        for ax, g in zip(axes[0], groups):
            for (sg, label), pts in sorted(series.items()):
                if sg == g:
                    pts.sort()
                    ax.plot(*zip(*pts), marker="o", label=label,
                            linestyle="--" if label.startswith("bare-flux") else "-")
            rates = [v for (sg, _), pts in series.items() if sg == g for _, v in pts]
            wide = max(rates) / min(rates) > 10
            ax.set(xscale="log", yscale="log" if wide else "linear", xlabel="N apps", ylabel="tasks/s", title=g)
            if not wide:
                ax.set_ylim(bottom=0)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=6)
        fig.suptitle("Throughput vs N — " + title, fontsize=9)
        written.append(_save(plt, fig, out / "throughput.png"))

    first: Dict[str, List[float]] = {}
    for k, r in ok.items():  # each executor's smallest python-noop / mpi / multi-node case
        c = cases[k]
        if c["group"] in ("python-noop", "bash-noop", "mpi-hello", "multi-node"):
            first.setdefault(f"{c['group']}: {_label(c)}", r["first_result_all_s"])
    if first:
        labels = sorted(first)
        fig, ax = plt.subplots(figsize=(8, 0.32 * len(labels) + 1.5))
        meds = [statistics.median(first[lb]) for lb in labels]
        err = [[m - min(first[lb]) for m, lb in zip(meds, labels)], [max(first[lb]) - m for m, lb in zip(meds, labels)]]
        ax.barh(labels, meds, xerr=err, color="tab:blue", alpha=0.8)
        ax.set(xlabel="seconds from parsl.load to the first result (median, min-max)")
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title("First result — " + title, fontsize=8)
        written.append(_save(plt, fig, out / "first_result.png"))

    blocks: Dict[str, List[float]] = {}
    for k, r in ok.items():
        if r.get("block_startup_all_s"):
            blocks.setdefault(_label(cases[k]), []).extend(r["block_startup_all_s"])
    if blocks:
        labels = sorted(blocks)
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(labels) + 1.5))
        try:
            ax.boxplot([blocks[lb] for lb in labels], orientation="horizontal")
        except TypeError:  # matplotlib < 3.10
            ax.boxplot([blocks[lb] for lb in labels], vert=False)
        ax.set_yticks(range(1, len(labels) + 1), labels, fontsize=7)
        ax.set(xlabel="seconds, executor 'listening' to 'block N registered' (executor.log), every block of "
                      "every run")
        ax.set_title("Block start-up (flux start to manager registration) — " + title, fontsize=8)
        written.append(_save(plt, fig, out / "block_startup.png"))

    data = [k for k in ok if cases[k]["group"] == "data"]
    if data:
        sizes = sorted({cases[k]["mib"] for k in data})
        executors = sorted({cases[k]["executor"] for k in data})
        fig, (bw, mem) = plt.subplots(1, 2, figsize=(11, 4.2))
        width = 0.8 / len(executors)
        for j, ex in enumerate(executors):
            got = {cases[k]["mib"]: ok[k] for k in data if cases[k]["executor"] == ex}
            xs = [i + j * width for i, mib in enumerate(sizes) if mib in got]
            if ex != "threadpool":  # it moves no bytes: no bandwidth to show
                bw.bar(xs, [got[mib]["mb_per_s"] for mib in sizes if mib in got], width, label=ex, color=f"C{j}")
            mem.bar(xs, [got[mib]["extra_per_in_flight"] for mib in sizes if mib in got], width, label=ex,
                    color=f"C{j}")
        for ax, ylabel in ((bw, "MB/s (arrays in + out)"), (mem, "driver peak - before, per MiB in flight")):
            ax.set_xticks([i + 0.4 - width / 2 for i in range(len(sizes))], [f"{mib:g} MiB" for mib in sizes])
            ax.set(ylabel=ylabel)
            ax.grid(True, axis="y", alpha=0.3)
            ax.legend(fontsize=7)
        mem.axhline(1.5, color="k", linestyle=":", linewidth=1)
        fig.suptitle("Data path — " + title, fontsize=9)
        written.append(_save(plt, fig, out / "data_path.png"))

    cdf_groups = [g for g in groups if any(cases[k]["group"] == g and r.get("latency_quantiles_s")
                                           for k, r in ok.items())]
    if cdf_groups:
        fig, axes = plt.subplots(1, len(cdf_groups), figsize=(4.6 * len(cdf_groups), 4.2), squeeze=False)
        for ax, g in zip(axes[0], cdf_groups):
            for k, r in ok.items():
                c = cases[k]
                if c["group"] == g and r.get("latency_quantiles_s"):
                    q = r["latency_quantiles_s"]
                    ax.plot([v * 1000 for v in q], [i / (len(q) - 1) for i in range(len(q))],
                            label=f"{_label(c)} N={c['n']}")
            ax.set(xscale="log", xlabel="latency, submit to result (ms)", ylabel="fraction of tasks", title=g)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=6)
        fig.suptitle("Per-task latency CDF (median-rate run) — " + title, fontsize=9)
        written.append(_save(plt, fig, out / "latency_cdf.png"))
    return written


# ------------------------------------------------------------------------ CLI
def find_flux() -> str:
    """The flux command (:mod:`parsl_flux.fluxpath`), or exit with one line saying what is wrong."""
    try:
        return fluxpath.require_flux()
    except fluxpath.FluxNotFound as exc:
        raise SystemExit(f"parsl-flux bench: {exc}") from None


def _csv(s: str) -> List[str]:
    return [x for x in s.split(",") if x]


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="parsl-flux bench", description=__doc__.split("\n")[0])
    p.add_argument("--suite", choices=SUITES, default="full")
    p.add_argument("--groups", type=_csv, default=None, help=f"only these groups ({', '.join(GROUPS)})")
    p.add_argument("--executors", type=_csv, default=None, help=f"only these ({', '.join(EXECUTORS)})")
    p.add_argument("--sizes", type=lambda s: [int(x) for x in _csv(s)], default=None, help="only these N")
    p.add_argument("--n", type=int, default=None, help="run every selected case at this N instead")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--budget", type=float, default=150.0, help="skip a case predicted to take longer (s)")
    p.add_argument("--fluxion-flux", default=str(FLUXION_PREFIX / "bin" / "flux"),
                   help="flux of a prefix with Fluxion, for the multi-node Fluxion cases (skipped when absent)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args(argv)
    for kind in args.executors or []:
        if kind not in EXECUTORS:
            p.error(f"unknown executor {kind!r}; choose from {', '.join(EXECUTORS)}")
    for g in args.groups or []:
        if g not in GROUPS:
            p.error(f"unknown group {g!r}; choose from {', '.join(GROUPS)}")
    if args.repeats < 1 or any(n < 1 for n in (args.sizes or []) + ([args.n] if args.n is not None else [])):
        p.error("--repeats and --sizes must be positive")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        spec = json.loads(argv[1])
        print(json.dumps(child(Case(**spec["case"]), spec["ctx"])))
        return 0
    args = parse_args(argv)
    flux = find_flux()
    results = run_all(args, flux)
    results["ratios"] = ratios(results)
    results["cost_growth"] = cost_growth(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    (args.out / "results.md").write_text(table(results) + "\n")
    print(table(results))
    print(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'} ({results['wall_s']:.0f}s)")
    written = plot(results, args.out)
    if written:
        print("wrote " + ", ".join(str(p) for p in written))
    else:
        print("matplotlib not installed: no plots (pip install '.[bench]')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
