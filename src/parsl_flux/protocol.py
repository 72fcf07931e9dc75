"""Messages between the driver-side executor, the manager and the runners.

One module, imported by all three programs, so the wire format has exactly one
definition. It imports only the standard library and is safe to load in every
Flux job.

Wire format: a ZMQ multipart message ``[VERSION, kind, body, mac]``.

* ``kind`` is one of the ``Kind`` values below (ASCII bytes).
* ``body`` is a pickle of plain Python data (dicts, lists, bytes, str, numbers).
  Application payloads inside it stay opaque ``bytes`` produced by cloudpickle.
* ``mac`` is HMAC-SHA256 over ``VERSION + kind + body`` with the block's key.

The receiver checks the version and the MAC *before* it unpickles anything, so a
peer that does not hold the key (a stranger connecting to the port) can make us
do nothing but drop its frames. Keys are per block: the executor holds one
master secret and gives each block ``block_key(master, block_id)``, so the
manager of one block cannot pose as another.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
import socket
import struct
from enum import Enum

# No ``typing`` import: this module loads in every Flux job, and annotations
# stay strings (``from __future__ import annotations``).

VERSION = b"parsl-flux/1"
KEY_ENV = "PARSL_FLUX_KEY"
"""Environment variable through which the manager receives its block key (hex).

An environment variable rather than an argument keeps the key out of ``ps``."""

SECRET_ENV = "PARSL_FLUX_SECRET"
"""Environment variable holding the executor's master secret (hex), for blocks
started outside Parsl: the manager then derives its own block key."""

RUNNER_KEY_ENV = "PARSL_FLUX_RUNNER_KEY"
RUNNER_URL_ENV = "PARSL_FLUX_RUNNER_URL"
TASK_ENV = "PARSL_FLUX_TASK"

_PICKLE_PROTOCOL = pickle.HIGHEST_PROTOCOL


class Kind(str, Enum):
    """Message kinds. Direction noted as driver (D), manager (M), runner (R)."""

    REGISTER = "register"    # M->D: block id, resources, flux version, uri
    CONFIG = "config"        # D->M: answer to REGISTER (packing pool, Flux handle options)
    TASKS = "tasks"          # D->M: list of task dicts
    CANCEL = "cancel"        # D->M: list of task ids
    RESULTS = "results"      # M->D: list of result dicts
    HEARTBEAT = "heartbeat"  # both ways
    SHUTDOWN = "shutdown"    # D->M: drain and exit
    BYE = "bye"              # M->D: manager is exiting, with reason
    FETCH = "fetch"          # R->M: give me the payload of task id (None: any packed task)
    PAYLOAD = "payload"      # M->R: the payload (for packed tasks: (task id, payload))
    RESULT = "result"        # R->M: rank 0's outcome
    ACK = "ack"              # M->R
    EXIT = "exit"            # M->R: a packing worker should exit (idle, or cores are wanted)


class AuthenticationError(Exception):
    """A message failed the version or MAC check and was not unpickled."""


def new_secret() -> bytes:
    """A fresh 32-byte master secret."""
    return os.urandom(32)


def block_key(master: bytes, block_id: str) -> bytes:
    """Derive the key of one block from the executor's master secret."""
    return hmac.new(master, b"block:" + block_id.encode(), hashlib.sha256).digest()


def _mac(key: bytes, kind: bytes, body: bytes) -> bytes:
    return hmac.new(key, VERSION + kind + body, hashlib.sha256).digest()


def encode(key: bytes, kind: Kind, data: object = None) -> list[bytes]:
    """Frames for one message, signed with ``key``."""
    k = kind.value.encode()
    body = pickle.dumps(data, protocol=_PICKLE_PROTOCOL)
    return [VERSION, k, body, _mac(key, k, body)]


def decode(key: bytes, frames: list[bytes]) -> tuple[Kind, object]:
    """Verify and unpack frames made by :func:`encode`.

    Raises
    ------
    AuthenticationError
        On a wrong frame count, version, kind or MAC. Nothing is unpickled then.
    """
    if len(frames) != 4:
        raise AuthenticationError(f"expected 4 frames, got {len(frames)}")
    version, k, body, mac = (bytes(f) for f in frames)
    if version != VERSION:
        raise AuthenticationError(f"unsupported protocol version {version[:32]!r}")
    if not hmac.compare_digest(mac, _mac(key, k, body)):
        raise AuthenticationError("bad message authentication code")
    try:
        kind = Kind(k.decode())
    except (UnicodeDecodeError, ValueError):
        raise AuthenticationError(f"unknown message kind {k[:32]!r}") from None
    return kind, pickle.loads(body)


def decode_or_none(key: bytes | None, frames: list[bytes]) -> tuple[Kind, object] | None:
    """Like :func:`decode` but returns None for unauthenticated input or a missing key."""
    if key is None:
        return None
    try:
        return decode(key, frames)
    except AuthenticationError:
        return None


# ---------------------------------------------------------------------------
# Runner <-> manager transport: plain TCP, so that each Flux job imports only
# the standard library (pyzmq costs ~60 ms of start-up per job). A message is
# the same four frames as above, each prefixed with its 4-byte length.
_LEN = struct.Struct("!I")
MAX_FRAME = 1 << 31


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError("peer closed the connection")
        buf += chunk
    return bytes(buf)


def send_stream(sock: socket.socket, frames: list[bytes]) -> None:
    """Write one message (as made by :func:`encode`) to a stream socket."""
    sock.sendall(b"".join(_LEN.pack(len(f)) + f for f in frames))


def recv_stream(sock: socket.socket) -> list[bytes]:
    """Read one four-frame message from a stream socket (not yet verified)."""
    frames = []
    for limit in _FRAME_LIMITS:
        (n,) = _LEN.unpack(_recv_exact(sock, _LEN.size))
        if n > limit:
            raise AuthenticationError(f"frame of {n} bytes refused")
        frames.append(_recv_exact(sock, n))
    return frames


_FRAME_LIMITS = (len(VERSION), 32, MAX_FRAME, 32)  # version, kind, body, mac: only the body may be large
