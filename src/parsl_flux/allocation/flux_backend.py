"""Everything the manager does with Flux itself: jobspecs, resources, and the
three threads that submit jobs, collect their ends and watch the broker.

* submitter: owns one Flux handle; submits jobspecs asynchronously in batches
  (all RPCs of a batch in flight at once), cancels jobs, and pings the broker
  when idle so a dead broker is noticed even with nothing running.
* waiter: owns a second handle and runs its reactor; each submitted job gets
  one ``job.wait`` RPC whose continuation reports the job's end, so there is
  no thread and no eventlog watch per job. Waiting per job id, not for "any
  waitable job", keeps two managers on one instance (attach mode, several
  blocks or executors) from reaping each other's jobs.
* pinger: owns a third handle and pings the broker every heartbeat period; an
  answer that takes longer than the timeout means a hung or stopped broker,
  which the other two threads' RPCs would wait on forever.

All three hand events to the manager's main loop through ``emit``.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, List, Mapping, Optional

from parsl_flux.allocation.events import (BrokerLost, CancelNamed, Event, FluxRequest, JobDone, Submit, SubmitFailed,
                                          Submitted)
from parsl_flux.allocation.mpi_allocation import allocation_jobspec
from parsl_flux.wire.shape import InstanceResources, JobShape
from parsl_flux.wire.wakeup import Waker

logger = logging.getLogger(__name__)

SUBMIT_BATCH = 256
STDERR_TAIL_BYTES = 4096
SYS_PATH_ENV = "PARSL_FLUX_SYS_PATH"
_FAST_BOOT = (f"import os,sys;sys.path[1:]=os.environ.pop('{SYS_PATH_ENV}').split(os.pathsep);"
              "import parsl_flux.job.runner as r;sys.exit(r.main())")
_BROKER_GONE = (errno.ECONNRESET, errno.EPIPE, errno.ENOSYS, errno.EHOSTUNREACH)


def read_tail(path: Path, limit: int = STDERR_TAIL_BYTES) -> str:
    """Last ``limit`` bytes of a file as text ('' when the file is missing)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def task_output(workdir: Path, task_id: int, stream: str) -> Path:
    """Where the Flux shell writes a task's stdout ("out") or stderr ("err")."""
    return workdir / "tasks" / f"{task_id}.{stream}"


def worker_output(workdir: Path, worker: int, stream: str) -> Path:
    """Where a packing worker's stdout/stderr go (shared by the tasks it runs)."""
    return workdir / "workers" / f"{worker}.{stream}"


def instance_resources(handle: Any) -> InstanceResources:
    """Nodes, and the smallest per-node core and GPU counts, of the instance."""
    import flux.resource

    rset = flux.resource.resource_list(handle).get().all
    per_rank = [rset.copy_ranks(str(r)) for r in rset.ranks]
    return InstanceResources(len(per_rank), min(r.ncores for r in per_rank), min(r.ngpus for r in per_rank))


def runner_command(python: str, fast_start: bool) -> List[str]:
    """How a Flux job starts the runner.

    With ``fast_start`` the interpreter skips ``site`` (``-S``) and takes the
    manager's ``sys.path`` from ``PARSL_FLUX_SYS_PATH`` instead, which is the
    same path list but about 10 ms faster per job (20% more no-op jobs/s here).
    The manager only asks for it when ``site`` would add nothing but paths
    (see :func:`site_adds_only_paths`).
    """
    if fast_start:
        return [python, "-S", "-c", _FAST_BOOT]
    return [python, "-m", "parsl_flux.job.runner"]


_STOCK_SITECUSTOMIZE = """\
try:
    import apport_python_hook
except ImportError:
    pass
else:
    apport_python_hook.install()
"""
"""What Debian's and Ubuntu's ``python3`` ship as ``/etc/python3.X/sitecustomize.py``
(linked from ``/usr/lib/python3.X``), comments aside: it installs Ubuntu's crash
reporter when the ``apport`` package is there, and does nothing otherwise."""


def _harmless_customize(spec: Any) -> bool:
    """Whether the ``sitecustomize`` module ``spec`` is the distribution's stock
    one, doing nothing here (no ``apport_python_hook`` to import).

    Compared as syntax trees, so comments and spacing do not matter but any
    added statement does.
    """
    import ast
    import importlib.util

    origin = getattr(spec, "origin", None)
    if not origin or not str(origin).endswith(".py"):
        return False
    try:
        tree = ast.parse(Path(origin).read_text(errors="strict"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return False
    if ast.dump(tree) != ast.dump(ast.parse(_STOCK_SITECUSTOMIZE)):
        return False
    try:
        return importlib.util.find_spec("apport_python_hook") is None
    except (ImportError, ValueError):
        return False


def site_adds_only_paths(site_dirs: Iterable[str]) -> bool:
    """True if ``site`` would only extend ``sys.path`` for this interpreter.

    False when a ``.pth`` file runs code (editable-install finders, virtualenv
    hooks; setuptools' harmless ``_distutils_hack`` excepted) or a
    ``sitecustomize``/``usercustomize`` module exists: then runners must start
    normally so the same hooks are installed in every job. The exception is
    Debian's/Ubuntu's stock ``sitecustomize`` (every ``/usr/bin/python3`` there
    has it, so also the image's), which only installs the apport crash hook
    and is a no-op where apport is absent (see :func:`_harmless_customize`).
    """
    import importlib.util

    for name in ("sitecustomize", "usercustomize"):
        spec = importlib.util.find_spec(name)
        if spec is not None and not (name == "sitecustomize" and _harmless_customize(spec)):
            return False
    for directory in site_dirs:
        for pth in Path(directory).glob("*.pth"):
            try:
                lines = pth.read_text(errors="replace").splitlines()
            except OSError:
                return False
            for line in lines:
                if line.startswith(("import ", "import\t")) and "_distutils_hack" not in line:
                    return False
    return True


def build_jobspec(shape: JobShape, command: List[str], env: Mapping[str, str], cwd: Path,
                  stdout: Path, stderr: Path, name: str) -> Any:
    """The Flux jobspec (``JobspecV1``) of one runner job of the given shape
    (an allocation, in Parsl's MPI model: :mod:`parsl_flux.allocation.mpi_allocation`)."""
    from flux.job import JobspecV1

    if shape.allocation:
        jobspec = allocation_jobspec(shape, command)
    else:
        jobspec = JobspecV1.from_command(
            command,
            num_tasks=shape.num_tasks,
            cores_per_task=shape.cores_per_task,
            gpus_per_task=shape.gpus_per_task or None,
            num_nodes=shape.num_nodes or None,
            exclusive=shape.exclusive,
        )
    jobspec.environment = dict(env)
    jobspec.cwd = str(cwd)
    jobspec.stdout = str(stdout)
    jobspec.stderr = str(stderr)
    if shape.walltime:
        jobspec.duration = shape.walltime
    jobspec.setattr("system.job.name", name)
    return jobspec


class FluxThreads:
    """Submitter, waiter and pinger threads, each with its own Flux handle.

    ``novalidate`` skips the ingest validator (a Python worker in the broker)
    for jobspecs this module built itself; only the instance owner may ask.

    The main loop's requests (:data:`~parsl_flux.allocation.events.FluxRequest`)
    go in through :meth:`put` and are sent to Flux in batches; events come out
    through ``emit``: :class:`~parsl_flux.allocation.events.Submitted`,
    :class:`~parsl_flux.allocation.events.SubmitFailed`,
    :class:`~parsl_flux.allocation.events.JobDone` and
    :class:`~parsl_flux.allocation.events.BrokerLost`.
    """

    def __init__(self, emit: Callable[[Event], None], handle_kwargs: Optional[Mapping[str, Any]] = None,
                 novalidate: bool = False) -> None:
        self._emit = emit
        self._novalidate = novalidate
        self._handle_kwargs = dict(handle_kwargs or {})
        self._requests: "queue.Queue[FluxRequest]" = queue.Queue()
        self._to_wait: "queue.SimpleQueue[int]" = queue.SimpleQueue()
        self._waiter_wake = Waker()
        self._stop = threading.Event()

    def start(self, ping_period: float = 1.0, ping_timeout: float = 10.0) -> None:
        """Start the threads; a third pings the broker every ``ping_period``
        seconds and reports it ``fatal`` when an answer takes longer than
        ``ping_timeout`` (a hung or stopped broker, which RPCs would wait on forever)."""
        self._ping_period, self._ping_timeout = ping_period, ping_timeout
        for name, loop in (("flux-submit", self._submit_loop), ("flux-wait", self._wait_loop),
                           ("flux-ping", self._ping_loop)):
            threading.Thread(target=self._guard, args=(loop,), name=name, daemon=True).start()

    def put(self, request: FluxRequest) -> None:
        """Queue a request for the submit thread (any thread may call it)."""
        self._requests.put(request)

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the queued requests to be sent; True when they were."""
        deadline = time.monotonic() + timeout
        while not self._requests.empty():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self) -> None:
        self._stop.set()
        self._waiter_wake.wake()

    def _handle(self) -> Any:
        import flux

        return flux.Flux(**self._handle_kwargs)

    def _guard(self, loop: Callable[[], None]) -> None:
        try:
            loop()
        except Exception as exc:  # a lost broker surfaces here as OSError
            if not self._stop.is_set():
                logger.exception("Flux thread failed")
                self._emit(BrokerLost(f"{type(exc).__name__}: {exc}"))

    def _ping_loop(self) -> None:
        handle = self._handle()
        while not self._stop.wait(self._ping_period):
            try:
                handle.rpc("broker.ping", {"seq": 0, "pad": ""}).wait_for(self._ping_timeout)
            except TimeoutError:
                raise TimeoutError(f"the Flux broker did not answer a ping within {self._ping_timeout:.0f}s "
                                   "(hung or stopped)") from None

    def _submit_loop(self) -> None:
        import flux.job

        handle = self._handle()
        while not self._stop.is_set():
            try:
                batch = [self._requests.get(timeout=2.0)]
            except queue.Empty:
                handle.rpc("broker.ping", {"seq": 0, "pad": ""}).get()  # proves the broker is alive
                continue
            while len(batch) < SUBMIT_BATCH:
                try:
                    batch.append(self._requests.get_nowait())
                except queue.Empty:
                    break
            futures = []
            for request in batch:
                if isinstance(request, Submit):
                    futures.append((request.task_id, flux.job.submit_async(handle, request.jobspec, waitable=True,
                                                                           novalidate=self._novalidate)))
                elif isinstance(request, CancelNamed):
                    for job in flux.job.JobList(handle, filters=["pending", "running"], name=request.name).jobs():
                        flux.job.cancel_async(handle, job.id, "its allocation ended")
                else:
                    flux.job.cancel_async(handle, request.jobid, "cancelled by parsl-flux")
            for tag, fut in futures:
                try:
                    jobid = int(fut.get_id())
                except OSError as exc:
                    if exc.errno in _BROKER_GONE or not self._broker_answers(handle):
                        raise
                    self._emit(SubmitFailed(tag, f"Flux rejected the job: {exc.strerror or exc}"))
                    continue
                self._emit(Submitted(tag, jobid))
                self._to_wait.put(jobid)
                self._waiter_wake.wake()

    def _broker_answers(self, handle: Any) -> bool:
        """Whether the broker answers a ping, asked after a submit failed.

        A broker killed a moment ago fails the next submit with an errno of
        no fixed kind (ENOENT, before the EPIPE of later ones): the job is not
        at fault, the block is lost, so the submit loop must end as for
        :data:`_BROKER_GONE` and the task fail with ``BlockLost``, not as a
        job Flux rejected."""
        try:
            handle.rpc("broker.ping", {"seq": 0, "pad": ""}).wait_for(self._ping_timeout).get()
        except (OSError, TimeoutError):
            return False
        return True

    def _wait_loop(self) -> None:
        import flux.job
        from flux.constants import FLUX_POLLIN

        handle = self._handle()

        def on_done(future: Any, jobid: int) -> None:
            res = future.get_status()  # raises OSError when the broker is gone
            errstr = res.errstr.decode(errors="replace") if isinstance(res.errstr, bytes) else str(res.errstr)
            self._emit(JobDone(jobid, bool(res.success), errstr))

        def on_wake(h: Any, *_: Any) -> None:
            self._waiter_wake.drain()
            if self._stop.is_set():
                h.reactor_stop()
                return
            while True:
                try:
                    jobid = self._to_wait.get_nowait()
                except queue.Empty:
                    return
                flux.job.wait_async(h, jobid).then(on_done, jobid)

        watcher = handle.fd_watcher_create(self._waiter_wake.fd, on_wake, events=FLUX_POLLIN)
        watcher.start()
        handle.reactor_run()  # an exception in a callback stops the reactor and is raised here
