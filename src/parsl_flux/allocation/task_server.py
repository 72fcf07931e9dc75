"""The manager's task server: where runners fetch payloads and return results.

Runners connect over a plain stream socket (:class:`parsl_flux.wire.protocol.Stream`)
so that a Flux job imports nothing heavy. One thread per connection: a one-task
runner connects for two short exchanges; a packing worker keeps its connection
for its whole life.

Who may connect, and as whom:

* One-node block (``unix=True``): an AF_UNIX socket in a fresh 0700
  directory, so the OS refuses every other user before we see a byte. The
  peer's pid (``SO_PEERCRED``) is mapped to its Flux job
  (:func:`parsl_flux.allocation.peers.flux_job_of`) and the job to the task it was
  submitted for (:meth:`TaskServer.bind`); the connection then speaks for that
  task only. Jobs get no credential: a task that reads another job's jobspec
  or environment finds nothing it could use.
* Multi-node block (TCP on the node's address): each job signs with its own
  task's credential. A stranger on the port is bounded: unauthenticated
  connections are capped per peer address and in total
  (:class:`parsl_flux.allocation.peers.Admission`), each must authenticate within
  ``HANDSHAKE_TIMEOUT`` seconds overall (a byte now and then does not extend
  it), the MAC of a fixed-size header is checked before any body is read, and
  rejects are logged at a limited rate.

Either way the listen backlog is the system's maximum, so a burst of runners
queues instead of being refused, and a runner retries connecting (bounded).

Packing mode lives here too: packed tasks wait in a queue that workers drain.
An idle worker is told to exit after ``idle_timeout`` seconds, and at once
while a Flux job of a large (MPI/GPU/multi-core) task waits for resources, so
the workers' cores go back to Flux.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import socket
import socketserver
import tempfile
import threading
import time
from typing import Any, Callable, Dict, Optional, Set, Tuple

from parsl_flux.allocation.events import Event, PackedDone, PackedLost, ResultIn
from parsl_flux.allocation.peers import Admission, peer_credentials
from parsl_flux.wire import protocol
from parsl_flux.wire.protocol import Kind
from parsl_flux.wire.rejects import RejectLog

logger = logging.getLogger(__name__)

POLL = 0.2
HANDSHAKE_TIMEOUT = 10.0
"""Seconds a new connection has, in all, to send its first authenticated message."""
BIND_WAIT = 30.0
"""Seconds a runner's connection waits for its job id to be bound to its task
(the submit answer and the job's start race)."""
DEFAULT_MAX_CONNECTIONS = 1024
PER_PEER_UNAUTHENTICATED = 32
"""Unauthenticated TCP connections one address may hold at once."""


class _Refused(Exception):
    """A runner asked for something its principal may not have."""


class _Admitting:
    """Socketserver mix-in: a thread per connection, if :class:`Admission` has a slot for its peer."""

    daemon_threads = True
    request_queue_size = socket.SOMAXCONN  # a burst of runners queues in the kernel; 5 refused them
    owner: "TaskServer"

    def process_request(self, request: Any, client_address: Any) -> None:
        peer = self.owner.peer_name(client_address)
        if not self.owner.admission.enter(peer):
            self.owner.rejects.reject("task server: refused a connection from %s: too many unauthenticated "
                                      "connections", peer)
            self.shutdown_request(request)  # type: ignore[attr-defined]
            return
        try:
            super().process_request(request, (peer, client_address))  # type: ignore[misc]
        except BaseException:
            self.owner.admission.leave(peer)
            raise


class _TCPServer(_Admitting, socketserver.ThreadingTCPServer):
    allow_reuse_address = True


class _UnixServer(_Admitting, socketserver.ThreadingUnixStreamServer):
    pass


class TaskServer:
    """Payloads and outcomes of the tasks in flight, served to runners.

    Parameters
    ----------
    key : bytes
        Runner key of this instance; over TCP each principal signs with
        :func:`~parsl_flux.wire.protocol.task_credential` of it.
    emit : callable
        ``emit(event)`` hands an event to the manager's main loop:
        :class:`~parsl_flux.allocation.events.PackedDone`,
        :class:`~parsl_flux.allocation.events.PackedLost` or
        :class:`~parsl_flux.allocation.events.ResultIn`.
    host : str
        TCP address to listen on (multi-node blocks: this node's).
    identify : callable, optional
        ``identify(pid) -> Flux job id or None``: listen on AF_UNIX instead of
        TCP, and serve a process only as the principal its job is bound to.
    idle_timeout : float
        Seconds an idle packing worker waits for work before it exits.
    max_connections : int
        Unauthenticated connections served at once.
    max_bytes : int
        Largest message body accepted from a runner.
    """

    def __init__(self, key: bytes, emit: Callable[[Event], None], host: str = "127.0.0.1",
                 identify: Optional[Callable[[int], Optional[int]]] = None, idle_timeout: float = 5.0,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 max_bytes: int = protocol.DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.key = key
        self.emit = emit
        self.identify = identify
        self.idle_timeout = idle_timeout
        self.max_bytes = max_bytes
        self._worker_credential = protocol.task_credential(key, protocol.WORKER)
        self._lock = threading.Lock()
        self._bound = threading.Condition(self._lock)
        self._jobs: Dict[int, int] = {}  # Flux job id -> principal (AF_UNIX mode)
        self._payloads: Dict[int, list] = {}  # blobs, ready to send on out of band
        self._outcomes: Dict[int, Dict[str, Any]] = {}
        self._packed: "queue.SimpleQueue[int]" = queue.SimpleQueue()
        self._queued_packed = 0
        self._running_packed: Dict[int, str] = {}  # task id -> worker's Flux job id
        self._unstarted_large: Set[int] = set()
        self.connected_workers = 0
        self.idle_workers = 0
        self.rejects = RejectLog(logger)
        self.admission = Admission(max_connections, max_connections if identify else
                                   min(max_connections, PER_PEER_UNAUTHENTICATED))
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                server._serve(self.request, self.client_address[0])

        self._socket_dir: Optional[str] = None
        self._server: socketserver.BaseServer
        if identify is not None:
            # 0700: no other user may enter; /tmp when $TMPDIR is too long for a socket path (108 bytes)
            self._socket_dir = tempfile.mkdtemp(prefix="parsl-flux-",
                                                dir=None if len(tempfile.gettempdir()) < 64 else "/tmp")
            path = os.path.join(self._socket_dir, "tasks.sock")
            self._server = _UnixServer(path, Handler)
            self.url = protocol.UNIX_PREFIX + path
        else:
            self._server = _TCPServer((host, 0), Handler)
            self.url = f"{host}:{self._server.server_address[1]}"
        self._server.owner = self  # type: ignore[attr-defined]
        self._serving: Optional[threading.Thread] = None

    @property
    def unix(self) -> bool:
        """True when runners connect over AF_UNIX and are identified by their Flux job."""
        return self.identify is not None

    def peer_name(self, client_address: Any) -> str:
        """The address a connection's caps are counted under."""
        return "unix" if self.unix else str(client_address[0])

    def bind(self, jobid: int, principal: int) -> None:
        """Flux job ``jobid`` runs ``principal`` (task id, or WORKER): serve its processes as that."""
        with self._bound:
            self._jobs[jobid] = principal
            self._bound.notify_all()

    def unbind(self, jobid: int) -> None:
        """Flux job ``jobid`` ended."""
        with self._lock:
            self._jobs.pop(jobid, None)

    def _principal_of_job(self, jobid: int) -> Optional[int]:
        with self._bound:
            self._bound.wait_for(lambda: jobid in self._jobs, timeout=BIND_WAIT)
            return self._jobs.get(jobid)

    def credential(self, principal: int) -> Optional[bytes]:
        """The key a Flux job of ``principal`` (task id, or WORKER) gets; None
        over AF_UNIX, where the kernel identifies the job and no key is handed out."""
        if self.unix:
            return None
        return self._credential(principal)

    def _credential(self, principal: int) -> bytes:
        if self.unix:
            return protocol.PEER_VERIFIED
        if principal == protocol.WORKER:
            return self._worker_credential
        return protocol.task_credential(self.key, principal)

    # ---------------------------------------------------------- main thread
    def start(self) -> None:
        self._serving = threading.Thread(target=self._server.serve_forever, name="task-server", daemon=True)
        self._serving.start()

    def stop(self) -> None:
        if self._serving is not None:  # shutdown() waits for serve_forever, which must be running
            self._server.shutdown()
        self._server.server_close()
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
        self.rejects.flush()

    def add(self, task_id: int, payload: list, packed: bool) -> None:
        """Make a task's payload (a blob) available; packed tasks go to the worker queue."""
        with self._lock:
            self._payloads[task_id] = protocol.out_of_band(payload)
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
    def _serve(self, conn: Any, peer: str) -> None:
        holding: Optional[int] = None
        worker_job: Optional[str] = None  # set once the peer says it is a packing worker
        principal: Optional[int] = None
        admitted = True  # holds an Admission slot until it authenticates
        try:
            deadline = time.monotonic() + HANDSHAKE_TIMEOUT
            conn.settimeout(HANDSHAKE_TIMEOUT)
            nonce = os.urandom(protocol.NONCE_BYTES)
            conn.sendall(nonce)  # after it, a runner that is closed on fails at once instead of retrying
            jobid: Optional[int] = None
            verified: Optional[int] = None
            if self.unix:
                jobid, verified = self._identify(conn)
                self.admission.leave(peer)
                admitted = False
            stream = protocol.Stream(conn, nonce, protocol.TO_RUNNER, protocol.TO_SERVER, self.max_bytes)
            stream.deadline = deadline if verified is None else None
            while True:
                try:
                    claimed, head = stream.recv_header()
                except ConnectionError:
                    return
                expected = principal if principal is not None else verified  # None: TCP, before the first message
                if expected is not None and claimed != expected:
                    raise protocol.AuthenticationError(f"principal {claimed} claimed on a connection of {expected}")
                kind, data = stream.recv_body(self._credential(claimed), head)
                if principal is None:
                    principal = claimed
                    stream.deadline = None
                    conn.settimeout(None)  # authenticated: a runner may hold its connection for its app's run
                    if admitted:
                        self.admission.leave(peer)
                        admitted = False
                credential = self._credential(principal)
                if principal == protocol.WORKER:
                    if kind == Kind.FETCH and worker_job is None and data["task"] == protocol.WORKER:
                        worker_job = str(jobid if jobid is not None else data["worker"])
                        with self._lock:
                            self.connected_workers += 1
                    elif not (kind == Kind.RESULT and worker_job is not None and data["task"] == holding):
                        raise _Refused(f"a packing worker sent {kind} out of turn")
                    if kind == Kind.RESULT:
                        holding = None
                        with self._lock:
                            self._running_packed.pop(data["task"], None)
                        self.emit(PackedDone(data["task"], data["outcome"]))
                    # the answer to a result is the next task: one round trip
                    holding = self._next_packed(stream, credential, worker_job)
                    if holding is None:
                        return
                elif kind == Kind.FETCH and data["task"] == principal:
                    with self._lock:
                        self._unstarted_large.discard(principal)
                        payload = self._payloads.get(principal)
                    stream.send(credential, principal, Kind.PAYLOAD, protocol.payload_body(principal, payload))
                elif kind == Kind.RESULT and data["task"] == principal:
                    with self._lock:
                        if principal in self._payloads:
                            self._outcomes[principal] = data["outcome"]
                    stream.send(credential, principal, Kind.ACK)
                    self.emit(ResultIn(principal))
                else:
                    raise _Refused(f"task {principal}'s runner sent {kind} for {data!r:.40}")
        except (protocol.AuthenticationError, protocol.MessageTooLarge, _Refused,
                TypeError, ValueError, KeyError, IndexError) as exc:  # the last four: a malformed request
            self.rejects.reject("task server: dropped a runner connection: %s", exc)
        except OSError as exc:
            self.rejects.reject("task server: runner connection failed: %s", exc)
        finally:
            if admitted:
                self.admission.leave(peer)
            if holding is not None:
                self.emit(PackedLost(holding, worker_job, "its packing worker died while running it"))
            if worker_job is not None:
                with self._lock:
                    self.connected_workers -= 1

    def _identify(self, conn: Any) -> Tuple[int, int]:
        """``(Flux job id, principal)`` of the process at the other end of an AF_UNIX connection."""
        assert self.identify is not None
        pid, uid = peer_credentials(conn)
        if uid != os.geteuid():
            raise _Refused(f"process {pid} of uid {uid} is not this workflow's user")
        jobid = self.identify(pid)
        if jobid is None:
            raise _Refused(f"process {pid} is in no Flux job of this block")
        principal = self._principal_of_job(jobid)
        if principal is None:
            raise _Refused(f"process {pid} is in Flux job {jobid}, which runs no task of this block")
        return jobid, principal

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
                stream.send(credential, protocol.WORKER, Kind.PAYLOAD, protocol.payload_body(task_id, payload))
                return task_id
        finally:
            with self._lock:
                self.idle_workers -= 1
