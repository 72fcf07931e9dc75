"""Fault-sweep workflow: N apps that sleep S seconds, then wait for them.

Used by the manager SIGKILL, broker SIGSTOP and driver SIGKILL scenarios of
``sweep.py``, which inject the fault from outside while the apps run.
Usage: ``python wf_naps.py [N] [S]`` (default 4 apps of 30 s).
"""

import sys

import parsl
from parsl.config import Config

import faultkit
from parsl_flux import FluxExecutor


@parsl.python_app
def nap(seconds):
    import time

    time.sleep(seconds)
    return seconds


n = int(sys.argv[1]) if len(sys.argv) > 1 else 4
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 30
track = faultkit.Tracker()  # before parsl.load: its exit summary runs after Parsl's clean-up

with parsl.load(Config(executors=[FluxExecutor()])):
    faultkit.say("loaded")
    for _ in range(n):
        track(nap(seconds))
    faultkit.say("submitted", n=n)
    track.wait(180)
faultkit.say("done")
