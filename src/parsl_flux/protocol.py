"""Messages between the driver-side executor, the manager and the runners.

One module, imported by all three programs, so the wire format has exactly one
definition. It loads in every Flux job, so it imports only small C modules of
the standard library: ``_pickle`` rather than ``pickle``, SHA-256 and a
constant-time compare rather than ``hmac``/``hashlib`` (which load OpenSSL),
plain string constants rather than ``enum``, and no ``typing``. Together these
save about 25 ms of start-up per Flux job, a third of a no-op job's cost here.

Wire format: a ZMQ multipart message ``[VERSION, kind, body, mac]``.

* ``kind`` is one of the ``Kind`` values below (ASCII bytes).
* ``body`` is a pickle of plain Python data (dicts, lists, bytes, str, numbers).
  Application payloads inside it stay opaque ``bytes`` made by
  :mod:`parsl_flux.payload`.
* ``mac`` is HMAC-SHA256 over ``VERSION + kind + body`` with the block's key.

The receiver checks the version and the MAC *before* it unpickles anything, so a
peer that does not hold the key (a stranger connecting to the port) can make us
do nothing but drop its frames. Keys are per block: the executor holds one
master secret and gives each block ``block_key(master, block_id)``, so the
manager of one block cannot pose as another.
"""

import os
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

PICKLE_PROTOCOL = 5  # pickle.HIGHEST_PROTOCOL on Python >= 3.8


class Kind:
    """Message kinds (plain strings). Direction: driver (D), manager (M), runner (R)."""

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


KINDS = frozenset(v for k, v in vars(Kind).items() if k.isupper())


class AuthenticationError(Exception):
    """A message failed the version or MAC check and was not unpickled."""


def new_secret() -> bytes:
    """A fresh 32-byte master secret."""
    return os.urandom(32)


_BLOCK = 64  # SHA-256 block size
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


def hmac_sha256(key: bytes, msg: bytes) -> bytes:
    """HMAC-SHA256 (RFC 2104), equal to ``hmac.new(key, msg, 'sha256').digest()``."""
    if len(key) > _BLOCK:
        key = sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    inner = sha256(key.translate(_IPAD) + msg).digest()
    return sha256(key.translate(_OPAD) + inner).digest()


def block_key(master: bytes, block_id: str) -> bytes:
    """Derive the key of one block from the executor's master secret."""
    return hmac_sha256(master, b"block:" + block_id.encode())


def _mac(key: bytes, kind: bytes, body: bytes) -> bytes:
    return hmac_sha256(key, VERSION + kind + body)


def encode(key: bytes, kind: str, data: object = None) -> list[bytes]:
    """Frames for one message, signed with ``key``."""
    k = kind.encode()
    body = _pickle.dumps(data, protocol=PICKLE_PROTOCOL)
    return [VERSION, k, body, _mac(key, k, body)]


def decode(key: bytes, frames: list[bytes]) -> tuple[str, object]:
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
    if not compare_digest(mac, _mac(key, k, body)):
        raise AuthenticationError("bad message authentication code")
    kind = k.decode(errors="replace")
    if kind not in KINDS:
        raise AuthenticationError(f"unknown message kind {k[:32]!r}")
    return kind, _pickle.loads(body)


def decode_or_none(key: bytes | None, frames: list[bytes]) -> tuple[str, object] | None:
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
_LEN_BYTES = 4  # big-endian length prefix (int.to_bytes rather than struct: one import less per job)
MAX_FRAME = 1 << 31


def _recv_exact(sock: "_socket.socket", n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError("peer closed the connection")
        buf += chunk
    return bytes(buf)


def send_stream(sock: "_socket.socket", frames: list[bytes]) -> None:
    """Write one message (as made by :func:`encode`) to a stream socket."""
    sock.sendall(b"".join(len(f).to_bytes(_LEN_BYTES, "big") + f for f in frames))


def recv_stream(sock: "_socket.socket") -> list[bytes]:
    """Read one four-frame message from a stream socket (not yet verified)."""
    frames = []
    for limit in _FRAME_LIMITS:
        n = int.from_bytes(_recv_exact(sock, _LEN_BYTES), "big")
        if n > limit:
            raise AuthenticationError(f"frame of {n} bytes refused")
        frames.append(_recv_exact(sock, n))
    return frames


_FRAME_LIMITS = (len(VERSION), 32, MAX_FRAME, 32)  # version, kind, body, mac: only the body may be large
