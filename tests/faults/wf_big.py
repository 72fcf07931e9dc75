"""Fault-sweep workflow: a 1 GiB argument and a 1 GiB result (max_message_bytes is 256 MiB).

Expected: the argument fails at submit with PayloadTooLarge, the result with
ResultTooLarge naming its size, and the block goes on serving (a small app
afterwards returns its value).
"""

import parsl
from parsl.config import Config

import faultkit
from parsl_flux import FluxExecutor

GIB = 1 << 30


@parsl.python_app
def size_of(data):
    return len(data)


@parsl.python_app
def make_bytes(n):
    return b"x" * n


track = faultkit.Tracker()

with parsl.load(Config(executors=[FluxExecutor()])):
    faultkit.say("loaded")
    data = b"x" * GIB
    faultkit.say("submit", name="arg_1GiB")
    track(size_of(data), "arg_1GiB").exception()
    del data
    faultkit.say("submit", name="result_1GiB")
    track(make_bytes(GIB), "result_1GiB").exception(timeout=240)
    faultkit.say("submit", name="small_after")
    track(make_bytes(10), "small_after").exception(timeout=120)
faultkit.say("done")
