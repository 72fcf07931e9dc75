"""Rate-limited warnings for rejected peers and messages.

A stranger who floods a port with bad frames must not be able to fill the
disk through our log: the first few rejects in each window are logged, the
rest only counted. The count is reported when the next window opens, and by
:meth:`RejectLog.flush` when the program ends, so a short run under attack
still says how much it dropped.
"""

from __future__ import annotations

import logging
import threading
import time


class RejectLog:
    """Log at most ``burst`` rejects per ``window`` seconds on ``logger``."""

    def __init__(self, logger: logging.Logger, burst: int = 5, window: float = 60.0) -> None:
        self.logger = logger
        self.burst = burst
        self.window = window
        self._lock = threading.Lock()
        self._window_start = float("-inf")
        self._logged = 0
        self._suppressed = 0

    def reject(self, message: str, *args: object) -> None:
        """Log (or count) one rejected peer or message."""
        with self._lock:
            now = time.monotonic()
            if now - self._window_start >= self.window:
                self._report(now)
                self._window_start, self._logged = now, 0
            if self._logged >= self.burst:
                self._suppressed += 1
                return
            self._logged += 1
        self.logger.warning(message, *args)

    def flush(self) -> None:
        """Report what was counted but not logged; call it when the program ends."""
        with self._lock:
            self._report(time.monotonic())

    def _report(self, now: float) -> None:
        """Log and reset the count of unlogged rejects (caller holds the lock)."""
        if self._suppressed:
            self.logger.warning("%d more rejected message(s) not logged in the last %.0fs",
                                self._suppressed, now - self._window_start)
        self._suppressed = 0

    @property
    def suppressed(self) -> int:
        """Rejects counted but not logged in the current window."""
        return self._suppressed
