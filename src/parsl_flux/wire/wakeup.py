"""A self-pipe that wakes a ZMQ poll loop from other threads.

ZMQ sockets may not be shared between threads, so threads that produce work
for a loop (DFK submit calls in the driver, Flux and runner threads in the
manager) put it on a queue and call :meth:`Waker.wake`; the loop polls
:attr:`Waker.fd` beside its sockets and calls :meth:`Waker.drain`.
"""

from __future__ import annotations

import os


class Waker:
    """One byte on a non-blocking pipe per wake-up; a full pipe means awake already."""

    def __init__(self) -> None:
        self.fd, self._w = os.pipe()
        os.set_blocking(self.fd, False)
        os.set_blocking(self._w, False)

    def wake(self) -> None:
        try:
            os.write(self._w, b"x")
        except BlockingIOError:  # pipe full: the loop has wake-ups pending anyway
            pass
        except OSError:  # closed during shutdown: nobody left to wake
            pass

    def drain(self) -> None:
        try:
            while os.read(self.fd, 65536):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        os.close(self.fd)
        os.close(self._w)
