"""Fault-sweep workflow: a script with a bug, raising 0.5 s after it submitted 5 apps."""

import time

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
    time.sleep(0.5)
    faultkit.say("raising")
    raise RuntimeError("user bug")
