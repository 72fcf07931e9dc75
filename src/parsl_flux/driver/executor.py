"""Driver side of parsl-flux: :class:`FluxExecutor`.

It never imports ``flux``. Each block is a Flux instance started by the
provider; the instance's initial program (:mod:`parsl_flux.allocation.manager`) dials back
to the socket this executor listens on, and tasks and results travel over that
one connection (see :mod:`parsl_flux.wire.protocol`).
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import queue
import sys
import threading
import time
import weakref
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from types import MappingProxyType
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

from parsl.addresses import address_by_hostname
from parsl.app.errors import wrap_error
from parsl.executors.status_handling import BlockProviderExecutor
from parsl.jobs.states import TERMINAL_STATES, JobState, JobStatus
from parsl.jobs.error_handlers import simple_error_handler
from parsl.monitoring.radios.base import RadioConfig
from parsl.providers import LocalProvider
from parsl.providers.base import ExecutionProvider
from parsl.serialize.errors import SerializationError
from parsl.utils import RepresentationMixin

from parsl_flux import fluxpath
from parsl_flux.container import Container
from parsl_flux.driver import options, preflight, relaunch
from parsl_flux.driver.io_loop import Block, BlockView, Driver, Task, TaskFuture
from parsl_flux.driver.logfile import ExecutorLog
from parsl_flux.driver.monitoring import FluxRadio
from parsl_flux.driver.resources import parse_spec
from parsl_flux.errors import ExecutorShutdown, PayloadTooLarge
from parsl_flux.job.bash import lean_bash
from parsl_flux.wire import launch
from parsl_flux.wire import protocol
from parsl_flux.wire.payload import dump_function, dumps_task

FLUX_EXECUTOR_KWARGS = frozenset({"threads", "thread_name_prefix", "poll_interval", "handle_args", "handle_kwargs"})


def _unwrap_parsl_error_wrapper(func: Callable) -> Callable:
    """Strip Parsl's ``wrap_error`` so runners need not import Parsl.

    ``wrap_error`` only turns an exception into a ``RemoteExceptionWrapper``;
    this executor fails the future with the exception itself, which the DFK
    treats the same way, so unwrapping changes no behaviour.
    """
    if getattr(func, "__code__", None) is _WRAP_ERROR_CODE and hasattr(func, "__wrapped__"):
        return func.__wrapped__  # type: ignore[no-any-return]
    return func


FUNCTION_PICKLES = 128
"""Functions whose pickles an executor keeps (``functools.lru_cache``'s default size, as Parsl's serializer)."""

# ``functools.wraps`` copies name and module, so the wrapper is known by its code object.
_WRAP_ERROR_CODE = wrap_error(lambda: None).__code__


class HiddenSecret(str):
    """The master secret as the user gave it, with a repr that does not show it.

    Parsl's ``RepresentationMixin`` builds the executor's repr from the
    constructor's attributes, and the DFK writes that repr to ``parsl.log`` and
    the monitoring database; the value itself stays usable (``FluxExecutor(
    secret=other.secret)``).
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "<secret hidden>"


_STARTING = JobStatus(JobState.PENDING)


def failed_starts_error_handler(executor: "FluxExecutor", status: Dict[str, JobStatus]) -> None:
    """The default ``block_error_handler``: Parsl's ``simple_error_handler``
    (every block failed: bad state, every task fails with
    ``TooManyJobFailuresError`` and the blocks' output), applied only once
    :func:`parsl_flux.driver.relaunch.give_up` holds: three launches in a row
    failed and no block of the run ever registered. Parsl's handler alone ends
    the run at its first failed launch when that is its only block, which a
    node lost while the block started also causes."""
    if relaunch.give_up(executor.launch_record()):
        simple_error_handler(executor, status)


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
        {block_id} {workdir} {flux_uri} {heartbeat_period} {heartbeat_threshold}
        {server_key}`` (the driver's CurveZMQ public key, or
        :data:`parsl_flux.wire.launch.NO_SERVER_KEY` when unencrypted). Default
        :attr:`DEFAULT_LAUNCH_CMD`, or :attr:`ATTACH_LAUNCH_CMD` in attach mode.
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
        As for Parsl's HighThroughputExecutor, but ``True`` (the default) is
        :func:`failed_starts_error_handler`: failed block launches end the
        workflow once three in a row failed and no block ever registered,
        not at the first. A block whose manager never connected counts as
        failed; a block lost after it registered does not (it is reported
        CANCELLED with the reason, and a new block replaces it), so one lost
        node does not end the workflow.
    encrypt : bool, optional
        Encrypt the driver-manager connection with CurveZMQ. Default: on
        unless managers dial a loopback address (blocks on this machine).
    key_in_command : bool
        Put the block key itself into the block command instead of the path
        of a 0600 key file. Only for providers whose jobs share no filesystem
        with the driver (Kubernetes pods); whoever can read the job's
        definition can then read the key (docs/reference/trust.md).
    remote_monitoring_radio : RadioConfig, optional
        How Parsl's monitoring wrapper, inside each Flux job, reports to the
        DFK's ``MonitoringHub``. Default :class:`parsl_flux.driver.monitoring.FluxRadio`:
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
    * ``monitor_resources()`` is False: Parsl's psutil sampler would fork a
      process in every job. The ``resource`` table is filled all the same
      from what each job measures of itself (:mod:`parsl_flux.driver.monitoring`).
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
        super().__init__(provider=provider, block_error_handler=failed_starts_error_handler
                         if block_error_handler is True else block_error_handler)
        unknown = set(flux_executor_kwargs) - FLUX_EXECUTOR_KWARGS
        if unknown:
            raise ValueError(f"flux_executor_kwargs has unknown key(s) {sorted(unknown)}; "
                             f"known: {sorted(FLUX_EXECUTOR_KWARGS)}")
        if launch_cmd is not None:
            launch.check_template(launch_cmd)
        options.check_label(label)
        options.check_path_or_none("working_dir", working_dir)
        options.check_path_or_none("flux_path", flux_path)
        options.check_path_or_none("python", python)
        options.check_address(address)
        options.check_port(port, port_range)
        options.check_container(container)
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
        self.secret = HiddenSecret(secret) if secret else None
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
        # an app's function is pickled once, as Parsl's serializer caches callables (payload.dump_function)
        self._function_pickles = functools.lru_cache(maxsize=FUNCTION_PICKLES)(dump_function)
        self._shutting_down = False
        self._driver = Driver(label, self._logger, heartbeat_period, heartbeat_threshold, max_message_bytes,
                              self._block_config, self._block_ended, self.set_bad_state_and_fail_all, self._tasks)
        self._log: Optional[ExecutorLog] = None
        self._server_public: str = ""
        self._early_blocks = 0  # blocks start() launched that the strategy's first scale-out would repeat
        self._cancelled_jobs: Set[Any] = set()
        # blocks the driver's I/O thread ended -> Parsl's strategy thread (see _take_ended)
        self._ended: "queue.SimpleQueue[Tuple[str, JobStatus, float]]" = queue.SimpleQueue()
        self._failed_launches: Dict[str, float] = {}  # block id -> when it ended without registering
        self._backoff_logged = 0.0  # the failure whose back-off was last logged: once per failure, not per tick
        self._at_exit: Optional[weakref.finalize] = None
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
        if self._local() and self.container is None:
            # one line with the fix now, not every task failing later in the block
            preflight.check(self.python or sys.executable)
        super().start()
        self._log_dir = os.path.join(self.run_dir, self.label)
        os.makedirs(self._log_dir, exist_ok=True)
        if self.provider is not None and getattr(self.provider, "script_dir", None) is None:
            self.provider.script_dir = os.path.join(self._log_dir, "submit_scripts")  # the DFK sets it otherwise
            os.makedirs(self.provider.script_dir, exist_ok=True)
        # this executor's own logger: another executor's lines stay out, the user's console shows no more
        self._log = ExecutorLog(self._logger, os.path.join(self._log_dir, "executor.log"))
        if self.address is None:
            self.address = self.default_address()
        loopback = self.address in ("127.0.0.1", "localhost")
        encrypted = self.encrypt if self.encrypt is not None else not loopback
        if self.launch_cmd is not None:
            launch.check_template(self.launch_cmd, encrypted)
        prepare = getattr(self.container, "prepare", None)
        if prepare is not None:  # pull an image reference once, here, rather than on every node
            prepare()
        self._driver.monitoring_messages = self.monitoring_messages
        port, self._server_public = self._driver.open("127.0.0.1" if loopback else "*", self.port, self.port_range,
                                                      encrypted)
        self.url = f"tcp://{self.address}:{port}"
        self._logger.info("%s listening on %s", self.label, self.url)
        # without `with` or cleanup(), an error or Ctrl-C ends the interpreter and not
        # the DFK: blocks must still end now, not at their managers' driver timeout
        self._at_exit = weakref.finalize(self, _shutdown_at_exit, weakref.WeakMethod(self.shutdown))
        if self.managed and self.provider is not None and self.provider.init_blocks > 0:
            # the first result comes sooner: init_blocks start now, not at the DFK
            # strategy's first tick (5 s later), which scale_out_facade then absorbs
            self._early_blocks = self.provider.init_blocks
            super().scale_out_facade(self._early_blocks)

    def _get_launch_command(self, block_id: str) -> str:
        """Register block ``block_id`` (its manager is now expected) and return its command."""
        if self._local() and self.container is None:
            try:  # one clear line now, instead of a broker log saying "flux: command not found"
                fluxpath.check_flux(self._flux_command())
            except fluxpath.FluxNotFound as exc:
                self._logger.error("block %s not started: %s", block_id, exc)
                raise
        key = protocol.block_key(self._master, block_id)
        self._driver.add_block(block_id, key, self._write_key(block_id, key))
        return self.launch_command(block_id)

    def _block_config(self) -> Dict[str, Any]:
        """CONFIG for a block that registered: packing, Flux handle options, limits, the driver's cwd."""
        workers = (self.packing_workers or -1) if self.packing else 0
        return protocol.config_body(workers, self.packing_idle_timeout,
                                    self.flux_executor_kwargs.get("handle_kwargs", {}), self.max_message_bytes,
                                    os.getcwd())

    @property
    def blocks(self) -> Mapping[str, Block]:
        """The blocks launched so far, by id (read-only view, for tools and tests)."""
        return MappingProxyType(self._driver.blocks)

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
        ``LocalProvider``, else this host's address. A loopback address for
        blocks on other nodes (a hosts file mapping this host's name to
        127.0.1.1) is warned about: their managers could not reach the driver."""
        if self._local():
            return "127.0.0.1"
        address = address_by_hostname()
        if address.startswith("127.") or address in ("localhost", "::1"):
            self._logger.warning("this host's name resolves to %s, which compute nodes cannot reach; give "
                                 "address= (site configs: PARSL_FLUX_ADDRESS or PARSL_FLUX_INTERFACE)", address)
        return address

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
        for block in self._driver.live_blocks():
            assert block.resources is not None
            return block.resources.cores_per_node
        return 1

    def outstanding(self) -> int:
        return self._driver.outstanding()

    def monitor_resources(self) -> bool:
        """False: no psutil sampling process per Flux job. With resource
        monitoring on, the job measures its own CPU time, peak memory and wall
        time instead and the ``resource`` table gets them
        (:mod:`parsl_flux.driver.monitoring`)."""
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
        lean = lean_bash(func, args, kwargs)  # bash apps: run the command without importing Parsl in the job
        if lean is not None:
            func, args, kwargs = lean
        try:
            payload = dumps_task(self._pickled(func), args, kwargs)
        except Exception as exc:
            raise SerializationError(getattr(func, "__name__", repr(func))) from exc
        size = protocol.blob_size(payload)
        if size > self.max_message_bytes - 4096:
            raise PayloadTooLarge(getattr(func, "__name__", repr(func)), size, self.max_message_bytes)
        task_id = next(self._task_ids)
        fut = TaskFuture(self._driver, task_id)
        self._driver.submit(Task(task_id, fut, shape, payload))
        return fut

    def _pickled(self, func: Callable) -> bytes:
        """``func``'s pickle, from the cache when ``func`` is hashable (every function is)."""
        try:
            hash(func)
        except TypeError:
            return dump_function(func)
        return self._function_pickles(func)

    def _block_ended(self, block: Block, reason: str, mark_failed: bool) -> None:
        """The driver closed ``block``: unless the provider already reports it
        ended (``mark_failed=False``), record it for Parsl and have its batch
        job cancelled. A block that registered and then died is not a failed
        launch: Parsl's error handler must not end the workflow for it, and
        the strategy replaces it."""
        if not mark_failed:
            return
        if not self._shutting_down:
            state = JobState.FAILED if block.resources is None else JobState.CANCELLED
            self._ended.put((block.block_id, JobStatus(state, f"Flux instance lost: {reason}"), time.monotonic()))
        self._cancel_block_job(block.block_id)

    def _take_ended(self) -> None:
        """Record the blocks the driver ended since last asked, on the calling
        thread (Parsl's strategy, through :meth:`status` or scale-out): Parsl's
        ``_simulated_status`` and this executor's failed launches are written
        by that thread only, never by the driver's."""
        while True:
            try:
                block_id, status, when = self._ended.get_nowait()
            except queue.Empty:
                return
            self._simulated_status[block_id] = status
            if status.state == JobState.FAILED:
                self._failed_launches[block_id] = when

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

    def scale_out_facade(self, n: int) -> List[str]:
        """Parsl's scale-out, less the ``init_blocks`` that :meth:`start` already launched
        (the strategy asks for them at its first tick)."""
        absorbed = min(n, self._early_blocks)
        self._early_blocks = 0
        if n - absorbed <= 0 or self._relaunch_backing_off():
            return []
        return super().scale_out_facade(n - absorbed)

    def launch_record(self) -> List[Tuple[int, bool, bool]]:
        """Every block launched so far as ``(number, failed launch, registered)``
        (:mod:`parsl_flux.driver.relaunch`), after taking the ends the driver
        reported. A launch that raised (Parsl records it FAILED, "Failed to
        start block") never reached the driver and is a failed launch too."""
        self._take_ended()
        registered = {v.block_id: v.registered for v in self._driver.snapshot()}
        return [(int(b), self._simulated_status.get(b, _STARTING).state == JobState.FAILED, registered.get(b, False))
                for b in set(registered) | set(self._simulated_status) if b.isdigit()]

    def _relaunch_backing_off(self) -> bool:
        """Whether launches failed often enough in a row, and recently enough,
        that no block is launched now (:mod:`parsl_flux.driver.relaunch`): a node cut
        off from the driver then costs a batch job every few minutes at most,
        not one per strategy tick. The strategy asks again at its next tick."""
        blocks = self.launch_record()
        if not self._failed_launches:
            return False
        streak = relaunch.failure_streak(blocks)
        last = max(self._failed_launches.values())
        if relaunch.relaunch_allowed(streak, last, time.monotonic()):
            return False
        if self._backoff_logged != last:
            self._backoff_logged = last
            self._logger.warning("%d block launches failed in a row: the next block waits %.0fs "
                                 "after the last failure", streak, relaunch.relaunch_delay(streak))
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
        still runs). A block the provider reports as ended loses its tasks.
        An overridden status keeps the batch job's stdout and stderr files, whose
        tails Parsl's error handler shows (a block that could not start says why there)."""
        self._take_ended()
        provider: Dict[str, JobStatus] = {}
        if self.provider is not None:
            block_ids, job_ids = self._get_block_and_job_ids()
            provider = self._make_status_dict(block_ids, self.provider.status(job_ids))
        views = {v.block_id: v for v in self._driver.snapshot()}
        for block_id, s in provider.items():
            view = views.get(block_id)
            if view is not None and not view.closed and s.state in TERMINAL_STATES:
                # a batch job that ended before its manager ever connected is a failed block,
                # whatever exit state the batch system reports, so Parsl's error handler sees it
                reason = f"its batch job is {s.state.name}" + ("" if view.registered
                                                               else " and its manager never connected")
                self._driver.end_block(block_id, reason, mark_failed=not view.registered)
                self._take_ended()
                if view.registered and not self._shutting_down:
                    # it ran: whatever exit state the batch system reports, it is not a failed launch
                    self._simulated_status[block_id] = JobStatus(JobState.CANCELLED, f"Flux instance lost: {reason}")
        return {**provider, **{b: _with_job_files(s, provider.get(b)) for b, s in self._simulated_status.items()}}

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
        candidates = [v for v in self._driver.snapshot() if not v.closed
                      and self._status.get(v.block_id, JobStatus(JobState.PENDING)).state not in TERMINAL_STATES]
        chosen = [v.block_id for v in pick_scale_in(candidates, blocks, max_idletime, time.monotonic())]
        self._driver.scale_in(chosen, SCALE_IN_WAIT)
        job_ids = [self.blocks_to_job_id[b] for b in chosen if b in self.blocks_to_job_id]
        if not job_ids:
            return chosen
        killed = self.provider.cancel(job_ids) if self.provider else [False] * len(job_ids)
        return [self.job_ids_to_block[j] for j in self._filter_scale_in_ids(job_ids, killed)]

    def set_bad_state_and_fail_all(self, exception: Exception) -> None:
        """Mark the executor bad and fail every unresolved future with the
        first such ``exception``: Parsl's job status poller calls the block
        error handler at every poll, bad state or not, and its later
        ``TooManyJobFailuresError`` must not replace the cause (a refused
        block's :class:`VersionMismatch`), nor be logged every poll."""
        if not self.bad_state_is_set:
            self._logger.error("executor %s set to bad state: %s", self.label, exception)
            self._executor_exception = exception
            self._executor_bad_state.set()
        self._driver.fail_all(self.executor_exception)

    def shutdown(self, wait: bool = False) -> None:
        """Shut down: later :meth:`submit` calls raise, managers drain and exit,
        the provider's jobs are cancelled, and every future still unresolved
        fails with :class:`ExecutorShutdown`, so none is left hanging. Blocks
        of a ``LocalProvider`` are then waited for (at most
        ``LOCAL_BLOCK_END_WAIT`` seconds), so none outlives the script. Called
        at interpreter exit too when nobody called it (no ``with``, no DFK
        cleanup).

        Parameters
        ----------
        wait : bool
            Wait for submitted futures first, as long as a block is alive to
            run them. Default False, unlike the API page: the DFK calls
            ``shutdown()`` from ``cleanup()`` (also after a user error or
            Ctrl-C) and chooses itself whether to wait (``Config(exit_mode=
            "wait")``), as with Parsl's HighThroughputExecutor.
        """
        self._shutting_down = self._driver.closing = True
        if self._at_exit is not None:
            self._at_exit.detach()
        while wait:
            futures = self._driver.live_futures()
            if not futures or not self._driver.live_blocks():
                break
            wait_futures(futures, timeout=self.heartbeat_period)
        self._driver.stop_blocks(self._driver.live_blocks(), SHUTDOWN_WAIT)
        groups = self._local_block_groups()  # before they are cancelled: the group leader may go first
        self._cancel_provider_jobs()
        failed = self._driver.fail_all(ExecutorShutdown("executor shut down before the task finished"))
        if failed:
            self._logger.warning("shutdown: failed %d unfinished task(s) with ExecutorShutdown", failed)
        self._driver.close()
        left = _wait_for_groups(groups, LOCAL_BLOCK_END_WAIT)
        if left:
            self._logger.warning("shutdown: process group(s) %s of local blocks still running after %.0fs",
                                 left, LOCAL_BLOCK_END_WAIT)
        if self._log is not None:
            self._log.close()
            self._log = None
        super().shutdown()

    def _local_block_groups(self) -> List[int]:
        """Process groups of this executor's ``LocalProvider`` blocks (each
        block's script, ``flux start`` and broker share one)."""
        if not self._local() or self.provider is None:
            return []
        groups = []
        for job_id in self.blocks_to_job_id.values():
            pid = self.provider.resources.get(job_id, {}).get("remote_pid")
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    groups.append(int(f.read().rsplit(b")", 1)[1].split()[2]))
            except (OSError, ValueError, IndexError):  # already gone
                continue
        return groups

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


LOCAL_BLOCK_END_WAIT = 10.0
"""Seconds shutdown waits for local blocks' processes (a broker's own teardown
takes 1-3 s), so none outlives the script that started it."""


def _wait_for_groups(groups: Sequence[int], timeout: float) -> List[int]:
    """Wait until no process is left in ``groups``; those still populated at ``timeout``."""
    deadline = time.monotonic() + timeout
    left = list(groups)
    while left:
        still = []
        for group in left:
            try:
                os.killpg(group, 0)
                still.append(group)
            except ProcessLookupError:
                pass
            except PermissionError:  # a recycled group id of someone else's: not ours to wait for
                pass
        left = still
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)
    return left


def _with_job_files(ours: JobStatus, provider: Optional[JobStatus]) -> JobStatus:
    """``ours`` with the batch job's stdout/stderr files from the provider's status."""
    if provider is None or ours.stdout_path or ours.stderr_path:
        return ours
    return JobStatus(ours.state, ours.message, ours.exit_code, provider.stdout_path, provider.stderr_path)


def _shutdown_at_exit(shutdown: "weakref.WeakMethod") -> None:
    """At interpreter exit: shut down an executor nobody shut down (its blocks end with it)."""
    method = shutdown()
    if method is not None:
        method(wait=False)


SCALE_IN_WAIT = 5.0
"""Seconds scale_in waits for the managers' BYE before the provider cancels their jobs."""


SHUTDOWN_WAIT = 10.0
"""Seconds shutdown waits for the managers' BYE before the provider cancels their jobs."""


def pick_scale_in(blocks: Sequence[BlockView], n: int, max_idletime: Optional[float],
                  now: float) -> List[BlockView]:
    """The ``n`` blocks to scale in: idle (longest idle first), then starting, then busy (least loaded first).

    With ``max_idletime`` only registered blocks idle for at least that long qualify."""
    def idle_for(b: BlockView) -> float:
        return now - b.idle_since if b.live and not b.busy and b.idle_since is not None else -1.0

    if max_idletime is not None:
        blocks = [b for b in blocks if idle_for(b) >= max_idletime]
    rank = sorted(blocks, key=lambda b: (0 if idle_for(b) >= 0 else 1 if not b.registered else 2,
                                         -idle_for(b), b.busy))
    return rank[:n]
