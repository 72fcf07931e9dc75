"""The driver's door: ZMQ connections are admitted only for a launched block.

libzmq buffers a whole message before the driver sees it, and the driver's
socket must take messages up to ``max_message_bytes`` (256 MiB) from its
managers, so the hello/welcome handshake of :mod:`parsl_flux.wire.protocol` alone
let any stranger who reached the port make the driver hold gigabytes. Here a
connection proves it speaks for a block *before* any message is accepted,
through ZMQ's own authentication (ZAP, RFC 27), which libzmq runs during the
connection's handshake, whose commands are a few hundred bytes:

* clear channel (managers on this host): the PLAIN mechanism, user name the
  block id, password :func:`plain_password` of the block key;
* CurveZMQ: the manager's key pair is derived from the block key
  (:func:`curve_client_keys`), and the driver admits the public key of a
  launched block only.

The key never travels; what does (the PLAIN password, in the clear on
loopback) gives a connection and nothing more: the hello/welcome handshake
and the session MACs still decide what a message may do.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import zmq
from zmq.utils import z85

from parsl_flux.wire import protocol

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
"""Where libzmq sends its authentication requests (RFC 27)."""
DOMAIN = b"parsl-flux"


def plain_password(block_key: bytes) -> bytes:
    """The PLAIN password of a block's manager: derived from, not equal to, its key."""
    return protocol.hmac_sha256(block_key, b"zap-plain").hex().encode()


def curve_client_keys(block_key: bytes) -> Tuple[bytes, bytes]:
    """``(public, secret)`` CurveZMQ keys (Z85) of a block's manager, derived from its key."""
    secret = z85.encode(protocol.hmac_sha256(block_key, b"zap-curve"))
    return zmq.curve_public(secret), secret


def configure_client(sock: zmq.Socket, block_id: str, block_key: bytes, server_public: Optional[bytes]) -> None:
    """Set a manager's socket to authenticate as ``block_id`` (CurveZMQ when
    ``server_public``, the driver's Z85 public key, is given; else PLAIN)."""
    if server_public is not None:
        sock.curve_serverkey = server_public
        sock.curve_publickey, sock.curve_secretkey = curve_client_keys(block_key)
    else:
        sock.plain_username = block_id.encode()
        sock.plain_password = plain_password(block_key)


class Gate:
    """Answers libzmq's authentication requests for the driver's socket.

    Parameters
    ----------
    ctx : zmq.Context
        The driver socket's context (ZAP requests stay inside it).
    keys : callable
        ``keys()`` -> ``{block_id: block_key}`` of the blocks that may connect now.
    reject : callable
        ``reject(message, *args)``: a rate-limited log of refusals.
    """

    def __init__(self, ctx: zmq.Context, keys: Callable[[], Dict[str, bytes]],
                 reject: Callable[..., None]) -> None:
        self.keys = keys
        self.reject = reject
        self.socket = ctx.socket(zmq.REP)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(ZAP_ENDPOINT)

    @staticmethod
    def guard(sock: zmq.Socket, curve: bool) -> None:
        """Make ``sock`` (the driver's ROUTER, before it binds) ask this gate about every peer."""
        if not curve:
            sock.plain_server = True
        sock.zap_domain = DOMAIN

    def answer_all(self) -> None:
        """Answer every pending request (the driver's loop polls :attr:`socket`)."""
        while True:
            try:
                request = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.socket.send_multipart(self.answer(request))

    def answer(self, request: List[bytes]) -> List[bytes]:
        """The ZAP reply to one request: 200 with the block id as user id, or 400."""
        version, request_id = request[0], request[1]
        block_id = self.admits(request)
        if block_id is None:
            peer = request[3].decode(errors="replace") if len(request) > 3 else "?"
            self.reject("refused a connection from %s: no block's credentials", peer)
            return [version, request_id, b"400", b"not a block of this executor", b"", b""]
        return [version, request_id, b"200", b"OK", block_id.encode(), b""]

    def admits(self, request: List[bytes]) -> Optional[str]:
        """The block a request's credentials prove, or None."""
        if len(request) < 7 or request[0] != b"1.0" or request[2] != DOMAIN:
            return None
        mechanism, credentials = request[5], request[6:]
        keys = self.keys()
        if mechanism == b"PLAIN" and len(credentials) == 2:
            block_id = credentials[0].decode(errors="replace")
            key = keys.get(block_id)
            if key is not None and protocol.compare_digest(credentials[1], plain_password(key)):
                return block_id
        elif mechanism == b"CURVE" and len(credentials) == 1:
            public = z85.encode(credentials[0])
            for block_id, key in keys.items():
                if protocol.compare_digest(public, curve_client_keys(key)[0]):
                    return block_id
        return None

    def close(self) -> None:
        self.socket.close()
