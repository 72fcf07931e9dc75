"""Exceptions raised to users of :class:`parsl_flux.FluxExecutor`.

Each failure mode has its own type so that workflows (and Parsl's retry
handlers) can tell a bad request from a crashed job from a lost Flux instance.
All derive from Parsl's ``ExecutorError`` so Parsl treats them like any other
executor failure.
"""

from __future__ import annotations

from typing import Any, Optional

from parsl.executors.errors import ExecutorError
from parsl.executors.errors import InvalidResourceSpecification as _ParslInvalidSpec


class InvalidResourceSpecification(_ParslInvalidSpec):
    """A ``resource_specification`` key or value that cannot be honoured.

    Raised at submit time (unknown key, wrong type) or as soon as the executor
    knows the Flux instance cannot ever satisfy the request.
    """

    def __init__(self, key: str, value: Any, reason: str) -> None:
        self.key = key
        self.value = value
        self.reason = reason
        super().__init__({key}, f"resource_specification[{key!r}]={value!r}: {reason}")

    def __str__(self) -> str:
        return str(self.message)


class _ReasonError(ExecutorError):
    """An executor error whose message is its ``reason`` alone: Parsl's
    ``ExecutorError.__str__`` names ``executor.label``, and these errors are
    raised where no executor object is at hand (the driver's I/O thread, a
    block), so ``executor`` is None."""

    executor = None
    reason: str

    def __str__(self) -> str:
        return self.reason


class FluxJobFailed(_ReasonError):
    """The Flux job of a task ended without producing a result.

    Carries the Flux job id, Flux's description of how it ended (exit code or
    signal, exception type) and the tail of the job's stderr.
    """

    def __init__(self, task_id: int, jobid: Optional[str], status: str, stderr_tail: str = "") -> None:
        self.task_id = task_id
        self.jobid = jobid
        self.status = status
        self.stderr_tail = stderr_tail
        text = f"task {task_id} (Flux job {jobid or '<not submitted>'}) failed: {status}"
        if stderr_tail:
            text += "\n--- tail of stderr ---\n" + stderr_tail.rstrip()
        self.reason = text


class BlockLost(_ReasonError):
    """The Flux instance (block) that held a task died or became unreachable."""

    def __init__(self, block_id: str, reason: str) -> None:
        self.block_id = block_id
        self.reason = f"Flux instance of block {block_id} lost: {reason}"


class ExecutorShutdown(_ReasonError):
    """The executor was shut down before the task finished, or submit came after shutdown."""

    def __init__(self, reason: str = "executor has been shut down") -> None:
        self.reason = reason


class PayloadTooLarge(_ReasonError):
    """An app's function and arguments pickle to more than ``max_message_bytes``."""

    def __init__(self, name: str, size: int, limit: int) -> None:
        self.reason = (f"app {name!r}: its function and arguments pickle to {size} bytes, more than "
                       f"max_message_bytes={limit}; pass large data through files")
        self.name, self.size, self.limit = name, size, limit


class RemoteTaskError(Exception):
    """An app raised an exception that could not be sent back as itself.

    Holds the remote exception's type name, message and formatted traceback.
    """

    def __init__(self, type_name: str, message: str, remote_traceback: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback

    def __reduce__(self) -> tuple:
        """Pickle by the constructor's arguments (Parsl pickles exceptions, e.g. for retries and monitoring)."""
        return (type(self), (self.type_name, self.message, self.remote_traceback))

    def __str__(self) -> str:
        return f"{self.args[0]}\n--- remote traceback ---\n{self.remote_traceback.rstrip()}"


class NodeLost(BlockLost):
    """A task's Flux job died because a node of its block failed or was cut off.

    A :class:`BlockLost`: the app is not at fault, and the block it ran on gets
    no new work, so Parsl's retry runs it on a healthy block."""

    def __init__(self, block_id: str, task_id: int, jobid: Optional[str], status: str) -> None:
        super().__init__(block_id, f"task {task_id} (Flux job {jobid or '<not submitted>'}) died with a node: "
                                   f"{status}")
        self.task_id, self.jobid, self.status = task_id, jobid, status


class VersionMismatch(_ReasonError):
    """A block's Python minor version or parsl-flux version differs from the driver's.

    Functions defined in a workflow script travel as bytecode that only the same
    Python minor version runs, and the block runs parsl-flux's own modules
    (:mod:`parsl_flux.wire.versions`). Every block of an executor starts from the
    same launch line, so the executor is set to bad state with this error, as
    Parsl's HighThroughputExecutor does with its own ``VersionMismatch``.
    """

    def __init__(self, block_id: str, reason: str) -> None:
        self.block_id = block_id
        self.reason = f"block {block_id} refused: {reason}"
