"""What Flux jobs run: ``python -m parsl_flux.job.runner``.

Kept lean on purpose, because its start-up is paid once per Flux job: it
imports a few C modules of the standard library, never Parsl, never pyzmq, and
loads apps defined in a workflow script without cloudpickle
(:mod:`parsl_flux.wire.payload`); tblib is loaded only when an app raises. A no-op
job costs ~15 ms of CPU more than ``python -S -c pass`` on a 2-core machine.
It talks to its manager over a plain stream socket (no file per task): an
AF_UNIX socket on a one-node block, where the manager knows the job by the
connecting process and hands out no credential; TCP on a multi-node block,
signed with the job's own credential. Connecting is retried with backoff,
within ``CONNECT_TIMEOUT``, so a busy or briefly full server delays a task
instead of failing it.

Two modes, chosen by the environment the manager sets in the jobspec:

* one task (``PARSL_FLUX_TASK`` set): every rank fetches the payload and runs
  the app, so an MPI app gets real ranks; rank 0 sends the outcome back. Other
  ranks exit non-zero if the app raises, which fails the Flux job.
* packing worker (no task id): a long-lived, one-core Flux job that runs small
  tasks one after another until the manager tells it to exit.
"""

import _pickle
import _socket
import os
import sys
from time import monotonic, sleep

from parsl_flux.wire import protocol
from parsl_flux.wire.payload import loads_task
from parsl_flux.wire.protocol import Kind

CONNECT_TIMEOUT = 60.0
"""Seconds a runner keeps trying to reach its manager before its task fails."""
FIRST_BACKOFF = 0.05
MAX_BACKOFF = 2.0
ANSWER_TIMEOUT = 120.0
EXIT_PROTOCOL_ERROR = 98
EXIT_APP_ERROR = 1


def _dumps(obj: object, buffers: "list | None" = None) -> bytes:
    """Plain pickle when it can (no cloudpickle import), cloudpickle otherwise;
    with ``buffers``, out-of-band buffers (protocol 5) are appended to it."""
    callback = None if buffers is None else buffers.append
    try:
        return _pickle.dumps(obj, protocol=protocol.PICKLE_PROTOCOL, buffer_callback=callback)
    except Exception:
        import cloudpickle

        if buffers is not None:
            buffers.clear()  # what plain pickle handed out before it failed
        return cloudpickle.dumps(obj, protocol=protocol.PICKLE_PROTOCOL, buffer_callback=callback)


def dump_value(value: object) -> list:
    """An app's result as a blob: its arrays' data stay where the app left them
    (out-of-band buffers) and are sent from there."""
    buffers: list = []
    stream = _dumps(value, buffers)
    return [stream, *(b.raw() for b in buffers)]


def outcome_of(exc: BaseException) -> dict:
    """Encode an app exception: the exception itself with its traceback when it
    pickles (so the driver re-raises it with the remote frames), and always the
    formatted traceback text as a fallback."""
    import traceback

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    pickled = None
    try:
        from tblib import pickling_support

        pickling_support.install(exc)
        pickled = _dumps(exc)
    except Exception:  # the text is enough; the driver wraps it in RemoteTaskError
        pass
    return protocol.outcome_raised(type(exc).__qualname__, str(exc), text, pickled)


class ResultTooLarge(Exception):
    """An app's result is bigger than the executor's message limit (``max_message_bytes``)."""


def run_payload(payload: bytes, max_bytes: int = protocol.DEFAULT_MAX_MESSAGE_BYTES) -> dict:
    """Unpack and run one app; return the outcome dict sent to the manager,
    with the messages of Parsl's monitoring wrapper when it ran (see
    :mod:`parsl_flux.driver.monitoring`)."""
    outcome = _run(payload, max_bytes)
    monitoring = sys.modules.get("parsl_flux.driver.monitoring")  # imported only by a wrapped app's radio
    if monitoring is not None:
        outcome = protocol.with_monitoring(outcome, monitoring.drain())
    return outcome


def _run(payload: bytes, max_bytes: int) -> dict:
    try:
        func, args, kwargs = loads_task(payload)
        value = func(*args, **kwargs)
    except BaseException as exc:  # SystemExit in an app is an app failure too
        return outcome_of(exc)
    try:
        blob = dump_value(value)
    except Exception as exc:
        return outcome_of(TypeError(f"result of type {type(value).__name__} cannot be serialized: {exc}"))
    size = protocol.blob_size(blob)
    if size > max_bytes - 4096:  # room for the outcome's own fields
        return outcome_of(ResultTooLarge(f"result of {size} bytes exceeds the executor's max_message_bytes "
                                         f"({max_bytes}); write large data to a file and return its path"))
    return protocol.outcome_value(blob)


def _connect(url: str, timeout: float) -> "_socket.socket":
    """One connection to ``HOST:PORT`` or ``unix:PATH``, from the C module
    (``socket.py`` costs ~7 ms to import)."""
    if url.startswith(protocol.UNIX_PREFIX):
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(url[len(protocol.UNIX_PREFIX):])
        except OSError:
            sock.close()
            raise
        return sock
    host, port = url.rsplit(":", 1)
    error: OSError = OSError(f"cannot resolve {host}")
    # an ASCII name as bytes: a str would be IDNA-encoded, importing re, enum and stringprep (~5 ms)
    name = host.encode() if host.isascii() else host
    for family, kind, proto, _, address in _socket.getaddrinfo(name, int(port), 0, _socket.SOCK_STREAM):
        sock = _socket.socket(family, kind, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(address)
            return sock
        except OSError as exc:
            error = exc
            sock.close()
    raise error


def open_connection(url: str, timeout: float = CONNECT_TIMEOUT) -> "tuple[_socket.socket, bytes]":
    """Connect and read the server's nonce, retrying with exponential backoff
    for up to ``timeout`` seconds: a refused, reset or closed connection
    before the nonce (a full backlog or connection cap) is tried again; after
    it, nothing was sent, so a retry is always safe."""
    deadline = monotonic() + timeout
    backoff = FIRST_BACKOFF
    while True:
        left = deadline - monotonic()
        try:
            sock = _connect(url, max(left, 0.001))
            try:
                return sock, protocol.recv_exact(sock, protocol.NONCE_BYTES)
            except OSError:
                sock.close()
                raise
        except OSError:
            if left <= backoff:
                raise
            sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)


class ManagerLink:
    """A request/answer channel to the manager's task server, as one
    principal (a task id, or :data:`protocol.WORKER`), signed with its own
    credential (:data:`protocol.PEER_VERIFIED` over AF_UNIX)."""

    def __init__(self, url: str, credential: bytes, principal: int, max_bytes: int) -> None:
        self.credential = credential
        self.principal = principal
        self.sock, nonce = open_connection(url)
        self.stream = protocol.Stream(self.sock, nonce, protocol.TO_SERVER, protocol.TO_RUNNER, max_bytes)

    def request(self, kind: str, data: object, timeout: float = ANSWER_TIMEOUT) -> tuple:
        self.sock.settimeout(timeout)
        self.stream.send(self.credential, self.principal, kind, data)
        return self.stream.recv(self.credential)

    def close(self) -> None:
        self.sock.close()


def run_one(link: ManagerLink, task_id: int, rank: int, max_bytes: int) -> int:
    kind, body = link.request(Kind.FETCH, protocol.fetch_body(task_id))
    payload = body["payload"] if kind == Kind.PAYLOAD else None
    if payload is None:
        print(f"parsl-flux runner: no payload for task {task_id} (cancelled?)", file=sys.stderr)
        return EXIT_PROTOCOL_ERROR
    outcome = run_payload(payload, max_bytes)
    if rank == 0:
        link.request(Kind.RESULT, protocol.runner_result_body(task_id, outcome))
        return 0
    if outcome["outcome"] == protocol.RAISED:
        sys.stderr.write(outcome["traceback"])
        return EXIT_APP_ERROR
    return 0


def run_worker(link: ManagerLink, max_bytes: int) -> int:
    """Packing worker: fetch, run, report, until told to exit."""
    kind, body = link.request(Kind.FETCH, protocol.fetch_body(protocol.WORKER, os.environ.get("FLUX_JOB_ID", "")),
                              timeout=None)
    while kind == Kind.PAYLOAD:
        outcome = run_payload(body["payload"], max_bytes)
        # the answer to a result is the next task, or EXIT when idle or when cores are wanted
        kind, body = link.request(Kind.RESULT, protocol.runner_result_body(body["task"], outcome), timeout=None)
    return 0


def main() -> int:
    url = os.environ[protocol.RUNNER_URL_ENV]
    credential = bytes.fromhex(os.environ.get(protocol.RUNNER_KEY_ENV, ""))  # none over AF_UNIX
    task = os.environ.get(protocol.TASK_ENV)
    max_bytes = int(os.environ.get(protocol.MAX_BYTES_ENV, protocol.DEFAULT_MAX_MESSAGE_BYTES))
    try:
        link = ManagerLink(url, credential, protocol.WORKER if task is None else int(task), max_bytes)
        try:
            if task is None:
                return run_worker(link, max_bytes)
            return run_one(link, int(task), int(os.environ.get("FLUX_TASK_RANK", "0")), max_bytes)
        finally:
            link.close()
    except (OSError, protocol.AuthenticationError, protocol.MessageTooLarge) as exc:
        print(f"parsl-flux runner: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_PROTOCOL_ERROR


if __name__ == "__main__":
    sys.exit(main())
