"""The manager: initial program of each block's Flux instance.

``flux start flux env python -m parsl_flux.allocation.manager --url tcp://DRIVER:PORT --block-id N``

It dials back to the driver (the driver never reaches into the allocation and
needs no ssh), reports the instance's resources, receives its configuration,
and then runs each task either as its own Flux job (:mod:`parsl_flux.job.runner`,
shaped by the task's resource specification) or, in packing mode, on a pool of
one-core worker jobs.

The main thread runs one ZMQ loop over the driver connection and a wake-up
pipe; Flux calls happen in :class:`~parsl_flux.allocation.flux_backend.FluxThreads` and
runner traffic in :class:`~parsl_flux.allocation.task_server.TaskServer`, which both hand
typed events (:mod:`parsl_flux.allocation.events`) to the loop through a queue;
the loop alone owns the tasks' state, kept per task only while it is in flight.

The manager exits (and so the Flux instance ends) when the driver says
shutdown, when the driver has been silent for ``--driver-timeout`` seconds, or
when its Flux broker is gone; in each case it tells the driver why, if it can.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional, Set, Tuple, Union

import zmq
from zmq.utils import z85

from parsl_flux.allocation import broker_dirs, instance_setup, leftovers, mpi_allocation, peers
from parsl_flux.allocation.bytecode import write_job_bytecode
from parsl_flux.allocation.events import (BrokerLost, Cancel, CancelNamed, Event, JobDone, PackedDone, PackedLost,
                                          RanksLost, ResultIn, Submit, SubmitFailed, Submitted)
from parsl_flux.allocation.linkwatch import LinkWatch
from parsl_flux.allocation.node_watch import NodeWatch, died_with_a_node
from parsl_flux.wire import launch
from parsl_flux.wire import protocol, versions, zap
from parsl_flux.allocation.flux_backend import (SYS_PATH_ENV, FluxThreads, build_jobspec, instance_resources, read_tail,
                                     runner_command, site_adds_only_paths, task_output, worker_output)
from parsl_flux.allocation.task_server import TaskServer
from parsl_flux.wire.protocol import Kind
from parsl_flux.wire.rejects import RejectLog
from parsl_flux.wire.resume import ResultLedger
from parsl_flux.wire.shape import InstanceResources, JobShape, block_window
from parsl_flux.wire.wakeup import Waker

logger = logging.getLogger("parsl_flux.allocation.manager")

LEFTOVER_GRACE = 10.0
"""Seconds a task's Flux job may go on after rank 0 sent its outcome; then the
task resolves with that outcome, and the job and what the task left running on
this node are ended (:mod:`parsl_flux.allocation.leftovers`)."""

RESUME_RETRY = 2.0
"""Seconds to wait for the driver's welcome after a reconnect before saying hello again."""

WORKER_SHAPE = JobShape()
"""Packing workers are one-core, one-task Flux jobs: the default shape."""

BLOCK_ID_ENV = "PARSL_WORKER_BLOCK_ID"
"""Parsl's name for the block a task runs in: its monitoring wrapper reads it
into the ``try`` table's ``block_id``; HTEX's workers set it the same way."""


@dataclass
class _Task:
    task_id: int
    shape: JobShape
    packed: bool
    jobid: Optional[int] = None
    cancelled: bool = False


@dataclass
class _Pool:
    """Packing workers: how many may run, and how many are submitted or running."""

    limit: int = 0
    jobs: int = 0
    serial: int = 0


class Manager:
    """State and loop of one block's manager (see the module docstring)."""

    def __init__(self, url: str, block_id: str, key: bytes, workdir: Path, python: str,
                 heartbeat_period: float, driver_timeout: float, runner_host: str,
                 server_key: Optional[str] = None) -> None:
        self.block_id = block_id
        self.key = key
        self.workdir = workdir
        self.job_cwd = workdir
        self.runner_host = runner_host
        self.heartbeat_period = heartbeat_period
        self.driver_timeout = driver_timeout
        self.max_bytes = protocol.DEFAULT_MAX_MESSAGE_BYTES
        self.session: Optional[protocol.Session] = None
        self.rejects = RejectLog(logger)
        self.tasks: Dict[int, _Task] = {}
        self.by_jobid: Dict[int, Optional[_Task]] = {}  # None marks a packing worker's job
        self.results: List[Dict[str, Any]] = []  # finished, not sent yet
        self.ledger = ResultLedger()  # sent, not acknowledged yet: sent again after a reconnect
        self.resume_nonce: Optional[bytes] = None  # our hello's nonce while a resume hand-shake is under way
        self.resume_sent_at = 0.0
        self.nodes: Optional[NodeWatch] = None  # multi-node instances: reports lost broker ranks
        self.lost_ranks: Set[int] = set()
        self.degraded: Optional[Dict[str, Any]] = None  # DEGRADED body, sent again after a resume
        self.held: Deque[_Task] = deque()  # per-job tasks not yet given to Flux
        self.outcome_at: Dict[int, float] = {}  # task id -> when rank 0 sent its outcome, while its job still runs
        self.task_jobs = 0  # task jobs given to Flux and not yet ended
        self.refill_at = 0  # release held jobs once task_jobs is down to this
        self.pool = _Pool()
        self.ctx = zmq.Context()
        self.driver = self.ctx.socket(zmq.DEALER)  # no fixed identity: the driver binds us after the handshake
        self.driver.setsockopt(zmq.LINGER, 2000)
        # the driver admits a connection only with this block's credentials (parsl_flux.wire.zap);
        # CurveZMQ when it gave its public key, which authenticates the driver too
        zap.configure_client(self.driver, block_id, key,
                             z85.encode(bytes.fromhex(server_key)) if server_key else None)
        self.link = LinkWatch(self.driver)
        self.driver.connect(url)
        # arrays' bytes are MAC'd only where the path to the driver does not protect them already
        driver_host = url.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
        self.mac_buffers = not protocol.guarded_path(bool(server_key), driver_host)
        self.waker = Waker()
        self.events: "queue.SimpleQueue[Event]" = queue.SimpleQueue()
        self._on: Dict[type, Callable[[Any], None]] = {  # what the main loop does with each event but BrokerLost
            Submitted: self._on_submitted, SubmitFailed: self._on_submit_failed, JobDone: self._on_job_done,
            PackedDone: self._on_packed_done, PackedLost: self._on_packed_lost, ResultIn: self._on_result_in,
            RanksLost: lambda event: self._ranks_lost(event.ranks, event.hosts)}
        self.server: Optional[TaskServer] = None
        self.job_env = {k: v for k, v in os.environ.items()
                        if k not in (protocol.KEY_FILE_ENV, protocol.KEY_ENV, protocol.SECRET_ENV)}
        self.job_env[BLOCK_ID_ENV] = block_id
        import site

        fast = site_adds_only_paths([*site.getsitepackages(), site.getusersitepackages()])
        if fast:
            self.job_env[SYS_PATH_ENV] = os.pathsep.join(p for p in sys.path if p)
        self.python = python
        self.runner = runner_command(python, fast)
        self.allocation_runner = list(mpi_allocation.runner_command(python, fast, SYS_PATH_ENV))
        self.flux_command = shutil.which("flux") or "flux"  # flux puts its bindir on PATH
        self.flux_job = mpi_allocation.job_command(self.flux_command, os.environ)
        self.bypass: Optional[str] = None  # why Parsl's MPI model cannot run here; None once it can
        self.broker_dirs: Optional[broker_dirs.BrokerDirs] = None  # start mode: what a killed broker leaves
        write_job_bytecode(python)
        self.flux: Optional[FluxThreads] = None

    def _emit(self, event: Event) -> None:
        """Called from other threads: queue an event and wake the main loop.

        A submitted job is bound to its task in the task server at once,
        from the submitting thread: its runner may connect before the main
        loop sees the event."""
        if isinstance(event, Submitted) and self.server is not None:
            self.server.bind(event.jobid, protocol.WORKER if event.task_id is None else event.task_id)
        self.events.put(event)
        self.waker.wake()

    def send(self, kind: str, data: Any = None) -> None:
        assert self.session is not None
        self.driver.send_multipart(self.session.seal(kind, data), copy=False)  # results' arrays: no copy

    @property
    def online(self) -> bool:
        """Connected with an open session: messages may be sent (else they wait)."""
        return self.link.up and self.resume_nonce is None and self.session is not None

    def send_results(self) -> None:
        """Send finished results, several per message but each message under the size limit;
        each is kept in the ledger until the driver acknowledges it."""
        self._send_batched(self.results)
        self.ledger.sent(self.results)
        self.results = []

    def _send_batched(self, results: List[Dict[str, Any]]) -> None:
        batch: List[Dict[str, Any]] = []
        size = 0
        for result in results:
            n = protocol.outcome_bytes(result)
            if batch and size + n > self.max_bytes:
                self.send(Kind.RESULTS, batch)
                batch, size = [], 0
            batch.append(result)
            size += n
        if batch:
            self.send(Kind.RESULTS, batch)

    def _start_resume(self, now: float) -> None:
        """The connection came back (a new one, to the driver): hand-shake again (:mod:`parsl_flux.wire.resume`)."""
        self.resume_nonce = os.urandom(protocol.NONCE_BYTES)
        self.resume_sent_at = now
        logger.info("connected to the driver again; resuming the session of block %s", self.block_id)
        self.driver.send_multipart(protocol.hello(self.key, self.block_id, self.resume_nonce))

    def _finish_resume(self, frames: List[bytes]) -> None:
        """A welcome to our resume hello: open the new session, say which tasks
        we hold, and send again every result not acknowledged."""
        assert self.resume_nonce is not None
        try:
            driver_nonce = protocol.open_welcome(self.key, self.resume_nonce, frames)
        except protocol.AuthenticationError as exc:
            self.rejects.reject("dropped a message while resuming the session: %s", exc)
            return
        self.session = protocol.manager_session(self.key, self.resume_nonce, driver_nonce, self.mac_buffers)
        self.resume_nonce = None
        self.send(Kind.RESUME, protocol.resume_body(list(self.tasks), self.ledger.ids()))
        self._send_batched(self.ledger.unacknowledged())
        if self.degraded is not None:
            self.send(Kind.DEGRADED, self.degraded)
        logger.info("session of block %s resumed: %d task(s) held, %d result(s) sent again",
                    self.block_id, len(self.tasks), len(self.ledger))

    # ------------------------------------------------------------ lifecycle
    def run(self) -> int:
        import flux

        for sub in ("tasks", "workers"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        handle = flux.Flux()
        resources = instance_resources(handle)
        owner = int(handle.attr_get("security.owner")) == os.getuid()
        broker_pid = int(handle.attr_get("broker.pid"))
        if owner:
            self.bypass = instance_setup.load_alloc_bypass(handle)
            if os.getppid() == broker_pid:  # its initial program: an instance this block started, ours to set
                instance_setup.tune_latency(handle)
                self.broker_dirs = broker_dirs.read_broker_dirs(handle, broker_pid)
        else:
            self.bypass = ("this manager does not own the Flux instance (attach mode), "
                           "and only the owner may bypass allocation")
        one_node = int(handle.attr_get("size")) == 1
        if not self._handshake():
            logger.error("no valid answer from the driver within %.0fs; exiting", self.driver_timeout)
            self.link.close()  # its monitor socket would hold ctx.term() forever
            self.driver.close(linger=0)
            self.ctx.term()
            return 2
        self.send(Kind.REGISTER, protocol.register_body(resources.to_wire(), socket.gethostname(), os.getpid(),
                                                        handle.attr_get("local-uri"), handle.attr_get("version"),
                                                        versions.this_side()))
        del handle
        logger.info("block %s registered: %s", self.block_id, resources)
        config = self._await_config()
        if isinstance(config, str):
            self._close(config, bye=False)  # the driver refused the block or is silent: nobody to tell
            return 2
        self._configure(config, resources, broker_pid if one_node else None)
        self.flux = FluxThreads(self._emit, config.get("handle_kwargs"), novalidate=owner)
        self.flux.start(self.heartbeat_period, self.driver_timeout)
        if not one_node:
            kwargs = dict(config.get("handle_kwargs") or {})
            self.nodes = NodeWatch(self._emit, lambda: flux.Flux(**kwargs), self.heartbeat_period)
            self.nodes.start()
        assert self.server is not None
        self.server.start()
        try:
            reason, code = self._loop()
        except Exception as exc:  # a bug here must still end the block cleanly and say why
            logger.exception("manager loop failed")
            reason, code = f"manager error: {type(exc).__name__}: {exc}", 3
        self._close(reason, broker_lost=code == EXIT_BROKER_LOST)
        return code

    def _handshake(self) -> bool:
        """Hello/welcome with the driver (see :mod:`parsl_flux.wire.protocol`): True once a session is open."""
        nonce = os.urandom(protocol.NONCE_BYTES)
        self.driver.send_multipart(protocol.hello(self.key, self.block_id, nonce))
        deadline = time.monotonic() + self.driver_timeout
        while time.monotonic() < deadline:
            if not self.driver.poll(500):
                continue
            try:
                driver_nonce = protocol.open_welcome(self.key, nonce, self.driver.recv_multipart())
            except protocol.AuthenticationError as exc:
                self.rejects.reject("dropped a message during the handshake: %s", exc)
                continue
            self.session = protocol.manager_session(self.key, nonce, driver_nonce, self.mac_buffers)
            return True
        return False

    def _await_config(self) -> Union[Mapping[str, Any], str]:
        """The driver's answer to REGISTER: the block's configuration, or why there is none
        (the driver refused the block: :mod:`parsl_flux.wire.versions`; or it said nothing)."""
        deadline = time.monotonic() + self.driver_timeout
        while time.monotonic() < deadline:
            if not self.driver.poll(500):
                continue
            msg = self._open(self.driver.recv_multipart())
            if msg is not None and msg[0] == Kind.CONFIG:
                return msg[1]
            if msg is not None and msg[0] == Kind.SHUTDOWN:
                return f"the driver refused this block: {msg[1]}"
        return f"no configuration from the driver within {self.driver_timeout:.0f}s"

    def _open(self, frames: List[Any]) -> Optional[Tuple[str, Any]]:
        assert self.session is not None
        try:
            return self.session.open(frames)
        except protocol.AuthenticationError as exc:
            self.rejects.reject("dropped a driver message: %s", exc)
            return None

    def _configure(self, config: Mapping[str, Any], resources: InstanceResources,
                   broker_pid: Optional[int]) -> None:
        """Apply the driver's CONFIG: pool size, limits, where jobs run; open the task server:
        on AF_UNIX, knowing runners by their job, when the block is this one
        broker (``broker_pid``), else on TCP."""
        cores = resources.cores
        self.refill_at = block_window(cores) // 2
        self.pool.limit = cores if config.get("packing_workers") == -1 else int(config.get("packing_workers", 0))
        self.max_bytes = int(config.get("max_message_bytes", protocol.DEFAULT_MAX_MESSAGE_BYTES))
        cwd = config.get("cwd")
        if cwd and os.path.isdir(cwd):  # the driver's working directory, where this node shares it
            self.job_cwd = Path(cwd)
        options = dict(idle_timeout=float(config.get("idle_timeout", 5.0)), max_connections=max(256, 8 * cores),
                       max_bytes=self.max_bytes)
        if broker_pid is not None:
            self.server = TaskServer(protocol.new_secret(), self._emit, identify=job_identifier(broker_pid),
                                     **options)
            self.job_env[protocol.RUNNER_URL_ENV] = self.server.url
        else:
            bind, reach = runner_endpoint(self.runner_host)
            self.server = TaskServer(protocol.new_secret(), self._emit, host=bind, **options)
            self.job_env[protocol.RUNNER_URL_ENV] = f"{reach}:{self.server.url.rsplit(':', 1)[1]}"
        self.job_env[protocol.MAX_BYTES_ENV] = str(self.max_bytes)

    def _loop(self) -> Tuple[str, int]:
        poller = zmq.Poller()
        poller.register(self.driver, zmq.POLLIN)
        poller.register(self.waker.fd, zmq.POLLIN)
        poller.register(self.link.monitor, zmq.POLLIN)
        last_from_driver = last_heartbeat = time.monotonic()
        while True:
            ready = dict(poller.poll(timeout=self.heartbeat_period * 1000))
            now = time.monotonic()
            if self.waker.fd in ready:
                self.waker.drain()
            if self.link.monitor in ready:
                self.link.drain()
            if self.link.up and (self.link.reconnected or (self.resume_nonce is not None
                                                           and now - self.resume_sent_at > RESUME_RETRY)):
                self.link.reconnected = False
                self._start_resume(now)
            if self.driver in ready:
                last_from_driver = now
                if self._drain_driver():
                    return "shutdown requested by the driver", 0
            fatal = self._drain_events()
            self._end_lingering_jobs(now)
            self._release_held()
            self._grow_pool()
            if self.results and self.online:
                self.send_results()
            if fatal:
                return f"Flux broker unreachable: {fatal}", EXIT_BROKER_LOST
            if now - last_from_driver > self.driver_timeout:
                return f"no word from the driver for {self.driver_timeout:.0f}s", 2
            if now - last_heartbeat >= self.heartbeat_period and self.online:
                self.send(Kind.HEARTBEAT)
                last_heartbeat = now

    def _close(self, reason: str, broker_lost: bool = False, bye: bool = True) -> None:
        """End the block: cancel its jobs, kill what tasks left behind, say BYE (unless not ``bye``).

        With ``broker_lost`` (hung or dead broker) the driver hears BYE first,
        since cancels cannot drain, and a hung broker of our own instance is
        killed: it would keep its job shells alive while stopped, and a
        SIGTERM from the batch system stays pending on a stopped process."""
        logger.info("manager of block %s exiting: %s", self.block_id, reason)
        self.rejects.flush()
        if broker_lost:
            self.send(Kind.BYE, protocol.bye_body(reason))
            _kill_own_broker()
        elif self.flux is not None:
            for jobid in self.by_jobid:
                self.flux.put(Cancel(jobid))
            self.flux.flush(timeout=5)
        if self.flux is not None:
            self.flux.stop()
        if self.nodes is not None:
            self.nodes.stop()
        if self.server is not None:
            self.server.stop()
            # what tasks left running on this node (daemons) must not outlive the block
            left = leftovers.kill_all(leftovers.processes_with_env(
                {protocol.RUNNER_URL_ENV: self.job_env[protocol.RUNNER_URL_ENV]}))
            if left:
                logger.warning("killed %d process(es) that tasks left running", left)
        if broker_lost and self.broker_dirs is not None:  # a killed broker cleans up nothing itself
            removed = broker_dirs.remove_when_gone(self.broker_dirs, BROKER_EXIT_WAIT)
            if removed:
                logger.info("removed the dead broker's directories %s", removed)
        if bye and not broker_lost:
            self.send(Kind.BYE, protocol.bye_body(reason))
        self.link.close()
        self.driver.close()
        self.ctx.term()

    # ------------------------------------------------------- driver messages
    def _drain_driver(self) -> bool:
        """Handle all pending driver messages; True when asked to shut down."""
        while True:
            try:
                frames = [f.buffer for f in self.driver.recv_multipart(zmq.NOBLOCK, copy=False)]
            except zmq.Again:
                return False
            if self.resume_nonce is not None:
                self._finish_resume(frames)
                continue
            msg = self._open(frames)
            if msg is None:
                continue
            kind, data = msg
            if kind == Kind.TASKS:
                for t in data:
                    self._accept(t)
                self.send(Kind.ACK, [t["id"] for t in data])  # held here now: the driver drops its copies
            elif kind == Kind.ACK:
                self.ledger.acknowledged(data)
            elif kind == Kind.CANCEL:
                for task_id in data:
                    self._cancel(task_id)
            elif kind == Kind.SHUTDOWN:
                return True

    def _accept(self, t: Mapping[str, Any]) -> None:
        if t["id"] in self.tasks:  # sent again after a resume, though it had arrived
            return
        packed = bool(t.get("packable")) and self.pool.limit > 0
        task = _Task(t["id"], JobShape.from_wire(t["shape"]), packed)
        self.tasks[task.task_id] = task
        assert self.server is not None
        self.server.add(task.task_id, t["payload"], packed)
        if packed:
            return
        self.held.append(task)

    def _release_held(self) -> None:
        """Give held jobs to Flux in batches, once Flux's queue is half empty.

        Trickling one job into Flux per job that ends slows a long-lived
        instance down run after run (measured with flux-core 0.88 on 2 cores:
        24, 16, then 11 jobs/s over three rounds of 1 000 jobs, with the
        inactive jobs purged in between); refilling half the window at once
        keeps it at 24, 24, 20, like a single ``flux submit --cc``. Flux's
        queue is still never empty while tasks wait, so cores do not idle."""
        if not self.held or self.task_jobs > self.refill_at:
            return
        assert self.flux is not None
        while self.held:
            task = self.held.popleft()
            assert self.server is not None
            env = {**self.job_env, **task.shape.env, protocol.TASK_ENV: str(task.task_id),
                   **self._credential_env(task.task_id)}
            command = self.runner
            if task.shape.allocation:
                try:
                    env.update(self._allocation_env(task))
                except ValueError as exc:
                    self._finish(task, protocol.outcome_job_failed(str(exc)))
                    continue
                command = self.allocation_runner
            jobspec = build_jobspec(task.shape, command, env, self.job_cwd,
                                    task_output(self.workdir, task.task_id, "out"),
                                    task_output(self.workdir, task.task_id, "err"), f"parsl-task-{task.task_id}")
            self.task_jobs += 1
            self.flux.put(Submit(task.task_id, jobspec))

    def _allocation_env(self, task: _Task) -> Dict[str, str]:
        """The variables of Parsl's MPI model for ``task``; ValueError when it cannot run here."""
        if self.bypass is not None:
            raise ValueError(f"Parsl's MPI model (ranks_per_node/num_ranks) cannot run here: {self.bypass}")
        return mpi_allocation.allocation_env(task.shape, self.flux_command, self.flux_job, self.python,
                                             task_output(self.workdir, task.task_id, "R"), task.task_id)

    def _credential_env(self, principal: int) -> Dict[str, str]:
        """The credential a job of ``principal`` gets in its environment: none
        over AF_UNIX (the task server knows the job by its processes)."""
        assert self.server is not None
        credential = self.server.credential(principal)
        return {} if credential is None else {protocol.RUNNER_KEY_ENV: credential.hex()}

    def _cancel(self, task_id: int) -> None:
        task = self.tasks.get(task_id)
        if task is None or self.flux is None:
            return
        task.cancelled = True
        if not task.packed and task in self.held:  # never given to Flux
            self.held.remove(task)
            self._finish(task, protocol.outcome_cancelled())
        elif task.packed:
            worker_job = self.server.cancel_packed(task_id)
            if worker_job is None:
                self._finish(task, protocol.outcome_cancelled())
            elif worker_job:
                self.flux.put(Cancel(_jobid(worker_job)))
        elif task.jobid is not None:
            self.flux.put(Cancel(task.jobid))

    # ---------------------------------------------------------- pool sizing
    def _grow_pool(self) -> None:
        """Start worker jobs while packed tasks wait and no large job waits.

        Workers that are submitted but not yet connected count as coming, so
        one burst of tasks does not start more workers than it needs.
        """
        if self.pool.limit == 0 or self.server is None or self.server.large_waiting or self.flux is None:
            return
        coming = self.pool.jobs - self.server.connected_workers
        need = self.server.queued_packed - self.server.idle_workers - coming
        for _ in range(max(0, min(need, self.pool.limit - self.pool.jobs))):
            self.pool.jobs += 1
            self.pool.serial += 1
            n = self.pool.serial
            env = {**self.job_env, **self._credential_env(protocol.WORKER)}
            jobspec = build_jobspec(WORKER_SHAPE, self.runner, env, self.job_cwd,
                                    worker_output(self.workdir, n, "out"), worker_output(self.workdir, n, "err"),
                                    f"parsl-worker-{n}")
            self.flux.put(Submit(None, jobspec))

    # ------------------------------------------------------------ events
    def _drain_events(self) -> Optional[str]:
        """Apply events from the Flux threads, the node watch and the task
        server; return a reason if the broker is gone."""
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return None
            if isinstance(event, BrokerLost):
                return event.reason
            self._on[type(event)](event)

    def _on_submitted(self, event: Submitted) -> None:
        task = self.tasks.get(event.task_id) if event.task_id is not None else None
        self.by_jobid[event.jobid] = task
        if task is not None:
            task.jobid = event.jobid
            if task.cancelled:
                self._cancel(task.task_id)

    def _on_submit_failed(self, event: SubmitFailed) -> None:
        if event.task_id is None:
            self.pool.jobs -= 1
            logger.error("packing worker not started: %s", event.reason)
            return
        self.task_jobs -= 1
        if event.task_id in self.tasks:
            self._finish(self.tasks[event.task_id], protocol.outcome_job_failed(event.reason))

    def _on_job_done(self, event: JobDone) -> None:
        if event.jobid not in self.by_jobid:
            return
        task = self.by_jobid.pop(event.jobid)
        assert self.server is not None and self.flux is not None
        self.server.unbind(event.jobid)
        if task is None:
            self.pool.jobs -= 1
            return
        self.task_jobs -= 1
        if task.shape.allocation:  # ranks its app launched do not end with it
            self.flux.put(CancelNamed(mpi_allocation.ranks_job_name(task.task_id)))
        if task.task_id in self.tasks:
            self._job_done(task, event.success, event.errstr)

    def _on_packed_done(self, event: PackedDone) -> None:
        if event.task_id in self.tasks:
            self._finish(self.tasks[event.task_id], event.outcome)

    def _on_packed_lost(self, event: PackedLost) -> None:
        task = self.tasks.get(event.task_id)
        if task is not None:
            worker = _f58(_jobid(event.worker_job)) if event.worker_job else None
            self._finish(task, protocol.outcome_cancelled() if task.cancelled else
                         protocol.outcome_job_failed(event.reason, worker))

    def _on_result_in(self, event: ResultIn) -> None:
        if event.task_id in self.tasks:
            self.outcome_at[event.task_id] = time.monotonic()

    def _end_lingering_jobs(self, now: float) -> None:
        """Resolve tasks whose job outlives rank 0's outcome by LEFTOVER_GRACE
        (a daemon holding the job's output open): the outcome is the result,
        and the job and the task's leftover processes on this node are ended."""
        assert self.server is not None and self.flux is not None
        for task_id in [t for t, at in self.outcome_at.items() if now - at > LEFTOVER_GRACE]:
            task = self.tasks[task_id]
            outcome = self.server.forget(task.task_id)
            killed = leftovers.kill_all(leftovers.processes_with_env(
                {protocol.RUNNER_URL_ENV: self.job_env[protocol.RUNNER_URL_ENV],
                 protocol.TASK_ENV: str(task.task_id)}))
            logger.warning("task %s: its job still ran %.0fs after the app returned; ending it "
                           "(%d leftover process(es) killed)", task.task_id, LEFTOVER_GRACE, killed)
            if task.jobid is not None:
                self.flux.put(Cancel(task.jobid))
            self._finish(task, outcome if outcome is not None else
                         protocol.outcome_job_failed("job outlived its result", _f58(task.jobid)))

    def _ranks_lost(self, ranks: str, hosts: List[str]) -> None:
        """Broker ranks went offline: tell the driver this block is degraded (no new work)."""
        from flux.idset import IDset

        self.lost_ranks.update(IDset(ranks))
        self.degraded = protocol.degraded_body(str(IDset(sorted(self.lost_ranks))), hosts,
                                               "Flux reports the broker rank(s) offline")
        logger.error("block %s lost broker rank(s) %s (%s)", self.block_id, ranks, ", ".join(hosts) or "?")
        if self.online:
            self.send(Kind.DEGRADED, self.degraded)

    def _job_done(self, task: _Task, success: bool, errstr: str) -> None:
        outcome = self.server.forget(task.task_id)
        if task.cancelled:
            result: Dict[str, Any] = protocol.outcome_cancelled()
        elif success and outcome is not None:
            result = outcome
        elif not success and died_with_a_node(errstr):
            result = protocol.outcome_node_lost(errstr, _f58(task.jobid))
        else:
            result = protocol.outcome_job_failed(errstr or "job exited without sending a result", _f58(task.jobid),
                                                 read_tail(task_output(self.workdir, task.task_id, "err")))
        self._finish(task, result)

    def _finish(self, task: _Task, outcome: Dict[str, Any]) -> None:
        del self.tasks[task.task_id]
        self.outcome_at.pop(task.task_id, None)
        self.server.forget(task.task_id)
        self.results.append(protocol.result(task.task_id, outcome))


def job_identifier(broker_pid: int) -> Callable[[int], Optional[int]]:
    """``identify(pid)`` for the task server: the Flux job (of the broker
    ``broker_pid``) a process runs in, by its job shell (:mod:`parsl_flux.allocation.peers`)."""
    def identify(pid: int) -> Optional[int]:
        text = peers.flux_job_of(pid, broker_pid)
        if text is None:
            return None
        try:
            return _jobid(text)
        except (ValueError, TypeError, OSError):
            return None

    return identify


def runner_endpoint(runner_host: str) -> Tuple[str, str]:
    """``(address to listen on, address runners dial)`` for the TCP task server
    of a multi-node instance: the address ``runner_host`` resolves to; only
    where that is a loopback address (a hosts file mapping the node's name to
    127.0.1.1) does it fall back to all interfaces, with a warning."""
    address = socket.gethostbyname(runner_host)
    if address.startswith("127."):
        logger.warning("%s resolves to %s here; the task server listens on all interfaces so runners on "
                       "other nodes can reach it (pass --runner-host with this node's address to narrow it)",
                       runner_host, address)
        return "0.0.0.0", runner_host
    return address, address


EXIT_BROKER_LOST = 1
BROKER_EXIT_WAIT = 5.0  # s for a broker this manager SIGKILLed to be gone before its directories go


def _kill_own_broker() -> None:
    """SIGKILL the broker whose initial program this manager is (start mode);
    in attach mode the instance is not ours, so nothing is killed."""
    parent = os.getppid()  # read once: after the broker's death it would name whoever adopted us
    if not broker_dirs.is_live_broker(parent):
        return
    logger.warning("killing this block's hung Flux broker (pid %d)", parent)
    try:
        os.kill(parent, signal.SIGKILL)
    except OSError as exc:
        logger.warning("could not kill the broker: %s", exc)


def _f58(jobid: Optional[int]) -> Optional[str]:
    """A Flux job id as users see it (``ƒ...``), or None before it had one."""
    if jobid is None:
        return None
    from flux.job import JobID

    return str(JobID(jobid).f58)


def _jobid(text: str) -> int:
    """A Flux job id from any of its encodings (``FLUX_JOB_ID`` is f58)."""
    from flux.job import JobID

    return int(JobID(text))


def manager_key(environ: Mapping[str, str], block_id: str) -> bytes:
    """The block key: read from the 0600 file the executor wrote (which is then
    removed: no task or later reader finds it), or derived from the master
    secret when the block was started outside Parsl (Helm chart)."""
    path = environ.get(protocol.KEY_FILE_ENV)
    if path:
        try:
            mode = os.stat(path).st_mode
            with open(path) as f:
                text = f.read().strip()
        except OSError as exc:
            raise ValueError(f"cannot read the block key file {path!r} ({protocol.KEY_FILE_ENV}): "
                             f"{exc.strerror or exc}") from None
        if mode & 0o077:
            raise ValueError(f"block key file {path!r} is readable by others (mode {mode & 0o777:o}); "
                             "it must be 0600")
        try:
            key = bytes.fromhex(text)
        except ValueError:
            raise ValueError(f"block key file {path!r} does not hold a hex key") from None
        try:
            os.unlink(path)
        except OSError:
            pass
        return key
    try:
        if environ.get(protocol.KEY_ENV):
            return bytes.fromhex(environ[protocol.KEY_ENV])
        if environ.get(protocol.SECRET_ENV):
            return protocol.block_key(bytes.fromhex(environ[protocol.SECRET_ENV]), block_id)
    except ValueError:
        raise ValueError(f"{protocol.KEY_ENV}/{protocol.SECRET_ENV} must be hex strings") from None
    raise ValueError(f"none of {protocol.KEY_FILE_ENV}, {protocol.KEY_ENV}, {protocol.SECRET_ENV} is set")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m parsl_flux.allocation.manager",
                                description="parsl-flux manager: the initial program of a block's Flux instance")
    p.add_argument("--url", required=True, help="driver endpoint, tcp://HOST:PORT")
    p.add_argument("--block-id", required=True)
    p.add_argument("--workdir", default=None,
                   help="parent of block-<ID>/ with manager.log and task outputs (default: a temporary directory)")
    p.add_argument("--python", default=sys.executable, help="interpreter for runners (default: this one)")
    p.add_argument("--heartbeat-period", type=float, default=1.0)
    p.add_argument("--driver-timeout", type=float, default=30.0)
    p.add_argument("--runner-host", default=socket.gethostname(),
                   help="address runners on other nodes use to reach this manager (multi-node blocks)")
    p.add_argument("--server-key", default=None,
                   help="the driver's CurveZMQ public key (hex): encrypt the driver connection ('none': do not)")
    return p.parse_args(argv)


def _workdir(parent: Optional[str], block_id: str) -> Path:
    """``<parent>/block-<id>``; a temporary directory when there is no parent
    or it is not writable here (no filesystem shared with the driver)."""
    if parent:
        path = Path(parent) / f"block-{block_id}"
        try:
            path.mkdir(parents=True, exist_ok=True)
            return path
        except OSError as exc:
            print(f"parsl-flux manager: cannot use {path} ({exc}); using a temporary directory", file=sys.stderr)
    return Path(tempfile.mkdtemp(prefix=f"parsl-flux-block-{block_id}-"))


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        key = manager_key(os.environ, args.block_id)
    except ValueError as exc:
        print(f"parsl-flux manager: {exc}; refusing to start", file=sys.stderr)
        return 2
    workdir = _workdir(args.workdir, args.block_id)
    logging.basicConfig(filename=str(workdir / "manager.log"), level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(threadName)s %(name)s %(message)s")
    manager = Manager(args.url, args.block_id, key, workdir, args.python,
                      args.heartbeat_period, args.driver_timeout, args.runner_host,
                      None if args.server_key in (None, launch.NO_SERVER_KEY) else args.server_key)
    return manager.run()


if __name__ == "__main__":
    sys.exit(main())
