"""Soak: a mixed workflow under random compound faults, then a verdict (issue 20).

Runs ``wf_soak.py`` (a workflow as users write one, ``retries=2``, Parsl's
``task_exit`` checkpoints) for ``--minutes`` while an injector, seeded by
``--seed``, picks a fault at random intervals: runner, manager or broker
SIGKILL; broker SIGSTOP then SIGCONT, or SIGSTOP then SIGKILL; a reset of the
manager's connection to the driver (``ss -K``); the driver itself SIGKILLed
and the script started again with the same seed, as a user reruns it (what
finished comes back from the checkpoints, the rest runs again). Every fault kind runs at least once, in a seeded order, before
kinds repeat. Every few seconds it samples the driver's RSS, threads and open
file descriptors. At the end it prints a table and exits 1 if a check fails:

* futures unresolved: 0 (an app the killed driver left unresolved must be
  resolved by a later run of the script);
* results wrong (not the checksum of their input), resolved twice by one
  driver, or from a stale try (another try's Flux task than the one the
  future ended on; a value from a checkpoint has no try of its own): 0;
* apps that returned a value and ran again in a later driver run (instead of
  coming back from the checkpoint): 0;
* failed tries not explained by an injected fault within ``ATTRIBUTION_S``
  before them, nor by an app failing on purpose: 0;
* processes of the run left after it: 0;
* driver RSS, threads and fds: the median of the last 10% of the samples
  within 10% of the median of the first 10% after warm-up (or within 1
  thread, 2 fds: 10% of a handful is less than one), over the samples of the
  driver run that lived longest.

Per fault kind: how many were injected, the seconds from each fault to the
last future it hit resolving (median, max), and the tasks it made retry.

The process helpers are the fault sweep's (``tests/faults/sweep.py``).

On ``--target cluster`` (the 2-node virtual Slurm cluster of ``.ci/cluster``,
blocks of 2 nodes from the slurm site with Apptainer and ``--sif``), also: a
node cut off from the driver (iptables drop rule in its network namespace)
for 3 s or 30 s, then healed; the two nodes cut from each other for 15 s,
then healed; every process of the run on one node killed; one node's slurmd
restarted; and Slurm jobs and drop rules left after the run count as
leftovers.

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
DRIVER_LOAD_WAIT = 120.0  # a driver run's parsl.load, to its 'loaded' line
SLURMD_STOP_S = 90.0  # systemd's default stop timeout, after which it SIGKILLs a unit
FAULT_WAIT = 300.0  # past the end of the run, the longest a fault in progress may take (a restart waits for a block)


@dataclass
class Fault:
    """One injected fault: when, at what; ``skipped`` says why it could not be injected."""

    t: float
    target: str = ""
    skipped: str = ""
    kind: str = ""  # the injector's name for it, set by inject_faults
    killed_driver: Optional[int] = None  # a driver kill: the index of the driver run it ended


@dataclass
class Run:
    """What the injector and the sampler recorded during one soak, and the
    driver runs (the workflow script, started again after each driver kill)."""

    start_driver: Callable[[int], Workflow]  # starts the script, submitting at least N apps; appends to drivers
    faults: List[Fault] = field(default_factory=list)
    samples: List[Dict[str, float]] = field(default_factory=list)
    url: str = ""
    drivers: List[Workflow] = field(default_factory=list)
    at_least: int = 0  # apps any driver run submitted: a later run submits them all again
    finished: threading.Event = field(default_factory=threading.Event)

    @property
    def driver(self) -> Workflow:
        return self.drivers[-1]

    def events(self) -> List[dict]:
        """Every driver run's events, each tagged with its run's index, in time order."""
        merged = []
        for i, wf in enumerate(self.drivers):
            with wf.cond:
                merged += [{**e, "driver": i} for e in wf.events]
        return sorted(merged, key=lambda e: e["t"])


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


def _driver_restart(rng: random.Random, marker: str, run: Run) -> Fault:
    """SIGKILL the driver (only its own process, as the OOM killer would), then
    start the script again with the same seed, to submit at least every app any
    driver run submitted: what finished comes back from Parsl's checkpoints."""
    old = run.driver
    with old.cond:
        submitted = [e["n"] for e in old.events if e["event"] == "submitted"]
    run.at_least = max(run.at_least, 1 + max(submitted, default=-1))
    fault = Fault(time.time(), f"driver:{old.proc.pid}", killed_driver=len(run.drivers) - 1)
    _kill(old.proc.pid, signal.SIGKILL)
    old.finish(30)
    new = run.start_driver(run.at_least)
    loaded = new.event("loaded", DRIVER_LOAD_WAIT)
    if loaded is None:
        raise RuntimeError(f"the restarted driver did not load within {DRIVER_LOAD_WAIT:.0f}s")
    run.url = loaded["url"]
    return fault


LOCAL_FAULTS: Dict[str, Callable] = {
    "runner_sigkill": _signal_fault(signal.SIGKILL, "runner"),
    "manager_sigkill": _signal_fault(signal.SIGKILL, "manager", MIN_TARGET_AGE),
    "broker_sigkill": _signal_fault(signal.SIGKILL, "broker", MIN_TARGET_AGE),
    "broker_sigstop_cont": _broker_stop(signal.SIGCONT),
    "broker_sigstop_kill": _broker_stop(signal.SIGKILL),
    "connection_reset": _connection_reset([[]], "127.0.0.1"),
    "driver_restart": _driver_restart,
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
    """Restart one node's slurmd as ``systemctl restart slurmd`` does: SIGTERM (its
    job steps live on), SIGKILL after systemd's stop timeout, then start it again
    the way the cluster starts it (``.ci/cluster/up.sh``, which waits for the node).

    slurmd's SIGTERM waits for its RPC threads, which a step whose ``srun`` died
    can hold for 60 s and more; the node is started again whatever the stop did,
    or it would stay down for the rest of the soak and no block could start."""
    node = rng.choice(NODES)
    pid = int(Path(CLUSTER_DIR, "run", f"slurmd-{node}.pid").read_text())
    fault = Fault(time.time(), f"slurmd on {node}")
    try:
        _kill(pid, signal.SIGTERM)
        if not wait_until(lambda: not _running(pid), SLURMD_STOP_S, 0.2):
            fault.target += f" (SIGKILL after {SLURMD_STOP_S:.0f}s)"
            _kill(pid, signal.SIGKILL)
            wait_until(lambda: not _running(pid), 10, 0.2)
    finally:
        subprocess.run(["bash", str(HERE.parents[1] / ".ci" / "cluster" / "up.sh")], check=True,
                       capture_output=True, timeout=180)
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


def fault_order(kinds: List[str], rng: random.Random, faults: List[Fault]):
    """Every kind once in a seeded order, then kinds at random (seeded); a kind
    not injected yet (it found nothing to hit: no runner while a replacement
    block starts) is drawn before any other until it is, so that a short soak
    still injects every kind."""
    first = list(kinds)
    rng.shuffle(first)
    yield from first
    while True:
        injected = {f.kind for f in faults if not f.skipped}
        yield rng.choice([k for k in kinds if k not in injected] or kinds)


def inject_faults(run: Run, faults: Dict[str, Callable], rng: random.Random, until: float, gap: float) -> None:
    """The injector thread: a fault every ``gap`` s on average (uniform 0.5-1.5x) until ``until``."""
    order = fault_order(sorted(faults), rng, run.faults)
    while True:
        time.sleep(rng.uniform(0.5 * gap, 1.5 * gap))
        if time.time() >= until or run.driver.proc.poll() is not None:
            return
        name = next(order)
        try:
            fault = faults[name](rng, str(run.driver.dir), run)
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:  # one failed injection ends no soak
            fault = Fault(time.time(), skipped=f"could not inject: {exc}")
        fault.kind = name
        run.faults.append(fault)
        print(f"soak: {time.strftime('%H:%M:%S')} {name} {fault.target or fault.skipped}", flush=True)


# ------------------------------------------------------------------ driver resources
def sample(pid: int) -> Optional[Dict[str, float]]:
    """The driver's RSS (KiB), threads and open fds now; None once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    if "VmRSS" not in status:  # a zombie: exited, not yet reaped
        return None
    return {"t": time.time(), "rss_kib": float(status["VmRSS"].split()[0]),
            "threads": float(status["Threads"]), "fds": float(fds)}


def sample_driver(run: Run) -> None:
    """The sampler thread: the current driver run's resources, until the soak ends."""
    while not run.finished.wait(SAMPLE_EVERY):
        index = len(run.drivers) - 1
        s = sample(run.drivers[index].proc.pid)
        if s is not None:
            run.samples.append({**s, "driver": index})


def resource_trend(samples: List[Dict[str, float]], start: float, end: float) -> Dict[str, tuple]:
    """For each resource: (first, last, ok), medians of the first and last 10% of
    the samples between ``start`` and ``end`` (the submitting phase) after warm-up,
    of the driver run with the most such samples (a restarted driver starts afresh)."""
    span = [s for s in samples if start + WARM_UP * (end - start) <= s["t"] <= end]
    runs = [s.get("driver", 0) for s in span]
    span = [s for s in span if s.get("driver", 0) == max(set(runs), key=runs.count)] if runs else []
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


def _resolutions(events: List[dict]) -> Dict[str, List[dict]]:
    """Each app's resolutions, in time order (one per driver run that resolved it, if all is well)."""
    resolved: Dict[str, List[dict]] = defaultdict(list)
    for e in events:
        if e["event"] == "resolved":
            resolved[e["key"]].append(e)
    return resolved


def _fault_hits(events: List[dict], faults: List[Fault], submitted: Dict[str, dict],
                resolved: Dict[str, List[dict]]) -> tuple:
    """Which apps each fault hit (index -> keys), and the failed tries no fault explains.

    A try that failed with a fault's exception within ``ATTRIBUTION_S`` after a
    fault is that fault's; a driver kill hits the apps its run left unresolved."""
    hits: Dict[int, set] = defaultdict(set)
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
    for i, fault in enumerate(faults):
        if fault.killed_driver is not None:
            hits[i] |= {e["key"] for e in events if e["event"] == "submitted" and e["driver"] == fault.killed_driver
                        and not any(r["driver"] == fault.killed_driver for r in resolved.get(e["key"], ()))}
    for key, results in resolved.items():  # an on-purpose app must fail as it means to, or by a fault
        kind = submitted[key]["kind"]
        last = results[-1]
        if kind in EXPECTED_FAILURES and last["outcome"] not in EXPECTED_FAILURES[kind] | FAULT_EXCEPTIONS:
            unexplained.append(f"{key}: {last['outcome']}: {last.get('detail', '')}")
    return hits, unexplained


def judge(events: List[dict], run: Run, leftovers: List[str], timed_out: bool) -> Verdict:
    """The verdict over every driver run's events (``Run.events``)."""
    v = Verdict()
    submitted = {e["key"]: e for e in events if e["event"] == "submitted"}  # the last submission of each app
    resolved = _resolutions(events)
    v.check("apps submitted", len(submitted), len(submitted) > 0)
    unresolved = [k for k, sub in submitted.items()
                  if not any(r["driver"] >= sub["driver"] for r in resolved.get(k, ()))]
    v.check("futures unresolved", len(unresolved), not unresolved and not timed_out)
    per_run = defaultdict(int)
    for key, results in resolved.items():
        for r in results:
            per_run[key, r["driver"]] += 1
    twice = sorted({key for (key, _), n in per_run.items() if n > 1})
    wrong, stale = [], []
    for key, results in resolved.items():
        sub = submitted[key]
        for r in results:
            if r["outcome"] != "value" or sub["kind"].startswith("fail_"):
                continue
            if r["value"] != sub["expected"]:
                wrong.append(key)
            if not r.get("memo") and r.get("task") is not None and str(r["task"]) != str(r["final_task"]):
                stale.append(key)
    v.check("results wrong", len(wrong), not wrong)
    v.check("futures resolved twice by one driver", len(twice), not twice)
    v.check("results from a stale try", len(stale), not stale)
    memo = sum(1 for results in resolved.values() for r in results if r.get("memo"))
    v.check("values from a checkpoint after a driver restart (reported)", memo, True)
    # Parsl writes a task_exit checkpoint before the future resolves: an app that returned a
    # value in one driver run comes back from the checkpoint in every later run, never runs again
    rerun = sorted({key for key, results in resolved.items() for i, r in enumerate(results)
                    if r["outcome"] == "value" and any(not later.get("memo") for later in results[i + 1:]
                                                       if later["driver"] > r["driver"])})
    v.check("finished apps run again by a later driver run", len(rerun), not rerun)
    v.problems += [f"ran again after a restart: {k}" for k in rerun]
    faults = sorted(run.faults, key=lambda f: f.t)
    hits, unexplained = _fault_hits(events, faults, submitted, resolved)
    v.check("failures not explained by a fault", len(unexplained), not unexplained)
    v.problems += [f"unresolved: {k}" for k in unresolved] + [f"wrong: {k}" for k in wrong] + \
        [f"twice: {k}" for k in twice] + [f"stale: {k}" for k in stale] + [f"unexplained: {u}" for u in unexplained]
    lost = [k for k, results in resolved.items()
            if results[-1]["outcome"] in FAULT_EXCEPTIONS and not submitted[k]["kind"].startswith("fail_")]
    v.check("apps failed after 3 tries, each hit by a fault (reported)", len(lost), True)
    v.check("processes left after the run", len(leftovers), not leftovers)
    v.problems += [f"left running: {p}" for p in leftovers]
    loads = [e["t"] for e in events if e["event"] == "loaded"]
    done = [e["t"] for e in events if e["event"] == "submitting_done"]
    trend = resource_trend(run.samples, min(loads, default=0.0), max(done, default=time.time()))
    v.check("driver resource samples", len(run.samples), bool(trend))
    for key, (first, last, ok) in trend.items():
        v.check(f"driver {key} first/last 10% (median)", f"{first:.0f} -> {last:.0f}", ok)
    injected = [f for f in faults if not f.skipped]
    for kind in sorted({f.kind for f in faults}):
        mine = [i for i, f in enumerate(faults) if f.kind == kind and not f.skipped]
        delays = []
        for i in mine:
            ends = [min(r["t"] for r in resolved[k] if r["t"] >= faults[i].t) for k in hits[i]
                    if any(r["t"] >= faults[i].t for r in resolved.get(k, ()))]
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
    until = time.time() + 60 * minutes
    args = ["--until", str(until), "--seed", str(seed), "--drain", str(drain)]
    faults = LOCAL_FAULTS
    if sif is not None:
        os.environ.setdefault("SLURM_CONF", SLURM_CONF)  # sbatch/squeue for the driver, srun in the job
        args += ["--cluster", sif, DRIVER_ADDRESS]
        faults = CLUSTER_FAULTS

    def start_driver(at_least: int) -> Workflow:
        n = len(run.drivers)
        wf = Workflow(wf_dir, str(HERE / "wf_soak.py"), [*args, "--at-least", str(at_least)],
                      logs=f"-{n}" if n else "")
        run.drivers.append(wf)
        return wf

    run = Run(start_driver)
    first = start_driver(0)
    threading.Thread(target=sample_driver, args=(run,), daemon=True).start()
    loaded = first.event("loaded", DRIVER_LOAD_WAIT)
    if loaded is not None and first_value(first, FIRST_RESULT_WAIT):  # a block serves: faults begin
        run.url = loaded["url"]
        injector = threading.Thread(target=inject_faults, args=(run, faults, random.Random(seed), until, gap),
                                    daemon=True)
        injector.start()
        injector.join(timeout=max(0.0, until - time.time()) + FAULT_WAIT)  # every fault ends within its own bounds
    run.driver.finish(max(0.0, until - time.time()) + drain + FIRST_RESULT_WAIT)
    run.finished.set()

    def leftovers() -> List[str]:
        procs = [f"{p} {p.cmd[:100]}" for p in scan(str(wf_dir))]
        return procs + (cluster_leftovers(str(wf_dir)) if sif is not None else [])
    left = [] if wait_until(lambda: not leftovers(), CLEANUP_WAIT, 0.5) else leftovers()
    reap(wf_dir)
    events = run.events()
    verdict = judge(events, run, left, run.driver.timed_out)
    verdict.check("workflow exit code (its last run)", run.driver.proc.returncode, run.driver.proc.returncode == 0)
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps({"seed": seed, "minutes": minutes, "faults": [f.__dict__ for f in
                                                run.faults], "samples": run.samples, "events": events}))
    for log in [*wf_dir.glob("stdout*.txt"), *wf_dir.glob("stderr*.txt")]:
        shutil.copy(log, out / log.name)
    for log in wf_dir.glob("runinfo/*/*/executor.log"):
        shutil.copy(log, out / f"executor-{log.parents[1].name}.log")
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
