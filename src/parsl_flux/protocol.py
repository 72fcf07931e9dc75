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
import pickle
import secrets
from enum import Enum
from typing import Any, List, Optional, Sequence, Tuple

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
    TASKS = "tasks"          # D->M: list of task dicts
    CANCEL = "cancel"        # D->M: list of task ids
    RESULTS = "results"      # M->D: list of result dicts
    HEARTBEAT = "heartbeat"  # both ways
    SHUTDOWN = "shutdown"    # D->M: drain and exit
    BYE = "bye"              # M->D: manager is exiting, with reason
    FETCH = "fetch"          # R->M: give me the payload of task id
    PAYLOAD = "payload"      # M->R: the payload
    RESULT = "result"        # R->M: rank 0's outcome
    ACK = "ack"              # M->R


class AuthenticationError(Exception):
    """A message failed the version or MAC check and was not unpickled."""


def new_secret() -> bytes:
    """A fresh 32-byte master secret."""
    return secrets.token_bytes(32)


def block_key(master: bytes, block_id: str) -> bytes:
    """Derive the key of one block from the executor's master secret."""
    return hmac.new(master, b"block:" + block_id.encode(), hashlib.sha256).digest()


def _mac(key: bytes, kind: bytes, body: bytes) -> bytes:
    return hmac.new(key, VERSION + kind + body, hashlib.sha256).digest()


def encode(key: bytes, kind: Kind, data: Any = None) -> List[bytes]:
    """Frames for one message, signed with ``key``."""
    k = kind.value.encode()
    body = pickle.dumps(data, protocol=_PICKLE_PROTOCOL)
    return [VERSION, k, body, _mac(key, k, body)]


def decode(key: bytes, frames: Sequence[bytes]) -> Tuple[Kind, Any]:
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


def decode_or_none(key: Optional[bytes], frames: Sequence[bytes]) -> Optional[Tuple[Kind, Any]]:
    """Like :func:`decode` but returns None for unauthenticated input or a missing key."""
    if key is None:
        return None
    try:
        return decode(key, frames)
    except AuthenticationError:
        return None
