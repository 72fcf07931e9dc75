"""CobaltProvider: its qsub/qstat/qdel command lines, and parsing recorded real
outputs of those tools (tests/data/cobalt/, sources in SOURCES.md)."""

from __future__ import annotations

import getpass
import os
import shlex
from pathlib import Path

import pytest
from parsl.jobs.states import JobState
from parsl.launchers import AprunLauncher
from parsl.providers.errors import SubmitException

from parsl_flux.providers import CobaltProvider
from parsl_flux.providers.cobalt import STATES, parse_qsub, parse_qstat

DATA = Path(__file__).parent / "data" / "cobalt"


def recorded(name: str) -> str:
    return (DATA / name).read_text()


class Scheduler:
    """Stands in for the shell: records each command, answers with a canned output."""

    def __init__(self, *answers: tuple) -> None:
        self.answers = list(answers)
        self.commands: list = []

    def __call__(self, cmd: str, timeout=None) -> tuple:
        self.commands.append(cmd)
        return self.answers.pop(0)


@pytest.fixture
def provider(tmp_path) -> CobaltProvider:
    p = CobaltProvider(account="myproj", queue="debug-cache-quad", nodes_per_block=2, walltime="00:30:00",
                       attrs={"filesystems": "home,grand", "mcdram": "cache"}, worker_init="module load singularity",
                       launcher=AprunLauncher(overrides="-cc none"))
    p.script_dir = str(tmp_path)
    return p


def test_parse_qsub_takes_job_id_after_theta_notes():
    assert parse_qsub(recorded("qsub_theta.txt")) == "603441"
    assert parse_qsub("") is None
    assert parse_qsub("error: project not found\n") is None


@pytest.mark.parametrize("name, expected", [
    ("qstat_u_thetagpu.txt", {"10076391": "queued"}),
    ("qstat_jobid_theta.txt", {"124559": "queued"}),
])
def test_parse_qstat_recorded(name, expected):
    assert parse_qstat(recorded(name)) == expected


def test_parse_qstat_finds_columns_by_name():
    out = "JobID  JobName  User  WallTime  QueuedTime  RunTime  Nodes  State  Queue\n" \
          "=========================\n" \
          "42     parsl    me    00:10:00  00:01:00    00:02:00 2      running  default\n"
    assert parse_qstat(out) == {"42": "running"}


def test_submit_command_line_and_script(provider):
    sched = Scheduler((0, recorded("qsub_theta.txt"), ""))
    provider.execute_wait = sched
    job_id = provider.submit("flux start echo hi", 1, "parsl.test")
    assert job_id == "603441"
    argv = shlex.split(sched.commands[0])
    script = argv[-1]
    assert argv[0] == "qsub"
    opts = dict(zip(argv[1:-1:2], argv[2:-1:2]))
    assert opts == {"--mode": "script", "-n": "2", "-t": "30", "-q": "debug-cache-quad", "-A": "myproj",
                    "--attrs": "filesystems=home,grand:mcdram=cache", "-O": script}
    assert os.access(script, os.X_OK), "Cobalt runs the script itself: it must be executable"
    text = Path(script).read_text()
    assert text.startswith("#!/bin/bash")
    assert "module load singularity" in text
    assert "flux start echo hi" in text
    aprun = next(shlex.split(line) for line in text.splitlines() if line.startswith("aprun "))
    assert aprun[:5] == ["aprun", "-n", "2", "-N", "1"] and "-cc" in aprun
    assert "$COBALT_NODEFILE" in text
    assert provider.resources[job_id]["status"].state is JobState.PENDING


def test_submit_failure_says_why(provider):
    provider.execute_wait = Scheduler((1, "", "qsub: project myproj has no allocation\n"))
    with pytest.raises(SubmitException, match="no allocation"):
        provider.submit("true", 1)


def test_submit_without_job_id_fails(provider):
    provider.execute_wait = Scheduler((0, 'Job routed to queue "debug-cache-quad".\n', ""))
    with pytest.raises(SubmitException, match="no job id"):
        provider.submit("true", 1)


def test_status_from_recorded_qstat(provider):
    provider.execute_wait = Scheduler((0, "10076391\n", ""), (0, recorded("qstat_u_thetagpu.txt"), ""))
    job_id = provider.submit("true", 1)
    assert provider.status([job_id])[0].state is JobState.PENDING
    assert provider.execute_wait.commands[-1] == f"qstat -u {shlex.quote(getpass.getuser())}"


def test_job_gone_from_qstat_is_completed(provider):
    provider.execute_wait = Scheduler((0, "603441\n", ""), (0, recorded("qstat_u_thetagpu.txt"), ""))
    job_id = provider.submit("true", 1)
    status = provider.status([job_id])[0]
    assert status.state is JobState.COMPLETED
    assert status.stdout_path.endswith(".output") and status.stderr_path.endswith(".error")


def test_failed_qstat_changes_nothing(provider):
    provider.execute_wait = Scheduler((0, "603441\n", ""), (1, "", "qstat: cannot connect to server\n"))
    job_id = provider.submit("true", 1)
    assert provider.status([job_id])[0].state is JobState.PENDING


@pytest.mark.parametrize("state, expected", [
    ("queued", JobState.PENDING), ("starting", JobState.PENDING), ("running", JobState.RUNNING),
    ("exiting", JobState.RUNNING), ("user_hold", JobState.HELD), ("maxrun_hold", JobState.HELD),
    ("killing", JobState.CANCELLED), ("somethingnew", JobState.UNKNOWN),
])
def test_states(provider, state, expected):
    qstat = recorded("qstat_jobid_theta.txt").replace("queued", state)
    provider.execute_wait = Scheduler((0, "124559\n", ""), (0, qstat, ""))
    job_id = provider.submit("true", 1)
    assert provider.status([job_id])[0].state is expected
    assert state not in STATES or STATES[state] is expected


def test_cancel(provider):
    provider.execute_wait = Scheduler((0, "603441\n", ""), (0, "", ""))
    job_id = provider.submit("true", 1)
    assert provider.cancel([job_id]) == [True]
    assert provider.execute_wait.commands[-1] == "qdel 603441"
    assert provider.resources[job_id]["status"].state is JobState.CANCELLED
    provider.execute_wait = Scheduler((1, "", "qdel: no such job"))
    assert provider.cancel([job_id]) == [False]


@pytest.mark.parametrize("kwargs, match", [
    ({"walltime": "ten minutes"}, None),
    ({"attrs": {"filesystems": "home:grand"}}, "may not contain"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CobaltProvider(**kwargs)


def test_defaults_follow_parsl():
    p = CobaltProvider()
    assert isinstance(p.launcher, AprunLauncher)
    assert p.label == "cobalt" and p.status_polling_interval == 60
    assert "-A" not in shlex.split(p.submit_command("/x/s"))
