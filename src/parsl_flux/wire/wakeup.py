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
    submit path under load). Correct because :meth:`drain` empties the pipe
    and only then clears the flag, before the loop reads its queues: work
    queued before a skipped write is read after that drain; a wake that finds
    the flag clear writes after the pipe was emptied, so its byte stays.
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
        # Empty the pipe first, then clear the flag. Cleared first, a wake in
        # between would set the flag and write a byte this read then swallows:
        # the flag would stay set with the pipe empty, and every later wake
        # would skip its write, stranding its work (CI caught that order).
        try:
            while os.read(self.fd, 65536):
                pass
        except BlockingIOError:
            pass
        self._pending = False

    def close(self) -> None:
        os.close(self.fd)
        os.close(self._w)
