"""`make faults`: the fault sweep (issue 12).

Each scenario runs a workflow script a user would write (``wf_*.py`` here:
apps defined in the script, ``Config(executors=[FluxExecutor()])``, the
default LocalProvider and run_dir) as a subprocess in a scenario directory of
its own under a temporary directory, with a hard timeout. The fault is
injected from outside, as it would happen (a signal to a process found by
scanning ``/proc``), except the user error, which is the script's own. For
each scenario the sweep checks:

(a) every submitted future resolved (a value or an exception; the exception
    types are recorded), from the workflow's own report (``faultkit``);
(b) the seconds from the fault to the last future resolved;
(c) nothing is left running: no process whose command line, working
    directory or environment mentions the scenario directory (the sweep tags
    the workflow's environment with it; Flux brokers, managers, job shells and
    runners inherit it), after a bounded wait; for the driver SIGKILL, how
    long the manager takes to notice the silent driver and end its instance;
(d) the workflow's exit code.

Results: a table on stdout, ``build/faults/faults.json`` and
``build/faults/faults.md``; each scenario's stdout, stderr and Flux-side
logs under ``build/faults/logs/<scenario>/``. The exit status is 1 when a
scenario fails a check, 2 when no Flux is found.

Usage: ``python tests/faults/sweep.py [--only NAME[,NAME...]] [--keep] [--out DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TAG_ENV = "PARSL_FLUX_FAULTS_SCENARIO"
PREFIX = "@@faults "

HEARTBEAT_THRESHOLD = 10.0  # FluxExecutor's default; also the manager's --driver-timeout
HARD_TIMEOUT = 150.0  # per workflow run
CLEANUP_WAIT = 20.0  # bounded wait for the block's processes after the workflow exited
STOPPED_WAIT = 5.0  # broker SIGSTOP: how long to let the rest end before the broker is continued


# ------------------------------------------------------------------ /proc
@dataclass
class Proc:
    pid: int
    ppid: int
    state: str
    kind: str
    cmd: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.pid}({self.state})"


def _read(path: str, binary: bool = False):
    try:
        with open(path, "rb") as f:
            data = f.read()
        return data if binary else data.decode(errors="replace")
    except OSError:
        return None


def _kind(cmdline: List[str], comm: str) -> str:
    text = " ".join(cmdline)
    if cmdline and os.path.basename(cmdline[0]).startswith("flux-broker") or comm.startswith("flux-broker"):
        return "broker"
    if "parsl_flux.allocation.manager" in text:
        return "manager"
    if "parsl_flux.job.runner" in text:
        return "runner"
    if cmdline and os.path.basename(cmdline[0]) == "flux-shell":
        return "flux-shell"
    if any(os.path.basename(a).startswith("wf_") for a in cmdline[1:2]):
        return "driver"
    return comm or "?"


def scan(marker: str) -> List[Proc]:
    """Processes (not this one, not zombies) whose command line, working
    directory or environment mentions ``marker`` (a scenario directory)."""
    found = []
    needle = marker.encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        stat = _read(f"/proc/{pid}/stat")
        if stat is None:
            continue
        comm = stat[stat.find("(") + 1:stat.rfind(")")]
        rest = stat.rsplit(")", 1)[1].split()
        state, ppid = rest[0], int(rest[1])
        if state in ("Z", "X"):
            continue
        raw = _read(f"/proc/{pid}/cmdline", binary=True) or b""
        env = _read(f"/proc/{pid}/environ", binary=True) or b""
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            cwd = ""
        if needle in raw or needle in env or cwd == marker or cwd.startswith(marker + "/"):
            cmdline = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
            found.append(Proc(pid, ppid, state, _kind(cmdline, comm), " ".join(cmdline)[:300]))
    return found


def of_kind(marker: str, kind: str) -> List[Proc]:
    return [p for p in scan(marker) if p.kind == kind]


def kinds(procs: List[Proc]) -> str:
    """``broker x1, runner x2``: what a list of processes is."""
    return ", ".join(f"{k} x{n}" for k, n in sorted(Counter(p.kind for p in procs).items()))


def snapshot(result: "Result", marker: str) -> None:
    """Note what of the scenario runs at the moment of the fault."""
    result.notes.append("at the fault: " + (kinds(scan(marker)) or "no process"))


def environ_has(pid: int, assignment: str) -> bool:
    env = _read(f"/proc/{pid}/environ", binary=True) or b""
    return assignment.encode() in env.split(b"\0")


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05):
    """Poll ``predicate`` until truthy; its last value (falsy on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


# --------------------------------------------------------------- a workflow run
class Workflow:
    """One workflow script running in its scenario directory, its events read as they come.

    ``logs``: a suffix for its ``stdout*.txt``/``stderr*.txt`` (a script run again in the same directory)."""

    def __init__(self, directory: Path, script: str, args: List[str], logs: str = "") -> None:
        self.dir = directory
        self.events: List[dict] = []
        self.cond = threading.Condition()
        env = {k: v for k, v in os.environ.items() if k != "FLUX_URI"}  # FLUX_URI would mean attach mode
        env[TAG_ENV] = str(directory)
        env["PYTHONUNBUFFERED"] = "1"
        self.stdout_log = open(directory / f"stdout{logs}.txt", "w")
        self.stderr_log = open(directory / f"stderr{logs}.txt", "w")
        self.started = time.time()
        # SIGINT as from a terminal: a harness started in the background (``&``) would pass on ignoring it
        self.proc = subprocess.Popen(["env", "--default-signal=INT", sys.executable, str(HERE / script), *args],
                                     cwd=directory, env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.stderr_log,
                                     text=True, start_new_session=True)
        self.exited_at: Optional[float] = None
        self.timed_out = False
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.stdout_log.write(line)
            self.stdout_log.flush()
            if line.startswith(PREFIX):
                try:
                    event = json.loads(line[len(PREFIX):])
                except ValueError:
                    continue
                with self.cond:
                    self.events.append(event)
                    self.cond.notify_all()

    def event(self, name: str, timeout: float) -> Optional[dict]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for e in self.events:
                    if e["event"] == name:
                        return e
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return None
                self.cond.wait(min(left, 0.2))

    def finish(self, timeout: float) -> Optional[int]:
        """Wait for the exit (SIGKILL at ``timeout``); the exit code."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.timed_out = True
            self.proc.kill()
            self.proc.wait()
        self.exited_at = time.time()
        self.reader.join(timeout=10)
        self.stdout_log.close()
        self.stderr_log.close()
        return self.proc.returncode

    def named(self, name: str) -> List[dict]:
        with self.cond:
            return [e for e in self.events if e["event"] == name]


# ------------------------------------------------------------------ results
@dataclass
class Result:
    scenario: str
    fault: str
    ok: bool = True
    failures: List[str] = field(default_factory=list)
    submitted: Optional[int] = None
    resolved: Optional[int] = None
    outcomes: Dict[str, str] = field(default_factory=dict)
    exception_types: Dict[str, int] = field(default_factory=dict)
    resolve_s: Optional[float] = None
    exit_s: Optional[float] = None
    cleanup_s: Optional[float] = None
    leftovers: List[str] = field(default_factory=list)
    exit_code: Optional[int] = None
    notes: List[str] = field(default_factory=list)

    def fail(self, why: str) -> None:
        self.ok = False
        self.failures.append(why)

    def check(self, condition: bool, why: str) -> None:
        if not condition:
            self.fail(why)


def settle(result: Result, wf: Workflow, t_fault: Optional[float], *, expect_types: set, expect_exit: set,
           resolve_limit: Optional[float], stopped_ok: bool = False, track_futures: bool = True) -> None:
    """The checks every scenario shares, after the workflow exited: (a)-(d)."""
    result.exit_code = wf.proc.returncode
    if wf.timed_out:
        result.fail(f"workflow still running after the hard timeout ({HARD_TIMEOUT:.0f}s); killed")
    if t_fault is not None and wf.exited_at is not None:
        result.exit_s = round(wf.exited_at - t_fault, 2)
        result.notes.append(f"the workflow exited {result.exit_s:.2f}s after the fault")
    result.check(result.exit_code in expect_exit, f"exit code {result.exit_code}, expected one of {sorted(expect_exit)}")
    resolved = wf.named("resolved")
    if track_futures:
        summaries = wf.named("summary")
        if not summaries:
            result.fail("the workflow printed no summary of its futures")
            result.resolved = len(resolved)
        else:
            s = summaries[-1]
            result.submitted, result.resolved, result.outcomes = s["submitted"], s["resolved"], s["outcomes"]
            result.check(s["resolved"] == s["submitted"], f"{s['submitted'] - s['resolved']} future(s) unresolved")
        types = Counter(e["outcome"] for e in resolved)
        result.exception_types = dict(types)
        unexpected = set(types) - expect_types
        result.check(not unexpected, f"unexpected outcome(s) {sorted(unexpected)} (expected {sorted(expect_types)})")
        if resolved and t_fault is not None:
            result.resolve_s = round(max(e["t"] for e in resolved) - t_fault, 2)
            if resolve_limit is not None:
                result.check(result.resolve_s <= resolve_limit,
                             f"{result.resolve_s}s from the fault to the last future resolved (limit {resolve_limit}s)")
    # (c) nothing left running
    stopped = [p for p in scan(str(wf.dir)) if p.state == "T"]
    if stopped:
        result.notes.append("stopped at the workflow's exit: " + ", ".join(map(str, stopped)))
        if stopped_ok:  # the broker SIGSTOP: what runs besides it, then continue it (its SIGTERM is pending)
            wait_until(lambda: all(p.state == "T" for p in scan(str(wf.dir))), STOPPED_WAIT, 0.1)
            others = [p for p in scan(str(wf.dir)) if p.state != "T"]
            result.notes.append(f"{STOPPED_WAIT:.0f}s later, before SIGCONT, still running: "
                                + (kinds(others) or "nothing"))
            for p in stopped:
                _signal(p.pid, signal.SIGCONT)
    start = time.monotonic()
    left = wait_until(lambda: not scan(str(wf.dir)), CLEANUP_WAIT, 0.1)
    if left:
        result.cleanup_s = round(time.monotonic() - start, 2)
    else:
        procs = scan(str(wf.dir))
        result.leftovers = [str(p) for p in procs]
        result.fail(f"still running {CLEANUP_WAIT:.0f}s after the workflow exited: "
                    + "; ".join(f"{p} {p.cmd[:120]}" for p in procs))
        reap(wf.dir)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass


def reap(directory: Path) -> None:
    """End whatever of a scenario is still running (after it was recorded), so later scenarios start clean."""
    for _ in range(3):
        procs = scan(str(directory))
        if not procs:
            return
        for p in procs:
            _signal(p.pid, signal.SIGCONT)
            _signal(p.pid, signal.SIGKILL)
        time.sleep(0.5)


def wait_for_runners(wf: Workflow, n: int = 1, timeout: float = 90) -> List[Proc]:
    """Runners of the scenario, once at least ``n`` run (apps are mid-flight)."""
    return wait_until(lambda: (lambda r: r if len(r) >= n else [])(of_kind(str(wf.dir), "runner")), timeout, 0.1) or []


def signal_the_one(r: Result, wf: Workflow, d: Path, kind: str, sig: int) -> Tuple[Optional[float], List[Proc]]:
    """Once apps are mid-flight, send ``sig`` to the scenario's one process of
    ``kind`` (checked); the fault's time (None if no app started) and those processes."""
    if not wait_for_runners(wf):
        r.fail("no app started within 90s")
        return None, []
    time.sleep(0.5)
    procs = of_kind(str(d), kind)
    r.check(len(procs) == 1, f"expected one {kind}, found {procs}")
    snapshot(r, str(d))
    t_fault = time.time()
    for p in procs:
        _signal(p.pid, sig)
    return t_fault, procs


# ----------------------------------------------------------------- scenarios
def manager_sigkill(d: Path) -> Result:
    r = Result("manager SIGKILL", "SIGKILL the block's manager (Flux's initial program) with 4 apps in flight")
    wf = Workflow(d, "wf_naps.py", ["4", "30"])
    t_fault, _ = signal_the_one(r, wf, d, "manager", signal.SIGKILL)
    wf.finish(HARD_TIMEOUT)
    settle(r, wf, t_fault, expect_types={"BlockLost"}, expect_exit={0},
           resolve_limit=HEARTBEAT_THRESHOLD + 10)
    return r


def broker_sigstop(d: Path) -> Result:
    r = Result("broker SIGSTOP", "SIGSTOP the block's flux-broker with 4 apps in flight (SIGCONT after the workflow)")
    wf = Workflow(d, "wf_naps.py", ["4", "30"])
    t_fault = None
    brokers: List[Proc] = []
    try:
        t_fault, brokers = signal_the_one(r, wf, d, "broker", signal.SIGSTOP)
        wf.finish(HARD_TIMEOUT)
    finally:
        if wf.proc.poll() is None:
            wf.finish(0)
    settle(r, wf, t_fault, expect_types={"BlockLost"}, expect_exit={0},
           resolve_limit=2 * HEARTBEAT_THRESHOLD + 10, stopped_ok=True)
    for p in brokers:  # whatever happened: nothing stays stopped
        _signal(p.pid, signal.SIGCONT)
    return r


def runner_sigkill(d: Path) -> Result:
    r = Result("runner SIGKILL", "SIGKILL the runner (python in the Flux job) of one app mid-run; 3 others go on")
    wf = Workflow(d, "wf_runner_kill.py", [])
    t_fault = None
    doomed = wait_until(lambda: [p for p in of_kind(str(d), "runner") if environ_has(p.pid, "PARSL_FLUX_TASK=0")],
                        90, 0.1)
    if not doomed:
        r.fail("the runner of task 0 did not start within 90s")
    else:
        time.sleep(0.5)
        snapshot(r, str(d))
        t_fault = time.time()
        for p in doomed:
            _signal(p.pid, signal.SIGKILL)
    wf.finish(HARD_TIMEOUT)
    settle(r, wf, t_fault, expect_types={"FluxJobFailed", "value"}, expect_exit={0}, resolve_limit=30)
    r.check(r.outcomes.get("doomed") == "FluxJobFailed", f"the killed app: {r.outcomes.get('doomed')}, "
            "expected FluxJobFailed")
    r.check(all(r.outcomes.get(f"short{i}") == "value" for i in range(3)), "an app whose runner was not killed failed")
    doomed_t = [e["t"] for e in wf.named("resolved") if e["name"] == "doomed"]
    if doomed_t and t_fault is not None:
        r.notes.append(f"the killed app's future failed {doomed_t[0] - t_fault:.2f}s after the kill")
    return r


def driver_sigkill(d: Path) -> Result:
    r = Result("driver SIGKILL", "SIGKILL the workflow (driver) process with 3 apps in flight")
    wf = Workflow(d, "wf_naps.py", ["3", "120"])
    t_fault = None
    if not wait_for_runners(wf):
        r.fail("no app started within 90s")
    else:
        time.sleep(0.5)
        snapshot(r, str(d))
        t_fault = time.time()
        wf.proc.kill()
    wf.finish(HARD_TIMEOUT)
    r.exit_code = wf.proc.returncode
    r.check(r.exit_code == -signal.SIGKILL, f"exit code {r.exit_code}, expected -9")
    r.submitted = 3
    r.notes.append("futures die with the driver: (a) does not apply")
    if t_fault is not None:
        gone = wait_until(lambda: not of_kind(str(d), "manager"), HEARTBEAT_THRESHOLD + 20, 0.1)
        manager_s = time.time() - t_fault
        if not gone:
            r.fail(f"the manager still runs {manager_s:.1f}s after its driver died")
        else:
            r.notes.append(f"manager exited {manager_s:.2f}s after the driver's SIGKILL "
                           f"(--driver-timeout {HEARTBEAT_THRESHOLD:.0f}s)")
            r.check(manager_s <= HEARTBEAT_THRESHOLD + 10,
                    f"the manager took {manager_s:.1f}s to notice the silent driver")
        left = wait_until(lambda: not scan(str(d)), CLEANUP_WAIT, 0.1)
        if left:
            r.cleanup_s = round(time.time() - t_fault, 2)  # from the fault: there is no driver exit to count from
            r.resolve_s = None
        else:
            procs = scan(str(d))
            r.leftovers = [str(p) for p in procs]
            r.fail("still running: " + "; ".join(f"{p} {p.cmd[:120]}" for p in procs))
            reap(d)
        logs = list(d.glob("runinfo/*/FluxExecutor/block-*/manager.log"))
        said = [line.strip() for log in logs for line in log.read_text(errors="replace").splitlines()
                if "exiting:" in line]
        r.check(any("no word from the driver" in s for s in said),
                f"manager.log does not say it ended for the silent driver: {said or logs}")
    return r


def early_user_error(d: Path) -> Result:
    r = Result("early user error", "the script raises RuntimeError 0.5 s after submitting 5 apps")
    wf = Workflow(d, "wf_user_error.py", [])
    raising = wf.event("raising", 90)
    t_fault = raising["t"] if raising else None
    if raising:
        snapshot(r, str(d))
    r.check(raising is not None, "the script never reached its raise")
    wf.finish(HARD_TIMEOUT)
    settle(r, wf, t_fault, expect_types={"ExecutorShutdown"}, expect_exit={1}, resolve_limit=30)
    stderr = (d / "stderr.txt").read_text(errors="replace")
    r.check("RuntimeError: user bug" in stderr, "the user's exception is not on stderr")
    if r.exit_s is not None:
        r.check(r.exit_s <= 30, f"the script took {r.exit_s}s to exit after its error")
    return r


def sigint(d: Path) -> Result:
    r = Result("SIGINT at 0.5 s", "SIGINT (Ctrl-C) to the workflow 0.5 s after parsl.load returned")
    wf = Workflow(d, "wf_sigint.py", [])
    loaded = wf.event("loaded", 90)
    t_fault = None
    if loaded is None:
        r.fail("parsl.load did not return within 90s")
    else:
        time.sleep(max(0.0, loaded["t"] + 0.5 - time.time()))
        snapshot(r, str(d))
        t_fault = time.time()
        wf.proc.send_signal(signal.SIGINT)
        r.notes.append(f"SIGINT sent {t_fault - loaded['t']:.3f}s after parsl.load returned")
    wf.finish(HARD_TIMEOUT)
    # Python ends on an uncaught KeyboardInterrupt by re-raising SIGINT: -2 (130 in a shell)
    settle(r, wf, t_fault, expect_types={"ExecutorShutdown"}, expect_exit={-signal.SIGINT, 1, 130},
           resolve_limit=30)
    stderr = (d / "stderr.txt").read_text(errors="replace")
    r.check("KeyboardInterrupt" in stderr, "no KeyboardInterrupt on stderr")
    if r.exit_s is not None:
        r.check(r.exit_s <= 30, f"the script took {r.exit_s}s to exit after Ctrl-C")
    return r


def big_payloads(d: Path) -> Result:
    r = Result("1 GiB result / argument", "an app returning 1 GiB; an app given a 1 GiB argument "
               "(max_message_bytes 256 MiB)")
    wf = Workflow(d, "wf_big.py", [])
    wf.finish(HARD_TIMEOUT)
    submits = {e["name"]: e["t"] for e in wf.named("submit")}
    t_fault = submits.get("arg_1GiB")
    settle(r, wf, t_fault, expect_types={"PayloadTooLarge", "ResultTooLarge", "value"}, expect_exit={0},
           resolve_limit=None)
    r.resolve_s = None
    for e in wf.named("resolved"):
        if e["name"] in submits:
            r.notes.append(f"{e['name']}: {e['outcome']} {e['t'] - submits[e['name']]:.2f}s after submit"
                           + (f" ({e['detail'][:110]})" if e["detail"] else ""))
        if e["name"] == "result_1GiB":
            r.resolve_s = round(e["t"] - submits[e["name"]], 2)
            sizes = [int(n) for n in re.findall(r"\d+", e["detail"])]
            r.check("max_message_bytes" in e["detail"] and any(n >= 1 << 30 for n in sizes)
                    and (256 << 20) in sizes,
                    f"the ResultTooLarge message does not name the size and the limit: {e['detail']!r}")
    r.check(r.outcomes.get("arg_1GiB") == "PayloadTooLarge", f"1 GiB argument: {r.outcomes.get('arg_1GiB')}")
    r.check(r.outcomes.get("result_1GiB") == "ResultTooLarge", f"1 GiB result: {r.outcomes.get('result_1GiB')}")
    r.check(r.outcomes.get("small_after") == "value", f"a small app afterwards: {r.outcomes.get('small_after')}")
    r.check(r.resolve_s is not None and r.resolve_s <= 60, f"the 1 GiB result took {r.resolve_s}s to fail")
    return r


SCENARIOS: Dict[str, Callable[[Path], Result]] = {
    "manager_sigkill": manager_sigkill,
    "broker_sigstop": broker_sigstop,
    "runner_sigkill": runner_sigkill,
    "driver_sigkill": driver_sigkill,
    "early_user_error": early_user_error,
    "sigint": sigint,
    "big_payloads": big_payloads,
}


# -------------------------------------------------------------------- report
COLUMNS = ["scenario", "outcome", "futures resolved/submitted", "exception types", "s to resolve", "leftovers",
           "exit code"]


def row(r: Result) -> List[str]:
    resolved = "n/a (driver killed)" if r.resolved is None and r.submitted else f"{r.resolved}/{r.submitted}"
    types = ", ".join(f"{k} x{v}" for k, v in sorted(r.exception_types.items())) or "-"
    secs = "-" if r.resolve_s is None else f"{r.resolve_s:.1f}"
    left = ", ".join(r.leftovers) if r.leftovers else (
        "none" + ("" if r.cleanup_s is None else f" ({r.cleanup_s:.1f}s)"))
    return [r.scenario, "PASS" if r.ok else "FAIL", resolved, types, secs, left, str(r.exit_code)]


def text_table(results: List[Result]) -> str:
    rows = [COLUMNS] + [row(r) for r in results]
    widths = [max(len(x[i]) for x in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(x, widths)) for x in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(results: List[Result], meta: dict) -> str:
    out = ["# Fault sweep (`make faults`)", "",
           f"{meta['date']}, {meta['host']}, {meta['cpus']} CPUs, Flux {meta['flux']}, parsl {meta['parsl']}; "
           f"FluxExecutor defaults (heartbeat_threshold {HEARTBEAT_THRESHOLD:.0f} s), one local block. "
           f"Total {meta['total_s']:.0f} s.", "",
           "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    out += ["| " + " | ".join(c.replace("|", "/") for c in row(r)) + " |" for r in results]
    out += ["", "*s to resolve*: from the fault to the last future resolved (1 GiB: from submitting the 1 GiB "
            "result). *leftovers*: processes of the scenario still running after the bounded wait; in brackets, "
            "how long after the workflow exited (driver SIGKILL: after the kill) the last one ended.", ""]
    for r in results:
        out.append(f"- **{r.scenario}** ({r.fault}): " + "; ".join(r.notes + [f"FAILED: {f}" for f in r.failures])
                   if r.notes or r.failures else f"- **{r.scenario}** ({r.fault})")
    return "\n".join(out) + "\n"


def save_logs(d: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("stdout.txt", "stderr.txt"):
        if (d / name).exists():
            shutil.copy(d / name, dest / name)
    for log in list(d.glob("runinfo/*/FluxExecutor/block-*/manager.log")) + \
            list(d.glob("runinfo/*/FluxExecutor/executor.log")) + list(d.glob("runinfo/*/parsl.log")):
        rel = log.relative_to(d / "runinfo")
        target = dest / str(rel).replace("/", "_")
        shutil.copy(log, target)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="", help=f"comma-separated scenarios (default all: {', '.join(SCENARIOS)})")
    p.add_argument("--out", default=str(ROOT / "build" / "faults"), help="where the table and logs go")
    p.add_argument("--keep", action="store_true", help="keep the scenario directories (printed)")
    args = p.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario(s) {unknown}; known: {list(SCENARIOS)}")

    from parsl_flux import fluxpath

    flux = fluxpath.find_flux()
    if flux is None or fluxpath.problem(flux) is not None:
        print("make faults: no working Flux found (FLUX_PATH, PATH, or `make flux`'s prefix): "
              f"{fluxpath.problem(flux) if flux else 'none'}", file=sys.stderr)
        return 2
    flux_version = subprocess.run([flux, "version"], capture_output=True, text=True).stdout.split("\n")[0]
    import parsl

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out / "logs", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="parsl-flux-faults-"))
    results: List[Result] = []
    started = time.monotonic()
    try:
        for name in names:
            d = tmp / name
            d.mkdir()
            print(f"--- {name} ...", flush=True)
            t0 = time.monotonic()
            try:
                result = SCENARIOS[name](d)
            except Exception as exc:  # a bug of the sweep itself must still show as a failed scenario
                result = Result(name, "?")
                result.fail(f"sweep error: {type(exc).__name__}: {exc}")
            finally:
                reap(d)
                save_logs(d, out / "logs" / name)
            results.append(result)
            status = "PASS" if result.ok else "FAIL: " + "; ".join(result.failures)
            print(f"    {status} ({time.monotonic() - t0:.0f}s)", flush=True)
    finally:
        for name in names:
            if (tmp / name).exists():
                reap(tmp / name)
        if args.keep:
            print(f"scenario directories kept under {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "host": os.uname().nodename, "cpus": os.cpu_count(),
            "flux": flux_version.split()[-1] if flux_version else "?", "parsl": parsl.__version__,
            "total_s": time.monotonic() - started}
    print()
    print(text_table(results))
    for r in results:
        for note in r.notes:
            print(f"  {r.scenario}: {note}")
        for f in r.failures:
            print(f"  {r.scenario}: FAILED: {f}")
    print(f"total {meta['total_s']:.0f}s; written to {out}/faults.json and {out}/faults.md")
    (out / "faults.json").write_text(json.dumps({"meta": meta, "results": [r.__dict__ for r in results]}, indent=2))
    (out / "faults.md").write_text(markdown(results, meta))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
