"""A self-pipe that wakes a ZMQ poll loop from other threads.

ZMQ sockets may not be shared between threads, so threads that produce work
for a loop (DFK submit calls in the driver, Flux and runner threads in the
manager) put it on a queue and call :meth:`Waker.wake`; the loop polls
:attr:`Waker.fd` beside its sockets and calls :meth:`Waker.drain` *before* it
takes work off its queues.
"""

from __future__ import annotations

import os


class Waker:
    """At most one wake-up byte pending on a non-blocking pipe.

    A thread that finds a wake-up pending writes none: the write is a system
    call, and in a process whose other threads want the GIL its release costs
    far more than the call (one write per task was a third of the driver's
    submit path under load). Correct because the loop clears the flag in
    :meth:`drain` before it reads its queues: work queued before a skipped
    write is read after that drain, work queued after it finds the flag clear
    and writes.
    """

    def __init__(self) -> None:
        self.fd, self._w = os.pipe()
        os.set_blocking(self.fd, False)
        os.set_blocking(self._w, False)
        self._pending = False

    def wake(self) -> None:
        if self._pending:
            return
        self._pending = True
        try:
            os.write(self._w, b"x")
        except BlockingIOError:  # pipe full: the loop has wake-ups pending anyway
            pass
        except OSError:  # closed during shutdown: nobody left to wake
            pass

    def drain(self) -> None:
        self._pending = False
        try:
            while os.read(self.fd, 65536):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        os.close(self.fd)
        os.close(self._w)
