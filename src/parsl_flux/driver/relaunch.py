"""Back-off for replacing blocks whose launches keep failing.

A block whose manager never reaches the driver (a replacement landing on a
node still cut off from it, a broken image) is a failed launch. Parsl's
strategy asks for a new block at its next tick, so without a back-off a
partition that lasts minutes costs a batch job every ~15 s, each waiting out
its manager's driver timeout. After the second failed launch in a row each
replacement waits longer, up to :data:`MAX_DELAY`; one block that registers
ends the streak. Pure functions, so the policy is tested without a provider.

The same record decides when failed launches end the workflow
(:func:`give_up`): Parsl's default handler does so at the first failed
launch of a run when it is the only block, so a node lost while the first
block started (or while the first block of a rerun from checkpoints started)
failed every task of the run for good.
"""

from __future__ import annotations

from typing import Iterable, Tuple

FIRST_DELAY = 15.0
"""Seconds before the replacement that follows the second failed launch in a row."""

MAX_DELAY = 120.0
"""The longest wait between replacements, however long the streak."""

GIVE_UP_STREAK = 3
"""Failed launches in a row, with no block of the run ever registered, that
mean the configuration cannot start a block (Parsl's windowed handler's 3)."""


def failure_streak(blocks: Iterable[Tuple[int, bool, bool]]) -> int:
    """Failed launches in a row, counted back from the newest block.

    Parameters
    ----------
    blocks : iterable of (block number, failed launch, registered)
        Every block launched so far, in any order.

    Returns
    -------
    int
        How many of the newest blocks failed to launch, up to the newest one
        that registered. Blocks still starting, or scaled in before they
        registered, are neither: they are skipped, not having failed.
    """
    streak = 0
    for _, failed, registered in sorted(blocks, reverse=True):
        if registered:
            break
        if failed:
            streak += 1
    return streak


def relaunch_delay(streak: int, first: float = FIRST_DELAY, cap: float = MAX_DELAY) -> float:
    """Seconds to wait after the last failed launch before the next block.

    One failure may be a fluke (the node was still booting), so the next
    block starts at once; from the second failure in a row the wait doubles,
    ``first``, ``2 * first``, ..., never more than ``cap``.
    """
    if streak < 2:
        return 0.0
    return min(cap, first * 2.0 ** (streak - 2))


def relaunch_allowed(streak: int, last_failure: float, now: float) -> bool:
    """Whether a replacement block may be launched ``now`` (monotonic seconds)."""
    return now - last_failure >= relaunch_delay(streak)


def give_up(blocks: Iterable[Tuple[int, bool, bool]], streak_needed: int = GIVE_UP_STREAK) -> bool:
    """Whether failed launches should end the workflow: the newest
    ``streak_needed`` launches failed and no block of the run ever registered.

    A run that had a working block is never ended by failed launches (a long
    partition makes them; the back-off above spaces them out), and one failed
    launch at the start is taken for a fault, not a broken configuration.
    ``blocks`` is as for :func:`failure_streak`.
    """
    blocks = list(blocks)
    return not any(registered for _, _, registered in blocks) and failure_streak(blocks) >= streak_needed
