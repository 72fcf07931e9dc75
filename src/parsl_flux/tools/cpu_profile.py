"""Where a benchmark case spends its CPU, by component: ``perf record -a`` around one run.

On a small machine every case of ``parsl_flux.tools.bench`` is CPU-bound (the
broker, the jobs, the manager and the driver share the same cores), so a
case's tasks/s is set by the CPU it spends per task. This tool runs bench
cases, one after another, under system-wide ``perf record`` (the
``cpu-clock`` software event, no call graphs, so the profiler itself costs
little), assigns every sample to a component by the process it hit, and
reports CPU milliseconds per task for each component. Comparing two cases
(parsl-flux per-job against bare Flux, packing against HTEX) then shows where
the difference in their rates comes from, measured rather than guessed.

Components are read from each process's command line, polled from ``/proc``
while the case runs; processes too short-lived to be seen there (each Flux
job's shell and task) are placed by their ``comm`` name. Run as root (or with
``perf_event_paranoid`` <= 0)::

    python -m parsl_flux.tools.cpu_profile python-noop/parsl-flux/300 python-noop/bare-flux/300
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from parsl_flux.tools import bench

SAMPLE_HZ = 999
POLL_S = 0.05
EXEC_WATCH_S = 5.0

def _program(cmdline: str) -> str:
    """The executable's file name: ``/x/bin/flux submit ...`` -> ``flux``."""
    return Path(cmdline.split(" ", 1)[0]).name


COMPONENTS: List[Tuple[str, Callable[[str, str], bool]]] = [
    # (component, predicate on (cmdline, comm)), first match wins; the broker
    # first, since its command line holds its initial program's (the manager's)
    ("flux-broker", lambda cmd, comm: _program(cmd) == "flux-broker" or comm.startswith("flux-broker")),
    ("flux python modules", lambda cmd, comm: "flux-module-python-exec" in cmd),
    ("driver", lambda cmd, comm: "parsl_flux.tools.bench --child" in cmd),
    ("parsl-flux manager", lambda cmd, comm: "parsl_flux.allocation.manager" in cmd),
    ("htex interchange", lambda cmd, comm: "interchange" in cmd),
    ("htex worker pool", lambda cmd, comm: "process_worker_pool" in cmd),
    ("flux-shell", lambda cmd, comm: comm == "flux-shell" or _program(cmd) == "flux-shell"),
    ("mpiexec/orted", lambda cmd, comm: comm in ("mpiexec", "mpirun", "orterun", "orted", "prterun")),
    ("flux commands", lambda cmd, comm: comm == "flux" or _program(cmd) == "flux"),
    ("profiler", lambda cmd, comm: comm.startswith("perf")),
    ("idle", lambda cmd, comm: comm == "swapper"),
    ("job processes", lambda cmd, comm: comm.startswith(("python", "true", "bash", "sh", "mpi_hello"))),
]
"""The components, most specific first. "job processes" is what Flux (or
HTEX) runs for the app: the runner, the app, a bash app's command."""


def classify(cmdline: str, comm: str) -> str:
    """The component a process belongs to, or ``"other"`` (the system, this tool)."""
    for name, matches in COMPONENTS:
        if matches(cmdline, comm):
            return name
    return "other"


class ProcessNames:
    """Command lines of the processes alive while a case runs, polled from /proc in a thread."""

    def __init__(self) -> None:
        self.cmdlines: Dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="proc-poll", daemon=True)

    def __enter__(self) -> "ProcessNames":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        # ``flux start``/``flux env`` exec what they start (the broker, the
        # manager) under the same pid: re-read those until they change.
        pending_exec: Dict[int, float] = {}
        while not self._stop.wait(POLL_S):
            now = time.monotonic()
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                pid = int(entry)
                if pid in self.cmdlines and now > pending_exec.get(pid, 0.0):
                    continue
                try:
                    raw = Path(f"/proc/{entry}/cmdline").read_bytes()
                except OSError:
                    continue
                if raw:  # kernel threads and zombies have none; leave them to comm
                    cmdline = raw.replace(b"\0", b" ").decode(errors="replace").strip()
                    self.cmdlines[pid] = cmdline
                    if _program(cmdline) == "flux":
                        pending_exec.setdefault(pid, now + EXEC_WATCH_S)
                    else:
                        pending_exec.pop(pid, None)


def perf_samples(data: Path, window: Tuple[float, float]) -> Counter:
    """Samples per (pid, comm) in a ``perf record -k CLOCK_MONOTONIC`` file, taken
    between the two CLOCK_MONOTONIC times of ``window``."""
    out = subprocess.run(["perf", "script", "-i", str(data), "-F", "comm,pid,time"], capture_output=True, text=True,
                         check=True).stdout
    return count_samples(out, window)


def count_samples(perf_script: str, window: Tuple[float, float]) -> Counter:
    """Samples per (pid, comm) in ``perf script -F comm,pid,time`` output, within ``window``."""
    counts: Counter = Counter()
    for line in perf_script.splitlines():
        head, _, stamp = line.strip().rstrip(":").rpartition(" ")
        comm, _, pid = head.strip().rpartition(" ")
        try:
            inside = window[0] <= float(stamp) <= window[1]
        except ValueError:
            continue
        if inside and pid.isdigit():
            counts[(int(pid), comm.strip())] += 1
    return counts


def by_component(samples: Counter, cmdlines: Dict[int, str]) -> Dict[str, int]:
    """Samples per component."""
    totals: Counter = Counter()
    for (pid, comm), count in samples.items():
        totals[classify(cmdlines.get(pid, ""), comm)] += count
    return dict(totals)


def profile(case: bench.Case, ctx: Dict, workdir: Path, timeout: float) -> Dict:
    """Run ``case`` once under ``perf record -a``; its bench result plus CPU ms per task by component.

    Only the samples of the timed window count (first submit to last result,
    as the bench's tasks/s): the start-up of the interpreter, Parsl, the
    instance and the manager is paid once, not per task.
    """
    data = workdir / f"{case.key.replace('/', '_')}.perf"
    perf = subprocess.Popen(["perf", "record", "-a", "-q", "-k", "CLOCK_MONOTONIC", "-e", "cpu-clock",
                             "-F", str(SAMPLE_HZ), "-o", str(data)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)  # perf is recording once it has opened its events
    if perf.poll() is not None:
        raise RuntimeError(f"perf record failed: {perf.stderr.read() if perf.stderr else ''}")
    t0 = time.perf_counter()
    try:
        with ProcessNames() as names:
            result = bench.measure(case, ctx, timeout)
    finally:
        wall = time.perf_counter() - t0
        perf.send_signal(signal.SIGINT)
        perf.wait(timeout=120)
    window = result["window_monotonic_s"]
    components = by_component(perf_samples(data, (window[0], window[1])), names.cmdlines)
    data.unlink()
    ms_per_sample = 1000.0 / SAMPLE_HZ
    busy = sum(v for k, v in components.items() if k != "idle")
    return {
        "case": case.key,
        "tasks_per_s": result["tasks_per_s"],
        "wall_s": wall,
        "window_s": window[1] - window[0],
        "cpus": os.cpu_count(),
        "busy_fraction": busy / max(1, sum(components.values())),
        "cpu_ms_per_task": {k: v * ms_per_sample / case.n for k, v in sorted(components.items(), key=lambda kv: -kv[1])
                            if k != "idle"},
        "note": "samples from the first submit to the last result, divided by N",
    }


def table(profiles: List[Dict]) -> str:
    """Markdown: components as rows, cases as columns (CPU ms per task)."""
    names = sorted({k for p in profiles for k in p["cpu_ms_per_task"]},
                   key=lambda k: -max(p["cpu_ms_per_task"].get(k, 0.0) for p in profiles))
    lines = ["| CPU ms per task | " + " | ".join(p["case"] for p in profiles) + " |",
             "|---|" + "---:|" * len(profiles)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(f"{p['cpu_ms_per_task'].get(name, 0.0):.2f}" for p in profiles) + " |")
    lines.append("| **total** | " + " | ".join(f"**{sum(p['cpu_ms_per_task'].values()):.2f}**" for p in profiles)
                 + " |")
    lines.append("| tasks/s (this run) | " + " | ".join(f"{p['tasks_per_s']:.1f}" for p in profiles) + " |")
    lines.append("| cores busy | " + " | ".join(f"{p['busy_fraction']:.0%}" for p in profiles) + " |")
    return "\n".join(lines)


def parse_case(key: str) -> bench.Case:
    """``GROUP/EXECUTOR/N`` (default mode) as a :class:`bench.Case`."""
    parts = key.split("/")
    if len(parts) != 3 or parts[0] not in bench.GROUPS or parts[1] not in bench.EXECUTORS or not parts[2].isdigit():
        raise argparse.ArgumentTypeError(f"{key!r}: expected GROUP/EXECUTOR/N with GROUP in {bench.GROUPS} "
                                         f"and EXECUTOR in {bench.EXECUTORS}")
    return bench.Case(parts[0], parts[1], int(parts[2]), samples=False)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m parsl_flux.tools.cpu_profile", description=__doc__.split("\n")[0])
    p.add_argument("cases", nargs="+", type=parse_case, help="GROUP/EXECUTOR/N, e.g. python-noop/parsl-flux/300")
    p.add_argument("--repeats", type=int, default=1, help="profile the list this many times, interleaved")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--out", type=Path, default=None, help="also write the profiles as JSON and Markdown here")
    args = p.parse_args(argv)
    if shutil.which("perf") is None:
        p.error("perf is not installed (Debian: apt-get install linux-perf)")
    flux = bench.find_flux()
    workdir = Path(tempfile.mkdtemp(prefix="parsl-flux-profile-"))
    ctx = bench.context(flux, None, workdir)
    profiles = [profile(case, ctx, workdir, args.timeout) for _ in range(args.repeats) for case in args.cases]
    shutil.rmtree(workdir, ignore_errors=True)
    text = table(profiles)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "profile.json").write_text(json.dumps({"cases": [asdict(c) for c in args.cases],
                                                           "profiles": profiles}, indent=2))
        (args.out / "profile.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
