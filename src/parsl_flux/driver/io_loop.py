"""The driver's I/O loop: the socket, the blocks, the pending queue, heartbeats
and result decoding, on a thread of their own.

:class:`~parsl_flux.driver.executor.FluxExecutor` keeps the Parsl surface
(configuration, launch commands, scaling, status, shutdown) and hands tasks to
a :class:`Driver`, as Parsl's HighThroughputExecutor keeps its interchange
apart. The driver's lock guards only its own tables; futures are resolved
after it is released, so a callback on a future (the DFK's) can never
deadlock against the loop.
"""

from __future__ import annotations

import logging
import os
import pickle
import queue
import threading
import time
from collections import deque
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Set, Tuple

import cloudpickle
import zmq
from parsl.serialize.errors import DeserializationError
from zmq.utils import z85

from parsl_flux.driver.block_health import BlockHealth, reconnect_grace
from parsl_flux.job.bash import to_parsl_exception
from parsl_flux.wire import protocol, versions
from parsl_flux.errors import (BlockLost, ExecutorShutdown, FluxJobFailed, InvalidResourceSpecification, NodeLost,
                               RemoteTaskError, VersionMismatch)
from parsl_flux.driver.resources import InstanceResources, JobShape, block_window, check_fits
from parsl_flux.driver.settle import set_exception, set_result
from parsl_flux.wire.protocol import Kind
from parsl_flux.wire.rejects import RejectLog
from parsl_flux.wire.resume import resume_plan
from parsl_flux.wire.wakeup import Waker
from parsl_flux.wire.zap import Gate

MAX_HANDSHAKES = 64
"""Handshakes in progress at once (each a hello that passed its MAC check).
When full, a newcomer is refused: one in progress is never evicted for it."""
HANDSHAKE_TTL = 30.0
"""Seconds a handshake may wait for its REGISTER before its slot is reusable."""


class TaskFuture(Future):
    """A Future whose ``cancel()`` also cancels the task's Flux job."""

    def __init__(self, driver: "Driver", task_id: int) -> None:
        super().__init__()
        self._driver = driver
        self.parsl_executor_task_id = task_id

    def cancel(self) -> bool:
        if not super().cancel():
            return False
        self._driver.cancel(self.parsl_executor_task_id)
        return True


@dataclass
class Task:
    task_id: int
    future: TaskFuture
    shape: JobShape
    payload: Optional[list]
    """A blob (:mod:`parsl_flux.wire.payload`), kept to be sent again after a broken
    connection until the manager acknowledges it; then None (it holds the task)."""
    block_id: Optional[str] = None


@dataclass
class Block:
    block_id: str
    key: bytes
    key_file: str = ""
    resources: Optional[InstanceResources] = None
    info: Dict[str, Any] = field(default_factory=dict)
    last_seen: float = 0.0
    idle_since: Optional[float] = None  # when its last task ended (or it registered); None while busy
    in_flight: Set[int] = field(default_factory=set)
    closed: bool = False
    draining: bool = False  # asked to shut down by scale_in: its BYE is expected, not a loss
    route: Optional[bytes] = None  # the ZMQ routing id its manager proved it owns
    session: Optional[protocol.Session] = None
    health: BlockHealth = field(default_factory=BlockHealth)

    @property
    def live(self) -> bool:
        return self.resources is not None and not self.closed

    @property
    def accepting(self) -> bool:
        """Live, connected and whole: new tasks may be sent to it."""
        return self.live and self.health.accepting

    def capacity(self) -> int:
        """Tasks kept in flight on this block (:func:`~parsl_flux.driver.resources.block_window`)."""
        assert self.resources is not None
        return block_window(self.resources.cores)


@dataclass(frozen=True)
class BlockView:
    """A block as it was when :meth:`Driver.snapshot` copied it: what the
    executor's scaling decisions read, without touching the I/O thread's state."""

    block_id: str
    registered: bool  # its manager registered (it reported its resources)
    live: bool
    closed: bool
    idle_since: Optional[float]
    busy: int  # tasks in flight on it


class Driver:
    """Socket, blocks and tasks of one executor, served by one I/O thread.

    Ownership: ``blocks``, ``pending`` and ``live_tasks`` belong to the driver.
    The I/O thread changes them under ``lock``; other threads (the user's
    ``submit``, Parsl's strategy, ``shutdown``) come in only through the
    methods under "called by the executor", which take the lock, and read them
    only through :meth:`snapshot` and :meth:`live_futures`. The executor's own
    state (Parsl's ``_status`` and ``_simulated_status``) is never written
    here: ``on_lost`` only hands the executor the news.

    Parameters
    ----------
    label : str
        The executor's label (thread names).
    logger : logging.Logger
        The executor's own logger.
    heartbeat_period, heartbeat_threshold : float
        As for the executor.
    max_message_bytes : int
        Largest message; TASKS batches are split under it.
    block_config : callable
        Returns the CONFIG body for a block that just registered.
    on_lost : callable
        ``on_lost(block, reason, mark_failed)``: the executor records the
        block's end for Parsl (and has its batch job cancelled).
    on_refused : callable
        ``on_refused(error)``: a block's versions cannot run this driver's
        tasks (:class:`~parsl_flux.errors.VersionMismatch`); the executor sets
        itself to bad state, which fails every task with ``error``.
    registry : dict
        Parsl's ``executor._tasks`` (task id -> future), kept in step.
    """

    def __init__(self, label: str, logger: logging.Logger, heartbeat_period: float, heartbeat_threshold: float,
                 max_message_bytes: int, block_config: Callable[[], Dict[str, Any]],
                 on_lost: Callable[[Block, str, bool], None], on_refused: Callable[[VersionMismatch], None],
                 registry: Dict[Any, Future]) -> None:
        self.label = label
        self.logger = logger
        self.heartbeat_period = heartbeat_period
        self.heartbeat_threshold = heartbeat_threshold
        self.reconnect_grace = reconnect_grace(heartbeat_period, heartbeat_threshold)
        self.max_message_bytes = max_message_bytes
        self.block_config = block_config
        self.on_lost = on_lost
        self.on_refused = on_refused
        self.registry = registry
        self.lock = threading.RLock()
        self.blocks: Dict[str, Block] = {}
        self.pending: Deque[Task] = deque()
        self.live_tasks: Dict[int, Task] = {}
        self.monitoring_messages: Any = None  # the DFK's queue, when monitoring is on
        self.closing = False  # the executor is shutting down: lost blocks are expected
        self._outgoing: "queue.SimpleQueue[tuple]" = queue.SimpleQueue()
        # route -> (block, session, when its hello came): welcomed, not yet registered
        self._handshakes: Dict[bytes, Tuple[Block, protocol.Session, float]] = {}
        self._routes: Dict[bytes, Block] = {}
        self._rejects = RejectLog(logger)
        self._stop = threading.Event()
        self._waker: Optional[Waker] = None
        self._thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------ lifecycle
    def open(self, bind_host: str, port: Optional[int], port_range: Tuple[int, int], encrypt: bool) -> Tuple[int, str]:
        """Listen and start the I/O thread: ``(port, server public key as hex or '')``."""
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self._sock.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes + (1 << 20))
        # no message, of any size, from a connection that has not proved it speaks for a block
        self._gate = Gate(self._ctx, self._admissible_keys, self._rejects.reject)
        server_public = ""
        self._encrypted = encrypt
        if encrypt:
            if not zmq.has("curve"):
                raise RuntimeError("encrypt=True, but this pyzmq's libzmq has no CURVE support")
            public, secret = zmq.curve_keypair()
            self._sock.curve_server = True
            self._sock.curve_secretkey = secret
            server_public = z85.decode(public).hex()  # hex: Z85 has '$', which launchers expand
        Gate.guard(self._sock, curve=encrypt)
        if port is not None:
            self._sock.bind(f"tcp://{bind_host}:{port}")
        else:
            port = self._sock.bind_to_random_port(f"tcp://{bind_host}", min_port=port_range[0], max_port=port_range[1])
        self._waker = Waker()
        self._thread = threading.Thread(target=self._loop, name=f"{self.label}-io", daemon=True)
        self._thread.start()
        return port, server_public

    @property
    def running(self) -> bool:
        return self._thread is not None

    def close(self) -> None:
        """Stop the I/O thread and close the socket."""
        self._stop.set()
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._sock.close()
            self._gate.close()
            self._ctx.term()
            self._rejects.flush()
            assert self._waker is not None
            self._waker.close()
            self._waker = None
            self._thread = None
        with self.lock:
            key_files = [b.key_file for b in self.blocks.values()]
        for key_file in key_files:  # a manager that never started leaves its key file behind
            remove_key_file(key_file)

    def _admissible_keys(self) -> Dict[str, bytes]:
        """Keys of the blocks whose managers may connect: launched, not closed."""
        with self.lock:
            return {b.block_id: b.key for b in self.blocks.values() if not b.closed}

    def wake(self) -> None:
        waker = self._waker  # close() may clear it meanwhile
        if waker is not None:
            waker.wake()

    # ------------------------------------------------ called by the executor
    def add_block(self, block_id: str, key: bytes, key_file: str) -> None:
        """A block was launched: its manager is now expected to say hello."""
        with self.lock:
            self.blocks[block_id] = Block(block_id, key, key_file)

    def live_blocks(self) -> List[Block]:
        with self.lock:
            return [b for b in self.blocks.values() if b.live]

    def snapshot(self) -> List[BlockView]:
        """Every block launched so far, as it is now."""
        with self.lock:
            return [BlockView(b.block_id, b.resources is not None, b.live, b.closed, b.idle_since, len(b.in_flight))
                    for b in self.blocks.values()]

    def live_futures(self) -> List[Future]:
        """The futures of every task not resolved yet."""
        with self.lock:
            return [t.future for t in self.live_tasks.values()]

    def scale_in(self, block_ids: Sequence[str], timeout: float) -> None:
        """Drain and end the blocks ``block_ids`` (their managers say BYE, waited
        for up to ``timeout`` seconds); tasks still on them fail with ``BlockLost``."""
        with self.lock:
            blocks = [self.blocks[b] for b in block_ids]
        self.stop_blocks(blocks, timeout)
        for block in blocks:
            self.lose(block, "scaled in", mark_failed=False)

    def end_block(self, block_id: str, reason: str, mark_failed: bool) -> None:
        """End block ``block_id`` from outside (its batch job ended), as :meth:`lose`."""
        with self.lock:
            block = self.blocks.get(block_id)
        if block is not None:
            self.lose(block, reason, mark_failed)

    def submit(self, task: Task) -> None:
        """Queue a task; raise at once if no live block could ever hold it."""
        with self.lock:
            self.registry[task.task_id] = task.future
            self.live_tasks[task.task_id] = task
            live = [b for b in self.blocks.values() if b.live]
            if live:
                error = _fits_none(task.shape, live)
                if error is not None:
                    self._forget(task.task_id)
                    raise error
            self.pending.append(task)
        self.wake()

    def cancel(self, task_id: int) -> None:
        with self.lock:
            task = self.live_tasks.get(task_id)
            if task is None:
                return
            if task.block_id is None:
                self.pending.remove(task)
                self._forget(task_id)
                return
        self._outgoing.put((task.block_id, Kind.CANCEL, [task_id]))
        self.wake()

    def outstanding(self) -> int:
        with self.lock:
            return len(self.live_tasks)

    def stop_blocks(self, blocks: Sequence[Block], timeout: float) -> None:
        """Ask the managers of ``blocks`` to drain and exit; wait (bounded) for their BYE."""
        with self.lock:
            for block in blocks:
                block.draining = True
        for block in blocks:
            if block.live:
                self._outgoing.put((block.block_id, Kind.SHUTDOWN, None))
        self.wake()
        deadline = time.monotonic() + timeout
        while any(not b.closed and b.live for b in blocks) and time.monotonic() < deadline:
            time.sleep(0.02)

    def fail_all(self, exc: BaseException) -> int:
        """Fail every unresolved task with ``exc``; the number failed."""
        with self.lock:
            tasks = [self._forget(t) for t in list(self.live_tasks)]
            self.pending.clear()
        return sum(1 for task in tasks if task is not None and set_exception(task.future, exc))

    def lose(self, block: Block, reason: str, mark_failed: bool = True) -> None:
        """Close ``block`` and fail every task in flight on it with :class:`BlockLost`;
        ``on_lost`` tells Parsl (``mark_failed``: the executor, not the
        provider, knows the block ended)."""
        with self.lock:
            if block.closed:
                return
            block.closed = True
            lost = [self._forget(t) for t in list(block.in_flight)]
            if block.route is not None:
                self._routes.pop(block.route, None)
        remove_key_file(block.key_file)
        self.on_lost(block, reason, mark_failed)
        log = self.logger.info if self.closing or not lost else self.logger.error
        log("block %s closed: %s; failing %d task(s)", block.block_id, reason, len(lost))
        for task in lost:
            if task is not None:
                set_exception(task.future, ExecutorShutdown(f"executor shut down before the task finished "
                                                            f"(block {block.block_id}: {reason})")
                              if self.closing else BlockLost(block.block_id, reason))
        self.wake()

    def _forget(self, task_id: int) -> Optional[Task]:
        """Drop all state of a task (caller holds the lock)."""
        self.registry.pop(task_id, None)
        task = self.live_tasks.pop(task_id, None)
        if task is not None and task.block_id is not None:
            block = self.blocks.get(task.block_id)
            if block is not None:
                block.in_flight.discard(task_id)
                if not block.in_flight:
                    block.idle_since = time.monotonic()
        return task

    # ------------------------------------------------------------ I/O thread
    def _loop(self) -> None:
        assert self._waker is not None
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._waker.fd, zmq.POLLIN)
        poller.register(self._gate.socket, zmq.POLLIN)
        last_beat = 0.0
        while not self._stop.is_set():
            try:
                ready = dict(poller.poll(timeout=self.heartbeat_period * 1000))
                if self._waker.fd in ready:
                    self._waker.drain()
                if self._gate.socket in ready:
                    self._gate.answer_all()
                if self._sock in ready:
                    self._receive_all()
                self._send_outgoing()
                self._dispatch()
                now = time.monotonic()
                self._check_health(now)
                if now - last_beat >= self.heartbeat_period:
                    last_beat = now
                    self._heartbeat(now)
            except Exception:
                self.logger.exception("error in the I/O loop of %s", self.label)

    def _send(self, block: Block, kind: str, data: Any = None) -> bool:
        if block.route is None or block.session is None:
            return False
        try:
            self._sock.send_multipart([block.route, *block.session.seal(kind, data)], copy=False)  # payloads: no copy
            return True
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                self.logger.warning("cannot send %s to block %s: %s", kind, block.block_id, exc)
            elif block.health.unreachable(time.monotonic(), str(exc)):  # the manager's connection is gone
                self.logger.warning("block %s unreachable (%s, sending %s); waiting up to %.1fs for its manager "
                                    "to reconnect", block.block_id, exc, kind, self.reconnect_grace)
            return False

    def _send_outgoing(self) -> None:
        while True:
            try:
                block_id, kind, data = self._outgoing.get_nowait()
            except queue.Empty:
                return
            block = self.blocks.get(block_id)
            if block is not None and block.live:
                self._send(block, kind, data)

    def _receive_all(self) -> None:
        while True:
            try:
                route, *frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            route_id = route.bytes
            try:  # results' arrays are made on the frames' buffers: no copy
                self._receive(route_id, [f.buffer for f in frames], _peer_address(route))
            except protocol.AuthenticationError as exc:
                self._rejects.reject("dropped a message from peer %s: %s", route_id.hex()[:16], exc)

    def _receive(self, route: bytes, frames: List[memoryview], peer: str) -> None:
        """One message from ``route`` (at address ``peer``): a hello, the REGISTER that binds a
        block to its connection, or a message of a bound block's session."""
        block = self._routes.get(route)
        if block is not None:
            assert block.session is not None
            kind, data = block.session.open(frames)
            block.last_seen = time.monotonic()
            if kind == Kind.RESULTS:
                self._send(block, Kind.ACK, [res["id"] for res in data])
                with self.lock:  # one already received before a reconnect comes again: ignore it
                    fresh = [res for res in data if res["id"] in self.live_tasks]
                if any(res["outcome"] == protocol.NODE_LOST for res in fresh):  # before its DEGRADED, maybe
                    self._degrade(block, protocol.degraded_body("?", [], "a job died with a node"))
                self._complete(fresh)
            elif kind == Kind.ACK:  # the manager holds these tasks: their payloads need not be kept here
                with self.lock:
                    for task in (self.live_tasks.get(i) for i in data):
                        if task is not None and task.block_id == block.block_id:
                            task.payload = None
            elif kind == Kind.DEGRADED:
                self._degrade(block, data)
            elif kind == Kind.BYE:
                self.lose(block, "scaled in" if block.draining else f"manager exited: {data['reason']}",
                          mark_failed=not block.draining)
            return
        pending = self._handshakes.get(route)
        if pending is not None:
            block, session, _ = pending
            kind, data = session.open(frames)
            if kind not in (Kind.REGISTER, Kind.RESUME):
                raise protocol.AuthenticationError(f"expected register or resume, got {kind}")
            del self._handshakes[route]
            if kind == Kind.RESUME:
                self._resume(block, route, session, data)
            else:
                self._register(block, route, session, data)
            return
        block_id, nonce, mac = protocol.open_hello(frames)
        with self.lock:
            block = self.blocks.get(block_id)
        if block is None or block.closed:  # a registered block may hand-shake again to resume its session
            raise protocol.AuthenticationError(f"hello for block {block_id[:16]!r}, which expects none")
        protocol.check_hello(block.key, block_id, nonce, mac)
        self._admit_handshake(block, nonce)
        driver_nonce = os.urandom(protocol.NONCE_BYTES)
        mac_buffers = not protocol.guarded_path(self._encrypted, peer)
        self._handshakes[route] = (block, protocol.driver_session(block.key, nonce, driver_nonce, mac_buffers),
                                   time.monotonic())
        self._sock.send_multipart([route, *protocol.welcome(block.key, nonce, driver_nonce)])

    def _admit_handshake(self, block: Block, nonce: bytes) -> None:
        """Room for a new handshake of ``block``, or :class:`AuthenticationError`.

        A hello whose nonce is already in a handshake is a replay; a full
        table refuses the newcomer after dropping handshakes older than
        ``HANDSHAKE_TTL``, so copies of a captured hello can never push out
        the real manager's handshake in progress."""
        for other, session, _ in self._handshakes.values():
            if other is block and session.manager_nonce == nonce:
                raise protocol.AuthenticationError(f"replayed hello for block {block.block_id}")
        if len(self._handshakes) >= MAX_HANDSHAKES:
            now = time.monotonic()
            for route in [r for r, (_, _, at) in self._handshakes.items() if now - at > HANDSHAKE_TTL]:
                del self._handshakes[route]
        if len(self._handshakes) >= MAX_HANDSHAKES:
            raise protocol.AuthenticationError(f"{MAX_HANDSHAKES} handshakes in progress; refusing another")

    def _register(self, block: Block, route: bytes, session: protocol.Session, data: Dict[str, Any]) -> None:
        """Bind ``block`` to the connection whose session proved it holds the block's key."""
        if block.route is not None or block.closed:
            raise protocol.AuthenticationError(f"second registration for block {block.block_id}")
        for other in [r for r, (b, _, _) in self._handshakes.items() if b is block]:
            del self._handshakes[other]
        block.route, block.session = route, session
        self._routes[route] = block
        block.last_seen = block.idle_since = time.monotonic()
        problem = versions.mismatch(versions.this_side(), data.get("versions") or {})
        if problem is not None:
            self._refuse(block, problem)
            return
        self._send(block, Kind.CONFIG, self.block_config())
        with self.lock:
            block.resources = InstanceResources.from_wire(data["resources"])
            block.info = data
        self.logger.info("block %s registered from %s (manager pid %s, %s): %s, Flux %s", block.block_id,
                         data["hostname"], data["pid"], data["flux_uri"], block.resources, data["flux_version"])

    def _refuse(self, block: Block, problem: str) -> None:
        """End a block that cannot run this driver's tasks, before any task is
        sent to it: its manager is told why (and exits), and every task fails
        with :class:`VersionMismatch` at once, since the executor's other blocks
        start from the same launch line and would be refused too."""
        self.logger.error("block %s refused: %s", block.block_id, problem)
        self._send(block, Kind.SHUTDOWN, problem)
        self.on_refused(VersionMismatch(block.block_id, problem))
        self.lose(block, f"refused: {problem}")

    def _resume(self, block: Block, route: bytes, session: protocol.Session, data: Dict[str, Any]) -> None:
        """Bind a registered ``block`` to the new connection whose fresh session
        proved its key (:mod:`parsl_flux.wire.resume`): the old connection is dropped,
        tasks lost on the way are sent again, tasks no longer wanted cancelled."""
        if block.route is None or not block.live:
            raise protocol.AuthenticationError(f"resume for block {block.block_id}, which has not registered")
        with self.lock:
            self._routes.pop(block.route, None)
            for other in [r for r, (b, _) in self._handshakes.items() if b is block]:
                del self._handshakes[other]
            block.route, block.session = route, session
            self._routes[route] = block
            now = block.last_seen = time.monotonic()
            since = block.health.reachable()
            resend_ids, cancel_ids = resume_plan(block.in_flight, data["tasks"], data["done"])
            lost = [t for t in (self.live_tasks.get(i) for i in resend_ids) if t is not None]
            resend = [protocol.task_body(t.task_id, t.payload, t.shape.to_wire(), t.shape.packable)
                      for t in lost if t.payload is not None]
            # acknowledged, yet unknown to the manager now: never by the protocol; not lost silently either
            dropped = [self._forget(t.task_id) for t in lost if t.payload is None]
        for task in dropped:
            assert task is not None
            self.logger.error("block %s resumed without task %d, which it had acknowledged", block.block_id,
                              task.task_id)
            set_exception(task.future, BlockLost(block.block_id, f"resumed without task {task.task_id}, "
                                                                 "which it had received"))
        self.logger.warning("block %s resumed its session on a new connection%s: %d task(s) running there, "
                            "%d result(s) coming again, %d task(s) sent again, %d cancelled", block.block_id,
                            f" after {now - since:.1f}s" if since is not None else "", len(data["tasks"]),
                            len(data["done"]), len(resend), len(cancel_ids))
        if cancel_ids:
            self._send(block, Kind.CANCEL, cancel_ids)
        for chunk in _chunks(resend, self.max_message_bytes) if resend else []:
            self._send(block, Kind.TASKS, chunk)

    def _degrade(self, block: Block, data: Dict[str, Any]) -> None:
        """The manager reports lost broker ranks: no new work for ``block``; it
        is retired once its tasks end (:meth:`_check_health`)."""
        with self.lock:
            first = not block.health.degraded
            if first or data["ranks"] != "?":
                block.health.degraded = f"lost rank(s) {data['ranks']} ({', '.join(data['hosts']) or '?'})"
            running = len(block.in_flight)
        if first:
            self.logger.error("block %s degraded: %s: %s; it gets no new work and is retired once its %d "
                              "task(s) end", block.block_id, block.health.degraded, data["reason"], running)

    def _check_health(self, now: float) -> None:
        """Lose blocks unreachable past the reconnect grace; retire degraded blocks once idle."""
        for block in self.live_blocks():
            health = block.health
            if health.overdue(now, self.reconnect_grace):
                assert health.unreachable_since is not None
                self.lose(block, f"its manager has been unreachable for {now - health.unreachable_since:.1f}s "
                                 f"({health.unreachable_reason}) and did not reconnect")
            elif health.degraded and not block.in_flight:
                self.lose(block, f"retired: {health.degraded}")

    def _complete(self, results: List[Dict[str, Any]]) -> None:
        for res in results:
            if res.get("monitoring") and self.monitoring_messages is not None:
                self._forward_monitoring(res["id"], res["monitoring"])
            with self.lock:
                task = self._forget(res["id"])
            if task is None:
                continue
            try:
                _resolve(task, res)
            except Exception as exc:  # never leave a future unresolved
                set_exception(task.future, exc)

    def _forward_monitoring(self, task_id: int, messages: List[bytes]) -> None:
        """Hand a task's monitoring messages to Parsl's radio.

        A message that cannot be unpickled is logged and dropped: monitoring
        must never cost the task its result, nor the rest of the batch theirs.
        """
        for message in messages:
            try:
                self.monitoring_messages.put(pickle.loads(message))
            except Exception as exc:
                self.logger.warning("dropped a monitoring message of task %s: %s: %s", task_id, type(exc).__name__, exc)

    def _dispatch(self) -> None:
        """Send pending tasks to live blocks, least loaded first, within capacity.

        First in, first out: when the task at the head fits a live block but
        every such block is full, dispatch stops there, so a call costs
        O(tasks sent), never O(tasks pending). Tasks no live block can hold
        fail, after the lock is released.
        """
        batches: Dict[str, List[Dict[str, Any]]] = {}
        misfits: List[Tuple[Task, InvalidResourceSpecification]] = []
        with self.lock:
            live = [b for b in self.blocks.values() if b.live]
            while self.pending and live:
                task = self.pending[0]
                error = _fits_none(task.shape, live)
                if error is not None:
                    self.pending.popleft()
                    self._forget(task.task_id)
                    misfits.append((task, error))
                    continue
                room = [b for b in live if b.accepting and len(b.in_flight) < b.capacity()
                        and b.resources is not None and _fits(task.shape, b.resources)]
                if not room:
                    break
                self.pending.popleft()
                block = min(room, key=lambda b: len(b.in_flight) / b.capacity())
                block.in_flight.add(task.task_id)
                block.idle_since = None
                task.block_id = block.block_id
                batches.setdefault(block.block_id, []).append(
                    protocol.task_body(task.task_id, task.payload, task.shape.to_wire(), task.shape.packable))
                # task.payload is kept until the task ends: a manager that resumes its session
                # after a reconnect may not have received it (resume_plan)
        for task, error in misfits:
            set_exception(task.future, error)
        for block_id, tasks in batches.items():
            for chunk in _chunks(tasks, self.max_message_bytes):
                block = self.blocks[block_id]
                if not self._send(block, Kind.TASKS, chunk):
                    if block.health.unreachable_since is None:
                        self.lose(block, "could not send tasks to its manager")
                    # else they stay in flight: sent again if it resumes, BlockLost if not
                    break

    def _heartbeat(self, now: float) -> None:
        for block in self.live_blocks():
            if now - block.last_seen > self.heartbeat_threshold:
                self.lose(block, f"no heartbeat for {now - block.last_seen:.1f}s "
                                 f"(threshold {self.heartbeat_threshold}s)")
            elif block.health.unreachable_since is None:
                self._send(block, Kind.HEARTBEAT)


def _peer_address(frame: zmq.Frame) -> str:
    """The IP address a message came from ('' where the transport names none)."""
    try:
        return str(frame.get("Peer-Address"))
    except zmq.ZMQError:
        return ""


def _resolve(task: Task, res: Dict[str, Any]) -> None:
    """Resolve a task's future from its outcome (see ``protocol.outcome_*``).

    A ``future.cancel()`` may land at any point of this; the future then keeps
    its cancellation (:mod:`parsl_flux.driver.settle`)."""
    fut = task.future
    kind = res["outcome"]
    if kind == protocol.VALUE:
        try:
            value = pickle.loads(res["value"][0], buffers=res["value"][1:])  # arrays on the received frames
        except Exception as exc:
            set_exception(fut, DeserializationError(f"result of task {task.task_id}: {exc}"))
        else:
            set_result(fut, value)
    elif kind == protocol.CANCELLED:
        set_exception(fut, CancelledError(f"task {task.task_id} was cancelled"))
    elif kind == protocol.JOB_FAILED:
        set_exception(fut, FluxJobFailed(task.task_id, res["jobid"], res["status"], res["stderr"]))
    elif kind == protocol.NODE_LOST:
        set_exception(fut, NodeLost(task.block_id or "?", task.task_id, res["jobid"], res["status"]))
    else:
        exc: BaseException = RemoteTaskError(res["type"], res["message"], res["traceback"])
        if res["exception"] is not None:
            try:
                exc = to_parsl_exception(cloudpickle.loads(res["exception"]))  # lean bash stand-ins
            except Exception:  # a class the driver cannot import: the text version
                pass
        set_exception(fut, exc)


def _fits(shape: JobShape, res: InstanceResources) -> bool:
    try:
        check_fits(shape, res)
        return True
    except InvalidResourceSpecification:
        return False


def _fits_none(shape: JobShape, blocks: Sequence[Block]) -> Optional[InvalidResourceSpecification]:
    """Why no block of ``blocks`` could ever hold ``shape``; None if one can."""
    error: Optional[InvalidResourceSpecification] = None
    for block in blocks:
        assert block.resources is not None
        try:
            check_fits(shape, block.resources)
            return None
        except InvalidResourceSpecification as exc:
            error = exc
    return error


def _chunks(tasks: List[Dict[str, Any]], limit: int) -> List[List[Dict[str, Any]]]:
    """Split a batch of task dicts into messages each under ``limit`` bytes of payload."""
    chunks: List[List[Dict[str, Any]]] = [[]]
    size = 0
    for task in tasks:
        n = protocol.blob_size(task["payload"]) + 4096
        if chunks[-1] and size + n > limit:
            chunks.append([])
            size = 0
        chunks[-1].append(task)
        size += n
    return chunks


def remove_key_file(path: str) -> None:
    """Remove a key file if it is still there (its manager removes it when it starts)."""
    if path:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
