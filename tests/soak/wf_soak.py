"""The soak's workflow: mixed apps whose every result is checkable, for a fixed time.

A workflow script as users write one (apps defined here, ``FluxExecutor`` with
retries), plus ``@@faults`` event lines (:mod:`faultkit`) that tell the
harness (:mod:`soak`) what was submitted, what each try did and how each
future resolved; the harness injects faults from outside and judges.

Every app's value is the SHA-256 of its key and input (``expected``), plus
the Flux-side task id of the try that computed it where the job knows it (a
job of its own; packed apps run on shared workers), so a wrong, swapped or
stale result shows. Apps named ``fail_*`` fail on purpose.

App ``n`` is drawn from its own generator (seeded by the seed and ``n``) and
the apps that compute values are ``cache=True`` with Parsl's ``task_exit``
checkpoints, so a driver killed mid-run and started again with the same seed
(``--at-least``: at least as many apps as the killed one submitted) submits
the same apps again: those that finished come back from the checkpoint
(reported ``memo``), the rest run again, as a user's rerun of the script would.

Usage: ``python wf_soak.py --until EPOCH --seed S [--at-least N] [--inflight N] [--cluster SIF ADDRESS]``
(``--cluster``: blocks of 2 nodes on the virtual Slurm cluster, the slurm site
with Apptainer, as ``tests/test_cluster.py`` runs them).
"""

import argparse
import hashlib
import random
import sys
import time
from pathlib import Path

import parsl
from parsl.config import Config
from parsl.dataflow.memoization import BasicMemoizer
from parsl.providers import LocalProvider
from parsl.utils import get_all_checkpoints

from parsl_flux.providers import SlurmProvider

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "faults"))
import faultkit  # noqa: E402

from parsl_flux import FluxExecutor  # noqa: E402

OWN_JOB = {"walltime": 600}  # a walltime keeps an app off the packing workers: a Flux job of its own
PACKED: dict = {}


def expected(key: str, data: str) -> str:
    return hashlib.sha256(f"{key}:{data}".encode()).hexdigest()


@parsl.python_app(cache=True)
def digest(key, data, nap, parsl_resource_specification=OWN_JOB):
    import hashlib
    import os
    import time

    time.sleep(nap)
    return hashlib.sha256(f"{key}:{data}".encode()).hexdigest(), os.environ.get("PARSL_FLUX_TASK")


@parsl.python_app(cache=True)
def digest_mpi(key, data, nap, parsl_resource_specification=None):
    """Runs on every rank; rank 0's value is the result, and it checks it has a peer rank."""
    import hashlib
    import os
    import time

    if os.environ.get("FLUX_JOB_SIZE", "1") != "2":
        raise RuntimeError(f"expected 2 ranks, FLUX_JOB_SIZE={os.environ.get('FLUX_JOB_SIZE')}")
    time.sleep(nap)
    return hashlib.sha256(f"{key}:{data}".encode()).hexdigest(), os.environ.get("PARSL_FLUX_TASK")


@parsl.bash_app(cache=True)
def digest_bash(key, data, nap, out, parsl_resource_specification=OWN_JOB):
    return (f"sleep {nap}; h=$(printf '%s' '{key}:{data}' | sha256sum | cut -d' ' -f1); "
            f"printf '%s %s\\n' \"$h\" \"$PARSL_FLUX_TASK\" > {out}")


@parsl.python_app
def fail_python(key, parsl_resource_specification=PACKED):
    raise ValueError(f"{key} fails on purpose")


@parsl.bash_app
def fail_bash(key, parsl_resource_specification=OWN_JOB):
    return "exit 3"


class FastPollSlurmProvider(SlurmProvider):
    """squeue every 2 s instead of 60 s, so a lost block is noticed quickly (as tests/test_cluster.py)."""

    status_polling_interval = 2  # type: ignore[assignment]


def local_config() -> Config:
    """One local block, replaced when lost."""
    return Config(executors=[FluxExecutor(packing=True, provider=LocalProvider(init_blocks=1, min_blocks=1,
                                                                                max_blocks=1))])


def cluster_config(sif: str, address: str) -> Config:
    """The slurm site with Apptainer, one block of 2 nodes."""
    from parsl_flux import sites

    config = sites.make_config("slurm", image=sif, runtime="apptainer", nodes=2, address=address,
                               walltime="00:30:00", heartbeat_threshold=10)
    executor = sites.flux_executor(config)
    executor.packing = True
    executor.provider.__class__ = FastPollSlurmProvider
    return config


KINDS = ("job", "packed", "bash", "mpi", "fail_python", "fail_bash")
WEIGHTS = (4, 4, 2, 1, 1, 1)


class Soak:
    """Submits apps while the clock runs, keeping ``inflight`` outstanding, and reports each.

    Only unresolved futures are kept (a resolved one is reported, then dropped),
    so the driver's memory measures the executor, not a list of every result.
    """

    def __init__(self, seed: int, out_dir: Path, mpi_spec: dict) -> None:
        self.seed = seed
        self.out_dir = out_dir
        self.mpi_spec = mpi_spec
        self.futures = {}
        self.tids = {}

    def submit(self, n: int) -> None:
        rng = random.Random(f"{self.seed}:{n}")  # app n is the same in every driver run
        kind = rng.choices(KINDS, WEIGHTS)[0]
        key = f"{kind}-{n}"
        data = "%016x" % rng.getrandbits(64)
        nap = round(rng.uniform(0.2, 2.5), 2)
        if kind == "job":
            fut = digest(key, data, nap)
        elif kind == "packed":
            fut = digest(key, data, nap, parsl_resource_specification=PACKED)
        elif kind == "mpi":
            fut = digest_mpi(key, data, nap, parsl_resource_specification=self.mpi_spec)
        elif kind == "bash":
            fut = digest_bash(key, data, nap, str(self.out_dir / f"{key}.txt"))
        elif kind == "fail_python":
            fut = fail_python(key)
        else:
            fut = fail_bash(key)
        self.futures[key] = fut
        self.tids[fut.tid] = key
        faultkit.say("submitted", key=key, n=n, kind=kind, tid=fut.tid, expected=expected(key, data))
        fut.add_done_callback(lambda f, k=key, kd=kind: self.resolved(k, kd, f))

    def resolved(self, key: str, kind: str, fut) -> None:
        record = fut.task_record
        exec_fu = record.get("exec_fu")
        final_task = getattr(exec_fu, "parsl_executor_task_id", None)
        exc = fut.exception()
        fields = {"key": key, "kind": kind, "tries": record.get("fail_count", 0), "final_task": final_task,
                  "memo": bool(record.get("from_memo"))}
        if exc is not None:
            faultkit.say("resolved", outcome=type(exc).__name__, detail=str(exc)[:200], **fields)
        else:
            if kind == "bash":
                text = (self.out_dir / f"{key}.txt").read_text().split()
                value = [text[0], text[1] if len(text) > 1 else None]
            else:
                value = list(fut.result())
            faultkit.say("resolved", outcome="value", value=value[0], task=value[1], **fields)
        self.futures.pop(key, None)
        self.tids.pop(fut.tid, None)

    def on_try_failed(self, exc: Exception, record: dict) -> float:
        """Parsl's retry handler: each failed try, as it happens (each costs one retry)."""
        faultkit.say("try_failed", key=self.tids.get(record["id"], str(record["id"])), outcome=type(exc).__name__,
                     detail=str(exc)[:200])
        return 1.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--until", type=float, required=True, help="submit new apps until this epoch time")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--at-least", type=int, default=0, help="apps to submit even past --until")
    parser.add_argument("--inflight", type=int, default=6)
    parser.add_argument("--cluster", nargs=2, metavar=("SIF", "ADDRESS"))
    parser.add_argument("--drain", type=float, default=240.0, help="seconds to wait for the last futures")
    args = parser.parse_args()
    out_dir = Path("outputs")
    out_dir.mkdir(exist_ok=True)
    mpi_spec = {"num_tasks": 2, **({"num_nodes": 2} if args.cluster else {})}
    soak = Soak(args.seed, out_dir, mpi_spec)
    config = cluster_config(*args.cluster) if args.cluster else local_config()
    config.retries, config.retry_handler, config.strategy_period = 2, soak.on_try_failed, 2
    config.memoizer = BasicMemoizer(checkpoint_mode="task_exit", checkpoint_files=get_all_checkpoints(config.run_dir))
    executor = config.executors[0]
    with parsl.load(config):
        faultkit.say("loaded", url=executor.url)
        n = 0
        while time.time() < args.until or n < args.at_least:
            if len(soak.futures) < args.inflight:  # resolved futures leave the dict
                soak.submit(n)
                n += 1
            else:
                time.sleep(0.1)
        faultkit.say("submitting_done", submitted=n)
        end = time.monotonic() + args.drain
        for fut in list(soak.futures.values()):
            try:
                fut.exception(timeout=max(0.0, end - time.monotonic()))
            except Exception:
                pass
        unresolved = [k for k, f in list(soak.futures.items()) if not f.done()]
        faultkit.say("summary", submitted=n, unresolved=unresolved)


if __name__ == "__main__":
    main()
