"""Soak: a mixed workflow under random compound faults, then a verdict (issue 20).

Runs ``wf_soak.py`` (a workflow as users write one, ``retries=2``) for
``--minutes`` while an injector, seeded by ``--seed``, picks a fault at random
intervals: runner, manager or broker SIGKILL; broker SIGSTOP then SIGCONT, or
SIGSTOP then SIGKILL; a reset of the manager's connection to the driver
(``ss -K``). Every fault kind runs at least once, in a seeded order, before
kinds repeat. Every few seconds it samples the driver's RSS, threads and open
file descriptors. At the end it prints a table and exits 1 if a check fails:

* futures unresolved: 0;
* results wrong (not the checksum of their input), resolved twice, or from a
  stale try (another try's Flux task than the one the future ended on): 0;
* failed tries not explained by an injected fault within ``ATTRIBUTION_S``
  before them, nor by an app failing on purpose: 0;
* processes of the run left after it: 0;
* driver RSS, threads and fds: the median of the last 10% of the samples
  within 10% of the median of the first 10% after warm-up (or within 1
  thread, 2 fds: 10% of a handful is less than one).

Per fault kind: how many were injected, the seconds from each fault to the
last future it hit resolving (median, max), and the tasks it made retry.

The process helpers are the fault sweep's (``tests/faults/sweep.py``).

On ``--target cluster`` (the 2-node virtual Slurm cluster of ``.ci/cluster``,
blocks of 2 nodes from the slurm site with Apptainer and ``--sif``), also: a
node cut off from the driver (iptables drop rule in its network namespace)
for 3 s or 30 s, then healed; the two nodes cut from each other for 15 s,
then healed; every process of the run on one node killed; one node's slurmd
restarted; and Slurm jobs and drop rules left after the run count as
leftovers. Not injected yet: the driver killed and restarted from Parsl's
checkpoints.

Usage: ``python tests/soak/soak.py --minutes M --seed S [--target local|cluster] [--sif PATH] [--out DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "faults"))
from sweep import Workflow, of_kind, reap, scan, wait_until  # noqa: E402

ATTRIBUTION_S = 40.0  # a failed try up to this long after a fault is that fault's (heartbeat threshold 10 s + slack)
EXPECTED_FAILURES = {"fail_python": {"ValueError"}, "fail_bash": {"BashExitFailure"}}
FAULT_EXCEPTIONS = {"BlockLost", "NodeLost", "FluxJobFailed", "ManagerLost"}
SAMPLE_EVERY = 3.0
WARM_UP = 0.2  # share of the submitting phase left out of the resource comparison
FLAT = 0.10  # allowed relative change of the driver's resources
FLAT_SLACK = {"rss_kib": 0, "threads": 1, "fds": 2}  # small counts: 10% of 6 threads is no thread at all
CLEANUP_WAIT = 30.0
MIN_TARGET_AGE = 8.0  # a manager or broker younger than this may not have registered: a failed launch, not a loss
FIRST_RESULT_WAIT = 300.0  # faults begin once a first app resolved (a cluster block takes minutes to start)
STOP_S = 4.0  # how long a broker stays stopped before SIGCONT or SIGKILL


@dataclass
class Fault:
    """One injected fault: when, at what; ``skipped`` says why it could not be injected."""

    t: float
    target: str = ""
    skipped: str = ""
    kind: str = ""  # the injector's name for it, set by inject_faults


@dataclass
class Run:
    """What the injector and the sampler recorded during one soak."""

    faults: List[Fault] = field(default_factory=list)
    samples: List[Dict[str, float]] = field(default_factory=list)
    url: str = ""


# ------------------------------------------------------------------ faults
def _age(pid: int) -> float:
    """Seconds since process ``pid`` started (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def _pick(rng: random.Random, marker: str, kind: str, min_age: float) -> Optional[int]:
    """A random process of ``kind`` of the run, old enough; waits up to 30 s for one."""
    def candidates():
        return sorted(p.pid for p in of_kind(marker, kind) if p.state != "T" and _age(p.pid) >= min_age)
    found = wait_until(candidates, 30, 0.2)
    return rng.choice(found) if found else None


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (a daemon's exit may wait for a slow reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass


def _signal_fault(sig: int, kind: str, min_age: float = 0.0) -> Callable:
    def inject(rng: random.Random, marker: str, run: Run) -> Fault:
        pid = _pick(rng, marker, kind, min_age)
        if pid is None:
            return Fault(time.time(), skipped=f"no {kind} running")
        fault = Fault(time.time(), f"{kind}:{pid}")
        _kill(pid, sig)
        return fault
    return inject


def _broker_stop(then: int) -> Callable:
    def inject(rng: random.Random, marker: str, run: Run) -> Fault:
        pid = _pick(rng, marker, "broker", MIN_TARGET_AGE)
        if pid is None:
            return Fault(time.time(), skipped="no broker running")
        fault = Fault(time.time(), f"broker:{pid}")
        _kill(pid, signal.SIGSTOP)
        time.sleep(STOP_S)
        _kill(pid, then)
        if then == signal.SIGKILL:
            _kill(pid, signal.SIGCONT)  # a stopped process dies only once continued
        return fault
    return inject


def _connection_reset(namespaces: List[List[str]], address: str) -> Callable:
    """Destroy the manager's end of its connection to the driver (``ss -K``, run in
    each of ``namespaces``: the command prefix that enters a node's network)."""
    def inject(rng: random.Random, marker: str, run: Run) -> Fault:
        port = run.url.rsplit(":", 1)[1]
        fault = Fault(time.time(), f"port {port}")
        for enter in namespaces:
            subprocess.run([*enter, "ss", "-K", "dst", address, "dport", "=", f":{port}"], capture_output=True,
                           timeout=10)
        return fault
    return inject


LOCAL_FAULTS: Dict[str, Callable] = {
    "runner_sigkill": _signal_fault(signal.SIGKILL, "runner"),
    "manager_sigkill": _signal_fault(signal.SIGKILL, "manager", MIN_TARGET_AGE),
    "broker_sigkill": _signal_fault(signal.SIGKILL, "broker", MIN_TARGET_AGE),
    "broker_sigstop_cont": _broker_stop(signal.SIGCONT),
    "broker_sigstop_kill": _broker_stop(signal.SIGKILL),
    "connection_reset": _connection_reset([[]], "127.0.0.1"),
}

# ------------------------------------------------------------------ the 2-node cluster (.ci/cluster)
NODES = ("pfnode1", "pfnode2")
SUBNET = "10.213.77"  # SUBNET_PREFIX in .ci/cluster/env.sh
DRIVER_ADDRESS = f"{SUBNET}.1"  # the bridge's address on this host
CLUSTER_DIR = "/var/lib/parsl-flux-cluster"
SLURM_CONF = f"{CLUSTER_DIR}/slurm.conf"


def _netns(node: str) -> List[str]:
    return ["ip", "netns", "exec", f"pf-{node}"]


def _node_address(node: str) -> str:
    return f"{SUBNET}.{10 + int(node[-1])}"  # node_addr in .ci/cluster/env.sh


def _drop_rule(node: str, op: str, to: str = DRIVER_ADDRESS) -> List[str]:
    return [*_netns(node), "iptables", op, "OUTPUT", "-d", to, "-j", "DROP"]


def _partition(seconds: float) -> Callable:
    """Cut a node off from the driver (its packets to the driver dropped) for ``seconds``, then heal."""
    def inject(rng: random.Random, marker: str, run: Run) -> Fault:
        node = rng.choice(NODES)
        fault = Fault(time.time(), f"{node} for {seconds:.0f}s")
        subprocess.run(_drop_rule(node, "-I"), check=True, capture_output=True, timeout=10)
        try:
            time.sleep(seconds)
        finally:
            subprocess.run(_drop_rule(node, "-D"), check=True, capture_output=True, timeout=10)
        return fault
    return inject


def _nodes_cut(seconds: float) -> Callable:
    """Cut the two nodes from each other (each drops its packets to the other) for
    ``seconds``, then heal; both still reach the driver."""
    def inject(rng: random.Random, marker: str, run: Run) -> Fault:
        pairs = [(NODES[0], NODES[1]), (NODES[1], NODES[0])]
        fault = Fault(time.time(), f"{NODES[0]} <-> {NODES[1]} for {seconds:.0f}s")
        for node, other in pairs:
            subprocess.run(_drop_rule(node, "-I", _node_address(other)), check=True, capture_output=True, timeout=10)
        try:
            time.sleep(seconds)
        finally:
            for node, other in pairs:
                subprocess.run(_drop_rule(node, "-D", _node_address(other)), check=True, capture_output=True,
                               timeout=10)
        return fault
    return inject


def _slurmd_restart(rng: random.Random, marker: str, run: Run) -> Fault:
    """Stop one node's slurmd (SIGTERM: its job steps live on) and start it again
    the way the cluster starts it (``.ci/cluster/up.sh``, which waits for the node)."""
    node = rng.choice(NODES)
    pid = int(Path(CLUSTER_DIR, "run", f"slurmd-{node}.pid").read_text())
    fault = Fault(time.time(), f"slurmd on {node}")
    _kill(pid, signal.SIGTERM)
    if not wait_until(lambda: not _running(pid), 30, 0.2):
        raise RuntimeError(f"slurmd {pid} on {node} did not stop within 30s")
    subprocess.run(["bash", str(HERE.parents[1] / ".ci" / "cluster" / "up.sh")], check=True, capture_output=True,
                   timeout=120)
    return fault


def _node_pids(node: str) -> set:
    out = subprocess.run(["ip", "netns", "pids", f"pf-{node}"], capture_output=True, text=True, timeout=10).stdout
    return {int(p) for p in out.split()}


def _node_kill(rng: random.Random, marker: str, run: Run) -> Fault:
    """SIGKILL every process of the run on one node (not slurmd: the node itself stays up)."""
    node = rng.choice(NODES)
    pids = _node_pids(node) & {p.pid for p in scan(marker)}
    if not pids:
        return Fault(time.time(), skipped=f"nothing of the run on {node}")
    fault = Fault(time.time(), f"{node}: {len(pids)} processes")
    for pid in pids:
        _kill(pid, signal.SIGKILL)
    return fault


CLUSTER_FAULTS: Dict[str, Callable] = {
    **{k: v for k, v in LOCAL_FAULTS.items() if k != "connection_reset"},
    "connection_reset": _connection_reset([_netns(n) for n in NODES], DRIVER_ADDRESS),
    "partition_3s": _partition(3),
    "partition_30s": _partition(30),
    "node_kill": _node_kill,
    "nodes_cut_15s": _nodes_cut(15),
    "slurmd_restart": _slurmd_restart,
}


def cluster_leftovers(marker: str) -> List[str]:
    """Slurm jobs of the run (by working directory) and drop rules still in place."""
    env = {**os.environ, "SLURM_CONF": SLURM_CONF}
    jobs = subprocess.run(["squeue", "-h", "-o", "%i %j %Z"], capture_output=True, text=True, timeout=20,
                          env=env).stdout.splitlines()
    left = [f"Slurm job {line}" for line in jobs if marker in line]
    addresses = [DRIVER_ADDRESS, *(_node_address(n) for n in NODES)]
    for node in NODES:
        rules = subprocess.run([*_netns(node), "iptables", "-S", "OUTPUT"], capture_output=True, text=True,
                               timeout=10).stdout
        left += [f"{node}: {rule}" for rule in rules.splitlines() if any(a in rule for a in addresses)]
    return left


def fault_order(kinds: List[str], rng: random.Random):
    """Every kind once in a seeded order, then kinds at random (seeded)."""
    first = list(kinds)
    rng.shuffle(first)
    yield from first
    while True:
        yield rng.choice(kinds)


def inject_faults(wf: Workflow, run: Run, faults: Dict[str, Callable], rng: random.Random,
                  until: float, gap: float) -> None:
    """The injector thread: a fault every ``gap`` s on average (uniform 0.5-1.5x) until ``until``."""
    order = fault_order(sorted(faults), rng)
    while True:
        time.sleep(rng.uniform(0.5 * gap, 1.5 * gap))
        if time.time() >= until or wf.proc.poll() is not None:
            return
        name = next(order)
        try:
            fault = faults[name](rng, str(wf.dir), run)
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:  # one failed injection ends no soak
            fault = Fault(time.time(), skipped=f"could not inject: {exc}")
        fault.kind = name
        run.faults.append(fault)
        print(f"soak: {time.strftime('%H:%M:%S')} {name} {fault.target or fault.skipped}", flush=True)


# ------------------------------------------------------------------ driver resources
def sample(pid: int) -> Optional[Dict[str, float]]:
    """The driver's RSS (KiB), threads and open fds now; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    return {"t": time.time(), "rss_kib": float(status["VmRSS"].split()[0]),
            "threads": float(status["Threads"]), "fds": float(fds)}


def sample_driver(wf: Workflow, run: Run) -> None:
    while wf.proc.poll() is None:
        s = sample(wf.proc.pid)
        if s is not None:
            run.samples.append(s)
        time.sleep(SAMPLE_EVERY)


def resource_trend(samples: List[Dict[str, float]], start: float, end: float) -> Dict[str, tuple]:
    """For each resource: (first, last, ok), medians of the first and last 10% of
    the samples between ``start`` and ``end`` (the submitting phase) after warm-up."""
    span = [s for s in samples if start + WARM_UP * (end - start) <= s["t"] <= end]
    if len(span) < 6:
        return {}
    n = max(3, len(span) // 10)
    trend = {}
    for key, slack in FLAT_SLACK.items():
        first = statistics.median(s[key] for s in span[:n])
        last = statistics.median(s[key] for s in span[-n:])
        trend[key] = (first, last, abs(last - first) <= max(FLAT * first, slack))
    return trend


# ------------------------------------------------------------------ verdict
@dataclass
class Verdict:
    checks: List[tuple] = field(default_factory=list)  # (name, value, ok)
    per_fault: List[tuple] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)

    def check(self, name: str, value, ok: bool) -> None:
        self.checks.append((name, value, ok))

    @property
    def ok(self) -> bool:
        return all(ok for _, _, ok in self.checks)


def _attribute(t: float, faults: List[Fault]) -> Optional[Fault]:
    """The latest fault injected before ``t`` and within ``ATTRIBUTION_S`` of it."""
    before = [f for f in faults if not f.skipped and f.t <= t <= f.t + ATTRIBUTION_S]
    return before[-1] if before else None


def judge(events: List[dict], run: Run, leftovers: List[str], timed_out: bool) -> Verdict:
    v = Verdict()
    submitted = {e["key"]: e for e in events if e["event"] == "submitted"}
    resolved: Dict[str, List[dict]] = defaultdict(list)
    for e in events:
        if e["event"] == "resolved":
            resolved[e["key"]].append(e)
    v.check("apps submitted", len(submitted), len(submitted) > 0)
    unresolved = [k for k in submitted if k not in resolved]
    v.check("futures unresolved", len(unresolved), not unresolved and not timed_out)
    twice = [k for k, r in resolved.items() if len(r) > 1]
    wrong, stale = [], []
    for key, (first, *_) in resolved.items():
        sub = submitted[key]
        if first["outcome"] != "value" or sub["kind"].startswith("fail_"):
            continue
        if first["value"] != sub["expected"]:
            wrong.append(key)
        if first.get("task") is not None and str(first["task"]) != str(first["final_task"]):
            stale.append(key)
    v.check("results wrong", len(wrong), not wrong)
    v.check("futures resolved twice", len(twice), not twice)
    v.check("results from a stale try", len(stale), not stale)
    faults = sorted(run.faults, key=lambda f: f.t)
    hits: Dict[int, set] = defaultdict(set)  # fault index -> keys it made fail a try
    unexplained = []
    for e in (e for e in events if e["event"] == "try_failed"):
        kind = submitted.get(e["key"], {}).get("kind", "")
        if e["outcome"] in EXPECTED_FAILURES.get(kind, ()):
            continue
        fault = _attribute(e["t"], faults) if e["outcome"] in FAULT_EXCEPTIONS else None
        if fault is None:
            unexplained.append(f"{e['key']}: {e['outcome']}: {e['detail']}")
        else:
            hits[faults.index(fault)].add(e["key"])
    for key, (first, *_) in resolved.items():  # an on-purpose app must fail as it means to, or by a fault
        kind = submitted[key]["kind"]
        if kind in EXPECTED_FAILURES and first["outcome"] not in EXPECTED_FAILURES[kind] | FAULT_EXCEPTIONS:
            unexplained.append(f"{key}: {first['outcome']}: {first.get('detail', '')}")
    v.check("failures not explained by a fault", len(unexplained), not unexplained)
    v.problems += [f"unresolved: {k}" for k in unresolved] + [f"wrong: {k}" for k in wrong] + \
        [f"stale: {k}" for k in stale] + [f"unexplained: {u}" for u in unexplained]
    lost = [k for k, (first, *_) in resolved.items()
            if first["outcome"] in FAULT_EXCEPTIONS and not submitted[k]["kind"].startswith("fail_")]
    v.check("apps failed after 3 tries, each hit by a fault (reported)", len(lost), True)
    v.check("processes left after the run", len(leftovers), not leftovers)
    v.problems += [f"left running: {p}" for p in leftovers]
    marks = {e["event"]: e["t"] for e in events if e["event"] in ("loaded", "submitting_done")}
    trend = resource_trend(run.samples, marks.get("loaded", 0.0), marks.get("submitting_done", time.time()))
    v.check("driver resource samples", len(run.samples), bool(trend))
    for key, (first, last, ok) in trend.items():
        v.check(f"driver {key} first/last 10% (median)", f"{first:.0f} -> {last:.0f}", ok)
    injected = [f for f in faults if not f.skipped]
    for kind in sorted({f.kind for f in faults}):
        mine = [i for i, f in enumerate(faults) if f.kind == kind and not f.skipped]
        delays = []
        for i in mine:
            ends = [r[0]["t"] for k in hits[i] for r in [resolved.get(k)] if r]
            if ends:
                delays.append(max(ends) - faults[i].t)
        retried = len(set().union(*(hits[i] for i in mine))) if mine else 0
        skipped = sum(1 for f in faults if f.kind == kind and f.skipped)
        v.per_fault.append((kind, len(mine), skipped, f"{statistics.median(delays):.1f}" if delays else "-",
                            f"{max(delays):.1f}" if delays else "-", retried))
    v.check("fault kinds injected", len({f.kind for f in injected}), bool(injected))
    return v


def report(v: Verdict, out: Path) -> str:
    lines = ["| check | value | ok |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {'yes' if ok else 'NO'} |" for name, value, ok in v.checks]
    lines += ["", "| fault | injected | skipped | fault to futures resolved, median s | max s | tasks retried |",
              "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in v.per_fault]
    if v.problems:
        lines += ["", "Problems:"] + [f"* {p}" for p in v.problems[:50]]
    text = "\n".join(lines) + "\n"
    (out / "soak.md").write_text(text)
    return text


# ------------------------------------------------------------------ main
def first_value(wf: Workflow, timeout: float) -> bool:
    """Wait until an app returned a value (not just failed: a block is serving)."""
    def served() -> bool:
        with wf.cond:
            return any(e["event"] == "resolved" and e["outcome"] == "value" for e in wf.events)
    return bool(wait_until(lambda: served() or wf.proc.poll() is not None, timeout, 0.5)) and served()


def soak(minutes: float, seed: int, out: Path, gap: float, keep: bool, sif: Optional[str] = None) -> Verdict:
    """Run the workflow for ``minutes`` under faults and judge it; ``sif``: on the 2-node cluster."""
    base = Path(tempfile.mkdtemp(prefix="parsl-flux-soak-"))
    wf_dir = base / "run"
    wf_dir.mkdir()
    drain = 240.0
    args = ["--minutes", str(minutes), "--seed", str(seed), "--drain", str(drain)]
    faults = LOCAL_FAULTS
    if sif is not None:
        os.environ.setdefault("SLURM_CONF", SLURM_CONF)  # sbatch/squeue for the driver, srun in the job
        args += ["--cluster", sif, DRIVER_ADDRESS]
        faults = CLUSTER_FAULTS
    wf = Workflow(wf_dir, str(HERE / "wf_soak.py"), args)
    run = Run()
    threading.Thread(target=sample_driver, args=(wf, run), daemon=True).start()
    loaded = wf.event("loaded", 120)
    injector = None
    if loaded is not None and first_value(wf, FIRST_RESULT_WAIT):  # a block serves: faults begin
        run.url = loaded["url"]
        until = loaded["t"] + 60 * minutes
        injector = threading.Thread(target=inject_faults, args=(wf, run, faults, random.Random(seed), until, gap),
                                    daemon=True)
        injector.start()
    wf.finish(60 * minutes + drain + FIRST_RESULT_WAIT)
    if injector is not None:
        injector.join(timeout=60)

    def leftovers() -> List[str]:
        procs = [f"{p} {p.cmd[:100]}" for p in scan(str(wf_dir))]
        return procs + (cluster_leftovers(str(wf_dir)) if sif is not None else [])
    left = [] if wait_until(lambda: not leftovers(), CLEANUP_WAIT, 0.5) else leftovers()
    reap(wf_dir)
    with wf.cond:
        events = list(wf.events)
    verdict = judge(events, run, left, wf.timed_out)
    verdict.check("workflow exit code", wf.proc.returncode, wf.proc.returncode == 0)
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps({"seed": seed, "minutes": minutes, "faults": [f.__dict__ for f in
                                                run.faults], "samples": run.samples, "events": events}))
    for name in ("stdout.txt", "stderr.txt"):
        shutil.copy(wf_dir / name, out / name)
    for log in wf_dir.glob("runinfo/*/*/executor.log"):
        shutil.copy(log, out / "executor.log")
    if not keep:
        shutil.rmtree(base, ignore_errors=True)
    return verdict


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--target", choices=["local", "cluster"], default="local")
    parser.add_argument("--sif", default=str(HERE.parents[1] / "parsl-flux.sif"), help="the image (cluster target)")
    parser.add_argument("--gap", type=float, default=15.0, help="mean seconds between faults")
    parser.add_argument("--out", type=Path, default=Path("build/soak"))
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    args = parser.parse_args(argv)
    if os.geteuid() != 0 or shutil.which("ss") is None:
        print("soak: needs root and ss(8) for connection resets", file=sys.stderr)
        return 2
    sif = str(Path(args.sif).resolve()) if args.target == "cluster" else None
    verdict = soak(args.minutes, args.seed, args.out, args.gap, args.keep, sif)
    print(report(verdict, args.out), end="")
    print(f"soak: {'PASS' if verdict.ok else 'FAIL'} ({args.target}, seed {args.seed}, {args.minutes} min); "
          f"{args.out}/soak.md")
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
