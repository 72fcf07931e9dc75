"""Messages between the driver-side executor, the manager and the runners.

One module, imported by all three programs, so the wire format has exactly one
definition. It loads in every Flux job, so it imports only small C modules of
the standard library: ``_pickle`` rather than ``pickle``, SHA-256 and a
constant-time compare rather than ``hmac``/``hashlib`` (which load OpenSSL),
plain string constants rather than ``enum``, and no ``typing``. Together these
save about 25 ms of start-up per Flux job, a third of a no-op job's cost here.

Trust (docs/reference/trust.md says what holds):

* Keys. The executor holds a master secret; block ``N`` gets
  ``block_key(master, N)``, handed over in a 0600 file (never on a command line
  or in a file others can read); the manager's connection is admitted with
  credentials derived from it (:mod:`parsl_flux.wire.zap`). Over TCP (multi-node
  blocks) the manager makes a fresh runner key and a Flux job gets only
  :func:`task_credential` of its own task id, packing workers the worker
  credential; over AF_UNIX a job gets no key at all (below).
* Driver <-> manager (ZMQ). A manager opens with :func:`hello` (block id and a
  nonce, MAC'd with the block key); the driver answers :func:`welcome` with its
  own nonce, proving it holds the key too; both then derive a session key from
  the two nonces (:class:`Session`). Every later message carries a sequence
  number and its direction inside the MAC, so a captured frame cannot be
  replayed, reflected or moved to another connection, and the driver binds a
  block to a connection only after a valid session message: an identity cannot
  be squatted. The channel is encrypted with CurveZMQ across hosts (executor).
* Runner <-> manager (:class:`Stream`). One-node blocks: an AF_UNIX socket
  in a directory only the workflow's user can enter; the kernel names the
  connecting process, and the task server maps it to its Flux job
  (:mod:`parsl_flux.allocation.peers`). No credential is in any jobspec or environment
  there, so none can be stolen; messages are framed with
  :data:`PEER_VERIFIED` as their key. Multi-node blocks: TCP, and each job
  signs with :func:`task_credential` of its own task. The task server sends a
  fresh nonce on accept; every message has a fixed-size header (kind,
  principal, sequence, body length) whose MAC is checked *before* the body is
  read, and a second MAC over the body. Nothing is unpickled before both
  checks pass.
"""

import os
from time import monotonic
from _operator import _compare_digest as compare_digest

import _pickle
import _socket

try:
    from _sha2 import sha256  # CPython >= 3.12
except ImportError:  # pragma: no cover - depends on the interpreter
    try:
        from _sha256 import sha256  # CPython 3.10, 3.11
    except ImportError:
        from hashlib import sha256

VERSION = b"parsl-flux/6"
"""Wire version; 6: a task payload carries its function's own pickle (:func:`parsl_flux.wire.payload.dumps_task`)."""

KEY_FILE_ENV = "PARSL_FLUX_KEY_FILE"
"""Environment variable naming the 0600 file that holds the block key (hex).

A path rather than the key itself: the submit script, ``ps`` and the
environment of the broker and of every job then show nothing secret."""

KEY_ENV = "PARSL_FLUX_KEY"
"""The block key itself (hex), only for blocks that share no filesystem with the
driver (``FluxExecutor(key_in_command=True)``, Kubernetes pods): whoever can
read the job's definition can read it, which docs/reference/trust.md says."""

SECRET_ENV = "PARSL_FLUX_SECRET"
"""Environment variable holding the executor's master secret (hex), for blocks
started outside Parsl (Kubernetes Secret): the manager derives its block key."""

RUNNER_KEY_ENV = "PARSL_FLUX_RUNNER_KEY"
"""A Flux job's own credential (hex): :func:`task_credential` of its task.
Only for TCP task servers (multi-node blocks); absent over AF_UNIX."""
RUNNER_URL_ENV = "PARSL_FLUX_RUNNER_URL"
"""Where runners reach the task server: ``HOST:PORT``, or ``unix:PATH``."""
UNIX_PREFIX = "unix:"
PEER_VERIFIED = b""
"""The key of :class:`Stream` messages on an AF_UNIX task server, where the
kernel, not a MAC, says who the peer is: the MAC then only frames."""
TASK_ENV = "PARSL_FLUX_TASK"
MAX_BYTES_ENV = "PARSL_FLUX_MAX_MESSAGE_BYTES"

PICKLE_PROTOCOL = 5  # pickle.HIGHEST_PROTOCOL on Python >= 3.8
NONCE_BYTES = 16
WORKER = -1
"""Principal of packing workers (task ids are >= 0)."""

DEFAULT_MAX_MESSAGE_BYTES = 256 << 20
"""Largest payload or result: bigger ones are refused with a clear error."""


class Kind:
    """Message kinds (plain strings). Direction: driver (D), manager (M), runner (R)."""

    HELLO = "hello"          # M->D: block id + nonce (block key)
    WELCOME = "welcome"      # D->M: nonce (block key); a session starts
    REGISTER = "register"    # M->D: resources, flux version, hostname, Python and parsl-flux versions
    RESUME = "resume"        # M->D: instead of REGISTER after a reconnect: the tasks it holds (resume.py)
    DEGRADED = "degraded"    # M->D: the instance lost broker ranks (nodes): no new work for it
    CONFIG = "config"        # D->M: answer to REGISTER (packing pool, Flux handle options, cwd)
    TASKS = "tasks"          # D->M: list of task dicts
    CANCEL = "cancel"        # D->M: list of task ids
    RESULTS = "results"      # M->D: list of result dicts
    HEARTBEAT = "heartbeat"  # both ways
    SHUTDOWN = "shutdown"    # D->M: drain and exit
    BYE = "bye"              # M->D: manager is exiting, with reason
    FETCH = "fetch"          # R->M: give me the payload of my task (workers: the next packed task)
    PAYLOAD = "payload"      # M->R: the payload (for packed tasks: (task id, payload))
    RESULT = "result"        # R->M: rank 0's outcome
    ACK = "ack"              # M->R; D->M: ids of the results received (resume.py); M->D: of the tasks received
    EXIT = "exit"            # M->R: a packing worker should exit (idle, or cores are wanted)


KINDS = frozenset(v for k, v in vars(Kind).items() if k.isupper())


# ---------------------------------------------------------------------------
# Message bodies: one constructor each, so every field written is one that a
# reader uses (plain dicts, pickled; no dataclasses: the runner stays lean).
def register_body(resources: dict, hostname: str, pid: int, flux_uri: str, flux_version: str,
                  versions: dict) -> dict:
    """M->D REGISTER: the instance's size (``InstanceResources.to_wire()``),
    where it runs (the driver logs all of it) and the block's Python and
    parsl-flux versions (:func:`parsl_flux.wire.versions.this_side`), which the
    driver checks before it sends any task."""
    return {"resources": resources, "hostname": hostname, "pid": pid, "flux_uri": flux_uri,
            "flux_version": flux_version, "versions": versions}


def resume_body(tasks: list, done: list) -> dict:
    """M->D RESUME: task ids the manager still runs or holds, and those whose
    results it sends again (unacknowledged)."""
    return {"tasks": tasks, "done": done}


def degraded_body(ranks: str, hosts: list, reason: str) -> dict:
    """M->D DEGRADED: the broker ranks (an idset) the instance lost, their hosts, and why."""
    return {"ranks": ranks, "hosts": hosts, "reason": reason}


def bye_body(reason: str) -> dict:
    """M->D BYE: the manager is ending its block, and why."""
    return {"reason": reason}


def config_body(packing_workers: int, idle_timeout: float, handle_kwargs: dict, max_message_bytes: int,
                cwd: str) -> dict:
    """D->M CONFIG: how the manager runs its block (``packing_workers`` -1: all cores)."""
    return {"packing_workers": packing_workers, "idle_timeout": idle_timeout, "handle_kwargs": handle_kwargs,
            "max_message_bytes": max_message_bytes, "cwd": cwd}


# Blobs: an app's payload or result as pickle protocol 5 makes it, a list
# ``[stream, *buffers]``: the pickle stream and the out-of-band buffers it
# names (a numpy array's data, ...). Messages carry a blob's parts as buffers
# of their own (:func:`out_of_band`), so an array is never copied into a pickle,
# joined to a message or hashed twice: each hop sends the parts where they lie
# and receives each into one buffer of its own.
def out_of_band(blob: list) -> list:
    """``blob``'s parts wrapped to travel out of band when the message holding them is sealed."""
    return [_pickle.PickleBuffer(part) for part in blob]


def blob_size(blob: list) -> int:
    """Bytes in all parts of a blob."""
    return sum(memoryview(part).nbytes for part in blob)


def task_body(task_id: int, payload: list, shape: dict, packable: bool) -> dict:
    """One entry of D->M TASKS (``payload``: a blob; ``shape``: ``JobShape.to_wire()``)."""
    return {"id": task_id, "payload": out_of_band(payload), "shape": shape, "packable": packable}


# Runner <-> task server (over :class:`Stream`). A task's own job fetches its
# payload and sends its outcome; a packing worker (principal ``WORKER``)
# fetches its first task, and each result it sends is answered with its next.
def fetch_body(task_id: int, worker_job: str = "") -> dict:
    """R->M FETCH: ``task_id``'s payload, or (``task_id`` ``WORKER``) a packing
    worker's first task; ``worker_job``: the worker's ``FLUX_JOB_ID``."""
    return {"task": task_id, "worker": worker_job}


def payload_body(task_id: int, payload: "list | None") -> dict:
    """M->R PAYLOAD: what task ``task_id`` runs (a blob's parts; None: withdrawn, as by a cancel)."""
    return {"task": task_id, "payload": payload}


def runner_result_body(task_id: int, outcome: dict) -> dict:
    """R->M RESULT: the outcome of ``task_id`` from its rank 0 or its packing worker."""
    return {"task": task_id, "outcome": outcome}


# What became of a task: built here only, read by the driver (executor._resolve)
# and, for ``raised``, by the runner's other ranks.
VALUE = "value"            # the app returned; "value": its pickle (a blob)
RAISED = "raised"          # the app raised; "type", "message", "traceback", "exception" (pickle or None)
CANCELLED = "cancelled"    # cancelled before or while it ran
JOB_FAILED = "job_failed"  # its Flux job failed; "status", "jobid" (f58 or None), "stderr" (tail)
NODE_LOST = "node_lost"    # its Flux job failed because a node of the instance died; fields as JOB_FAILED


def outcome_value(value: list) -> dict:
    """The app returned ``value`` (a blob)."""
    return {"outcome": VALUE, "value": out_of_band(value)}


def outcome_raised(type_name: str, message: str, traceback: str, exception: "bytes | None") -> dict:
    return {"outcome": RAISED, "type": type_name, "message": message, "traceback": traceback,
            "exception": exception}


def outcome_cancelled() -> dict:
    return {"outcome": CANCELLED}


def outcome_job_failed(status: str, jobid: "str | None" = None, stderr: str = "") -> dict:
    return {"outcome": JOB_FAILED, "status": status, "jobid": jobid, "stderr": stderr}


def outcome_node_lost(status: str, jobid: "str | None" = None, stderr: str = "") -> dict:
    """The job died with a node of the instance: not the app's fault, so the
    driver fails it as a lost block (Parsl retries it elsewhere)."""
    return {"outcome": NODE_LOST, "status": status, "jobid": jobid, "stderr": stderr}


def with_monitoring(outcome: dict, messages: list) -> dict:
    """``outcome`` with the pickled messages of Parsl's monitoring wrapper (see
    :mod:`parsl_flux.driver.monitoring`), which the driver hands to Parsl's radio."""
    return {**outcome, "monitoring": messages}


def outcome_bytes(outcome: dict) -> int:
    """Rough wire size of an outcome, for keeping RESULTS messages under the limit."""
    return (blob_size(outcome.get("value") or []) + len(outcome.get("exception") or b"")
            + sum(len(m) for m in outcome.get("monitoring") or ()) + 4096)


def result(task_id: int, outcome: dict) -> dict:
    """One entry of M->D RESULTS: a runner's outcome, its value sent on out of band."""
    if outcome.get("value") is not None:
        outcome = {**outcome, "value": out_of_band(outcome["value"])}
    return {**outcome, "id": task_id}
TO_DRIVER = b"M2D"
TO_MANAGER = b"D2M"
TO_SERVER = b"R2M"
TO_RUNNER = b"M2R"


class AuthenticationError(Exception):
    """A message failed the version, sequence or MAC check and was not unpickled."""


class MessageTooLarge(Exception):
    """A frame is larger than the agreed limit; it was not read."""


def new_secret() -> bytes:
    """A fresh 32-byte secret."""
    return os.urandom(32)


_BLOCK = 64  # SHA-256 block size
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


FAST_MAC_BYTES = 1 << 18
"""From this many bytes on, a MAC is computed by OpenSSL (``_hashlib``):
about 8x the speed of the built-in SHA-256 here (1.4 GB/s against 0.18),
which made the MAC, not the copies, the cost of moving an array. Smaller
messages keep the built-in one, whose import is free (``_hashlib`` costs a
Flux job ~6 ms, paid only by the jobs that move that much data)."""


def _openssl_hmac(key: bytes) -> "object | None":
    """An OpenSSL HMAC-SHA256 object, or None where Python has no ``_hashlib``."""
    try:
        from _hashlib import hmac_new
    except ImportError:  # pragma: no cover - a Python built without OpenSSL
        return None
    return hmac_new(key, digestmod="sha256")


def hmac_sha256(key: bytes, *parts: "bytes | bytearray | memoryview") -> bytes:
    """HMAC-SHA256 (RFC 2104) of the concatenation of ``parts``, equal to
    ``hmac.new(key, b"".join(parts), 'sha256').digest()``; the parts are
    hashed where they lie, never joined (an array is not copied to be MAC'd)."""
    mac = _openssl_hmac(key) if sum(memoryview(p).nbytes for p in parts) >= FAST_MAC_BYTES else None
    if mac is None:
        if len(key) > _BLOCK:
            key = sha256(key).digest()
        key = key.ljust(_BLOCK, b"\0")
        mac = sha256(key.translate(_IPAD))
        for part in parts:
            mac.update(part)
        return sha256(key.translate(_OPAD) + mac.digest()).digest()
    for part in parts:
        mac.update(part)
    return mac.digest()


def block_key(master: bytes, block_id: str) -> bytes:
    """Derive the key of one block from the executor's master secret."""
    return hmac_sha256(master, b"block:" + block_id.encode())


def task_credential(runner_key: bytes, principal: int) -> bytes:
    """The key a Flux job signs with: per task id, or :data:`WORKER` for packing workers."""
    return hmac_sha256(runner_key, b"principal:" + str(principal).encode())


def _int8(n: int) -> bytes:
    return n.to_bytes(8, "big", signed=True)


# ---------------------------------------------------------------------------
# Driver <-> manager handshake and sessions (ZMQ multipart frames).
def hello(key: bytes, block_id: str, nonce: bytes) -> list:
    """Frames of the manager's opening message."""
    bid = block_id.encode()
    return [VERSION, Kind.HELLO.encode(), bid, nonce, hmac_sha256(key, TO_DRIVER + b"hello" + bid + nonce)]


def open_hello(frames: list) -> tuple:
    """``(block_id, nonce, mac)`` of a hello, unverified (the block id picks the key)."""
    if len(frames) != 5 or bytes(frames[0]) != VERSION or bytes(frames[1]) != Kind.HELLO.encode():
        raise AuthenticationError("not a hello")
    bid, nonce, mac = (bytes(f) for f in frames[2:])
    if len(nonce) != NONCE_BYTES or len(bid) > 64:
        raise AuthenticationError("malformed hello")
    return bid.decode(errors="replace"), nonce, mac


def check_hello(key: bytes, block_id: str, nonce: bytes, mac: bytes) -> None:
    if not compare_digest(mac, hmac_sha256(key, TO_DRIVER + b"hello" + block_id.encode() + nonce)):
        raise AuthenticationError("bad hello authentication code")


def welcome(key: bytes, manager_nonce: bytes, driver_nonce: bytes) -> list:
    """Frames of the driver's answer to a valid hello."""
    return [VERSION, Kind.WELCOME.encode(), driver_nonce,
            hmac_sha256(key, TO_MANAGER + b"welcome" + manager_nonce + driver_nonce)]


def open_welcome(key: bytes, manager_nonce: bytes, frames: list) -> bytes:
    """The driver's nonce from a welcome, after checking the driver holds ``key``."""
    if len(frames) != 4 or bytes(frames[0]) != VERSION or bytes(frames[1]) != Kind.WELCOME.encode():
        raise AuthenticationError("not a welcome")
    driver_nonce, mac = bytes(frames[2]), bytes(frames[3])
    if not compare_digest(mac, hmac_sha256(key, TO_MANAGER + b"welcome" + manager_nonce + driver_nonce)):
        raise AuthenticationError("bad welcome authentication code")
    return driver_nonce


def _dump(data: object) -> "tuple[bytes, list]":
    """``data`` pickled: the stream, and the raw parts of its out-of-band buffers."""
    buffers: list = []
    body = _pickle.dumps(data, protocol=PICKLE_PROTOCOL, buffer_callback=buffers.append)
    return body, [b.raw() for b in buffers]


def _lengths(parts: list) -> bytes:
    """The parts' sizes, MAC'd with them: bytes cannot move from one part to the next."""
    return b"".join(_int8(memoryview(p).nbytes) for p in parts)


def guarded_path(encrypted: bool, host: str) -> bool:
    """True when no third party can change a driver-manager frame in transit:
    CurveZMQ authenticates every frame (Poly1305), and a loopback connection has
    no one on its path (injecting into it takes root). Both ends decide this
    from what they see (the manager its URL and server key, the driver the
    peer's address and its socket), so a disagreement fails the first message
    that has buffers, never silently."""
    return encrypted or host == "::1" or host == "localhost" or host.startswith("127.")


class Session:
    """One authenticated driver-manager conversation.

    Frames ``[VERSION, kind, seq, body, *buffers, mac]`` with
    ``mac = HMAC(session key, direction + VERSION + kind + seq + sizes + body + buffers)``;
    ``buffers`` are the out-of-band buffers of ``body`` (blobs' parts, see
    :func:`out_of_band`), each a frame of its own; ``seq`` counts up by one per
    message and direction, so each frame is accepted once, in order, in one
    direction, on one session. Frames may be any bytes-like objects (zero-copy
    ZMQ frames' buffers): they are hashed and unpickled where they lie.

    On a :func:`guarded_path` (``mac_buffers=False``) the MAC covers the
    message's own pickle (kind, ids, shapes, sizes) but not the bytes of its
    buffers (payloads and results): there, what a MAC would add the transport
    already gives (Curve's per-frame authentication, or a loopback path no
    third party is on), and hashing an array four times (seal and open, both
    ways) cost about as much as every copy of it together. Elsewhere
    (``encrypt=False`` across hosts) every byte is MAC'd.
    """

    def __init__(self, key: bytes, manager_nonce: bytes, driver_nonce: bytes, outgoing: bytes,
                 incoming: bytes, mac_buffers: bool = True) -> None:
        self.key = hmac_sha256(key, b"session" + manager_nonce + driver_nonce)
        self.manager_nonce = manager_nonce
        self.outgoing, self.incoming = outgoing, incoming
        self.mac_buffers = mac_buffers
        self.sent = 0
        self.received = 0

    def _mac(self, direction: bytes, k: bytes, seq: bytes, parts: list) -> bytes:
        covered = parts if self.mac_buffers else parts[:1]
        return hmac_sha256(self.key, direction, VERSION, k, seq, _lengths(parts), *covered)

    def seal(self, kind: str, data: object = None) -> list:
        k = kind.encode()
        seq = _int8(self.sent)
        self.sent += 1
        body, buffers = _dump(data)
        parts = [body, *buffers]
        return [VERSION, k, seq, *parts, self._mac(self.outgoing, k, seq, parts)]

    def open(self, frames: list) -> tuple:
        """``(kind, data)``; raises :class:`AuthenticationError` without unpickling."""
        if len(frames) < 5:
            raise AuthenticationError(f"expected at least 5 frames, got {len(frames)}")
        version, k, seq = (bytes(f) for f in frames[:3])
        parts, mac = frames[3:-1], bytes(frames[-1])
        if version != VERSION:
            raise AuthenticationError(f"unsupported protocol version {version[:32]!r}")
        if not compare_digest(mac, self._mac(self.incoming, k, seq, parts)):
            raise AuthenticationError("bad message authentication code")
        if seq != _int8(self.received):
            raise AuthenticationError(f"out-of-order or replayed message (seq {int.from_bytes(seq, 'big')}, "
                                      f"expected {self.received})")
        kind = k.decode(errors="replace")
        if kind not in KINDS:
            raise AuthenticationError(f"unknown message kind {k[:32]!r}")
        self.received += 1
        return kind, _pickle.loads(parts[0], buffers=parts[1:])


def manager_session(key: bytes, manager_nonce: bytes, driver_nonce: bytes, mac_buffers: bool = True) -> Session:
    return Session(key, manager_nonce, driver_nonce, TO_DRIVER, TO_MANAGER, mac_buffers)


def driver_session(key: bytes, manager_nonce: bytes, driver_nonce: bytes, mac_buffers: bool = True) -> Session:
    return Session(key, manager_nonce, driver_nonce, TO_MANAGER, TO_DRIVER, mac_buffers)


# ---------------------------------------------------------------------------
# Runner <-> manager transport: plain stream sockets, so that each Flux job
# imports only the standard library (pyzmq costs ~60 ms of start-up per job).
#   header = kind (16 bytes, NUL-padded) + principal (8) + seq (8) + parts (8) + total bytes (8) + MAC (32)
#   then the parts' sizes (8 each), the parts (the pickle, then its out-of-band
#   buffers), then MAC(credential, header MAC + sizes + parts)
_KIND_BYTES = 16
_HEADER_FIELDS = _KIND_BYTES + 32
HEADER_BYTES = _HEADER_FIELDS + 32
MAX_PARTS = 1 << 16
"""Most parts (a pickle and its out-of-band buffers) one runner message may have."""
_IOV_MAX = 512  # parts per sendmsg call (Linux allows 1024)


def recv_buffer(sock: "_socket.socket", n: int, deadline: "float | None" = None) -> bytearray:
    """Read exactly ``n`` bytes into a buffer of their own (written once, by the
    kernel); with ``deadline`` (``time.monotonic``), all of them by then
    (``TimeoutError``), however slowly the peer trickles them."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        if deadline is not None:
            left = deadline - monotonic()
            if left <= 0:
                raise TimeoutError(f"{got} of {n} bytes before the deadline")
            sock.settimeout(left)
        k = sock.recv_into(view[got:])
        if not k:
            raise ConnectionError("peer closed the connection")
        got += k
    return buf


def recv_exact(sock: "_socket.socket", n: int, deadline: "float | None" = None) -> bytes:
    """:func:`recv_buffer`, as bytes (for headers, nonces and MACs)."""
    return bytes(recv_buffer(sock, n, deadline))


def send_parts(sock: "_socket.socket", parts: list) -> None:
    """Send ``parts`` in order with scatter-gather writes: none is joined or copied."""
    views = [v for v in (memoryview(p).cast("B") for p in parts) if v.nbytes]
    while views:
        sent = sock.sendmsg(views[:_IOV_MAX])
        while sent:
            if sent >= views[0].nbytes:
                sent -= views.pop(0).nbytes
            else:
                views[0] = views[0][sent:]
                sent = 0


def _body_mac(credential: bytes, *parts: "bytes | bytearray | memoryview") -> bytes:
    """The MAC of a message's body; none over AF_UNIX (:data:`PEER_VERIFIED`),
    where the kernel names the peer and a stream socket keeps the bytes whole:
    hashing an array there would protect nothing against anyone."""
    return bytes(32) if credential == PEER_VERIFIED else hmac_sha256(credential, *parts)


class Stream:
    """One side of a runner connection: fixed header, MAC'd before the body is read.

    Parameters
    ----------
    sock : socket
        The connected stream socket.
    nonce : bytes
        The task server's per-connection nonce (sent in the clear on accept).
    outgoing, incoming : bytes
        Direction labels (:data:`TO_SERVER`, :data:`TO_RUNNER`).
    max_bytes : int
        Largest body accepted; a bigger one is refused before it is read.

    Attributes
    ----------
    deadline : float or None
        While set (``time.monotonic``), every read must be complete by then:
        the task server gives an unauthenticated peer one overall deadline,
        not a timeout per read that a trickle of bytes would renew.
    """

    def __init__(self, sock: "_socket.socket", nonce: bytes, outgoing: bytes, incoming: bytes,
                 max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.sock = sock
        self.nonce = nonce
        self.outgoing, self.incoming = outgoing, incoming
        self.max_bytes = max_bytes
        self.sent = 0
        self.received = 0
        self.deadline: "float | None" = None

    def send(self, credential: bytes, principal: int, kind: str, data: object = None) -> None:
        body, buffers = _dump(data)
        parts = [body, *buffers]
        sizes = _lengths(parts)
        fields = (kind.encode().ljust(_KIND_BYTES, b"\0") + _int8(principal) + _int8(self.sent)
                  + _int8(len(parts)) + _int8(blob_size(parts)))
        self.sent += 1
        head_mac = hmac_sha256(credential, self.outgoing, VERSION, self.nonce, fields)
        send_parts(self.sock, [fields + head_mac + sizes, *parts, _body_mac(credential, head_mac, sizes, *parts)])

    def recv_header(self) -> tuple:
        """``(principal, raw header)`` of the next message; nothing verified yet."""
        head = recv_exact(self.sock, HEADER_BYTES, self.deadline)
        return int.from_bytes(head[_KIND_BYTES:_KIND_BYTES + 8], "big", signed=True), head

    def recv_body(self, credential: bytes, head: bytes) -> tuple:
        """Check the header's MAC, then read and check the body: ``(kind, data)``."""
        fields, head_mac = head[:_HEADER_FIELDS], head[_HEADER_FIELDS:]
        if not compare_digest(head_mac, hmac_sha256(credential, self.incoming, VERSION, self.nonce, fields)):
            raise AuthenticationError("bad header authentication code")
        seq, count, total = (int.from_bytes(fields[i:i + 8], "big", signed=True)
                             for i in range(_KIND_BYTES + 8, _HEADER_FIELDS, 8))
        if seq != self.received:
            raise AuthenticationError(f"out-of-order or replayed message (seq {seq}, expected {self.received})")
        if not 0 <= total <= self.max_bytes:
            raise MessageTooLarge(f"message body of {total} bytes exceeds the limit of {self.max_bytes}")
        if not 1 <= count <= MAX_PARTS:
            raise AuthenticationError(f"a message of {count} parts")
        sizes = recv_exact(self.sock, 8 * count, self.deadline)
        lengths = [int.from_bytes(sizes[i:i + 8], "big", signed=True) for i in range(0, len(sizes), 8)]
        if min(lengths) < 0 or sum(lengths) != total:
            raise AuthenticationError("part sizes do not add up to the header's total")
        parts = [recv_buffer(self.sock, n, self.deadline) for n in lengths]
        if not compare_digest(recv_exact(self.sock, 32, self.deadline),
                              _body_mac(credential, head_mac, sizes, *parts)):
            raise AuthenticationError("bad body authentication code")
        kind = fields[:_KIND_BYTES].rstrip(b"\0").decode(errors="replace")
        if kind not in KINDS:
            raise AuthenticationError(f"unknown message kind {kind[:32]!r}")
        self.received += 1
        return kind, _pickle.loads(parts[0], buffers=parts[1:])

    def recv(self, credential: bytes) -> tuple:
        return self.recv_body(credential, self.recv_header()[1])
