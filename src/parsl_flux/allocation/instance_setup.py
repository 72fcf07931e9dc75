"""What the manager sets up in a Flux instance, before the first job.

- Flux's ``alloc-bypass`` jobtap plugin, which Parsl's MPI model needs
  (:mod:`parsl_flux.allocation.mpi_allocation`), wherever the manager's user
  owns the instance (only the owner may bypass the scheduler).
- Lower job-submission latency, only where the manager is the instance's
  initial program (start mode: an instance the block started for itself; in
  attach mode the instance is used as it is). Flux batches new jobs and
  their events for throughput: ``job-ingest`` holds each new job up to 10 ms
  to commit several in one KVS transaction, and the job manager holds each
  job's state change up to another 10 ms for the same reason. A task here is a Flux job whose
  latency the user waits for, and Parsl's MPI model puts a second job (the
  ranks) on every app's critical path, where measured on a 2-core machine the
  two timers were 22 of the 29 ms from a ranks job's submit to its start.
  With ``[ingest] batch-count = 1`` each job is committed at once, and the
  job manager's batch timer is set to 1 ms, which still joins the events of
  a burst. Jobs per second through one instance are bounded by the job shells
  (tens per second per core), far below what one commit per job sustains.
"""

from __future__ import annotations

import errno
import logging
from typing import Any, List, Optional

logger = logging.getLogger("parsl_flux.allocation.instance_setup")

BYPASS_PLUGIN = "alloc-bypass.so"
INGEST_BATCH_COUNT = 1
"""Jobs per ``job-ingest`` KVS commit: 1, so that no new job waits for a timer."""
EVENT_BATCH_TIMEOUT = 0.001
"""Seconds the job manager gathers job events into one KVS commit (Flux's default: 0.01)."""
RPC_TIMEOUT = 10.0
"""Seconds to wait for a broker's answer while setting up."""


def load_alloc_bypass(handle: Any) -> Optional[str]:
    """Load Flux's ``alloc-bypass`` jobtap plugin: None when loaded, else why not."""
    try:
        handle.rpc("job-manager.jobtap", {"load": BYPASS_PLUGIN}).get()
    except OSError as exc:
        if exc.errno != errno.EEXIST:  # another manager of this instance loaded it
            logger.warning("cannot load %s: %s", BYPASS_PLUGIN, exc)
            return f"Flux's {BYPASS_PLUGIN} jobtap plugin did not load: {exc.strerror or exc}"
    return None


def with_ingest_batch_count(config: dict, count: int) -> dict:
    """``config`` (a broker's whole configuration) with ``[ingest] batch-count`` set, the rest kept."""
    ingest = dict(config.get("ingest", {}))
    ingest["batch-count"] = count
    return {**config, "ingest": ingest}


def _answer(future: Any) -> Any:
    """A Flux RPC's answer within :data:`RPC_TIMEOUT` (OSError ETIMEDOUT after it:
    a broker stopped at the block's start must not hold the manager)."""
    future.wait_for(RPC_TIMEOUT)
    return future.get()


def tune_latency(handle: Any) -> List[str]:
    """Commit each new job at once, on every broker (a configuration loaded on
    rank 0 reaches them all), and shorten the job manager's event batching (see
    the module docstring). Returns what could not be set, each as a sentence;
    the instance works either way, only slower."""
    failures = []
    try:
        config = _answer(handle.rpc("config.get"))
        _answer(handle.rpc("config.load", with_ingest_batch_count(config, INGEST_BATCH_COUNT)))
    except OSError as exc:
        failures.append(f"[ingest] batch-count: {exc.strerror or exc}")
    try:
        _answer(handle.rpc("job-manager.set-batch-timeout", {"timeout": EVENT_BATCH_TIMEOUT}))
    except OSError as exc:
        failures.append(f"the job manager's batch timeout: {exc.strerror or exc}")
    for failure in failures:
        logger.warning("cannot lower job latency: %s", failure)
    return failures
