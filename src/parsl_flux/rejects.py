"""Rate-limited warnings for rejected peers and messages.

A stranger who floods a port with bad frames must not be able to fill the
disk through our log: the first few rejects in each window are logged, the
rest only counted, and the count is reported when the next window opens.
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
                if self._suppressed:
                    self.logger.warning("%d more rejected message(s) not logged in the last %.0fs",
                                        self._suppressed, now - self._window_start)
                self._window_start, self._logged, self._suppressed = now, 0, 0
            if self._logged >= self.burst:
                self._suppressed += 1
                return
            self._logged += 1
        self.logger.warning(message, *args)

    @property
    def suppressed(self) -> int:
        """Rejects counted but not logged in the current window."""
        return self._suppressed
