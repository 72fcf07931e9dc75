"""A hostile neighbour for the trust tests: code run as another local user.

The tests run as root in CI; the attacker is ``nobody``, run through the
first Python it may execute (this interpreter, else the system's), with only
the standard library (``nobody`` may not enter root's home, where the test
interpreter often lives).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap
from typing import Optional

import pytest

NOBODY = "nobody"
CANDIDATES = (sys.executable, "/usr/local/bin/python3", "/usr/bin/python3")


def _spawn(python: str, code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([python, "-I", "-c", textwrap.dedent(code), *args], user=NOBODY, group="nogroup",
                            extra_groups=[], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")


@functools.lru_cache(maxsize=None)
def python_for_nobody() -> Optional[str]:
    """The first of :data:`CANDIDATES` that ``nobody`` can run."""
    for python in CANDIDATES:
        try:
            if _spawn(python, "pass").wait(timeout=60) == 0:
                return python
        except OSError:
            continue
    return None


def require_root_and_nobody() -> str:
    """The Python to run as ``nobody``; skip unless this test can switch to it (it must run as root)."""
    if os.geteuid() != 0:
        pytest.skip("switching to another local user needs root (CI runs the tests as root)")
    python = python_for_nobody()
    if python is None:
        pytest.skip(f"no Python that {NOBODY} may run among {CANDIDATES}")
    return python


def as_nobody(code: str, *args: str) -> subprocess.Popen:
    """Start ``code`` (a Python script) as ``nobody``; stdout and stderr are pipes."""
    return _spawn(require_root_and_nobody(), code, *args)


def run_as_nobody(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``code`` as ``nobody`` to its end."""
    proc = as_nobody(code, *args)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


ZMTP_FLOOD = """
import socket, struct, sys, time
# a ZMTP 3.0 DEALER with the NULL mechanism, by hand: what any local user can send
host, port, conns, frames, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
greeting = b"\\xff" + bytes(8) + b"\\x7f" + bytes([3, 0]) + b"NULL".ljust(20, b"\\0") + b"\\0" + bytes(31)
prop = b"\\x0bSocket-Type" + struct.pack(">I", 6) + b"DEALER"
ready = b"\\x05READY" + prop
socks = []
for _ in range(conns):
    s = socket.create_connection((host, port))
    s.sendall(greeting + b"\\x04" + bytes([len(ready)]) + ready)
    socks.append(s)
body = bytes(size)
sent = 0
for _ in range(frames):
    for s in socks:
        try:
            s.sendall(b"\\x02" + struct.pack(">Q", size) + body)
            sent += 1
        except OSError:
            pass
print("sent", sent, flush=True)
time.sleep(float(sys.argv[6]) if len(sys.argv) > 6 else 1)
"""
"""``ZMTP_FLOOD HOST PORT CONNS FRAMES SIZE [HOLD]``: open CONNS ZMQ-speaking
connections and send FRAMES frames of SIZE bytes on each."""
