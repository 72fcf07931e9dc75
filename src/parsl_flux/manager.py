"""The manager: initial program of each block's Flux instance.

``flux start python -m parsl_flux.manager --url tcp://DRIVER:PORT --block-id N``

It dials back to the driver (the driver never needs to reach into the
allocation, and never needs ssh), reports the instance's resources, and then
turns each task it receives into a Flux job running :mod:`parsl_flux.runner`.

Threads, each with one job:

* main: the ZMQ loop. Talks to the driver (DEALER) and to runners (ROUTER),
  keeps per-task state only while a task is in flight, batches results back.
* submitter: owns one Flux handle; submits jobspecs asynchronously in batches
  (all RPCs of a batch in flight at once), cancels jobs, pings the broker.
* waiter: owns a second Flux handle; one ``job.wait(ANY)`` at a time reports
  each waitable job's end, so there is no thread and no eventlog watch per job.

The threads hand events to the main loop through a queue and wake it with one
byte on a pipe that the ZMQ poller watches.

The manager exits (and so the Flux instance ends) when the driver says
shutdown, when the driver has been silent for ``--driver-timeout`` seconds,
or when its Flux broker is gone; in each case it tells the driver why, if it can.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import queue
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import zmq

from parsl_flux import protocol
from parsl_flux.protocol import Kind

logger = logging.getLogger("parsl_flux.manager")

SUBMIT_BATCH = 256
STDERR_TAIL_BYTES = 4096
RUNNER_COMMAND = ["-m", "parsl_flux.runner"]


@dataclass
class _Task:
    task_id: int
    payload: bytes
    shape: Dict[str, Any]
    jobid: Optional[int] = None
    outcome: Optional[Dict[str, Any]] = None
    cancelled: bool = False


@dataclass
class _Outbox:
    """Results gathered in one loop turn, sent to the driver as one message."""

    results: List[Dict[str, Any]] = field(default_factory=list)


def read_tail(path: Path, limit: int = STDERR_TAIL_BYTES) -> str:
    """Last ``limit`` bytes of a file as text ('' when the file is missing)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def instance_resources(handle: Any) -> Dict[str, int]:
    """Nodes, and the smallest per-node core and GPU counts, of the instance."""
    import flux.resource

    rset = flux.resource.resource_list(handle).get().all
    ranks = list(rset.ranks)
    per_rank = [rset.copy_ranks(str(r)) for r in ranks]
    return {
        "nodes": len(ranks),
        "cores_per_node": min(r.ncores for r in per_rank),
        "gpus_per_node": min(r.ngpus for r in per_rank),
    }


def build_jobspec(task_id: int, shape: Dict[str, Any], python: str, env: Dict[str, str], workdir: Path) -> Any:
    """The Flux jobspec (``JobspecV1``) of one task."""
    from flux.job import JobspecV1

    jobspec = JobspecV1.from_command(
        [python, *RUNNER_COMMAND],
        num_tasks=shape["num_tasks"],
        cores_per_task=shape["cores_per_task"],
        gpus_per_task=shape["gpus_per_task"] or None,
        num_nodes=shape["num_nodes"] or None,
        exclusive=shape["exclusive"],
    )
    jobspec.environment = {**env, **shape["env"], protocol.TASK_ENV: str(task_id)}
    jobspec.cwd = str(workdir)
    jobspec.stdout = str(task_output(workdir, task_id, "out"))
    jobspec.stderr = str(task_output(workdir, task_id, "err"))
    if shape["walltime"]:
        jobspec.duration = shape["walltime"]
    jobspec.setattr("system.job.name", f"parsl-task-{task_id}")
    return jobspec


def task_output(workdir: Path, task_id: int, stream: str) -> Path:
    """Where the Flux shell writes a task's stdout ("out") or stderr ("err")."""
    return workdir / "tasks" / f"{task_id}.{stream}"


class _FluxThreads:
    """Submitter and waiter threads around two Flux handles."""

    def __init__(self, events: "queue.Queue[Tuple]", wake: int) -> None:
        self._events = events
        self._wake = wake
        self.requests: "queue.Queue[Tuple]" = queue.Queue()
        self._in_flight = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()

    def _emit(self, *event: Any) -> None:
        self._events.put(event)
        try:
            os.write(self._wake, b"x")
        except BlockingIOError:  # the pipe is full, so the main loop is awake anyway
            pass

    def start(self) -> None:
        threading.Thread(target=self._guard, args=(self._submit_loop,), name="flux-submit", daemon=True).start()
        threading.Thread(target=self._guard, args=(self._wait_loop,), name="flux-wait", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def _guard(self, loop: Any) -> None:
        try:
            loop()
        except Exception as exc:  # a lost broker surfaces here as OSError
            if not self._stop.is_set():
                logger.exception("Flux thread failed")
                self._emit("fatal", f"{type(exc).__name__}: {exc}")

    def _submit_loop(self) -> None:
        import flux
        import flux.job

        handle = flux.Flux()
        while not self._stop.is_set():
            try:
                batch = [self.requests.get(timeout=2.0)]
            except queue.Empty:
                handle.rpc("broker.ping", {"seq": 0, "pad": ""}).get()  # proves the broker is alive
                continue
            while len(batch) < SUBMIT_BATCH:
                try:
                    batch.append(self.requests.get_nowait())
                except queue.Empty:
                    break
            futures = []
            for op, task_id, arg in batch:
                if op == "submit":
                    futures.append((task_id, flux.job.submit_async(handle, arg, waitable=True)))
                elif op == "cancel":
                    flux.job.cancel_async(handle, arg, "cancelled by parsl-flux")
            for task_id, fut in futures:
                try:
                    jobid = fut.get_id()
                except OSError as exc:
                    if exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.ENOSYS):
                        raise
                    self._emit("submit_failed", task_id, f"Flux rejected the job: {exc.strerror or exc}")
                    continue
                with self._cond:
                    self._in_flight += 1
                    self._cond.notify()
                self._emit("submitted", task_id, int(jobid))

    def _wait_loop(self) -> None:
        import flux
        import flux.job

        handle = flux.Flux()
        while not self._stop.is_set():
            with self._cond:
                while self._in_flight == 0 and not self._stop.is_set():
                    self._cond.wait()
            if self._stop.is_set():
                return
            try:
                res = flux.job.wait(handle)
            except OSError as exc:
                if exc.errno == errno.ECHILD:  # raced with the submit that will notify us
                    time.sleep(0.01)
                    continue
                raise
            with self._cond:
                self._in_flight -= 1
            errstr = res.errstr.decode(errors="replace") if isinstance(res.errstr, bytes) else str(res.errstr)
            self._emit("done", int(res.jobid), bool(res.success), errstr)


class Manager:
    """State and loop of one block's manager (see the module docstring)."""

    def __init__(self, url: str, block_id: str, key: bytes, workdir: Path, python: str,
                 heartbeat_period: float, driver_timeout: float, runner_host: str) -> None:
        self.block_id = block_id
        self.key = key
        self.workdir = workdir
        self.python = python
        self.heartbeat_period = heartbeat_period
        self.driver_timeout = driver_timeout
        self.tasks: Dict[int, _Task] = {}
        self.by_jobid: Dict[int, _Task] = {}
        self.runner_key = protocol.new_secret()
        self.ctx = zmq.Context()
        self.driver = self.ctx.socket(zmq.DEALER)
        self.driver.setsockopt(zmq.IDENTITY, block_id.encode())
        self.driver.setsockopt(zmq.LINGER, 2000)
        self.driver.connect(url)
        self.runners = self.ctx.socket(zmq.ROUTER)
        self.runners.setsockopt(zmq.LINGER, 0)
        port = self.runners.bind_to_random_port("tcp://*")
        self.runner_url = f"tcp://{runner_host}:{port}"
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.events: "queue.Queue[Tuple]" = queue.Queue()
        self.flux = _FluxThreads(self.events, self._wake_w)
        self.job_env = self._job_environment()
        self.outbox = _Outbox()

    def _job_environment(self) -> Dict[str, str]:
        """The allocation's environment (container + worker_init), minus the block key,
        plus what runners need to reach this manager."""
        env = {k: v for k, v in os.environ.items() if k not in (protocol.KEY_ENV, protocol.SECRET_ENV)}
        env[protocol.RUNNER_URL_ENV] = self.runner_url
        env[protocol.RUNNER_KEY_ENV] = self.runner_key.hex()
        return env

    def send(self, kind: Kind, data: Any = None) -> None:
        self.driver.send_multipart(protocol.encode(self.key, kind, data))

    def run(self) -> int:
        import flux

        (self.workdir / "tasks").mkdir(parents=True, exist_ok=True)
        handle = flux.Flux()
        resources = instance_resources(handle)
        self.send(Kind.REGISTER, {
            "block_id": self.block_id, "resources": resources, "hostname": socket.gethostname(),
            "flux_uri": handle.attr_get("local-uri"), "flux_version": handle.attr_get("version"),
            "workdir": str(self.workdir), "pid": os.getpid(),
        })
        logger.info("block %s registered: %s", self.block_id, resources)
        del handle
        self.flux.start()
        poller = zmq.Poller()
        poller.register(self.driver, zmq.POLLIN)
        poller.register(self.runners, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        last_from_driver = last_heartbeat = time.monotonic()
        reason, code = "", 0
        while True:
            ready = dict(poller.poll(timeout=self.heartbeat_period * 1000))
            now = time.monotonic()
            if self.driver in ready:
                last_from_driver = now
                if self._drain_driver():
                    reason = "shutdown requested by the driver"
                    break
            if self.runners in ready:
                self._drain_runners()
            if self._wake_r in ready:
                try:
                    os.read(self._wake_r, 65536)
                except BlockingIOError:
                    pass
            fatal = self._drain_events()
            self._flush()
            if fatal:
                reason, code = f"Flux broker unreachable: {fatal}", 1
                break
            if now - last_from_driver > self.driver_timeout:
                reason, code = f"no word from the driver for {self.driver_timeout:.0f}s", 2
                break
            if now - last_heartbeat >= self.heartbeat_period:
                self.send(Kind.HEARTBEAT, {"in_flight": len(self.tasks)})
                last_heartbeat = now
        self._exit(reason)
        return code

    def _exit(self, reason: str) -> None:
        logger.info("manager of block %s exiting: %s", self.block_id, reason)
        for task in self.tasks.values():
            if task.jobid is not None:
                self.flux.requests.put(("cancel", task.task_id, task.jobid))
        deadline = time.monotonic() + 5
        while self.tasks and not self.flux.requests.empty() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.send(Kind.BYE, {"reason": reason, "lost": sorted(self.tasks)})
        self.flux.stop()
        self.driver.close()
        self.runners.close()
        self.ctx.term()

    def _drain_driver(self) -> bool:
        """Handle all pending driver messages; True when asked to shut down."""
        while True:
            try:
                frames = self.driver.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return False
            msg = protocol.decode_or_none(self.key, frames)
            if msg is None:
                logger.warning("dropped a message that failed authentication")
                continue
            kind, data = msg
            if kind is Kind.TASKS:
                for t in data:
                    task = _Task(t["id"], t["payload"], t["shape"])
                    self.tasks[task.task_id] = task
                    jobspec = build_jobspec(task.task_id, task.shape, self.python, self.job_env, self.workdir)
                    self.flux.requests.put(("submit", task.task_id, jobspec))
            elif kind is Kind.CANCEL:
                for task_id in data:
                    self._cancel(task_id)
            elif kind is Kind.SHUTDOWN:
                return True

    def _cancel(self, task_id: int) -> None:
        task = self.tasks.get(task_id)
        if task is None:
            return
        task.cancelled = True
        if task.jobid is not None:
            self.flux.requests.put(("cancel", task_id, task.jobid))

    def _drain_runners(self) -> None:
        while True:
            try:
                ident, *frames = self.runners.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            msg = protocol.decode_or_none(self.runner_key, frames)
            if msg is None:
                logger.warning("dropped a runner message that failed authentication")
                continue
            kind, data = msg
            if kind is Kind.FETCH:
                task = self.tasks.get(data)
                reply = task.payload if task is not None and not task.cancelled else None
                self.runners.send_multipart([ident, *protocol.encode(self.runner_key, Kind.PAYLOAD, reply)])
            elif kind is Kind.RESULT:
                task_id, outcome = data
                task = self.tasks.get(task_id)
                if task is not None:
                    task.outcome = outcome
                self.runners.send_multipart([ident, *protocol.encode(self.runner_key, Kind.ACK, None)])

    def _drain_events(self) -> Optional[str]:
        """Apply events from the Flux threads; return a reason if the broker is gone."""
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return None
            op = event[0]
            if op == "submitted":
                _, task_id, jobid = event
                task = self.tasks[task_id]
                task.jobid = jobid
                self.by_jobid[jobid] = task
                if task.cancelled:
                    self.flux.requests.put(("cancel", task_id, jobid))
            elif op == "submit_failed":
                _, task_id, error = event
                self._finish(self.tasks[task_id], {"ok": False, "job_failed": True, "status": error})
            elif op == "done":
                _, jobid, success, errstr = event
                task = self.by_jobid.pop(jobid, None)
                if task is not None:
                    self._job_done(task, success, errstr)
            elif op == "fatal":
                return event[1]

    def _job_done(self, task: _Task, success: bool, errstr: str) -> None:
        if task.cancelled:
            result: Dict[str, Any] = {"ok": False, "cancelled": True}
        elif success and task.outcome is not None:
            result = task.outcome
        else:
            status = errstr or "job exited without sending a result"
            result = {"ok": False, "job_failed": True, "status": status,
                      "stderr": read_tail(task_output(self.workdir, task.task_id, "err"))}
        self._finish(task, result)

    def _finish(self, task: _Task, result: Dict[str, Any]) -> None:
        del self.tasks[task.task_id]
        result["id"] = task.task_id
        result["jobid"] = task.jobid
        self.outbox.results.append(result)

    def _flush(self) -> None:
        if self.outbox.results:
            self.send(Kind.RESULTS, self.outbox.results)
            self.outbox = _Outbox()


def manager_key(environ: Dict[str, str], block_id: str) -> bytes:
    """The block key: given directly, or derived from the master secret when the
    block was started outside Parsl (Helm chart)."""
    try:
        if environ.get(protocol.KEY_ENV):
            return bytes.fromhex(environ[protocol.KEY_ENV])
        if environ.get(protocol.SECRET_ENV):
            return protocol.block_key(bytes.fromhex(environ[protocol.SECRET_ENV]), block_id)
    except ValueError:
        raise ValueError(f"{protocol.KEY_ENV}/{protocol.SECRET_ENV} must be hex strings") from None
    raise ValueError(f"neither {protocol.KEY_ENV} nor {protocol.SECRET_ENV} is set")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m parsl_flux.manager", description=__doc__.split("\n")[0])
    p.add_argument("--url", required=True, help="driver endpoint, tcp://HOST:PORT")
    p.add_argument("--block-id", required=True)
    p.add_argument("--workdir", default=None, help="task outputs and logs (default: a fresh temporary directory)")
    p.add_argument("--python", default=sys.executable, help="interpreter for runners (default: this one)")
    p.add_argument("--heartbeat-period", type=float, default=1.0)
    p.add_argument("--driver-timeout", type=float, default=30.0)
    p.add_argument("--runner-host", default=socket.gethostname(), help="address runners use to reach this manager")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        key = manager_key(os.environ, args.block_id)
    except ValueError as exc:
        print(f"parsl-flux manager: {exc}; refusing to start", file=sys.stderr)
        return 2
    if args.workdir:
        workdir = Path(args.workdir) / f"block-{args.block_id}"
    else:
        import tempfile
        workdir = Path(tempfile.mkdtemp(prefix=f"parsl-flux-block-{args.block_id}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(filename=str(workdir / "manager.log"), level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(threadName)s %(message)s")
    manager = Manager(args.url, args.block_id, key, workdir, args.python,
                      args.heartbeat_period, args.driver_timeout, args.runner_host)
    return manager.run()


if __name__ == "__main__":
    sys.exit(main())
