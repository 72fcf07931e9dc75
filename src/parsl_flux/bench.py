"""Benchmark parsl-flux side by side with Parsl's FluxExecutor and HTEX.

``parsl-flux bench`` (or ``make bench``) runs, in one run, on one Flux
instance and one machine, N no-op apps and N 10 ms apps through the DFK on:

* ``parsl-flux``: this executor, one Flux job per app;
* ``parsl-flux-packing``: this executor in packing mode;
* ``parsl-FluxExecutor``: Parsl's own ``parsl.executors.FluxExecutor``;
* ``htex``: Parsl's ``HighThroughputExecutor`` with a ``LocalProvider``;
* ``threadpool``: Parsl's ``ThreadPoolExecutor``, the DFK's own ceiling here.

and, as Flux's per-job ceiling, bare ``flux submit --cc=1-N python3 -S -c pass``
(at each N, paired with the per-job runs) and ``true``.

Each measurement runs in a fresh child process (so driver peak memory is the
child's) and is repeated; the report gives medians, ratios against Parsl's
FluxExecutor and HTEX, a JSON file and a PNG plot of throughput against N.
A size whose predicted run time exceeds ``--budget`` seconds is skipped and
reported as skipped, not guessed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from parsl_flux import fluxpath

EXECUTORS = ("parsl-flux", "parsl-flux-packing", "parsl-FluxExecutor", "htex", "threadpool")
WORKLOADS = {"noop": 0.0, "sleep10ms": 0.01}
BARE = "python3 -S -c pass"
"""Flux's per-job reference: one such job per app, measured at each N right
before each per-job parsl-flux run (the ratio pairs the two)."""


# --------------------------------------------------------------- child side
def _config(kind: str, flux: str, uri: str, run_dir: str) -> Any:
    from parsl.config import Config
    from parsl.providers import LocalProvider

    if kind.startswith("parsl-flux"):
        from parsl_flux import FluxExecutor

        ex: Any = FluxExecutor(flux_path=flux, flux_uri=uri, packing=kind.endswith("packing"), label="bench")
    elif kind == "parsl-FluxExecutor":
        from parsl.executors import FluxExecutor as ParslFluxExecutor

        ex = ParslFluxExecutor(flux_path=flux, label="bench", working_dir=os.path.join(run_dir, "parsl-flux-executor"),
                               launch_cmd=f"{{flux}} proxy {uri} {{flux}} env {{python}} {{manager}} "
                                          "{protocol} {hostname} {port}")
    elif kind == "htex":
        from parsl.executors import HighThroughputExecutor

        ex = HighThroughputExecutor(label="bench", max_workers_per_node=os.cpu_count(), provider=LocalProvider())
    elif kind == "threadpool":
        from parsl.executors import ThreadPoolExecutor

        ex = ThreadPoolExecutor(label="bench", max_threads=os.cpu_count())
    else:
        raise ValueError(f"unknown executor {kind!r}; choose from {EXECUTORS}")
    return Config(executors=[ex], run_dir=run_dir, initialize_logging=False)


def child(kind: str, n: int, workload: str, flux: str, uri: str) -> Dict[str, Any]:
    """One measurement, in this (fresh) process."""
    import parsl
    from parsl import python_app

    from parsl_flux.bench_app import sleep_app

    app = python_app(sleep_app, executors=["bench"])
    seconds = WORKLOADS[workload]
    run_dir = tempfile.mkdtemp(prefix="parsl-flux-bench-")
    t0 = time.perf_counter()
    dfk = parsl.load(_config(kind, flux, uri, run_dir))
    app(0.0).result()
    startup = time.perf_counter() - t0
    done: List[Tuple[int, float]] = []
    submitted: List[float] = []
    start = time.perf_counter()
    futures = []
    for i in range(n):
        submitted.append(time.perf_counter())
        fut = app(seconds)
        fut.add_done_callback(lambda _f, i=i: done.append((i, time.perf_counter())))
        futures.append(fut)
    for fut in futures:
        fut.result()
    end = time.perf_counter()
    t1 = time.perf_counter()
    dfk.cleanup()
    shutdown = time.perf_counter() - t1
    latencies = sorted(t - submitted[i] for i, t in done)
    shutil.rmtree(run_dir, ignore_errors=True)
    return {
        "tasks_per_s": n / (end - start),
        "latency_p50_s": latencies[len(latencies) // 2],
        "latency_p99_s": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "startup_s": startup,
        "shutdown_s": shutdown,
        "driver_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


# --------------------------------------------------------------- parent side
class FluxInstance:
    """A Flux instance for the whole run: the enclosing one, or a fresh ``flux start``."""

    def __init__(self, flux: str) -> None:
        self.flux = flux
        self.proc: Optional[subprocess.Popen] = None
        self.uri = os.environ.get("FLUX_URI", "")

    def __enter__(self) -> "FluxInstance":
        if not self.uri:
            uri_file = Path(tempfile.mkdtemp(prefix="parsl-flux-bench-")) / "uri"
            self.proc = subprocess.Popen([self.flux, "start", "bash", "-c", f'echo "$FLUX_URI" > {uri_file}; '
                                          "exec sleep 100000"], start_new_session=True)
            deadline = time.monotonic() + 60
            while not (uri_file.exists() and uri_file.read_text().strip()):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("could not start a Flux instance for the benchmark")
                time.sleep(0.1)
            self.uri = uri_file.read_text().strip()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)

    def version(self) -> str:
        out = subprocess.run([self.flux, "version"], capture_output=True, text=True).stdout
        return next((line.split(":", 1)[1].strip() for line in out.splitlines() if "libflux-core" in line), "")

    def purge(self) -> None:
        """Drop inactive jobs, so that each measurement meets an instance in the
        same state, not one that carries thousands of earlier jobs."""
        subprocess.run([self.flux, "job", "purge", "--force", "--num-limit=0"], check=True,
                       env={**os.environ, "FLUX_URI": self.uri}, stdout=subprocess.DEVNULL)

    def bare_rate(self, n: int, command: List[str]) -> float:
        """Jobs/s of ``flux submit --cc=1-N COMMAND`` then ``flux queue drain``."""
        env = {**os.environ, "FLUX_URI": self.uri}
        self.purge()
        start = time.perf_counter()
        subprocess.run([self.flux, "submit", "--quiet", f"--cc=1-{n}", *command], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run([self.flux, "queue", "drain"], env=env, check=True)
        return n / (time.perf_counter() - start)


def measure(kind: str, n: int, workload: str, flux: str, uri: str, timeout: float) -> Dict[str, Any]:
    """Run :func:`child` in a fresh interpreter and return its numbers."""
    cmd = [sys.executable, "-m", "parsl_flux.bench", "--child", kind, str(n), workload, flux, uri]
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # HTEX's interchange.py
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} N={n} {workload} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median_of(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def run_all(args: argparse.Namespace, flux: str) -> Dict[str, Any]:
    results: Dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                           "processor": platform.processor() or platform.machine(),
                                           "python": platform.python_version()},
                               "sizes": args.sizes, "repeats": args.repeats, "budget_s": args.budget,
                               "runs": {}}
    import parsl

    results["machine"]["parsl"] = parsl.__version__
    with FluxInstance(flux) as instance:
        results["machine"]["flux_core"] = instance.version()
        python = os.path.realpath(sys.executable)  # the interpreter runners use, not a wrapper such as a pyenv shim
        bare_python = [python, "-S", "-c", "pass"]
        results["machine"]["bare_python"] = python
        results["bare_flux"] = {"true": instance.bare_rate(args.bare_n, ["true"]), BARE: {}}
        print(f"bare Flux, {args.bare_n} jobs of true: {results['bare_flux']['true']:.1f} jobs/s", flush=True)
        for workload in args.workloads:
            for kind in args.executors:
                rate: Optional[float] = None
                for n in args.sizes:
                    key = f"{kind}/{workload}/{n}"
                    predicted = n / rate if rate else 0.0
                    if predicted > args.budget:
                        results["runs"][key] = {"skipped": f"predicted {predicted:.0f}s > budget {args.budget:.0f}s"}
                        print(f"{key}: skipped ({results['runs'][key]['skipped']})", flush=True)
                        continue
                    paired = kind == "parsl-flux" and workload == "noop"
                    runs, bare = [], []
                    for _ in range(args.repeats):
                        if paired:  # the reference, right before each run, so both meet the machine as it is then
                            bare.append(instance.bare_rate(n, bare_python))
                        instance.purge()
                        runs.append(measure(kind, n, workload, flux, instance.uri, timeout=max(600.0, 4 * predicted)))
                    if paired:
                        results["bare_flux"][BARE][str(n)] = statistics.median(bare)
                        print(f"bare Flux, {n} jobs of python -S: {results['bare_flux'][BARE][str(n)]:.1f} jobs/s",
                              flush=True)
                    med = median_of(runs)
                    rate = med["tasks_per_s"]
                    results["runs"][key] = med
                    print(f"{key}: {rate:.1f} tasks/s, p50 {med['latency_p50_s'] * 1000:.0f} ms, "
                          f"p99 {med['latency_p99_s'] * 1000:.0f} ms, start {med['startup_s']:.1f}s, "
                          f"stop {med['shutdown_s']:.1f}s, peak {med['driver_peak_rss_mb']:.0f} MB", flush=True)
    return results


def ratios(results: Dict[str, Any]) -> Dict[str, Dict[str, float]]:
    """tasks/s of each run divided by Parsl's FluxExecutor and by HTEX at the same size and workload."""
    out: Dict[str, Dict[str, float]] = {}
    for key, r in results["runs"].items():
        if "tasks_per_s" not in r:
            continue
        kind, workload, n = key.split("/")
        row = {}
        for base in ("parsl-FluxExecutor", "htex"):
            b = results["runs"].get(f"{base}/{workload}/{n}", {})
            if base != kind and "tasks_per_s" in b:
                row[f"vs {base}"] = r["tasks_per_s"] / b["tasks_per_s"]
        bare = results["bare_flux"][BARE].get(n)
        if kind == "parsl-flux" and workload == "noop" and bare:  # the reference runs no-op jobs
            row["vs bare flux python3 -S"] = r["tasks_per_s"] / bare
        out[key] = row
    return out


def table(results: Dict[str, Any]) -> str:
    """Markdown table of the medians and ratios."""
    lines = ["| executor | workload | N | tasks/s | p50 ms | p99 ms | start s | stop s | peak MB | ratios |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    rat = results.get("ratios", {})
    for key, r in results["runs"].items():
        kind, workload, n = key.split("/")
        if "tasks_per_s" not in r:
            lines.append(f"| {kind} | {workload} | {n} | skipped: {r['skipped']} | | | | | | |")
            continue
        ratio = ", ".join(f"{k} {v:.2f}x" for k, v in rat.get(key, {}).items())
        lines.append(f"| {kind} | {workload} | {n} | {r['tasks_per_s']:.1f} | {r['latency_p50_s'] * 1000:.0f} | "
                     f"{r['latency_p99_s'] * 1000:.0f} | {r['startup_s']:.1f} | {r['shutdown_s']:.1f} | "
                     f"{r['driver_peak_rss_mb']:.0f} | {ratio} |")
    return "\n".join(lines)


def plot(results: Dict[str, Any], path: Path) -> bool:
    """Throughput against N per executor (log-log), one panel per workload."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    workloads = sorted({k.split("/")[1] for k in results["runs"]})
    fig, axes = plt.subplots(1, len(workloads), figsize=(6 * len(workloads), 4.5), squeeze=False)
    for ax, workload in zip(axes[0], workloads):
        for kind in EXECUTORS:
            pts = sorted((int(k.split("/")[2]), r["tasks_per_s"]) for k, r in results["runs"].items()
                         if k.startswith(f"{kind}/{workload}/") and "tasks_per_s" in r)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=kind)
        bare = sorted((int(n), rate) for n, rate in results["bare_flux"][BARE].items())
        if workload == "noop" and bare:
            ax.plot(*zip(*bare), color="grey", linestyle="--", marker="x", label="bare flux: python3 -S jobs")
        ax.set(xscale="log", yscale="log", xlabel="N apps", ylabel="tasks/s", title=f"{workload} apps")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{results['machine']['cpus']} CPUs, flux-core {results['machine']['flux_core']}, "
                 f"parsl {results['machine']['parsl']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def find_flux() -> str:
    """The flux command (:mod:`parsl_flux.fluxpath`), or exit with one line saying what is wrong."""
    try:
        return fluxpath.require_flux()
    except fluxpath.FluxNotFound as exc:
        raise SystemExit(f"parsl-flux bench: {exc}") from None


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="parsl-flux bench", description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[100, 1000, 10000])
    p.add_argument("--workloads", type=lambda s: s.split(","), default=list(WORKLOADS))
    p.add_argument("--executors", type=lambda s: s.split(","), default=list(EXECUTORS))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--budget", type=float, default=150.0, help="skip a size predicted to take longer (s)")
    p.add_argument("--bare-n", type=int, default=200, help="jobs for the bare-Flux reference of `true`")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args(argv)
    for kind in args.executors:
        if kind not in EXECUTORS:
            p.error(f"unknown executor {kind!r}; choose from {', '.join(EXECUTORS)}")
    for w in args.workloads:
        if w not in WORKLOADS:
            p.error(f"unknown workload {w!r}; choose from {', '.join(WORKLOADS)}")
    if args.repeats < 1 or any(n < 1 for n in args.sizes):
        p.error("--repeats and --sizes must be positive")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        kind, n, workload, flux, uri = argv[1:6]
        print(json.dumps(child(kind, int(n), workload, flux, uri)))
        return 0
    args = parse_args(argv)
    flux = find_flux()
    results = run_all(args, flux)
    results["ratios"] = ratios(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    (args.out / "results.md").write_text(table(results) + "\n")
    print(table(results))
    print(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'}")
    if plot(results, args.out / "throughput.png"):
        print(f"wrote {args.out / 'throughput.png'}")
    else:
        print("matplotlib not installed: no plot (pip install '.[bench]')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
