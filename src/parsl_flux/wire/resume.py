"""Resuming a manager's session after its connection to the driver broke.

A TCP reset or a short partition must not cost a block its running tasks. ZMQ
reconnects the manager's socket by itself, but on a *new* connection, which the
driver does not (and must not) trust as the old one. So the manager proves its
key again: a fresh hello/welcome for the same block id, followed by RESUME
instead of REGISTER; the driver accepts it while the block is alive and binds
the block to the new connection, dropping the old one.

Nothing is run twice and nothing is lost: the manager keeps its task table
across the gap, and every result stays in its :class:`ResultLedger` until the
driver acknowledges it (ACK), so results sent into the broken connection are
sent again after RESUME; the driver ignores a result it already has.
:func:`resume_plan` says which tasks the driver must send again (lost on the
way) and which the manager should cancel (no longer wanted).
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Set, Tuple


class ResultLedger:
    """Results the manager sent to the driver and the driver has not acknowledged yet."""

    def __init__(self) -> None:
        self._unacked: Dict[int, Dict[str, Any]] = {}

    def sent(self, results: Iterable[Dict[str, Any]]) -> None:
        """Keep ``results`` (protocol ``result`` dicts) until acknowledged."""
        for res in results:
            self._unacked[res["id"]] = res

    def acknowledged(self, task_ids: Iterable[int]) -> None:
        for task_id in task_ids:
            self._unacked.pop(task_id, None)

    def ids(self) -> List[int]:
        return list(self._unacked)

    def unacknowledged(self) -> List[Dict[str, Any]]:
        """What to send again once a session resumed, oldest first."""
        return list(self._unacked.values())

    def __len__(self) -> int:
        return len(self._unacked)


def resume_plan(in_flight: Set[int], held: Iterable[int], done: Iterable[int]) -> Tuple[List[int], List[int]]:
    """``(to_resend, to_cancel)`` for a block that resumed its session.

    Parameters
    ----------
    in_flight : set of int
        Task ids the driver sent to the block and has no result for.
    held : iterable of int
        Task ids the manager still runs or holds (RESUME body).
    done : iterable of int
        Task ids whose results the manager will send again (RESUME body).

    Returns
    -------
    to_resend : list of int
        In flight on the driver's side, unknown to the manager: lost on the
        way (sent into the broken connection), so sent again.
    to_cancel : list of int
        Held by the manager, no longer wanted by the driver (cancelled, or
        already failed, while the connection was down).
    """
    held, done = set(held), set(done)
    return sorted(in_flight - held - done), sorted(held - in_flight)
