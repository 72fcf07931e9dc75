"""Who is at the other end of a task-server connection.

Two questions the task server asks before it serves a peer:

* **Which Flux job is this process part of?** (AF_UNIX, one-node blocks.)
  The kernel tells who connected: ``SO_PEERCRED`` gives the pid and uid of
  the process that called ``connect``, fixed at that moment; no message the
  peer sends can change it. From that pid, :func:`flux_job_of` walks the
  parent chain (also kept by the kernel) up to the process whose parent is
  this block's Flux broker (or the IMP the broker started, in a multi-user
  instance): for a task, its job shell. A job shell runs as
  ``flux-shell [options] JOBID`` and starts every task of its job as its own
  child, so the job a process belongs to is the job id its shell was started
  with. What a task can *read* about another job (its jobspec through ``flux
  job info --original``, a sibling's ``/proc/PID/environ``, files) gives it no
  identity: there is no credential to steal.

  What it does not stop: a process of the same user may ``ptrace`` a sibling
  (where the kernel allows it) or ask the broker to start a process that
  claims to be a job shell (``flux exec flux-shell JOBID``), and so speak as
  another job; pid reuse between ``connect`` and the check is a race of
  microseconds. Tasks of one workflow share a uid, so only separate users
  (Flux's multi-user mode) separate them against those; the threat
  model (docs/reference/trust.md) says so.

* **How many unproven connections does each address hold?** (TCP,
  multi-node blocks.) :class:`Admission` caps connections that have not
  authenticated yet, per peer address and in total, so a stranger cannot
  take every slot while runners, which prove themselves within milliseconds,
  hardly ever hold one.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from typing import Dict, List, Optional, Tuple

SHELL_NAME = "flux-shell"
"""``argv[0]`` (basename) of the Flux job shell."""
IMP_NAME = "flux-imp"
"""The setuid helper a multi-user instance starts job shells through (broker -> IMP -> shell)."""

MAX_DEPTH = 64
"""Ancestors walked before giving up (a task's own process tree is shallow)."""

_UCRED = struct.Struct("3i")


def peer_credentials(sock: socket.socket) -> Tuple[int, int]:
    """``(pid, uid)`` of the process that connected an AF_UNIX socket, as the kernel recorded it."""
    pid, uid, _ = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return pid, uid


def parent_of(pid: int, proc: str = "/proc") -> int:
    """The parent pid of ``pid`` (``OSError`` once it is gone).

    Field 4 of ``/proc/PID/stat``, counted after the last ``)``: the command
    name before it may hold spaces and parentheses."""
    with open(f"{proc}/{pid}/stat", "rb") as f:
        stat = f.read()
    return int(stat[stat.rindex(b")") + 2:].split()[1])


def argv_of(pid: int, proc: str = "/proc") -> List[str]:
    """The command line of ``pid`` (empty once it is gone)."""
    try:
        with open(f"{proc}/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().rstrip(b"\0").split(b"\0")]
    except OSError:
        return []


def _named(argv: List[str], name: str) -> bool:
    return bool(argv) and os.path.basename(argv[0]) == name


def job_shell_of(pid: int, broker_pid: int, proc: str = "/proc") -> Optional[Tuple[int, List[str]]]:
    """``(pid, argv)`` of the nearest ancestor of ``pid`` (or ``pid`` itself)
    that the broker started as its child, directly or through the IMP; None
    if there is none.

    A runner is its shell's child: two ``stat`` reads and the shell's command
    line settle it (~0.1 ms)."""
    current = pid
    try:
        parent = parent_of(current, proc)
        for _ in range(MAX_DEPTH):
            if parent == broker_pid:
                return current, argv_of(current, proc)
            if parent <= 1:
                return None
            grandparent = parent_of(parent, proc)
            if grandparent == broker_pid:
                argv = argv_of(parent, proc)
                if _named(argv, IMP_NAME):  # broker -> IMP -> shell: current is the shell
                    return current, argv_of(current, proc)
                return parent, argv
            current, parent = parent, grandparent
    except (OSError, ValueError, IndexError):
        return None
    return None


def flux_job_of(pid: int, broker_pid: int, proc: str = "/proc") -> Optional[str]:
    """The job id (as the job shell's last argument) of the Flux job ``pid``
    runs in, or None when ``pid`` descends from no job shell of this broker."""
    shell = job_shell_of(pid, broker_pid, proc)
    if shell is None:
        return None
    argv = shell[1]
    if len(argv) < 2 or not _named(argv, SHELL_NAME):
        return None
    return argv[-1]


class Admission:
    """Slots for connections that have not authenticated yet.

    Parameters
    ----------
    total : int
        Unauthenticated connections served at once, from all peers.
    per_peer : int
        Unauthenticated connections served at once from one address.
    """

    def __init__(self, total: int, per_peer: int) -> None:
        if total < 1 or per_peer < 1:
            raise ValueError(f"Admission needs total ({total}) and per_peer ({per_peer}) >= 1")
        self.total = total
        self.per_peer = per_peer
        self._lock = threading.Lock()
        self._held: Dict[str, int] = {}
        self._count = 0

    def enter(self, peer: str) -> bool:
        """Take a slot for ``peer``; False (take nothing) when a cap is reached."""
        with self._lock:
            if self._count >= self.total or self._held.get(peer, 0) >= self.per_peer:
                return False
            self._held[peer] = self._held.get(peer, 0) + 1
            self._count += 1
            return True

    def leave(self, peer: str) -> None:
        """Give back a slot of ``peer`` (it authenticated, or its connection ended)."""
        with self._lock:
            left = self._held.get(peer, 0) - 1
            if left < 0:
                raise RuntimeError(f"Admission.leave({peer!r}) without a slot")
            if left:
                self._held[peer] = left
            else:
                del self._held[peer]
            self._count -= 1

    def held(self, peer: str) -> int:
        """Slots ``peer`` holds now."""
        with self._lock:
            return self._held.get(peer, 0)
