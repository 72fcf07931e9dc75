"""The driver's CPU per task, by thread: where parsl-perf's no-op tasks spend the workflow process's time.

Usage: ``FLUX_PATH=~/.cache/parsl-flux/flux-core-0.88.0 python benchmarks/driver_cpu.py [--n 5000] [--repeats 3]``

Parsl's ``parsl-perf`` gives one rate; this says which thread of the
driver process (the workflow script: the DFK's submit path on the main
thread, the DFK's callbacks, the executor's I/O loop, Parsl's strategy)
spends how much CPU per task, from ``/proc/self/task/*/stat`` before and
after a batch of N tasks of ``parsl-perf``'s own app (by reference, as
``parsl-perf`` sends it). Executors: parsl-flux in packing mode and Parsl's
ThreadPoolExecutor (the DFK's ceiling), each with the DFK's logging on
(Parsl's default) and off; each (executor, logging) runs in a fresh
process, alternating, ``--repeats`` times; medians are reported. The CPU of
the block's processes (manager, broker, workers) is not the driver's and is
not counted here (``parsl_flux.tools.cpu_profile`` counts it, system-wide).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Tuple

CASES = (("parsl-flux-packing", True), ("threadpool", True), ("parsl-flux-packing", False), ("threadpool", False))
WARM_UP = 50


def thread_cpu() -> Dict[str, Tuple[str, float]]:
    """Each thread of this process: its name and its CPU seconds so far."""
    tick = os.sysconf("SC_CLK_TCK")
    names = {str(t.native_id): t.name for t in threading.enumerate()}
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                comm, rest = f.read().rsplit(")", 1)
        except OSError:  # the thread ended
            continue
        fields = rest.split()
        out[tid] = (names.get(tid, comm.split("(", 1)[1]), (int(fields[11]) + int(fields[12])) / tick)
    return out


def child(executor: str, logging_on: bool, n: int) -> Dict[str, object]:
    """One measurement in this fresh process: tasks/s and CPU ms per task, in all and per thread."""
    import parsl
    from parsl.benchmark.perf import app
    from parsl.config import Config

    if executor == "threadpool":
        from parsl.executors import ThreadPoolExecutor

        ex = ThreadPoolExecutor(label="perf", max_threads=os.cpu_count())
    else:
        from parsl_flux import FluxExecutor

        ex = FluxExecutor(label="perf", packing=True)
    config = Config(executors=[ex], initialize_logging=logging_on, run_dir=tempfile.mkdtemp(prefix="driver-cpu-"))
    with parsl.load(config):
        for fut in [app(0) for _ in range(WARM_UP)]:
            fut.result()
        before, usage, start = thread_cpu(), resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for fut in [app(0) for _ in range(n)]:
            fut.result()
        wall = time.perf_counter() - start
        after, usage_after = thread_cpu(), resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage_after.ru_utime + usage_after.ru_stime - usage.ru_utime - usage.ru_stime
    per_thread: Dict[str, float] = {}
    for tid, (name, seconds) in after.items():
        spent = seconds - before.get(tid, (name, 0.0))[1]
        if spent > 0:
            group = name.rstrip("0123456789-_")  # threads of a pool count as one
            per_thread[group] = per_thread.get(group, 0.0) + 1e3 * spent / n
    return {"tasks_per_s": n / wall, "cpu_ms_per_task": 1e3 * cpu / n, "threads_ms_per_task": per_thread}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3] == "on", int(sys.argv[4]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs: Dict[Tuple[str, bool], List[dict]] = {case: [] for case in CASES}
    for _ in range(args.repeats):
        for executor, logging_on in CASES:
            done = subprocess.run([sys.executable, __file__, "--child", executor, "on" if logging_on else "off",
                                   str(args.n)], capture_output=True, text=True, timeout=900, check=True)
            runs[(executor, logging_on)].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print("| executor | DFK logging | tasks/s (median) | vs ThreadPool | driver CPU ms/task | by thread, ms/task |")
    print("|---|---|---:|---:|---:|---|")
    for executor, logging_on in CASES:
        each = runs[(executor, logging_on)]
        rate = statistics.median(r["tasks_per_s"] for r in each)
        ceiling = statistics.median(r["tasks_per_s"] for r in runs[("threadpool", logging_on)])
        groups = {g for r in each for g in r["threads_ms_per_task"]}
        by_thread = {g: statistics.median(r["threads_ms_per_task"].get(g, 0.0) for r in each) for g in groups}
        shown = ", ".join(f"{g} {v:.3f}" for g, v in sorted(by_thread.items(), key=lambda kv: -kv[1]) if v >= 0.005)
        print(f"| {executor} | {'on' if logging_on else 'off'} | {rate:.0f} | {rate / ceiling:.2f} | "
              f"{statistics.median(r['cpu_ms_per_task'] for r in each):.3f} | {shown} |")


if __name__ == "__main__":
    main()
