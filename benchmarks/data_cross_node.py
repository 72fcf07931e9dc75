"""Arrays in and out of a block on another node: parsl-flux vs HTEX on the 2-node virtual cluster.

Usage (the cluster up: ``make cluster-up``)::

    SLURM_CONF=/var/lib/parsl-flux-cluster/slurm.conf FLUX_PATH=~/.cache/parsl-flux/flux-core-0.88.0 \\
        python benchmarks/data_cross_node.py [--repeats 3] [--cases 1x100,20x20] [--out DIR]

The driver runs here, on the cluster's bridge address; each executor's one
block is a Slurm job on one of the cluster's nodes (a network namespace with
its own address: every byte crosses a veth link and the TCP stack, as between
hosts). parsl-flux runs through the ``slurm`` site (no container: the nodes
share this machine's files, so the block uses the Flux and the Python the
driver uses, and numpy is there), per job and with ``packing=True``; HTEX
runs with Parsl's own ``SlurmProvider`` and its defaults (workers connect to
the interchange over TCP, unencrypted; parsl-flux's connection from another
host is CurveZMQ-encrypted, its default). Each measurement is a fresh
process whose app is defined in this script (pickled by value), N apps at
once, each given an array of MiB of its own and returning one of the same
size, every result checked (``parsl_flux.tools.bench.data_path``). The
executors alternate within each repeat; the table gives medians and the
ratio of medians to HTEX's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

DRIVER_ADDRESS = os.environ.get("PARSL_FLUX_CLUSTER_DRIVER", "10.213.77.1")  # .ci/cluster/env.sh
EXECUTORS = ("parsl-flux", "parsl-flux-packing", "htex")
CHILD_TIMEOUT = 600


def array_app(arr):
    return arr + 1


def hostname():
    import socket

    return socket.gethostname()


def _config(executor: str, run_dir: str) -> Any:
    """The executor's config: one block of one node on the cluster."""
    venv_bin = os.path.dirname(sys.executable)
    if executor.startswith("parsl-flux"):
        from parsl_flux import sites

        flux = os.path.join(os.environ["FLUX_PATH"], "bin", "flux")
        return sites.make_config("slurm", image="", nodes=1, address=DRIVER_ADDRESS, flux_path=flux,
                                 python=sys.executable, walltime="00:10:00", run_dir=run_dir,
                                 packing=executor.endswith("packing"))
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.launchers import SingleNodeLauncher
    from parsl.providers import SlurmProvider

    provider = SlurmProvider(nodes_per_block=1, init_blocks=1, min_blocks=0, max_blocks=1, walltime="00:10:00",
                             launcher=SingleNodeLauncher(), worker_init=f"export PATH={venv_bin}:$PATH")
    return Config(executors=[HighThroughputExecutor(address=DRIVER_ADDRESS, provider=provider)], run_dir=run_dir)


def child(executor: str, mib: float, n: int) -> Dict[str, Any]:
    """One measurement in this fresh process."""
    import numpy
    import parsl
    from parsl import python_app

    from parsl_flux.tools.bench import data_path

    run_dir = tempfile.mkdtemp(prefix="parsl-flux-xnode-")
    app = python_app(array_app)
    words = int(mib * 2 ** 20) // 8
    dfk = parsl.load(_config(executor, run_dir))
    try:
        host = python_app(hostname)().result()
        app(numpy.zeros(words)).result()  # the block is up and has run one array app
        return {"executor": executor, "mib": mib, "n": n, "block_host": host, **data_path(app, words, n)}
    finally:
        dfk.cleanup()
        parsl.clear()


def run_all(repeats: int, cases: List[tuple], executors: List[str]) -> List[Dict[str, Any]]:
    """Every (case, executor), interleaved: repeat 1 of all, then repeat 2, ..."""
    runs = []
    # HTEX starts interchange.py (and the nodes process_worker_pool.py) from PATH
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    for repeat in range(repeats):
        for mib, n in cases:
            for executor in executors:
                done = subprocess.run([sys.executable, __file__, "--child", executor, str(mib), str(n)],
                                      capture_output=True, text=True, timeout=CHILD_TIMEOUT, env=env)
                if done.returncode != 0:
                    raise RuntimeError(f"{executor} {mib} MiB x {n} failed:\n{done.stderr[-3000:]}")
                result = {**json.loads(done.stdout.strip().splitlines()[-1]), "repeat": repeat}
                print(f"{time.strftime('%H:%M:%S')} {executor} {mib} MiB x {n} on {result['block_host']}: "
                      f"{result['mb_per_s']:.0f} MB/s", flush=True)
                runs.append(result)
    return runs


def table(runs: List[Dict[str, Any]]) -> str:
    """Medians per (case, executor), and the ratio of medians to HTEX's."""
    lines = ["| MiB | N | executor | MB/s (each repeat) | median | vs HTEX | driver extra per MiB in flight |",
             "|---:|---:|---|---|---:|---:|---:|"]
    cases = sorted({(r["mib"], r["n"]) for r in runs})
    for mib, n in cases:
        of_case = [r for r in runs if (r["mib"], r["n"]) == (mib, n)]
        med = {e: statistics.median(r["mb_per_s"] for r in of_case if r["executor"] == e)
               for e in dict.fromkeys(r["executor"] for r in of_case)}
        for executor, m in med.items():
            each = [r for r in of_case if r["executor"] == executor]
            ratio = f"{m / med['htex']:.2f}x" if "htex" in med and executor != "htex" else ""
            extra = statistics.median(r["extra_per_in_flight"] for r in each)
            rates = ", ".join(f"{r['mb_per_s']:.0f}" for r in each)
            lines.append(f"| {mib:g} | {n} | {executor} | {rates} "
                         f"| {m:.0f} | {ratio} | {extra:.2f} |")
    return "\n".join(lines) + "\n"


def _case(text: str) -> tuple:
    mib, n = text.split("x")
    return float(mib), int(n)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], float(sys.argv[3]), int(sys.argv[4]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", type=lambda s: [_case(c) for c in s.split(",")], default=[(1, 100), (20, 20)])
    parser.add_argument("--executors", type=lambda s: s.split(","), default=list(EXECUTORS))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results-data-cross-node")
    args = parser.parse_args()
    runs = run_all(args.repeats, args.cases, args.executors)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(runs, indent=1))
    text = table(runs)
    (args.out / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
