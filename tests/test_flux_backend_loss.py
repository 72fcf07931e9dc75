"""A broker killed while a job is being submitted loses the block; it does not fail the job as Flux's rejection.

Found by the soak (issue 20): right after its broker's SIGKILL the first
submit fails with ENOENT (EPIPE only for the later ones), which the submit
loop took for Flux rejecting the job: the task failed with ``FluxJobFailed``
("Flux rejected the job: No such file or directory"), blaming the app,
instead of ``BlockLost`` as for every other loss of the broker.
"""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.flux

SCRIPT = """
import json, os, signal, sys, time
import flux
from flux.job import JobspecV1
from parsl_flux.allocation.events import Submit
from parsl_flux.allocation.flux_backend import FluxThreads

events = []
threads = FluxThreads(lambda event: events.append(type(event).__name__))
threads.start(ping_period=600, ping_timeout=5)  # the pinger stays out of it
handle = flux.Flux()
jobspec = JobspecV1.from_command(["true"])
os.kill(int(handle.attr_get("broker.pid")), signal.SIGKILL)
threads.put(Submit(7, jobspec))
deadline = time.monotonic() + 20
while not events and time.monotonic() < deadline:
    time.sleep(0.05)
print("EVENTS " + json.dumps(events), flush=True)
"""


def test_a_submit_that_fails_because_the_broker_died_is_fatal_not_a_rejected_job(flux_path, tmp_path):
    proc = subprocess.run([flux_path, "start", flux_path, "env", sys.executable, "-c", SCRIPT], cwd=tmp_path,
                          capture_output=True, text=True, timeout=90)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("EVENTS ")]
    assert lines, f"the script reported nothing (rc {proc.returncode}): {proc.stderr[-2000:]}"
    events = json.loads(lines[0][len("EVENTS "):])
    assert events, "no event within 20 s of the submit"
    assert events[0] == "BrokerLost", f"the job was failed as rejected by Flux, not the broker lost: {events}"
    assert "SubmitFailed" not in events, events
