"""A hostile neighbour for the trust tests: code run as another local user.

The tests run as root in CI; the attacker is ``nobody``, run through the
system's ``/usr/bin/python3`` with only its standard library (``nobody``
cannot enter root's home, where the test interpreter lives).
"""

from __future__ import annotations

import os
import subprocess
import textwrap

import pytest

NOBODY = "nobody"
PYTHON = "/usr/bin/python3"


def require_root_and_nobody() -> None:
    """Skip unless this test can switch to ``nobody`` (it must run as root)."""
    if os.geteuid() != 0:
        pytest.skip("switching to another local user needs root (CI runs the tests as root)")
    if not os.path.exists(PYTHON):
        pytest.skip(f"{PYTHON} is needed to run code as {NOBODY}")


def as_nobody(code: str, *args: str) -> subprocess.Popen:
    """Start ``code`` (a Python script) as ``nobody``; stdout and stderr are pipes."""
    require_root_and_nobody()
    return subprocess.Popen([PYTHON, "-c", textwrap.dedent(code), *args], user=NOBODY, group="nogroup",
                            extra_groups=[], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd="/")


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
