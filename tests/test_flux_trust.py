"""Trust on a shared login node, against a real Flux (issue 18): another local
user (``nobody``) cannot reach a one-node block's task server, a task cannot
act as another task even with everything it can read about it, and blocks end
with the script that started them, with or without ``with``."""

import os
import subprocess
import sys
import textwrap
import time

import cloudpickle
import pytest
from hostile import run_as_nobody

from conftest import wait_for
from parsl_flux.wire import protocol

pytestmark = pytest.mark.flux
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # jobs cannot import this test module


def runner_url():
    import os

    return os.environ["PARSL_FLUX_RUNNER_URL"]


def square(x):
    return x * x


CONNECT_MANY = """
import socket, sys
outcomes = {}
for _ in range(300):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(sys.argv[1])
        outcomes["connected"] = outcomes.get("connected", 0) + 1
    except OSError as exc:
        outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
    s.close()
print(outcomes)
"""


def test_another_user_cannot_reach_a_one_node_blocks_task_server(make_executor):
    ex = make_executor()
    url = ex.submit(runner_url, {}).result(timeout=60)
    assert url.startswith(protocol.UNIX_PREFIX), f"runners of a one-node block dial {url}"
    stranger = run_as_nobody(CONNECT_MANY, url[len(protocol.UNIX_PREFIX):])
    assert stranger.stdout.strip() == "{'PermissionError': 300}", stranger.stderr
    futures = [ex.submit(square, {}, i) for i in range(20)]
    assert [f.result(timeout=120) for f in futures] == [i * i for i in range(20)]


def slow_value(seconds):
    import time

    time.sleep(seconds)
    return "real"


def forge(victim, flux):
    """What a hostile task tries: read the victim's credential wherever a task
    can read it, then fetch its payload and post a result in its name."""
    import json
    import os
    import subprocess

    from parsl_flux.wire import protocol
    from parsl_flux.job import runner

    report = {"stolen": [], "fetched": False, "posted": False, "errors": []}
    jobs = subprocess.run([flux, "jobs", "-a", "-n", "-o", "{id} {name}"], capture_output=True, text=True).stdout
    jobid = next(line.split()[0] for line in jobs.splitlines() if line.split()[1] == f"parsl-task-{victim}")
    spec = json.loads(subprocess.run([flux, "job", "info", "--original", jobid, "jobspec"],
                                     capture_output=True, text=True, check=True).stdout)
    env = spec["attributes"]["system"]["environment"]
    if protocol.RUNNER_KEY_ENV in env:
        report["stolen"].append(env[protocol.RUNNER_KEY_ENV])
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                penv = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
        except OSError:
            continue
        ours = penv.get(protocol.RUNNER_URL_ENV.encode()) == os.environ[protocol.RUNNER_URL_ENV].encode()
        if ours and penv.get(protocol.TASK_ENV.encode()) == str(victim).encode() \
                and protocol.RUNNER_KEY_ENV.encode() in penv:
            report["stolen"].append(penv[protocol.RUNNER_KEY_ENV.encode()].decode())
    keys = [bytes.fromhex(k) for k in report["stolen"]] or [protocol.PEER_VERIFIED]
    url = os.environ[protocol.RUNNER_URL_ENV]
    for key in keys:
        try:
            link = runner.ManagerLink(url, key, victim, protocol.DEFAULT_MAX_MESSAGE_BYTES)
            kind, body = link.request(protocol.Kind.FETCH, protocol.fetch_body(victim), timeout=10)
            report["fetched"] = report["fetched"] or (kind == protocol.Kind.PAYLOAD and body["payload"] is not None)
        except Exception as exc:
            report["errors"].append(f"fetch: {type(exc).__name__}: {exc}")
        try:
            link = runner.ManagerLink(url, key, victim, protocol.DEFAULT_MAX_MESSAGE_BYTES)
            forged = protocol.outcome_value([runner._dumps("forged")])
            report["posted"] = link.request(protocol.Kind.RESULT, protocol.runner_result_body(victim, forged), timeout=10)[0] == "ack"
        except Exception as exc:
            report["errors"].append(f"result: {type(exc).__name__}: {exc}")
    return report


def test_a_task_cannot_fetch_or_forge_another_tasks_result(make_executor, flux_path):
    ex = make_executor()
    victim = ex.submit(slow_value, {}, 8)
    time.sleep(2)  # the victim's job runs
    report = ex.submit(forge, {}, victim.parsl_executor_task_id, flux_path).result(timeout=60)
    assert report["stolen"] == [], f"a task read another task's credential: {report}"
    assert not report["fetched"] and not report["posted"], report
    assert victim.result(timeout=60) == "real"


def test_blocks_end_with_the_interpreter_without_with(tmp_path, flux_path):
    """``parsl.load`` without ``with``, then an error: the script exits, and
    its broker, manager and tasks within a couple of seconds, not at the
    managers' driver timeout (heartbeat_threshold, 10 s here)."""
    run_dir = tmp_path / "runinfo"
    script = tmp_path / "workflow.py"
    script.write_text(textwrap.dedent(f"""
        import time
        import parsl
        from parsl.config import Config
        from parsl_flux import FluxExecutor

        @parsl.python_app
        def nap(s):
            import time
            time.sleep(s)
            return s

        parsl.load(Config(executors=[FluxExecutor(flux_path={flux_path!r})], run_dir={str(run_dir)!r}))
        assert nap(0).result(timeout=60) == 0
        futures = [nap(60) for _ in range(3)]
        time.sleep(1)
        raise RuntimeError("user bug")
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    exited = time.monotonic()
    assert "RuntimeError: user bug" in proc.stderr, proc.stderr[-2000:]

    def left():
        out = subprocess.run(["pgrep", "-f", str(run_dir)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split() if int(p) != os.getpid()]

    wait_for(lambda: not left(), 15, "the block's processes to end")
    assert time.monotonic() - exited < 3, f"the block outlived the script by {time.monotonic() - exited:.1f}s"


def test_a_manager_python_without_the_flux_extra_is_one_clear_line(tmp_path):
    """An interpreter without site-packages (so without cffi) as the manager's:
    start() says so in one line, with the fix, before any block starts."""
    from parsl_flux import FluxExecutor
    from parsl_flux.driver import preflight

    bare = tmp_path / "bare-python"
    bare.write_text(f"#!/bin/sh\nexec {sys.executable} -S \"$@\"\n")
    bare.chmod(0o755)
    ex = FluxExecutor(python=str(bare))
    ex.run_dir = str(tmp_path)
    with pytest.raises(preflight.ManagerPythonIncomplete) as raised:
        ex.start()
    line = str(raised.value)
    assert "_cffi_backend" in line and "pip install 'parsl-flux[flux]'" in line and "\n" not in line
    assert not ex.blocks
