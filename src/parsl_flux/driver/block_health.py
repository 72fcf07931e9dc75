"""What the driver knows about a registered block's health, apart from its heartbeat.

Two things make a block unfit for new work before its heartbeat runs out:

* its connection is gone: ZMQ says the manager's route is unreachable (the TCP
  connection was reset or the link went down). The manager reconnects and
  resumes its session (:mod:`parsl_flux.wire.resume`) within a fraction of a
  second when it can; when it has not within :func:`reconnect_grace`, the
  block is lost then, not a full ``heartbeat_threshold`` later;
* it is degraded: its Flux instance lost a broker rank (a node died or was
  cut off). The manager reports it; the block runs out the tasks it has, gets
  no new ones, and is retired once idle so Parsl replaces it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


def reconnect_grace(heartbeat_period: float, heartbeat_threshold: float) -> float:
    """Seconds an unreachable block has to resume its session before it is lost.

    Long enough for a manager to notice a reset, reconnect and hand-shake
    again (about half a second, more on a loaded node), short enough that a
    block the transport already knows is gone does not wait out the heartbeat
    threshold; never longer than that threshold."""
    return min(heartbeat_threshold, max(3.0, 2 * heartbeat_period))


@dataclass
class BlockHealth:
    """Transport and node state of one block, as far as the driver knows it."""

    unreachable_since: Optional[float] = None
    unreachable_reason: str = ""
    degraded: str = ""  # why the block gets no new work (lost ranks), '' while whole

    def unreachable(self, now: float, reason: str) -> bool:
        """Record a failed send; True when this starts a new outage (log it once)."""
        if self.unreachable_since is not None:
            return False
        self.unreachable_since, self.unreachable_reason = now, reason
        return True

    def reachable(self) -> Optional[float]:
        """The connection is back: how long it was out (None if it never was)."""
        since, self.unreachable_since, self.unreachable_reason = self.unreachable_since, None, ""
        return since

    def overdue(self, now: float, grace: float) -> bool:
        """Unreachable for longer than ``grace`` seconds."""
        return self.unreachable_since is not None and now - self.unreachable_since > grace

    @property
    def accepting(self) -> bool:
        """Whether new tasks may be sent to the block."""
        return self.unreachable_since is None and not self.degraded
