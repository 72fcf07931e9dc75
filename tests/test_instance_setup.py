"""The manager's set-up of the Flux instance it owns: lower job latency (Parsl's MPI model, issue 23)."""

import json
import subprocess
import sys

import pytest

from parsl_flux.allocation.instance_setup import with_ingest_batch_count


def test_batch_count_joins_the_config_and_keeps_the_rest():
    config = {"ingest": {"buffer-size": "40M"}, "resource": {"noverify": True}}
    assert with_ingest_batch_count(config, 1) == {"ingest": {"buffer-size": "40M", "batch-count": 1},
                                                  "resource": {"noverify": True}}
    assert config == {"ingest": {"buffer-size": "40M"}, "resource": {"noverify": True}}  # not changed in place
    assert with_ingest_batch_count({}, 1) == {"ingest": {"batch-count": 1}}


SCRIPT = """
import json, statistics
import flux
from flux.job import JobspecV1, event_watch, submit
from parsl_flux.allocation.instance_setup import tune_latency

handle = flux.Flux()

def submit_to_depend():
    jobid = submit(handle, JobspecV1.from_command(["true"]), waitable=True)
    stamps = {}
    for event in event_watch(handle, jobid):
        stamps.setdefault(event.name, event.timestamp)
        if event.name == "clean":
            break
    flux.job.wait(handle, jobid)
    return stamps["depend"] - stamps["submit"]

before = statistics.median(submit_to_depend() for _ in range(5))
failures = tune_latency(handle)
after = statistics.median(submit_to_depend() for _ in range(5))
configs = [handle.rpc("config.get", nodeid=rank).get() for rank in (0, 1)]
print("RESULT " + json.dumps({"failures": failures, "before": before, "after": after, "configs": configs}))
"""


@pytest.mark.flux
def test_a_new_job_waits_for_no_batching_timer(flux_path, tmp_path):
    """Flux's two 10 ms batching timers (job-ingest, job manager) put at least
    20 ms between a job's submit and depend events; after the set-up, every
    broker commits each job at once and the job manager batches for 1 ms."""
    proc = subprocess.run([flux_path, "start", "--test-size=2", flux_path, "env", sys.executable, "-c", SCRIPT],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"the script reported nothing (rc {proc.returncode}): {proc.stderr[-2000:]}"
    result = json.loads(lines[0][len("RESULT "):])
    assert result["failures"] == []
    assert [config["ingest"]["batch-count"] for config in result["configs"]] == [1, 1]  # rank 0's load reached rank 1
    assert result["before"] >= 0.020, result  # the two timers: the measurement sees them
    assert result["after"] < 0.015, result
