"""Fault-sweep workflow: one long app (its runner is SIGKILLed by ``sweep.py``) and three short ones.

The long app is submitted first, so it is the executor's task 0
(``PARSL_FLUX_TASK=0`` in its runner's environment). Only it may fail.
"""

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
    track(nap(30), "doomed")
    for i in range(3):
        track(nap(2), f"short{i}")
    faultkit.say("submitted", n=4)
    track.wait(180)
faultkit.say("done")
