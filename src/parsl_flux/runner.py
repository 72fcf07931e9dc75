"""What every task's Flux job runs: ``python -m parsl_flux.runner``.

Kept lean on purpose, because its start-up is paid once per Flux job: it imports
pyzmq and cloudpickle, never Parsl. It fetches its payload from the manager over
the manager's runner socket (no file per task), runs the app, and rank 0 sends
the outcome back. Every rank runs the app, so an MPI app gets real ranks; the
value of rank 0 is the task's result. Other ranks exit non-zero if the app
raises, which fails the Flux job and so the task.

The environment (set by the manager in the jobspec) names the task, the
manager's socket and the key for this instance's runners.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any, Dict, Tuple

from parsl_flux import protocol

FETCH_TIMEOUT_MS = 60_000
ACK_TIMEOUT_MS = 60_000

EXIT_PROTOCOL_ERROR = 98
EXIT_APP_ERROR = 1


def outcome_of(exc: BaseException) -> Dict[str, Any]:
    """Encode an app exception: the exception itself with its traceback when it
    pickles (so the driver re-raises it with the remote frames), and always the
    formatted traceback text as a fallback."""
    import cloudpickle

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    out: Dict[str, Any] = {"ok": False, "type": type(exc).__qualname__, "message": str(exc), "traceback": text}
    try:
        from tblib import pickling_support

        pickling_support.install(exc)
        out["exception"] = cloudpickle.dumps(exc)
    except Exception:  # the text above is enough; the driver wraps it in RemoteTaskError
        pass
    return out


def run_payload(payload: bytes) -> Dict[str, Any]:
    """Unpack and run one app; return the outcome dict sent to the manager."""
    import cloudpickle

    try:
        func, args, kwargs = cloudpickle.loads(payload)
        value = func(*args, **kwargs)
    except BaseException as exc:  # noqa: B902 - SystemExit in an app is an app failure too
        return outcome_of(exc)
    try:
        return {"ok": True, "value": cloudpickle.dumps(value)}
    except Exception as exc:
        return outcome_of(TypeError(f"result of type {type(value).__name__} cannot be serialized: {exc}"))


def _request(sock: Any, key: bytes, kind: protocol.Kind, data: Any, timeout_ms: int) -> Tuple[protocol.Kind, Any]:
    sock.send_multipart(protocol.encode(key, kind, data))
    if not sock.poll(timeout_ms):
        raise TimeoutError(f"no answer from the parsl-flux manager within {timeout_ms / 1000:.0f}s")
    return protocol.decode(key, sock.recv_multipart())


def main() -> int:
    import zmq

    task_id = int(os.environ[protocol.TASK_ENV])
    key = bytes.fromhex(os.environ[protocol.RUNNER_KEY_ENV])
    rank = int(os.environ.get("FLUX_TASK_RANK", "0"))
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.connect(os.environ[protocol.RUNNER_URL_ENV])
    try:
        kind, payload = _request(sock, key, protocol.Kind.FETCH, task_id, FETCH_TIMEOUT_MS)
        if kind is not protocol.Kind.PAYLOAD or payload is None:
            print(f"parsl-flux runner: no payload for task {task_id}", file=sys.stderr)
            return EXIT_PROTOCOL_ERROR
        outcome = run_payload(payload)
        if rank == 0:
            _request(sock, key, protocol.Kind.RESULT, (task_id, outcome), ACK_TIMEOUT_MS)
            return 0
        if not outcome["ok"]:
            sys.stderr.write(outcome["traceback"])
            return EXIT_APP_ERROR
        return 0
    except (TimeoutError, protocol.AuthenticationError, zmq.ZMQError) as exc:
        print(f"parsl-flux runner: task {task_id}: {exc}", file=sys.stderr)
        return EXIT_PROTOCOL_ERROR
    finally:
        sock.close()
        ctx.term()


if __name__ == "__main__":
    sys.exit(main())
