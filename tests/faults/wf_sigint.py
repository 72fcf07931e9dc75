"""Fault-sweep workflow: 5 apps and a wait for their results, interrupted by
``sweep.py`` with SIGINT (Ctrl-C) 0.5 s after ``parsl.load`` returned."""

import parsl
from parsl.config import Config

import faultkit
from parsl_flux import FluxExecutor


@parsl.python_app
def nap(seconds):
    import time

    time.sleep(seconds)
    return seconds


track = faultkit.Tracker()

with parsl.load(Config(executors=[FluxExecutor()])):
    faultkit.say("loaded")
    futures = [track(nap(30)) for _ in range(5)]
    faultkit.say("submitted", n=5)
    print([f.result() for f in futures])
