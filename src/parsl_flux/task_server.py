"""The manager's task server: where runners fetch payloads and return results.

Runners connect over plain TCP (see :func:`parsl_flux.protocol.send_stream`)
so that a Flux job imports nothing heavy. One thread per connection: a
one-task runner connects for two short exchanges; a packing worker keeps its
connection for its whole life. The server never unpickles anything that
failed the MAC check, and drops such a connection at once.

Packing mode lives here too: packed tasks wait in a queue that workers drain.
An idle worker is told to exit after ``idle_timeout`` seconds, and at once
while a Flux job of a large (MPI/GPU/multi-core) task waits for resources, so
the workers' cores go back to Flux.
"""

from __future__ import annotations

import logging
import queue
import socketserver
import threading
import time
from typing import Any, Callable, Dict, Optional, Set

from parsl_flux import protocol
from parsl_flux.protocol import Kind

logger = logging.getLogger(__name__)

POLL = 0.2


class TaskServer:
    """Payloads and outcomes of the tasks in flight, served to runners.

    Parameters
    ----------
    key : bytes
        Key that runners of this instance sign with.
    emit : callable
        ``emit(*event)`` hands an event to the manager's main loop:
        ``("packed_done", task_id, outcome)`` or
        ``("packed_lost", task_id, worker_jobid, reason)``.
    idle_timeout : float
        Seconds an idle packing worker waits for work before it exits.
    """

    def __init__(self, key: bytes, emit: Callable[..., None], idle_timeout: float = 5.0) -> None:
        self.key = key
        self.emit = emit
        self.idle_timeout = idle_timeout
        self._lock = threading.Lock()
        self._payloads: Dict[int, bytes] = {}
        self._outcomes: Dict[int, Dict[str, Any]] = {}
        self._packed: "queue.SimpleQueue[int]" = queue.SimpleQueue()
        self._queued_packed = 0
        self._running_packed: Dict[int, str] = {}  # task id -> worker's Flux job id
        self._unstarted_large: Set[int] = set()
        self.connected_workers = 0
        self.idle_workers = 0
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                server._serve(self.request)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self._tcp = socketserver.ThreadingTCPServer(("0.0.0.0", 0), Handler)
        self._tcp.daemon_threads = True
        self.port = self._tcp.server_address[1]
        self._serving: Optional[threading.Thread] = None

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
        try:
            while True:
                try:
                    frames = protocol.recv_stream(conn)
                except ConnectionError:
                    return
                kind, data = protocol.decode(self.key, frames)
                if kind == Kind.FETCH and isinstance(data, dict):
                    if worker_job is None:
                        worker_job = str(data.get("worker", ""))
                        with self._lock:
                            self.connected_workers += 1
                    holding = self._next_packed(conn, worker_job)
                    if holding is None:
                        return
                elif kind == Kind.FETCH:
                    with self._lock:
                        self._unstarted_large.discard(data)
                        reply: Any = self._payloads.get(data)
                    self._send(conn, Kind.PAYLOAD, reply)
                elif kind == Kind.RESULT and worker_job is not None:
                    task_id, outcome = data
                    holding = None
                    with self._lock:
                        self._running_packed.pop(task_id, None)
                    self.emit("packed_done", task_id, outcome)
                    holding = self._next_packed(conn, worker_job)  # the answer is the next task: one round trip
                    if holding is None:
                        return
                elif kind == Kind.RESULT:
                    task_id, outcome = data
                    with self._lock:
                        if task_id in self._payloads:
                            self._outcomes[task_id] = outcome
                    self._send(conn, Kind.ACK)
        except protocol.AuthenticationError as exc:
            logger.warning("dropped a runner connection: %s", exc)
        except OSError as exc:
            logger.warning("runner connection failed: %s", exc)
        finally:
            if holding is not None:
                self.emit("packed_lost", holding, worker_job, "its packing worker died while running it")
            if worker_job is not None:
                with self._lock:
                    self.connected_workers -= 1

    def _send(self, conn: Any, kind: str, data: Any = None) -> None:
        protocol.send_stream(conn, protocol.encode(self.key, kind, data))

    def _next_packed(self, conn: Any, worker_job: str) -> Optional[int]:
        """Give a worker its next task, or tell it to exit; return the task id."""
        idle_since = time.monotonic()
        with self._lock:
            self.idle_workers += 1
        try:
            while True:
                if self.large_waiting or time.monotonic() - idle_since > self.idle_timeout:
                    self._send(conn, Kind.EXIT)
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
                self._send(conn, Kind.PAYLOAD, (task_id, payload))
                return task_id
        finally:
            with self._lock:
                self.idle_workers -= 1
