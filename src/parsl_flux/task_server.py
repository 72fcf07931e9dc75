"""The manager's task server: where runners fetch payloads and return results.

Runners connect over plain TCP (:class:`parsl_flux.protocol.Stream`) so that a
Flux job imports nothing heavy. One thread per connection: a one-task runner
connects for two short exchanges; a packing worker keeps its connection for its
whole life.

What a stranger on the port can do is bounded: the server listens only where
runners are (loopback for a one-node block), serves at most
``max_connections`` connections at once, drops a connection that has not
authenticated within ``HANDSHAKE_TIMEOUT`` seconds, checks the MAC of a
fixed-size header before it reads any body, and logs rejects at a limited
rate. Each connection speaks for one principal (a task id, or packing workers)
with that principal's own credential, so a task can fetch only its own payload
and post only its own result.

Packing mode lives here too: packed tasks wait in a queue that workers drain.
An idle worker is told to exit after ``idle_timeout`` seconds, and at once
while a Flux job of a large (MPI/GPU/multi-core) task waits for resources, so
the workers' cores go back to Flux.
"""

from __future__ import annotations

import logging
import os
import queue
import socketserver
import threading
import time
from typing import Any, Callable, Dict, Optional, Set

from parsl_flux import protocol
from parsl_flux.protocol import Kind
from parsl_flux.rejects import RejectLog

logger = logging.getLogger(__name__)

POLL = 0.2
HANDSHAKE_TIMEOUT = 10.0
"""Seconds a new connection has to send its first authenticated message."""
DEFAULT_MAX_CONNECTIONS = 1024


class _Refused(Exception):
    """A runner asked for something its principal may not have."""


class _TCPServer(socketserver.ThreadingTCPServer):
    """Threads per connection, at most ``limit`` at once (others are closed at once)."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address: tuple, handler: type, limit: int, rejects: RejectLog) -> None:
        self._slots = threading.BoundedSemaphore(limit)
        self._rejects = rejects
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._rejects.reject("task server: refused a connection from %s: connection limit reached",
                                 client_address)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class TaskServer:
    """Payloads and outcomes of the tasks in flight, served to runners.

    Parameters
    ----------
    key : bytes
        Runner key of this instance; each principal signs with
        :func:`~parsl_flux.protocol.task_credential` of it.
    emit : callable
        ``emit(*event)`` hands an event to the manager's main loop:
        ``("packed_done", task_id, outcome)``,
        ``("packed_lost", task_id, worker_jobid, reason)`` or
        ``("result_in", task_id)`` (rank 0 of a task's job sent its outcome).
    host : str
        Address to listen on: loopback for a one-node block, else this node's.
    idle_timeout : float
        Seconds an idle packing worker waits for work before it exits.
    max_connections : int
        Connections served at once.
    max_bytes : int
        Largest message body accepted from a runner.
    """

    def __init__(self, key: bytes, emit: Callable[..., None], host: str = "127.0.0.1", idle_timeout: float = 5.0,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 max_bytes: int = protocol.DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.key = key
        self.emit = emit
        self.idle_timeout = idle_timeout
        self.max_bytes = max_bytes
        self._worker_credential = protocol.task_credential(key, protocol.WORKER)
        self._lock = threading.Lock()
        self._payloads: Dict[int, bytes] = {}
        self._outcomes: Dict[int, Dict[str, Any]] = {}
        self._packed: "queue.SimpleQueue[int]" = queue.SimpleQueue()
        self._queued_packed = 0
        self._running_packed: Dict[int, str] = {}  # task id -> worker's Flux job id
        self._unstarted_large: Set[int] = set()
        self.connected_workers = 0
        self.idle_workers = 0
        self.rejects = RejectLog(logger)
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                server._serve(self.request)

        self._tcp = _TCPServer((host, 0), Handler, max_connections, self.rejects)
        self.host = host
        self.port = self._tcp.server_address[1]
        self._serving: Optional[threading.Thread] = None

    def credential(self, principal: int) -> bytes:
        """The key a Flux job of ``principal`` (task id, or WORKER) gets."""
        if principal == protocol.WORKER:
            return self._worker_credential
        return protocol.task_credential(self.key, principal)

    # ---------------------------------------------------------- main thread
    def start(self) -> None:
        self._serving = threading.Thread(target=self._tcp.serve_forever, name="task-server", daemon=True)
        self._serving.start()

    def stop(self) -> None:
        if self._serving is not None:  # shutdown() waits for serve_forever, which must be running
            self._tcp.shutdown()
        self._tcp.server_close()

    def add(self, task_id: int, payload: bytes, packed: bool) -> None:
        """Make a task's payload available; packed tasks go to the worker queue."""
        with self._lock:
            self._payloads[task_id] = payload
            if packed:
                self._queued_packed += 1
            else:
                self._unstarted_large.add(task_id)
        if packed:
            self._packed.put(task_id)

    def forget(self, task_id: int) -> Optional[Dict[str, Any]]:
        """Drop a finished task; return the outcome its rank 0 sent, if any."""
        with self._lock:
            self._payloads.pop(task_id, None)
            self._unstarted_large.discard(task_id)
            self._running_packed.pop(task_id, None)
            return self._outcomes.pop(task_id, None)

    def cancel_packed(self, task_id: int) -> Optional[str]:
        """Withdraw a packed task: None if it had not started (it never will),
        else the Flux job id of the worker running it (to be cancelled)."""
        with self._lock:
            self._payloads.pop(task_id, None)
            return self._running_packed.get(task_id)

    @property
    def queued_packed(self) -> int:
        return self._queued_packed

    @property
    def large_waiting(self) -> bool:
        """True while a large task's Flux job has not started (its runner has not fetched)."""
        return bool(self._unstarted_large)

    # ------------------------------------------------------ handler threads
    def _serve(self, conn: Any) -> None:
        holding: Optional[int] = None
        worker_job: Optional[str] = None  # set once the peer says it is a packing worker
        principal: Optional[int] = None
        try:
            conn.settimeout(HANDSHAKE_TIMEOUT)
            nonce = os.urandom(protocol.NONCE_BYTES)
            conn.sendall(nonce)
            stream = protocol.Stream(conn, nonce, protocol.TO_RUNNER, protocol.TO_SERVER, self.max_bytes)
            while True:
                try:
                    claimed, head = stream.recv_header()
                except ConnectionError:
                    return
                if principal is not None and claimed != principal:
                    raise protocol.AuthenticationError(f"principal changed from {principal} to {claimed}")
                kind, data = stream.recv_body(self.credential(claimed), head)
                if principal is None:
                    principal = claimed
                    conn.settimeout(None)  # authenticated: a runner may hold its connection for its app's run
                credential = self.credential(principal)
                if principal == protocol.WORKER:
                    if kind == Kind.FETCH and worker_job is None and isinstance(data, dict):
                        worker_job = str(data.get("worker", ""))
                        with self._lock:
                            self.connected_workers += 1
                    elif not (kind == Kind.RESULT and worker_job is not None and data[0] == holding):
                        raise _Refused(f"a packing worker sent {kind} out of turn")
                    if kind == Kind.RESULT:
                        task_id, outcome = data
                        holding = None
                        with self._lock:
                            self._running_packed.pop(task_id, None)
                        self.emit("packed_done", task_id, outcome)
                    # the answer to a result is the next task: one round trip
                    holding = self._next_packed(stream, credential, worker_job)
                    if holding is None:
                        return
                elif kind == Kind.FETCH and data == principal:
                    with self._lock:
                        self._unstarted_large.discard(principal)
                        reply: Any = self._payloads.get(principal)
                    stream.send(credential, principal, Kind.PAYLOAD, reply)
                elif kind == Kind.RESULT and data[0] == principal:
                    with self._lock:
                        if principal in self._payloads:
                            self._outcomes[principal] = data[1]
                    stream.send(credential, principal, Kind.ACK)
                    self.emit("result_in", principal)
                else:
                    raise _Refused(f"task {principal}'s runner sent {kind} for {data!r:.40}")
        except (protocol.AuthenticationError, protocol.MessageTooLarge, _Refused,
                TypeError, ValueError, KeyError, IndexError) as exc:  # the last four: a malformed request
            self.rejects.reject("task server: dropped a runner connection: %s", exc)
        except OSError as exc:
            self.rejects.reject("task server: runner connection failed: %s", exc)
        finally:
            if holding is not None:
                self.emit("packed_lost", holding, worker_job, "its packing worker died while running it")
            if worker_job is not None:
                with self._lock:
                    self.connected_workers -= 1

    def _next_packed(self, stream: protocol.Stream, credential: bytes, worker_job: str) -> Optional[int]:
        """Give a worker its next task, or tell it to exit; return the task id."""
        idle_since = time.monotonic()
        with self._lock:
            self.idle_workers += 1
        try:
            while True:
                if self.large_waiting or time.monotonic() - idle_since > self.idle_timeout:
                    stream.send(credential, protocol.WORKER, Kind.EXIT)
                    return None
                try:
                    task_id = self._packed.get(timeout=POLL)
                except queue.Empty:
                    continue
                with self._lock:
                    self._queued_packed -= 1
                    payload = self._payloads.get(task_id)
                    if payload is None:  # cancelled while queued
                        continue
                    self._running_packed[task_id] = worker_job
                stream.send(credential, protocol.WORKER, Kind.PAYLOAD, (task_id, payload))
                return task_id
        finally:
            with self._lock:
                self.idle_workers -= 1
