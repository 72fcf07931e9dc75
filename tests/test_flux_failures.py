"""Failure paths and trust against a real Flux (issue: trust and failure paths).

Each test reproduces what a careless user, a dying component or another local
user does, and checks that every future resolves, that nothing is left
running, and that no other user can read what would let them into the run.
"""

import os
import pwd
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cloudpickle
import pytest

from conftest import AS_FROM_A_TERMINAL, wait_for
from parsl_flux.allocation import leftovers
from parsl_flux.errors import BlockLost, FluxJobFailed

pytestmark = pytest.mark.flux
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # jobs cannot import this test module


def nap(seconds):
    import time

    time.sleep(seconds)
    return seconds


def _broker_pid(ex, block_id="0"):
    manager_pid = ex.blocks[block_id].info["pid"]
    return int(Path(f"/proc/{manager_pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _alive(pid):
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # ESRCH: reaped between the open and the read
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _script(tmp_path, body, flux_path):
    """A workflow script as a user writes it: apps defined in it, FluxExecutor defaults."""
    path = tmp_path / "workflow.py"
    path.write_text(textwrap.dedent(f"""
        import faulthandler, signal
        faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test asks for stacks if it hangs
        import os, sys, time
        import parsl
        from parsl.config import Config
        from parsl_flux import FluxExecutor

        @parsl.python_app
        def nap(s):
            import time
            time.sleep(s)
            return s

        config = Config(executors=[FluxExecutor(flux_path={flux_path!r}, heartbeat_threshold=5)],
                        run_dir={str(tmp_path / "runinfo")!r})
    """) + textwrap.dedent(body))
    return path


def _exit_or_stacks(proc, timeout):
    """``proc.communicate(timeout)``; if the script has not exited by then, fail
    with every thread's stack (its SIGUSR1 handler prints them) instead of a bare timeout."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)
        time.sleep(2)
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"the script did not exit within {timeout}s; its threads:\n{(err or '')[-6000:]}")


def _no_broker_left(tmp_path):
    """No process started from this test's run directory is still alive."""
    out = subprocess.run(["pgrep", "-f", str(tmp_path / "runinfo")], capture_output=True, text=True).stdout
    return [int(p) for p in out.split() if int(p) != os.getpid()] == []


def test_early_user_error_ends_the_script_promptly(tmp_path, flux_path):
    """Submit 5 apps and raise within a second: the user sees the exception
    and the process exits, with no broker left behind."""
    script = _script(tmp_path, """
        with parsl.load(config):
            futures = [nap(30) for _ in range(5)]
            time.sleep(0.5)
            raise RuntimeError("user bug")
    """, flux_path)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=90, cwd=tmp_path)
    elapsed = time.monotonic() - start
    assert proc.returncode == 1 and "RuntimeError: user bug" in proc.stderr, proc.stderr[-2000:]
    assert elapsed < 45, f"took {elapsed:.0f}s to exit after the user's error"
    wait_for(lambda: _no_broker_left(tmp_path), 15, "the block's processes to end")


def test_sigint_while_the_block_starts_exits_and_resolves(tmp_path, flux_path):
    script = _script(tmp_path, """
        with parsl.load(config):
            futures = [nap(30) for _ in range(5)]
            try:
                [f.result() for f in futures]
            except KeyboardInterrupt:
                print("interrupted; unresolved:", sum(not f.done() for f in futures), flush=True)
                raise
    """, flux_path)
    proc = subprocess.Popen([*AS_FROM_A_TERMINAL, sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    time.sleep(2.5)
    proc.send_signal(signal.SIGINT)
    out, err = _exit_or_stacks(proc, 60)
    assert "KeyboardInterrupt" in err, err[-2000:]
    wait_for(lambda: _no_broker_left(tmp_path), 15, "the block's processes to end")


def test_a_lost_block_does_not_end_the_workflow(tmp_path, flux_path):
    """A manager killed after it registered: its tasks fail with BlockLost, and a
    new block serves later tasks under Parsl's default error handler."""
    script = _script(tmp_path, """
        from parsl_flux.errors import BlockLost
        with parsl.load(config):
            ex = parsl.dfk().executors["FluxExecutor"]
            assert nap(0).result(timeout=60) == 0
            doomed = nap(60)
            time.sleep(1)
            os.kill(ex.blocks["0"].info["pid"], 9)
            try:
                doomed.result(timeout=60)
            except BlockLost as exc:
                print("lost:", exc, flush=True)
            print("after:", nap(0.1).result(timeout=120), flush=True)
    """, flux_path)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "lost: Flux instance of block 0 lost" in proc.stdout
    assert "after: 0.1" in proc.stdout


def test_a_stopped_broker_is_detected_and_its_block_ended(make_executor):
    """SIGSTOP the broker: the manager's ping times out, the block is lost within
    the threshold, and the executor has its batch job cancelled."""
    ex = make_executor(heartbeat_period=0.5, heartbeat_threshold=4)
    fut = ex.submit(nap, {}, 60)
    time.sleep(1.5)
    broker = _broker_pid(ex)
    os.kill(broker, signal.SIGSTOP)
    try:
        start = time.monotonic()
        with pytest.raises(BlockLost):
            fut.result(timeout=40)
        assert time.monotonic() - start < 15  # ping timeout (4 s) + BYE, not a wait for cancels
        # the manager kills its stopped broker: nothing waits for a SIGCONT
        wait_for(lambda: not _alive(broker), 15, "the stopped broker to be killed")
        shells = leftovers.processes_with_env({"FLUX_URI": ex.blocks["0"].info["flux_uri"]})
        wait_for(lambda: not [p for p in shells if _alive(p)], 15, "the block's job shells to end")
    finally:
        if _alive(broker):
            os.kill(broker, signal.SIGCONT)


def test_a_killed_broker_leaves_no_run_or_state_directory(make_executor, flux_path):
    """A broker SIGKILLed (the OOM killer, a fault) cannot remove its run
    directory (sockets) and state directory (the content database, hundreds of
    KiB); the block's manager, which outlives it, removes both once it is gone."""
    ex = make_executor(heartbeat_period=0.5, heartbeat_threshold=4)
    fut = ex.submit(nap, {}, 60)
    env = {**os.environ, "FLUX_URI": ex.blocks["0"].info["flux_uri"]}
    dirs = [subprocess.run([flux_path, "getattr", name], env=env, capture_output=True, text=True, timeout=30,
                           check=True).stdout.strip() for name in ("rundir", "statedir")]
    assert all(os.path.isdir(d) for d in dirs), dirs
    os.kill(_broker_pid(ex), signal.SIGKILL)
    with pytest.raises(BlockLost):
        fut.result(timeout=40)
    wait_for(lambda: not any(os.path.exists(d) for d in dirs), 15, f"the killed broker's directories {dirs} to go")


def test_jobs_run_in_the_drivers_working_directory(make_executor, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ex = make_executor()
    assert ex.submit(os.getcwd, {}).result(timeout=60) == str(tmp_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the attacker as another local user (nobody)")
def test_another_user_can_read_no_key(make_executor, tmp_path):
    """What the issue's attacker did (read the key from the submit script) fails
    now: the key dir is 0700 and holds nothing once the manager started; no
    submit script, broker argv or environment holds the key."""
    ex = make_executor()
    key = bytes.hex(__import__("parsl_flux.wire.protocol", fromlist=["x"]).block_key(ex._master, "0"))
    os.chmod(tmp_path, 0o755)  # let the attacker walk the run directory
    for d in Path(ex.run_dir).parents:
        if str(d).startswith(str(tmp_path.parent)):
            os.chmod(d, os.stat(d).st_mode | 0o005)
    nobody = pwd.getpwnam("nobody").pw_uid
    spy = subprocess.run(["setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups", "sh", "-c",
                          f"grep -rs {key} {ex.run_dir} /proc/*/environ /proc/*/cmdline; ls {ex.key_dir}"],
                         capture_output=True, text=True, timeout=60)
    assert key not in spy.stdout
    assert "Permission denied" in spy.stderr  # the key directory
    own = subprocess.run(["grep", "-rl", key, ex.run_dir], capture_output=True, text=True)
    assert own.stdout == "", f"the key is still in a file: {own.stdout}"
    assert ex.submit(nap, {}, 0).result(timeout=60) == 0


def test_encrypted_block_through_the_real_launch_line(make_executor):
    """CurveZMQ end to end: the server key survives the provider's launch script."""
    for _ in range(3):  # a fresh key each time: a key with shell-special characters must work too
        ex = make_executor(encrypt=True)
        assert ex._server_public
        assert ex.submit(nap, {}, 0).result(timeout=60) == 0
        ex.shutdown()


@pytest.mark.parametrize("resource_monitoring", [True, False])
def test_monitoring_database_gets_tasks_tries_states_and_blocks(tmp_path, flux_path, resource_monitoring):
    """With a default MonitoringHub the tasks run (no RadioRequiredError), their
    wrapper's messages come back over the executor's channel, and the block
    table is filled."""
    import sqlite3

    db = tmp_path / "monitoring.db"
    script = _script(tmp_path, f"""
        from parsl.monitoring.monitoring import MonitoringHub
        if __name__ == "__main__":  # the MonitoringHub starts processes with multiprocessing's spawn
            config.monitoring = MonitoringHub(logging_endpoint="sqlite:///{db}",
                                              resource_monitoring_enabled={resource_monitoring!r})
            with parsl.load(config):
                print("results:", nap(0).result(timeout=120), nap(0.1).result(timeout=120), flush=True)
    """, flux_path)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "results: 0 0.1" in proc.stdout
    con = sqlite3.connect(db)
    assert con.execute("select count(*) from task").fetchone()[0] == 2
    assert con.execute("select count(*) from try").fetchone()[0] == 2
    states = {s for (s,) in con.execute("select task_status_name from status")}
    assert {"launched", "exec_done"} <= states
    if resource_monitoring:  # the wrapper ran inside the Flux job and its messages came back
        assert {"running", "running_ended"} <= states
        # as with HTEX: each try knows its block, and the resource table has the tasks' usage
        assert con.execute("select task_id, block_id from try order by task_id").fetchall() == [(0, "0"), (1, "0")]
        rows = con.execute("select task_id, psutil_process_time_user, psutil_process_memory_resident, "
                           "resource_monitoring_interval from resource order by task_id, timestamp").fetchall()
        assert [r[0] for r in rows] == [0, 0, 1, 1]  # a start and an end row per task
        assert all(user is not None and rss > 1 << 20 for _, user, rss, _ in rows)
        assert rows[3][3] >= 0.1  # nap(0.1)'s wall time
    else:
        assert con.execute("select count(*) from resource").fetchone()[0] == 0
    blocks = con.execute("select distinct executor_label, block_id from block").fetchall()
    assert ("FluxExecutor", "0") in blocks


def start_daemon(keep_output):
    """An app that leaves a daemon behind (own session), holding the job's stdout or not."""
    import subprocess

    out = None if keep_output else subprocess.DEVNULL
    return subprocess.Popen(["sleep", "600"], start_new_session=True, stdout=out, stderr=out).pid


def test_a_daemon_holding_the_jobs_output_does_not_hold_the_future(make_executor):
    ex = make_executor()
    start = time.monotonic()
    pid = ex.submit(start_daemon, {}, True).result(timeout=60)
    assert time.monotonic() - start < 40
    wait_for(lambda: not _alive(pid), 15, "the leftover daemon to be killed")
    assert ex.submit(nap, {}, 0).result(timeout=60) == 0  # the block goes on


def test_daemons_a_task_left_do_not_outlive_the_block(make_executor):
    ex = make_executor()
    pid = ex.submit(start_daemon, {}, False).result(timeout=60)  # the job ends normally; the daemon stays
    assert _alive(pid)
    ex.shutdown()
    wait_for(lambda: not _alive(pid), 15, "the daemon to be killed when its block ended")


def test_init_blocks_start_with_the_executor_and_only_once(tmp_path, flux_path):
    """The first block is launched by parsl.load, not 5 s later at the strategy's
    first tick, and that tick does not launch a second one."""
    script = _script(tmp_path, """
        with parsl.load(config):
            ex = parsl.dfk().executors["FluxExecutor"]
            print("at load:", len(ex.blocks), flush=True)
            print("result:", nap(0).result(timeout=60), flush=True)
            time.sleep(7)  # past the strategy's first tick
            print("later:", len(ex.blocks), flush=True)
    """, flux_path)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "at load: 1" in proc.stdout and "later: 1" in proc.stdout


# ---------------------------------------------------------------------------
# The rest of the fault sweep: each fault, every future resolves, nothing is left.
def _runner_pids(task_env_value):
    """PIDs of runner processes of the task whose PARSL_FLUX_TASK is ``task_env_value``."""
    from parsl_flux.allocation import leftovers

    return leftovers.processes_with_env({"PARSL_FLUX_TASK": task_env_value})


def test_runner_sigkill_fails_that_task_only(make_executor):
    ex = make_executor()
    doomed = ex.submit(nap, {}, 60)
    other = ex.submit(nap, {}, 1)
    wait_for(lambda: _runner_pids(str(doomed.parsl_executor_task_id)), 30, "the task's runner to start")
    for pid in _runner_pids(str(doomed.parsl_executor_task_id)):
        os.kill(pid, signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(FluxJobFailed, match="(?i)killed|signal"):
        doomed.result(timeout=30)
    assert time.monotonic() - start < 10
    assert other.result(timeout=30) == 1


def test_driver_sigkill_ends_its_instance(tmp_path, flux_path):
    """The driver process dies (SIGKILL): its manager notices the silence within
    heartbeat_threshold, cancels its jobs and ends the instance: nothing is left."""
    script = _script(tmp_path, """
        parsl.load(config)
        futures = [nap(120) for _ in range(3)]
        print("submitted", flush=True)
        time.sleep(600)
    """, flux_path)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    assert proc.stdout.readline().strip() == "submitted"
    wait_for(lambda: not _no_broker_left(tmp_path), 30, "the block to start")
    time.sleep(2)
    proc.kill()
    proc.wait(timeout=10)
    start = time.monotonic()
    wait_for(lambda: _no_broker_left(tmp_path), 30, "the instance of the dead driver to end")
    assert time.monotonic() - start < 20  # heartbeat_threshold 5 s + cancelling the jobs


CHECKPOINTED_WORKFLOW = """
    from parsl.dataflow.memoization import BasicMemoizer
    from parsl.utils import get_all_checkpoints

    @parsl.python_app(cache=True)
    def square(x, marks):  # the same arguments in both runs, or the checkpoint's hashes would not match
        import os, time
        open(os.path.join(marks, f"{x}.{os.getppid()}.{time.time()}"), "w").close()  # one file per run of x
        time.sleep(120 if x >= 4 and os.path.exists(marks + ".slow") else 0.2)
        return x * x

    config.memoizer = BasicMemoizer(checkpoint_mode="task_exit",
                                    checkpoint_files=get_all_checkpoints(config.run_dir))
    slow = sys.argv[1] == "first"
    with parsl.load(config):
        futures = [square(x, sys.argv[2]) for x in range(8)]
        for future in (futures[:4] if slow else futures):
            print(future.result(), flush=True)
        print("done", flush=True)
        if slow:
            time.sleep(600)  # killed here
"""


def test_a_killed_driver_restarted_from_checkpoints_reruns_only_unfinished_tasks(tmp_path, flux_path):
    """Issue 20, item 6: the driver is SIGKILLed with 4 of 8 tasks finished and
    the others running or queued (2 cores); its block ends within the heartbeat threshold with nothing left, and
    a second driver with Parsl's checkpoints (``task_exit``,
    ``get_all_checkpoints()``) runs only the 4 unfinished tasks: every result right."""
    marks = tmp_path / "marks"
    marks.mkdir()
    slow = tmp_path / "marks.slow"  # the first run's unfinished tasks take 120 s
    slow.touch()
    script = _script(tmp_path, CHECKPOINTED_WORKFLOW, flux_path)
    first = subprocess.Popen([sys.executable, str(script), "first", str(marks)], stdout=subprocess.PIPE, text=True,
                             cwd=tmp_path)
    lines = [first.stdout.readline().strip() for _ in range(5)]
    assert lines == ["0", "1", "4", "9", "done"], lines
    wait_for(lambda: len(list(marks.iterdir())) >= 6, 60, "slow tasks to start on both cores")
    first.kill()
    first.wait(timeout=10)
    killed, killed_at = time.monotonic(), time.time()
    wait_for(lambda: _no_broker_left(tmp_path), 30, "the dead driver's block to end")
    assert time.monotonic() - killed < 20  # heartbeat_threshold 5 s + cancelling the jobs

    slow.unlink()
    second = subprocess.run([sys.executable, str(script), "second", str(marks)], capture_output=True, text=True,
                            cwd=tmp_path, timeout=180)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.split() == [str(x * x) for x in range(8)] + ["done"]
    reruns = {x: 0 for x in range(8)}
    for mark in marks.iterdir():
        x, _, started = mark.name.split(".", 2)
        reruns[int(x)] += float(started) > killed_at
    assert reruns == {0: 0, 1: 0, 2: 0, 3: 0, 4: 1, 5: 1, 6: 1, 7: 1}
    wait_for(lambda: _no_broker_left(tmp_path), 15, "the second run's block to end")


def test_sigint_half_a_second_after_load(tmp_path, flux_path):
    script = _script(tmp_path, """
        with parsl.load(config):
            futures = [nap(30) for _ in range(5)]
            time.sleep(60)
    """, flux_path)
    proc = subprocess.Popen([*AS_FROM_A_TERMINAL, sys.executable, str(script)], stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    time.sleep(0.5 + 1.5)  # interpreter and Parsl import take ~1.5 s here before parsl.load
    proc.send_signal(signal.SIGINT)
    _, err = _exit_or_stacks(proc, 60)
    assert "KeyboardInterrupt" in err, err[-2000:]
    wait_for(lambda: _no_broker_left(tmp_path), 15, "the block's processes to end")


def big_result(n):
    return b"x" * n


def test_a_result_over_the_limit_fails_with_a_clear_error(make_executor):
    """A result larger than max_message_bytes is refused in the job, naming both sizes;
    the block keeps serving (no starved heartbeats, no lost block)."""
    from parsl_flux.job.runner import ResultTooLarge

    ex = make_executor(max_message_bytes=4 << 20)
    with pytest.raises(ResultTooLarge, match="exceeds the executor's max_message_bytes"):
        ex.submit(big_result, {}, 8 << 20).result(timeout=60)
    assert len(ex.submit(big_result, {}, 1 << 20).result(timeout=60)) == 1 << 20
    assert ex.blocks["0"].live
