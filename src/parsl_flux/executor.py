"""Driver side of parsl-flux: :class:`FluxExecutor`.

It never imports ``flux``. Each block is a Flux instance started by the
provider; the instance's initial program (:mod:`parsl_flux.manager`) dials back
to the socket this executor listens on, and tasks and results travel over that
one connection (see :mod:`parsl_flux.protocol`).
"""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import queue
import sys
import threading
import time
from collections import deque
from concurrent.futures import CancelledError, Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

import cloudpickle
import zmq
from zmq.utils import z85
from parsl.addresses import address_by_hostname
from parsl.app.errors import wrap_error
from parsl.executors.status_handling import BlockProviderExecutor
from parsl.jobs.states import TERMINAL_STATES, JobState, JobStatus
from parsl.monitoring.radios.base import RadioConfig
from parsl.providers import LocalProvider
from parsl.providers.base import ExecutionProvider
from parsl.serialize.errors import DeserializationError, SerializationError
from parsl.utils import RepresentationMixin

from parsl_flux import fluxpath, launch, protocol
from parsl_flux.container import Container
from parsl_flux.monitoring import FluxRadio
from parsl_flux.errors import (BlockLost, ExecutorShutdown, FluxJobFailed, InvalidResourceSpecification, PayloadTooLarge,
                               RemoteTaskError)
from parsl_flux.payload import dumps as dump_payload
from parsl_flux.protocol import Kind
from parsl_flux.rejects import RejectLog
from parsl_flux.resources import InstanceResources, JobShape, block_window, check_fits, parse_spec
from parsl_flux.wakeup import Waker


FLUX_EXECUTOR_KWARGS = frozenset({"threads", "thread_name_prefix", "poll_interval", "handle_args", "handle_kwargs"})


class _TaskFuture(Future):
    """A Future whose ``cancel()`` also cancels the task's Flux job."""

    def __init__(self, executor: "FluxExecutor", task_id: int) -> None:
        super().__init__()
        self._executor = executor
        self.parsl_executor_task_id = task_id

    def cancel(self) -> bool:
        if not super().cancel():
            return False
        self._executor._cancel_task(self.parsl_executor_task_id)
        return True


@dataclass
class _Task:
    task_id: int
    future: _TaskFuture
    shape: JobShape
    payload: bytes
    block_id: Optional[str] = None


@dataclass
class _Block:
    block_id: str
    key: bytes
    key_file: str = ""
    launched_at: float = field(default_factory=time.monotonic)
    resources: Optional[InstanceResources] = None
    info: Dict[str, Any] = field(default_factory=dict)
    last_seen: float = 0.0
    idle_since: Optional[float] = None  # when its last task ended (or it registered); None while busy
    in_flight: Set[int] = field(default_factory=set)
    closed: bool = False
    draining: bool = False  # asked to shut down by scale_in: its BYE is expected, not a loss
    route: Optional[bytes] = None  # the ZMQ routing id its manager proved it owns
    session: Optional[protocol.Session] = None

    @property
    def live(self) -> bool:
        return self.resources is not None and not self.closed

    def capacity(self) -> int:
        """Tasks kept in flight on this block (:func:`~parsl_flux.resources.block_window`)."""
        assert self.resources is not None
        return block_window(self.resources.cores)


def _unwrap_parsl_error_wrapper(func: Callable) -> Callable:
    """Strip Parsl's ``wrap_error`` so runners need not import Parsl.

    ``wrap_error`` only turns an exception into a ``RemoteExceptionWrapper``;
    this executor fails the future with the exception itself, which the DFK
    treats the same way, so unwrapping changes no behaviour.
    """
    if getattr(func, "__code__", None) is _WRAP_ERROR_CODE and hasattr(func, "__wrapped__"):
        return func.__wrapped__  # type: ignore[no-any-return]
    return func


# ``functools.wraps`` copies name and module, so the wrapper is known by its code object.
_WRAP_ERROR_CODE = wrap_error(lambda: None).__code__


class FluxExecutor(BlockProviderExecutor, RepresentationMixin):
    """Run every Parsl app as a Flux job, one Flux instance per block.

    Parameters
    ----------
    provider : ExecutionProvider, optional
        Starts blocks. Default ``LocalProvider()`` (one block on this machine).
    managed : bool
        Whether the DFK scales and shuts down this executor.
    working_dir : str, optional
        Directory, as seen from the allocation, for the managers' logs and the
        per-task stdout/stderr files. Default: ``<run_dir>/<label>``. Layout:
        ``<working_dir>/block-<N>/manager.log`` and
        ``<working_dir>/block-<N>/tasks/<task_id>.{out,err}``. The driver's own
        log is ``<run_dir>/<label>/executor.log``.
    label : str
        Label of this executor.
    flux_executor_kwargs : Mapping
        Parsl's page passes these to ``flux.job.FluxExecutor``; here
        ``handle_kwargs`` is passed to the manager's ``flux.Flux()`` handles.
        The class's other keys (threads, poll_interval, ...) are accepted and
        have no effect, since the manager submits jobs itself; unknown keys are
        an error.
    flux_path : str, optional
        ``flux`` command on the compute side. Default: for a ``LocalProvider``
        without a container, the one :mod:`parsl_flux.fluxpath` finds
        (``$FLUX_PATH``, PATH, then the prefix ``make flux`` builds), checked
        before each block starts; elsewhere ``flux`` from PATH there.
    launch_cmd : str, optional
        Template of the block command; placeholders ``{flux} {python} {url}
        {block_id} {workdir} {flux_uri} {heartbeat_period} {heartbeat_threshold}``. Default :attr:`DEFAULT_LAUNCH_CMD`,
        or :attr:`ATTACH_LAUNCH_CMD` in attach mode.
    flux_uri : str, optional
        Attach mode: run the manager against this existing instance via
        ``flux proxy`` instead of starting one. When None and ``FLUX_URI`` is set
        in the driver's environment with a ``LocalProvider`` (the driver runs
        inside a Flux instance, as in the container entrypoint), that instance
        is used.
    python : str, optional
        Python on the compute side. Default: this interpreter for a local
        provider, else ``python3``.
    address : str, optional
        Address managers dial to reach the driver. Default ``127.0.0.1`` for a
        ``LocalProvider``, else this host's name.
    port : int, optional
        A fixed port to listen on (for a Kubernetes Service, a firewall rule);
        default: a free one in ``port_range``.
    port_range : (int, int)
        Ports the driver may listen on.
    secret : str, optional
        Master secret (hex) from which each block's key is derived. Default:
        ``$PARSL_FLUX_SECRET`` if set, else a fresh random one. Give it only
        when managers are started outside Parsl (``ExternalProvider``, the Helm
        chart), which then need the same secret.
    heartbeat_period, heartbeat_threshold : float
        Seconds between heartbeats, and of silence after which a block is
        declared lost and its tasks failed (and after which a manager whose
        driver went silent cancels its jobs and ends its Flux instance).
    container : object, optional
        A :class:`parsl_flux.container.Container` (or any object with
        ``wrap(command: str, pass_env: Sequence[str]) -> str``) so that
        ``flux start`` runs inside an image while the provider's launcher runs
        outside it.
    packing : bool
        Packing mode for small apps. Apps whose specification fits one core
        (no ``num_tasks`` > 1, no GPUs, no ``env``/``walltime``) run on
        long-lived one-core worker processes that are themselves Flux jobs, so
        Flux still accounts for every core; other apps stay Flux jobs of their
        own. The pool grows with queued small apps, shrinks when idle, and
        gives its cores back while a large app's job waits for resources.
    packing_workers : int, optional
        Upper bound on packing workers per block; default: all cores of the
        block's Flux instance.
    packing_idle_timeout : float
        Seconds an idle packing worker lingers before it exits.
    block_error_handler : bool or callable
        As for Parsl's HighThroughputExecutor. A block whose manager never
        connected counts as failed; a block lost after it registered does not
        (it is reported CANCELLED with the reason, and a new block replaces it),
        so one lost node does not end the workflow.
    encrypt : bool, optional
        Encrypt the driver-manager connection with CurveZMQ. Default: on
        unless managers dial a loopback address (blocks on this machine).
    key_in_command : bool
        Put the block key itself into the block command instead of the path
        of a 0600 key file. Only for providers whose jobs share no filesystem
        with the driver (Kubernetes pods); whoever can read the job's
        definition can then read the key (README, threat model).
    remote_monitoring_radio : RadioConfig, optional
        How Parsl's monitoring wrapper, inside each Flux job, reports to the
        DFK's ``MonitoringHub``. Default :class:`parsl_flux.monitoring.FluxRadio`:
        messages return with the task's result over the executor's own
        channel. With resource monitoring on, every job imports Parsl for the
        wrapper (about 1 s of CPU per job); ``MonitoringHub(...,
        resource_monitoring_enabled=False)`` keeps tasks, tries, states and
        blocks in the database without it.
    max_message_bytes : int
        Largest pickled app (function and arguments) or result; larger ones
        fail with a clear error instead of starving heartbeats and memory.

    Notes
    -----
    Where this follows current Parsl (2026) rather than the API page:

    * ``hub_address``/``hub_port``/``radio_mode`` no longer exist in Parsl's
      executor base class; the DFK sets ``monitoring_messages`` and
      ``run_id``/``run_dir`` instead, which this class uses (block monitoring
      via ``create_monitoring_info``).
    * The page's ``DEFAULT_LAUNCH_CMD`` passes ``{manager} {protocol}
      {hostname} {port}``; here the manager is a module and the endpoint a URL,
      so the placeholders are those listed above.
    * ``gpus_per_task`` defaults to 0, not 1, so machines without GPUs work.
    * Several blocks are supported and ``scale_in`` is implemented (the page's
      executor has exactly one). ``scale_out(blocks=1)`` and ``scaling_enabled()``
      remain for the page's callers; the DFK uses ``scale_out_facade``.
    * ``monitor_resources()`` is False: tasks run under Flux's own accounting,
      and Parsl's per-task monitoring wrapper would import Parsl in every job.
    """

    DEFAULT_LAUNCH_CMD = launch.START_CMD
    ATTACH_LAUNCH_CMD = launch.ATTACH_CMD

    def __init__(
        self,
        provider: Optional[ExecutionProvider] = None,
        managed: bool = True,
        working_dir: Optional[str] = None,
        label: str = "FluxExecutor",
        flux_executor_kwargs: Mapping = {},
        flux_path: Optional[str] = None,
        launch_cmd: Optional[str] = None,
        *,
        flux_uri: Optional[str] = None,
        python: Optional[str] = None,
        address: Optional[str] = None,
        port: Optional[int] = None,
        port_range: tuple = (54000, 55000),
        secret: Optional[str] = None,
        heartbeat_period: float = 1.0,
        heartbeat_threshold: float = 10.0,
        container: Any = None,
        packing: bool = False,
        packing_workers: Optional[int] = None,
        packing_idle_timeout: float = 5.0,
        block_error_handler: Union[bool, Callable] = True,
        encrypt: Optional[bool] = None,
        max_message_bytes: int = protocol.DEFAULT_MAX_MESSAGE_BYTES,
        key_in_command: bool = False,
        remote_monitoring_radio: Optional[RadioConfig] = None,
    ) -> None:
        provider = provider if provider is not None else LocalProvider()
        super().__init__(provider=provider, block_error_handler=block_error_handler)
        unknown = set(flux_executor_kwargs) - FLUX_EXECUTOR_KWARGS
        if unknown:
            raise ValueError(f"flux_executor_kwargs has unknown key(s) {sorted(unknown)}; "
                             f"known: {sorted(FLUX_EXECUTOR_KWARGS)}")
        if launch_cmd is not None:
            launch.check_template(launch_cmd)
        if heartbeat_period <= 0 or heartbeat_threshold <= heartbeat_period:
            raise ValueError(f"need 0 < heartbeat_period ({heartbeat_period}) < "
                             f"heartbeat_threshold ({heartbeat_threshold})")
        self.managed = managed
        self.working_dir = working_dir
        self.label = label
        self._logger = logging.getLogger(f"{__name__}.{label}")
        self.flux_executor_kwargs = dict(flux_executor_kwargs)
        self.flux_path = flux_path
        self.launch_cmd = launch_cmd
        self.flux_uri = flux_uri
        self.python = python
        self.address = address
        self.port = port
        self.port_range = port_range
        self.secret = "<redacted>" if secret else None  # never show the secret in Parsl's config logs
        self.heartbeat_period = heartbeat_period
        self.heartbeat_threshold = heartbeat_threshold
        self.container = container
        if packing_workers is not None and packing_workers < 1:
            raise ValueError(f"packing_workers={packing_workers!r} must be >= 1 (or None for all cores)")
        if packing_idle_timeout <= 0:
            raise ValueError(f"packing_idle_timeout={packing_idle_timeout!r} must be > 0")
        self.packing = packing
        self.packing_workers = packing_workers
        self.packing_idle_timeout = packing_idle_timeout
        if max_message_bytes < 1 << 20:
            raise ValueError(f"max_message_bytes={max_message_bytes!r} must be at least 1 MiB")
        self.encrypt = encrypt
        self.max_message_bytes = max_message_bytes
        self.key_in_command = key_in_command
        self.remote_monitoring_radio = remote_monitoring_radio if remote_monitoring_radio is not None else FluxRadio()
        master_hex = secret or os.environ.get(protocol.SECRET_ENV)
        try:
            self._master = bytes.fromhex(master_hex) if master_hex else protocol.new_secret()
        except ValueError:
            raise ValueError("secret (or $PARSL_FLUX_SECRET) must be a hex string") from None
        if len(self._master) < 16:
            raise ValueError("secret (or $PARSL_FLUX_SECRET) must hold at least 16 bytes (32 hex digits)")
        self._task_ids = itertools.count()
        self._lock = threading.RLock()
        self._pending: Deque[_Task] = deque()
        self._live_tasks: Dict[int, _Task] = {}
        self._blocks: Dict[str, _Block] = {}
        self._outgoing: "queue.SimpleQueue[tuple]" = queue.SimpleQueue()
        self._shutting_down = False
        self._io_thread: Optional[threading.Thread] = None
        self._waker: Optional[Waker] = None
        self._stop_io = threading.Event()
        self._log_handler: Optional[logging.Handler] = None
        self._handshakes: Dict[bytes, Tuple[_Block, protocol.Session]] = {}  # route -> not yet registered
        self._routes: Dict[bytes, _Block] = {}
        self._rejects = RejectLog(self._logger)
        self._server_public: str = ""
        self._cancelled_jobs: Set[Any] = set()
        self.url: Optional[str] = None

    # ----------------------------------------------------------------- set-up
    def _local(self) -> bool:
        return isinstance(self.provider, LocalProvider)

    def _attach_uri(self) -> Optional[str]:
        if self.flux_uri:
            return self.flux_uri
        if self._local() and os.environ.get("FLUX_URI"):
            return os.environ["FLUX_URI"]
        return None

    def start(self) -> None:
        """Open the driver socket and the I/O thread; blocks come from the DFK's
        strategy (``init_blocks``), or from :meth:`scale_out` when used alone."""
        super().start()
        self._log_dir = os.path.join(self.run_dir, self.label)
        os.makedirs(self._log_dir, exist_ok=True)
        if self.provider is not None and getattr(self.provider, "script_dir", None) is None:
            self.provider.script_dir = os.path.join(self._log_dir, "submit_scripts")  # the DFK sets it otherwise
            os.makedirs(self.provider.script_dir, exist_ok=True)
        self._log_handler = logging.FileHandler(os.path.join(self._log_dir, "executor.log"))
        self._log_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(message)s"))
        self._logger.addHandler(self._log_handler)  # this executor's own logger: another executor's lines stay out
        self._logger.setLevel(logging.DEBUG)
        if self.address is None:
            self.address = self.default_address()
        loopback = self.address in ("127.0.0.1", "localhost", "::1")
        bind_host = "127.0.0.1" if loopback else "*"
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self._sock.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes + (1 << 20))
        if self.encrypt if self.encrypt is not None else not loopback:
            if not zmq.has("curve"):
                raise RuntimeError("encrypt=True, but this pyzmq's libzmq has no CURVE support")
            public, secret = zmq.curve_keypair()
            self._sock.curve_server = True
            self._sock.curve_secretkey = secret
            self._server_public = z85.decode(public).hex()  # hex: Z85 has '$', which launchers expand
        if self.port is not None:
            self._sock.bind(f"tcp://{bind_host}:{self.port}")
            port = self.port
        else:
            port = self._sock.bind_to_random_port(f"tcp://{bind_host}", min_port=self.port_range[0],
                                                  max_port=self.port_range[1])
        self.url = f"tcp://{self.address}:{port}"
        self._waker = Waker()
        self._io_thread = threading.Thread(target=self._io_loop, name=f"{self.label}-io", daemon=True)
        self._io_thread.start()
        self._logger.info("%s listening on %s", self.label, self.url)

    def _get_launch_command(self, block_id: str) -> str:
        """Register block ``block_id`` (its manager is now expected) and return its command."""
        if self._local() and self.container is None:
            try:  # one clear line now, instead of a broker log saying "flux: command not found"
                fluxpath.check_flux(self._flux_command())
            except fluxpath.FluxNotFound as exc:
                self._logger.error("block %s not started: %s", block_id, exc)
                raise
        key = protocol.block_key(self._master, block_id)
        key_file = self._write_key(block_id, key)
        with self._lock:
            self._blocks[block_id] = _Block(block_id, key, key_file)
        return self.launch_command(block_id)

    def _write_key(self, block_id: str, key: bytes) -> str:
        """Write a block's key to a new 0600 file in the 0700 key directory;
        its manager reads and removes it."""
        os.makedirs(self.key_dir, mode=0o700, exist_ok=True)
        os.chmod(self.key_dir, 0o700)
        path = os.path.join(self.key_dir, f"block-{block_id}.key")
        if os.path.exists(path):
            os.unlink(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key.hex())
        return path

    def _flux_command(self) -> Optional[str]:
        """``flux_path``; else, for blocks on this machine, the command
        :func:`parsl_flux.fluxpath.find_flux` finds (None: there is none);
        else ``flux`` from the compute side's PATH."""
        if self.flux_path:
            return self.flux_path
        if self._local() and self.container is None:
            return fluxpath.find_flux()
        return "flux"

    def default_address(self) -> str:
        """Where managers dial when ``address`` is not given: loopback for a
        ``LocalProvider``, else this host's name."""
        return "127.0.0.1" if self._local() else address_by_hostname()

    def launch_command(self, block_id: str, url: Optional[str] = None) -> str:
        """The shell command that starts block ``block_id``: what the provider's
        launcher runs on each node. ``url`` defaults to the socket opened by
        :meth:`start`; pass one to show the command before starting."""
        url = url or self.url
        if url is None:
            raise RuntimeError("launch_command needs a url before start()")
        uri = self._attach_uri()
        template = self.launch_cmd or (self.ATTACH_LAUNCH_CMD if uri else self.DEFAULT_LAUNCH_CMD)
        python = self.python or (sys.executable if self._local() and self.container is None else "python3")
        fields = {
            "flux": self._flux_command() or "flux", "python": python, "url": url, "block_id": block_id,
            "workdir": self.working_dir or os.path.join(self.run_dir, self.label), "flux_uri": uri or "",
            "heartbeat_period": self.heartbeat_period, "heartbeat_threshold": self.heartbeat_threshold,
            "server_key": self._server_public or launch.NO_SERVER_KEY,
        }
        command = launch.render(template, fields)
        if self.container is not None:
            container = self.container
            if isinstance(container, Container):  # the manager writes under workdir and reads its key: bind both
                inside = os.path.commonpath([os.path.abspath(fields["workdir"]), self.key_dir]) == \
                    os.path.abspath(fields["workdir"])
                container = container.with_binds(fields["workdir"], *([] if inside else [self.key_dir]))
            command = container.wrap(command, pass_env=[protocol.KEY_ENV if self.key_in_command
                                                        else protocol.KEY_FILE_ENV])
        key_hex = protocol.block_key(self._master, block_id).hex() if self.key_in_command else None
        return launch.with_key(command, os.path.join(self.key_dir, f"block-{block_id}.key"), key_hex)

    @property
    def key_dir(self) -> str:
        """The 0700 directory of the blocks' 0600 key files, under the run
        directory (which the compute side shares, as Parsl's ``runinfo``)."""
        return os.path.abspath(os.path.join(self.run_dir, self.label, "keys"))

    @property
    def workers_per_node(self) -> Union[int, float]:
        """Cores per node of a live block (1 until one has registered)."""
        with self._lock:
            for block in self._blocks.values():
                if block.resources is not None:
                    return block.resources.cores_per_node
        return 1

    def outstanding(self) -> int:
        with self._lock:
            return len(self._live_tasks)

    def monitor_resources(self) -> bool:
        """False: tasks are Flux jobs, accounted for by Flux; Parsl's monitoring
        wrapper would import Parsl in every job."""
        return False

    # ----------------------------------------------------------------- submit
    def submit(self, func: Callable, resource_specification: Dict[str, Any], *args: Any, **kwargs: Any) -> Future:
        """Wrap ``func(*args, **kwargs)`` in a Flux job shaped by ``resource_specification``.

        Raises
        ------
        InvalidResourceSpecification
            Unknown key or bad value (naming both).
        SerializationError
            ``func`` or its arguments cannot be pickled.
        ExecutorShutdown
            After :meth:`shutdown`.
        """
        if self.bad_state_is_set:
            raise self.executor_exception
        if self._shutting_down:
            raise ExecutorShutdown("submit() called after shutdown()")
        shape = parse_spec(resource_specification)
        func = _unwrap_parsl_error_wrapper(func)
        try:
            payload = dump_payload((func, args, kwargs))
        except Exception as exc:
            raise SerializationError(getattr(func, "__name__", repr(func))) from exc
        if len(payload) > self.max_message_bytes - 4096:
            raise PayloadTooLarge(getattr(func, "__name__", repr(func)), len(payload), self.max_message_bytes)
        task_id = next(self._task_ids)
        fut = _TaskFuture(self, task_id)
        task = _Task(task_id, fut, shape, payload)
        with self._lock:
            self._tasks[task_id] = fut
            self._live_tasks[task_id] = task
            live = [b for b in self._blocks.values() if b.live]
            if live:
                self._check_fits_any(task, live)
            self._pending.append(task)
        self._wake()
        return fut

    def _check_fits_any(self, task: _Task, blocks: Sequence[_Block]) -> None:
        error: Optional[InvalidResourceSpecification] = None
        for block in blocks:
            assert block.resources is not None
            try:
                check_fits(task.shape, block.resources)
                return
            except InvalidResourceSpecification as exc:
                error = exc
        self._forget(task.task_id)
        assert error is not None
        raise error

    def _wake(self) -> None:
        waker = self._waker  # shutdown() may clear it meanwhile
        if waker is not None:
            waker.wake()

    def _cancel_task(self, task_id: int) -> None:
        with self._lock:
            task = self._live_tasks.get(task_id)
            if task is None:
                return
            if task.block_id is None:
                self._pending.remove(task)
                self._forget(task_id)
                return
        self._outgoing.put((task.block_id, Kind.CANCEL, [task_id]))
        self._wake()

    def _forget(self, task_id: int) -> Optional[_Task]:
        """Drop all state of a task (caller holds the lock)."""
        self._tasks.pop(task_id, None)
        task = self._live_tasks.pop(task_id, None)
        if task is not None and task.block_id is not None:
            block = self._blocks.get(task.block_id)
            if block is not None:
                block.in_flight.discard(task_id)
                if not block.in_flight:
                    block.idle_since = time.monotonic()
        return task

    # ------------------------------------------------------------- I/O thread
    def _io_loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._waker.fd, zmq.POLLIN)
        last_beat = 0.0
        while not self._stop_io.is_set():
            try:
                ready = dict(poller.poll(timeout=self.heartbeat_period * 1000))
                if self._waker.fd in ready:
                    self._waker.drain()
                if self._sock in ready:
                    self._receive_all()
                self._send_outgoing()
                self._dispatch()
                now = time.monotonic()
                if now - last_beat >= self.heartbeat_period:
                    last_beat = now
                    self._heartbeat(now)
            except Exception:
                self._logger.exception("error in the I/O loop of %s", self.label)

    def _send(self, block: _Block, kind: str, data: Any = None) -> bool:
        if block.route is None or block.session is None:
            return False
        try:
            self._sock.send_multipart([block.route, *block.session.seal(kind, data)])
            return True
        except zmq.ZMQError as exc:  # EHOSTUNREACH: the manager is not connected
            self._logger.warning("cannot send %s to block %s: %s", kind, block.block_id, exc)
            return False

    def _send_outgoing(self) -> None:
        while True:
            try:
                block_id, kind, data = self._outgoing.get_nowait()
            except queue.Empty:
                return
            block = self._blocks.get(block_id)
            if block is not None and block.live:
                self._send(block, kind, data)

    def _receive_all(self) -> None:
        while True:
            try:
                route, *frames = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                self._receive(route, frames)
            except protocol.AuthenticationError as exc:
                self._rejects.reject("dropped a message from peer %s: %s", route.hex()[:16], exc)

    def _receive(self, route: bytes, frames: List[bytes]) -> None:
        """One message from ``route``: a hello, the REGISTER that binds a
        block to its connection, or a message of a bound block's session."""
        block = self._routes.get(route)
        if block is not None:
            assert block.session is not None
            kind, data = block.session.open(frames)
            block.last_seen = time.monotonic()
            if kind == Kind.RESULTS:
                self._complete(block, data)
            elif kind == Kind.BYE:
                self._lose_block(block, "scaled in" if block.draining else
                                 f"manager exited: {data.get('reason', 'no reason given')}",
                                 mark_failed=not block.draining)
            return
        pending = self._handshakes.get(route)
        if pending is not None:
            block, session = pending
            kind, data = session.open(frames)
            if kind != Kind.REGISTER:
                raise protocol.AuthenticationError(f"expected register, got {kind}")
            del self._handshakes[route]
            self._register(block, route, session, data)
            return
        block_id, nonce, mac = protocol.open_hello(frames)
        with self._lock:
            block = self._blocks.get(block_id)
        if block is None or block.closed or block.route is not None:
            raise protocol.AuthenticationError(f"hello for block {block_id[:16]!r}, which expects none")
        protocol.check_hello(block.key, block_id, nonce, mac)
        driver_nonce = os.urandom(protocol.NONCE_BYTES)
        while len(self._handshakes) >= MAX_HANDSHAKES:  # bounded: drop the oldest
            self._handshakes.pop(next(iter(self._handshakes)))
        self._handshakes[route] = (block, protocol.driver_session(block.key, nonce, driver_nonce))
        self._sock.send_multipart([route, *protocol.welcome(block.key, nonce, driver_nonce)])

    def _register(self, block: _Block, route: bytes, session: protocol.Session, data: Dict[str, Any]) -> None:
        """Bind ``block`` to the connection whose session proved it holds the block's key."""
        if block.route is not None or block.closed:
            raise protocol.AuthenticationError(f"second registration for block {block.block_id}")
        for other in [r for r, (b, _) in self._handshakes.items() if b is block]:
            del self._handshakes[other]
        block.route, block.session = route, session
        self._routes[route] = block
        block.last_seen = block.idle_since = time.monotonic()
        r = data["resources"]
        workers = (self.packing_workers or -1) if self.packing else 0
        self._send(block, Kind.CONFIG, protocol.config_body(workers, self.packing_idle_timeout,
                                                            self.flux_executor_kwargs.get("handle_kwargs", {}),
                                                            self.max_message_bytes, os.getcwd()))
        with self._lock:
            block.resources = InstanceResources(r["nodes"], r["cores_per_node"], r["gpus_per_node"])
            block.info = data
        self._logger.info("block %s registered from %s (manager pid %s, %s): %s, Flux %s", block.block_id,
                    data["hostname"], data["pid"], data["flux_uri"], block.resources, data["flux_version"])

    def _complete(self, block: _Block, results: List[Dict[str, Any]]) -> None:
        for res in results:
            if res.get("monitoring") and self.monitoring_messages is not None:
                for message in res["monitoring"]:
                    self.monitoring_messages.put(pickle.loads(message))
            with self._lock:
                task = self._forget(res["id"])
            if task is None or task.future.done():
                continue
            try:
                self._resolve(task, res)
            except Exception as exc:  # never leave a future unresolved
                task.future.set_exception(exc)

    def _resolve(self, task: _Task, res: Dict[str, Any]) -> None:
        """Resolve a task's future from its outcome (see ``protocol.outcome_*``)."""
        fut = task.future
        kind = res["outcome"]
        if kind == protocol.VALUE:
            try:
                fut.set_result(cloudpickle.loads(res["value"]))
            except Exception as exc:
                fut.set_exception(DeserializationError(f"result of task {task.task_id}: {exc}"))
        elif kind == protocol.CANCELLED:
            fut.set_exception(CancelledError(f"task {task.task_id} was cancelled"))
        elif kind == protocol.JOB_FAILED:
            fut.set_exception(FluxJobFailed(task.task_id, res["jobid"], res["status"], res["stderr"]))
        else:
            exc: BaseException = RemoteTaskError(res["type"], res["message"], res["traceback"])
            if res["exception"] is not None:
                try:
                    exc = cloudpickle.loads(res["exception"])
                except Exception:  # a class the driver cannot import: the text version
                    pass
            fut.set_exception(exc)

    def _dispatch(self) -> None:
        """Send pending tasks to live blocks, least loaded first, within capacity.

        First in, first out: when the task at the head fits a live block but
        every such block is full, dispatch stops there, so a call costs
        O(tasks sent), never O(tasks pending).
        """
        batches: Dict[str, List[Dict[str, Any]]] = {}
        with self._lock:
            live = [b for b in self._blocks.values() if b.live]
            while self._pending and live:
                task = self._pending[0]
                fits = [b for b in live if b.resources is not None and _fits(task.shape, b.resources)]
                if not fits:
                    self._pending.popleft()
                    try:
                        self._check_fits_any(task, live)
                    except InvalidResourceSpecification as exc:
                        if not task.future.done():
                            task.future.set_exception(exc)
                    continue
                room = [b for b in fits if len(b.in_flight) < b.capacity()]
                if not room:
                    break
                self._pending.popleft()
                block = min(room, key=lambda b: len(b.in_flight) / b.capacity())
                block.in_flight.add(task.task_id)
                block.idle_since = None
                task.block_id = block.block_id
                batches.setdefault(block.block_id, []).append(
                    protocol.task_body(task.task_id, task.payload, task.shape.to_wire(), task.shape.packable))
                task.payload = b""  # the manager holds it now
        for block_id, tasks in batches.items():
            for chunk in _chunks(tasks, self.max_message_bytes):
                if not self._send(self._blocks[block_id], Kind.TASKS, chunk):
                    self._lose_block(self._blocks[block_id], "could not send tasks to its manager")
                    break

    def _heartbeat(self, now: float) -> None:
        with self._lock:
            blocks = list(self._blocks.values())
        for block in blocks:
            if block.closed:
                continue
            if block.resources is None:
                continue
            if now - block.last_seen > self.heartbeat_threshold:
                self._lose_block(block, f"no heartbeat for {now - block.last_seen:.1f}s "
                                        f"(threshold {self.heartbeat_threshold}s)")
            else:
                self._send(block, Kind.HEARTBEAT)

    def _lose_block(self, block: _Block, reason: str, mark_failed: bool = True) -> None:
        """Fail every task in flight on ``block``; unless the provider already
        reports the block ended (``mark_failed=False``), mark it FAILED for Parsl."""
        with self._lock:
            if block.closed:
                return
            block.closed = True
            lost = [self._forget(t) for t in list(block.in_flight)]
            if block.route is not None:
                self._routes.pop(block.route, None)
            if mark_failed and not self._shutting_down:
                # a block that registered and then died is not a failed launch: Parsl's error
                # handler must not end the workflow for it, and the strategy replaces it
                state = JobState.FAILED if block.resources is None else JobState.CANCELLED
                status = JobStatus(state, f"Flux instance lost: {reason}")
                self._simulated_status[block.block_id] = status
                self._status[block.block_id] = status
        _remove(block.key_file)
        if mark_failed:
            self._cancel_block_job(block.block_id)
        log = self._logger.info if self._shutting_down or not lost else self._logger.error
        log("block %s closed: %s; failing %d task(s)", block.block_id, reason, len(lost))
        for task in lost:
            if task is not None and not task.future.done():
                task.future.set_exception(BlockLost(block.block_id, reason))
        self._wake()

    def _cancel_block_job(self, block_id: str) -> None:
        """Have the provider end a lost block's batch job (its broker and jobs
        may still run: a hung broker, a manager killed alone), off the I/O thread."""
        job_id = self.blocks_to_job_id.get(block_id)
        if job_id is None or self.provider is None or job_id in self._cancelled_jobs:
            return
        self._cancelled_jobs.add(job_id)

        def cancel() -> None:
            try:
                self.provider.cancel([job_id])
            except Exception:
                self._logger.exception("provider could not cancel the job of lost block %s", block_id)

        threading.Thread(target=cancel, name=f"{self.label}-cancel-{block_id}", daemon=True).start()

    # ------------------------------------------------------------ scaling etc
    def scaling_enabled(self) -> bool:
        """True: blocks are added and removed by the DFK's strategy (page API)."""
        return self.provider is not None

    @property
    def error_management_enabled(self) -> bool:
        """True: block failures are handled by ``block_error_handler`` (page API)."""
        return True

    def scale_out(self, blocks: int = 1) -> List[str]:
        """Add ``blocks`` blocks (page API; the DFK calls ``scale_out_facade``).

        Returns
        -------
        list of str
            Ids of the blocks that were launched.
        """
        return self.scale_out_facade(blocks)

    def status(self) -> Dict[str, JobStatus]:
        """Provider status of each block, overridden by what the executor knows
        (a block whose manager stopped talking is FAILED even if its batch job
        still runs). A block the provider reports as ended loses its tasks."""
        status = super().status()
        for block_id, s in status.items():
            block = self._blocks.get(block_id)
            if block is not None and not block.closed and s.state in TERMINAL_STATES:
                # a batch job that ended before its manager ever connected is a failed block,
                # whatever exit state the batch system reports, so Parsl's error handler sees it
                never_connected = block.resources is None
                reason = f"its batch job is {s.state.name}" + (" and its manager never connected"
                                                               if never_connected else "")
                self._lose_block(block, reason, mark_failed=never_connected)
                if not never_connected and not self._shutting_down:
                    # it ran: whatever exit state the batch system reports, it is not a failed launch
                    status[block_id] = self._simulated_status[block_id] = self._status[block_id] = \
                        JobStatus(JobState.CANCELLED, f"Flux instance lost: {reason}")
        return status

    def scale_in(self, blocks: int, max_idletime: Optional[float] = None) -> List[str]:
        """Stop ``blocks`` blocks: idle ones first (longest idle first, as
        HTEX does), then those still starting, then busy ones (whose tasks fail
        with :class:`BlockLost`). With ``max_idletime`` only blocks idle for at
        least that many seconds are chosen. Managers are asked to drain and say
        BYE (waited for up to ``SCALE_IN_WAIT`` seconds) before the provider
        cancels their batch jobs.

        Returns
        -------
        list of str
            Ids of the blocks that were stopped.
        """
        with self._lock:
            candidates = [b for b in self._blocks.values() if not b.closed
                          and self._status.get(b.block_id, JobStatus(JobState.PENDING)).state not in TERMINAL_STATES]
            chosen = pick_scale_in(candidates, blocks, max_idletime, time.monotonic())
            for block in chosen:
                block.draining = True
        for block in chosen:
            if block.live:
                self._outgoing.put((block.block_id, Kind.SHUTDOWN, None))
        self._wake()
        deadline = time.monotonic() + SCALE_IN_WAIT
        while any(b.live for b in chosen) and time.monotonic() < deadline:
            time.sleep(0.02)
        for block in chosen:
            self._lose_block(block, "scaled in", mark_failed=False)
        job_ids = [self.blocks_to_job_id[b.block_id] for b in chosen if b.block_id in self.blocks_to_job_id]
        if not job_ids:
            return [b.block_id for b in chosen]
        killed = self.provider.cancel(job_ids) if self.provider else [False] * len(job_ids)
        return [self.job_ids_to_block[j] for j in self._filter_scale_in_ids(job_ids, killed)]

    def set_bad_state_and_fail_all(self, exception: Exception) -> None:
        """Mark the executor bad and fail every unresolved future with ``exception``."""
        self._logger.error("executor %s set to bad state: %s", self.label, exception)
        self._executor_exception = exception
        self._executor_bad_state.set()
        with self._lock:
            tasks = [self._forget(t) for t in list(self._live_tasks)]
            self._pending.clear()
        for task in tasks:
            if task is not None and not task.future.done():
                task.future.set_exception(exception)

    def shutdown(self, wait: bool = False) -> None:
        """Shut down: later :meth:`submit` calls raise, managers drain and exit,
        the provider's jobs are cancelled, and every future still unresolved
        fails with :class:`ExecutorShutdown`, so none is left hanging.

        Parameters
        ----------
        wait : bool
            Wait for submitted futures first, as long as a block is alive to
            run them. Default False, unlike the API page: the DFK calls
            ``shutdown()`` from ``cleanup()`` (also after a user error or
            Ctrl-C) and chooses itself whether to wait (``Config(exit_mode=
            "wait")``), as with Parsl's HighThroughputExecutor.
        """
        self._shutting_down = True
        while wait:
            with self._lock:
                futures = [t.future for t in self._live_tasks.values()]
                alive = any(b.live for b in self._blocks.values())
            if not futures or not alive:
                break
            wait_futures(futures, timeout=self.heartbeat_period)
        with self._lock:
            live = [b for b in self._blocks.values() if b.live]
        for block in live:
            self._outgoing.put((block.block_id, Kind.SHUTDOWN, None))
        self._wake()
        deadline = time.monotonic() + 10
        while any(not b.closed for b in live) and time.monotonic() < deadline:
            time.sleep(0.05)
        self._cancel_provider_jobs()
        with self._lock:
            unresolved = [self._forget(t) for t in list(self._live_tasks)]
            self._pending.clear()
        if unresolved:
            self._logger.warning("shutdown: failing %d unfinished task(s) with ExecutorShutdown", len(unresolved))
        for task in unresolved:
            if task is not None and not task.future.done():
                task.future.set_exception(ExecutorShutdown("executor shut down before the task finished"))
        self._stop_io.set()
        self._wake()
        if self._io_thread is not None:
            self._io_thread.join(timeout=5)
            self._sock.close()
            self._ctx.term()
            self._waker.close()
            self._waker = None
            self._io_thread = None
        for block in self._blocks.values():
            _remove(block.key_file)
        if self._log_handler is not None:
            self._logger.removeHandler(self._log_handler)
            self._log_handler.close()
        super().shutdown()

    def _cancel_provider_jobs(self) -> None:
        """Cancel every block's batch job not cancelled yet, including blocks
        this executor declared lost (their broker and jobs may still run)."""
        if self.provider is None:
            return
        scaled_in = {b for b, st in self._status.items() if st.state == JobState.SCALED_IN}
        to_cancel = [j for b, j in self.blocks_to_job_id.items() if j not in self._cancelled_jobs and b not in scaled_in]
        self._cancelled_jobs.update(to_cancel)
        if to_cancel:
            try:
                self.provider.cancel(to_cancel)
            except Exception:
                self._logger.exception("provider could not cancel blocks %s", to_cancel)


SCALE_IN_WAIT = 5.0
"""Seconds scale_in waits for the managers' BYE before the provider cancels their jobs."""


def pick_scale_in(blocks: Sequence[_Block], n: int, max_idletime: Optional[float], now: float) -> List[_Block]:
    """The ``n`` blocks to scale in: idle (longest idle first), then starting, then busy (least loaded first).

    With ``max_idletime`` only registered blocks idle for at least that long qualify."""
    def idle_for(b: _Block) -> float:
        return now - b.idle_since if b.live and not b.in_flight and b.idle_since is not None else -1.0

    if max_idletime is not None:
        blocks = [b for b in blocks if idle_for(b) >= max_idletime]
    rank = sorted(blocks, key=lambda b: (0 if idle_for(b) >= 0 else 1 if b.resources is None else 2,
                                         -idle_for(b), len(b.in_flight)))
    return rank[:n]


MAX_HANDSHAKES = 64
"""Handshakes in progress at once (each a hello that passed its MAC check)."""


def _chunks(tasks: List[Dict[str, Any]], limit: int) -> List[List[Dict[str, Any]]]:
    """Split a batch of task dicts into messages each under ``limit`` bytes of payload."""
    chunks: List[List[Dict[str, Any]]] = [[]]
    size = 0
    for task in tasks:
        n = len(task["payload"]) + 4096
        if chunks[-1] and size + n > limit:
            chunks.append([])
            size = 0
        chunks[-1].append(task)
        size += n
    return chunks


def _remove(path: str) -> None:
    """Remove a key file if it is still there (its manager removes it when it starts)."""
    if path:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _fits(shape: JobShape, res: InstanceResources) -> bool:
    try:
        check_fits(shape, res)
        return True
    except InvalidResourceSpecification:
        return False
