"""Resolving a future that its owner may cancel at any moment.

The driver's I/O thread resolves task futures while the user's threads may call
``future.cancel()`` on them. ``done()`` followed by ``set_result`` is a race: a
cancel that lands in between makes ``set_result`` (and ``set_exception``) raise
``InvalidStateError``. Left to propagate, that error abandons the rest of a
RESULTS batch, whose futures then stay unresolved until shutdown. These helpers
treat "already resolved" as the end of the matter: the future has an outcome,
which is all the driver owes it.
"""

from __future__ import annotations

from concurrent.futures import Future, InvalidStateError
from typing import Any, Callable


def set_result(future: Future, value: Any) -> bool:
    """Resolve ``future`` with ``value`` unless it is already resolved or cancelled.

    Returns
    -------
    bool
        True if this call resolved it.
    """
    return _settle(future.set_result, value)


def set_exception(future: Future, exc: BaseException) -> bool:
    """Fail ``future`` with ``exc`` unless it is already resolved or cancelled.

    Returns
    -------
    bool
        True if this call resolved it.
    """
    return _settle(future.set_exception, exc)


def _settle(resolve: Callable[[Any], None], outcome: Any) -> bool:
    try:
        resolve(outcome)
        return True
    except InvalidStateError:  # cancelled (or resolved) meanwhile: it has its outcome
        return False
